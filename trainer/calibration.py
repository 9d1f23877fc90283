"""Calibration of class probabilities: expected calibration error and temperature scaling.

A temperature T rescales log-probabilities, p_k ∝ p_k^(1/T): T < 1 sharpens an under-confident
model, T > 1 softens an over-confident one, and the decision (argmax) never changes. It is fitted
by minimum negative log-likelihood on out-of-fold predictions of one set of donors and judged on
the others (`donor_split_calibration`), so that the figure is not the fit's own.
"""
import numpy as np
from scipy.optimize import minimize_scalar

T_BOUNDS = (0.05, 20.0)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE of the top probability: probs (N, K), y (N,) true classes; `bins` equal-width bins of
    the top probability, each weighted by its share of the cells."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    return float(ece)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """probs (..., K) with their log-probabilities divided by `temperature`, renormalised."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature of least negative log-likelihood of probs (N, K) against y (N,)."""
    res = minimize_scalar(lambda t: negative_log_likelihood(apply_temperature(probs, t), y),
                          bounds=T_BOUNDS, method="bounded")
    return float(res.x)


def donor_split_calibration(probs: np.ndarray, y: np.ndarray, donors: np.ndarray, splits: int = 5,
                            seed: int = 0) -> list[dict]:
    """Temperature fitted on half of the donors, ECE before and after on the other half.

    probs (R, N, K): out-of-fold probabilities of R repeats; y (N,) classes (-1: not in the task);
    donors (N,) donor ids. One dict per split and repeat: split, repeat, temperature, and the
    held-out donors' cells' ece_before, ece_after, accuracy.
    """
    rng = np.random.default_rng(seed)
    scored = y >= 0
    ids = np.unique(donors[scored])
    out = []
    for split in range(splits):
        dev_donors = rng.choice(ids, len(ids) // 2, replace=False)
        dev = np.isin(donors, dev_donors) & scored
        held = ~np.isin(donors, dev_donors) & scored
        for r, p in enumerate(probs):
            t = fit_temperature(p[dev], y[dev])
            out.append({"split": split, "repeat": r, "temperature": t,
                        "ece_before": expected_calibration_error(p[held], y[held]),
                        "ece_after": expected_calibration_error(apply_temperature(p[held], t), y[held]),
                        "accuracy": float((p[held].argmax(axis=1) == y[held]).mean()),
                        "held_out_cells": int(held.sum())})
    return out
