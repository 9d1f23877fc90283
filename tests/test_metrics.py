import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score

from trainer.metrics import confusion, score_repeats, scores_from_confusion


def test_scores_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 5, 300))
    s = scores_from_confusion(confusion(y, p, 5))
    assert np.isclose(s["balanced_accuracy"], balanced_accuracy_score(y, p))
    assert np.isclose(s["macro_f1"], f1_score(y, p, average="macro"))
    assert np.isclose(s["weighted_precision"], precision_score(y, p, average="weighted"))


def test_stratum_scored_on_its_own_classes():
    y = np.array([0, 0, 2, 2])
    p = np.array([0, 1, 2, 2])  # a prediction of class 1, absent from the stratum, is an error
    s = scores_from_confusion(confusion(y, p, 3), classes_present=[0, 2])
    assert np.isclose(s["balanced_accuracy"], (0.5 + 1.0) / 2)


def test_intervals_bracket_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    preds = np.stack([np.where(rng.random(200) < 0.8, y, (y + 1) % 3) for _ in range(2)])
    s = score_repeats(y, preds, 3, n_boot=200)
    lo, hi = s["ci95"]["balanced_accuracy"]
    assert lo < s["balanced_accuracy"] < hi
    assert 0.7 < s["balanced_accuracy"] < 0.9


def test_intervals_hold_the_spread_between_repeats():
    # two repeats (seeds) that disagree by 0.2 in accuracy: an interval over cells alone, with the
    # repeats averaged inside each resample, would be as narrow as for one repeat
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    good = np.where(rng.random(2000) < 0.9, y, 1 - y)
    bad = np.where(rng.random(2000) < 0.7, y, 1 - y)
    lo, hi = score_repeats(y, np.stack([good, bad]), 2, n_boot=400)["ci95"]["accuracy"]
    assert lo < 0.75 and hi > 0.85  # each repeat alone: +-0.02 around 0.9 and 0.7
    one_lo, one_hi = score_repeats(y, good[None], 2, n_boot=400)["ci95"]["accuracy"]
    assert one_hi - one_lo < 0.05


def test_output_bias_sweep_moves_decisions_towards_the_rare_class():
    from trainer.metrics import choose_across_repeats, sweep_output_bias

    # two classes, 90 frequent and 10 rare cells; the rare ones sit just on the frequent side
    y = np.array([0] * 90 + [1] * 10)
    p1 = np.where(y == 1, 0.4, 0.1)
    p1[:5] = 0.45  # five frequent cells look almost rare
    probs = np.stack([np.stack([1 - p1, p1], axis=1)] * 2)
    log_freq = np.log([0.9, 0.1])
    scores = sweep_output_bias(probs, y, log_freq, [0.0, 0.2])
    assert scores.shape == (2, 2, 2)
    assert scores[0, 0, 0] == 0.5  # unshifted: every cell called frequent
    # shifted by 0.2 * log(9) = 0.44 in log-odds: 0.4 (log-odds -0.41) crosses 0, 0.45 does too
    assert scores[1, 0, 0] == (85 / 90 + 1.0) / 2
    held = choose_across_repeats(scores)
    np.testing.assert_allclose(held, scores[1])  # each repeat picks the shift the other prefers


def test_a_shift_chosen_on_the_other_folds_is_scored_on_each_fold():
    from trainer.metrics import choose_across_folds

    # two classes, 90 frequent and 10 rare cells in two folds; the rare ones sit just on the frequent side
    y = np.array([0] * 90 + [1] * 10)
    p1 = np.where(y == 1, 0.4, 0.1)
    folds = np.arange(100) % 2
    probs = np.stack([1 - p1, p1], axis=1)
    log_freq = np.log([0.9, 0.1])
    decisions, chosen = choose_across_folds(probs, y, folds, log_freq, [0.0, 0.2, 2.0])
    # 0.2 * log(9) = 0.44 in log-odds lifts the rare cells (-0.41) over, not the frequent ones (-2.2);
    # 2.0 lifts both (balanced accuracy 0.5), 0.0 neither (0.5): each fold takes 0.2 from the other
    assert chosen == [0.2, 0.2]
    np.testing.assert_array_equal(decisions, y)
    p1[folds == 0] = np.where(y[folds == 0] == 1, 0.95, 0.05)  # fold 0 needs no shift, fold 1 still does
    decisions, chosen = choose_across_folds(np.stack([1 - p1, p1], axis=1), y, folds, log_freq, [0.0, 0.2])
    assert chosen == [0.2, 0.0]  # fold 0's shift is chosen on fold 1's cells, and the other way round
    assert (decisions[(folds == 1) & (y == 1)] == 0).all()  # so fold 1's rare cells stay missed


def test_agreement_with_teachers_counts_decisions_after_the_students_shift():
    from trainer.metrics import agreement_with_teachers

    teachers = np.array([[[0.6, 0.4], [0.9, 0.1], [0.2, 0.8]]])
    student = np.array([[[0.3, 0.7], [0.8, 0.2], [0.1, 0.9]]])  # first cell: rare class
    log_freq = np.log([0.9, 0.1])
    np.testing.assert_allclose(agreement_with_teachers(student, teachers, log_freq, 0.0), [2 / 3])
    # shifted by 0.25 * log(9) = 0.55 in log-odds, the teachers' 0.4 (log-odds -0.41) turns rare too
    np.testing.assert_allclose(agreement_with_teachers(student, teachers, log_freq, 0.25), [1.0])


def test_a_class_absent_from_the_cells_scores_nan_without_warnings():
    """A stratum without one class (e.g. Vip among 200 kHz cells): its recall is NaN, quietly."""
    import warnings

    from trainer.metrics import score_repeats

    y = np.array([0, 0, 1, 1, 0, 1])
    preds = np.array([[0, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = score_repeats(y, preds, 3, n_boot=50)
    assert np.isnan(out["recall"][2]) and all(np.isnan(out["ci95"]["recall"][2]))
    assert out["recall"][0] == pytest.approx((3 / 3 + 2 / 3) / 2)
