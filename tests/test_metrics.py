import numpy as np
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
