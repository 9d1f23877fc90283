"""Classification metrics with bootstrap confidence intervals (cells resampled with replacement)."""
import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_from_confusion(cm: np.ndarray, classes_present=None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, weighted precision and per-class P/R/F1/support.

    classes_present: indices of the true classes to average over (default: those with support > 0),
    so that a stratum lacking a class (e.g. Vip among 200 kHz cells) is scored on the classes it has.
    """
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = np.flatnonzero(support > 0) if classes_present is None else np.asarray(classes_present)
    n = support[present].sum()
    return {
        "n": int(n),
        "accuracy": float(tp[present].sum() / n) if n else float("nan"),
        "balanced_accuracy": float(np.mean(recall[present])),
        "macro_f1": float(np.mean(f1[present])),
        "weighted_precision": float(np.sum(precision[present] * support[present]) / n) if n else float("nan"),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
    }


HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_precision")


def column_nanmean(rows) -> np.ndarray:
    """Mean of each column of rows (R, K) over its non-NaN entries; NaN where a column has none (a
    class absent from every repeat's cells), without numpy's empty-slice warning."""
    a = np.asarray(rows, dtype=float)
    counts = np.sum(~np.isnan(a), axis=0)
    return np.where(counts > 0, np.nansum(a, axis=0) / np.maximum(counts, 1), np.nan)


def column_nanpercentile(rows, q: float) -> np.ndarray:
    """Percentile q of each column of rows (B, K) over its non-NaN entries; NaN for an all-NaN column."""
    a = np.asarray(rows, dtype=float)
    out = np.full(a.shape[1], np.nan)
    for k in range(a.shape[1]):
        col = a[:, k][~np.isnan(a[:, k])]
        if len(col):
            out[k] = np.percentile(col, q)
    return out


def score_repeats(y_true: np.ndarray, preds: np.ndarray, n_classes: int, classes_present=None,
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """Scores averaged over repeats, with 95% intervals over cells and repeats.

    y_true: (N,) class indices; preds: (R, N) predicted indices, one row per repeat (of the
    cross-validation, or training seed). Each bootstrap sample draws N cells with replacement and
    one repeat at random, so the interval holds the repeats' spread (seeds, folds, training) as
    well as the cells' — averaging the repeats inside each sample would hide it.
    """
    preds = np.atleast_2d(preds)
    per_repeat = [scores_from_confusion(confusion(y_true, p, n_classes), classes_present) for p in preds]
    out = {k: float(np.mean([s[k] for s in per_repeat])) for k in HEADLINE}
    for k in ("precision", "recall", "f1"):
        out[k] = column_nanmean([s[k] for s in per_repeat]).tolist()
    out["support"] = per_repeat[0]["support"]
    out["n"] = per_repeat[0]["n"]
    out["repeat_sd"] = {k: float(np.std([s[k] for s in per_repeat])) for k in HEADLINE}
    out["confusion"] = confusion(y_true, preds[0], n_classes).tolist()
    rng = np.random.default_rng(seed)
    boots = {k: [] for k in HEADLINE + ("recall",)}
    n = len(y_true)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        s = scores_from_confusion(confusion(y_true[idx], preds[rng.integers(len(preds))][idx], n_classes),
                                  classes_present)
        for k in HEADLINE:
            boots[k].append(s[k])
        boots["recall"].append(s["recall"])
    out["ci95"] = {k: [float(column_nanpercentile(np.reshape(boots[k], (-1, 1)), q)[0]) for q in (2.5, 97.5)]
                   for k in HEADLINE}
    rec = np.array(boots["recall"])
    out["ci95"]["recall"] = [[float(a), float(b)] for a, b in zip(column_nanpercentile(rec, 2.5),
                                                                  column_nanpercentile(rec, 97.5))]
    return out


def balanced_accuracy_and_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple:
    """(balanced accuracy, macro-F1) of decisions y_pred (N,) against y_true (N,): the two figures that
    count every class alike."""
    s = scores_from_confusion(confusion(y_true, y_pred, n_classes))
    return s["balanced_accuracy"], s["macro_f1"]


def sweep_output_bias(probs: np.ndarray, y: np.ndarray, log_freq: np.ndarray, shifts) -> np.ndarray:
    """Balanced accuracy and macro-F1 if the decisions were argmax(log p - shift * log_freq).

    probs (R, N, K): out-of-fold probabilities of R repeats; y (N,) true classes; log_freq (K,)
    log class frequencies. Returns (len(shifts), R, 2): [balanced accuracy, macro-F1] per shift and
    repeat, i.e. what a further logit adjustment of the outputs by `shift` would have scored.
    """
    k = probs.shape[2]
    out = np.zeros((len(shifts), probs.shape[0], 2))
    for i, shift in enumerate(shifts):
        for r, p in enumerate(probs):
            out[i, r] = balanced_accuracy_and_macro_f1(y, shifted_decisions(p, log_freq, shift), k)
    return out


def agreement_with_teachers(student: np.ndarray, teachers: np.ndarray, log_freq: np.ndarray,
                            shift: float) -> np.ndarray:
    """(R,) share of cells where a student's decision equals its teachers' once the teachers' outputs
    get the student's output-bias shift (shift * log_freq). student, teachers: (R, N, K) probabilities."""
    return (student.argmax(axis=2) == shifted_decisions(teachers, log_freq, shift)).mean(axis=1)


def shifted_decisions(probs: np.ndarray, log_freq: np.ndarray, shift: float) -> np.ndarray:
    """Classes argmax(log p - shift * log_freq) over the last axis of probs (..., K): the decisions
    after a logit adjustment of strength `shift`; log_freq (K,) log class frequencies."""
    return (np.log(np.maximum(probs, 1e-12)) - shift * log_freq).argmax(axis=-1)


def choose_across_repeats(scores: np.ndarray) -> np.ndarray:
    """(R, 2) scores of each repeat at the shift chosen on the other repeats (by the mean of balanced
    accuracy and macro-F1 there): an estimate free of the selection. scores: (S, R, 2) as above."""
    n_rep = scores.shape[1]
    out = np.zeros((n_rep, 2))
    for r in range(n_rep):
        others = [o for o in range(n_rep) if o != r] or [r]
        best = scores[:, others].mean(axis=(1, 2)).argmax()
        out[r] = scores[best, r]
    return out


def choose_across_folds(probs: np.ndarray, y: np.ndarray, folds: np.ndarray, log_freq: np.ndarray,
                        shifts) -> tuple[np.ndarray, list]:
    """Nested choice of a further logit adjustment on one repeat's out-of-fold probabilities probs (N, K):
    for each fold the shift of `shifts` with the highest balanced accuracy on the other folds' cells,
    applied to that fold's. y (N,) true classes, folds (N,) fold of each cell. Returns ((N,) decisions,
    [shift chosen for each fold]): scored as a whole, an estimate free of the selection."""
    k = probs.shape[1]
    decisions = np.zeros(len(y), int)
    chosen = []
    for f in np.unique(folds):
        test = folds == f
        train_scores = [balanced_accuracy_and_macro_f1(y[~test], shifted_decisions(probs[~test], log_freq, s), k)[0]
                        for s in shifts]
        chosen.append(float(shifts[int(np.argmax(train_scores))]))
        decisions[test] = shifted_decisions(probs[test], log_freq, chosen[-1])
    return decisions, chosen


def score_member_subsets(member_probs: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Balanced accuracy and macro-F1 of every ensemble of `size` of the members (mean probabilities):
    how much an ensemble's score owes to which seeds it drew. member_probs (M, N, K), y (N,).
    Returns (C(M, size), 2), subsets in itertools.combinations order (the first: members 0..size-1)."""
    from itertools import combinations

    k = member_probs.shape[2]
    out = []
    for subset in combinations(range(member_probs.shape[0]), size):
        out.append(balanced_accuracy_and_macro_f1(y, member_probs[list(subset)].mean(axis=0).argmax(axis=1), k))
    return np.array(out)


def fit_log_curve(n: np.ndarray, values: np.ndarray, at: float) -> tuple[float, float]:
    """Least-squares line values = a + b * log2(n) through scores measured with n (P,) training cells,
    values (P,) or (P, R) (R repeats at each size, all fitted together): (b, the score gained per
    doubling of the cells; the line's value at `at` cells). At n beyond the measured ones this is an
    extrapolation: learning curves flatten, so it tends to overshoot."""
    values = np.asarray(values, dtype=float).reshape(len(n), -1)
    x = np.repeat(np.log2(np.asarray(n, dtype=float)), values.shape[1])
    b, a = np.polyfit(x, values.reshape(-1), 1)
    return float(b), float(a + b * np.log2(at))
