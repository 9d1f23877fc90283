"""Calibration of class probabilities: expected calibration error and temperature scaling.

A temperature T rescales log-probabilities, p_k ∝ p_k^(1/T): T < 1 sharpens an under-confident
model, T > 1 softens an over-confident one, and the decision (argmax) never changes. It is fitted
by minimum negative log-likelihood on out-of-fold predictions of one set of donors and judged on
the others (`donor_split_calibration`), so that the figure is not the fit's own.
"""
import numpy as np
from scipy.optimize import minimize_scalar

T_BOUNDS = (0.05, 20.0)


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """The reliability diagram of the top probability: probs (N, K), y (N,) true classes, `bins`
    equal-width bins of the top probability. Per bin: cells, mean top probability ("confidence")
    and share right ("accuracy"; NaN in an empty bin)."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    which = np.clip(np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):  # empty bins: NaN, said in the docstring
        confidence = np.bincount(which, conf, bins) / count
        accuracy = np.bincount(which, right, bins) / count
    return {"count": count.tolist(), "confidence": confidence.tolist(), "accuracy": accuracy.tolist()}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE of the top probability: probs (N, K), y (N,) true classes; `bins` equal-width bins of
    the top probability, each weighted by its share of the cells."""
    r = reliability(probs, y, bins)
    count = np.array(r["count"])
    gap = np.abs(np.array(r["accuracy"]) - np.array(r["confidence"]))
    return float(np.sum(count[count > 0] * gap[count > 0]) / max(count.sum(), 1))


def shift_file_for_frequencies(path, strength: float, evidence: dict | None = None) -> dict:
    """Raise the logits of model file `path` by -strength * log(frequency of each class among its training
    cells, from its card), before its temperature (rtclassify.model.file_format.shift_output_bias_in_file):
    post-hoc logit adjustment on the file. Returns the new card."""
    from rtclassify.model.file_format import load_model, shift_output_bias_in_file
    from trainer.fit import log_class_frequencies

    card = load_model(str(path), runtime="torchscript").card
    counts = [int(card["training_data"]["per_class"][c]) for c in card["classes"]]
    log_freq = log_class_frequencies(np.repeat(np.arange(len(counts)), counts), len(counts))
    return shift_output_bias_in_file(str(path), -strength * log_freq,
                                     {"strength": round(strength, 6), "of": "-log(training class frequency)",
                                      **(evidence or {})})


def as_file_gives(raw: np.ndarray, card: dict) -> np.ndarray:
    """(..., K) probabilities of the network as saved by an evaluation (raw softmax), as the model file of
    `card` gives them: its output shift added to the logits, then its temperature."""
    from rtclassify.model.file_format import output_shift

    shifted = raw * np.exp(np.asarray(output_shift(card)))  # renormalised by apply_temperature
    return apply_temperature(shifted / shifted.sum(axis=-1, keepdims=True),
                             float((card.get("calibration") or {}).get("temperature", 1.0)))


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


def crossfit_temperature(probs: np.ndarray, y: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold probabilities calibrated without a cell's own fold: probs (R, N, K), y (N,) classes
    (-1: not scored), folds (R, N) fold of each cell. Each fold's cells get the temperature fitted on
    the other folds' cells of the same repeat. Returns the calibrated (R, N, K) and the (R x folds)
    temperatures."""
    out = np.array(probs, copy=True)
    temperatures = []
    for r in range(len(probs)):
        for f in np.unique(folds[r][folds[r] >= 0]):
            test, fit = (folds[r] == f) & (y >= 0), (folds[r] != f) & (folds[r] >= 0) & (y >= 0)
            t = fit_temperature(probs[r, fit], y[fit])
            out[r, test] = apply_temperature(probs[r, test], t)
            temperatures.append(t)
    return out, temperatures


def evidence_table(probs: np.ndarray, y: np.ndarray, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95)) -> list[dict]:
    """For each threshold t: the share of cells whose top probability reaches t ("coverage"), the
    share of those decided right ("precision"), and the lowest such share over the classes decided
    ("worst_class", "worst_precision": a rare class can be right less often than the pool); probs
    (R, N, K) pooled over repeats, y (N,)."""
    conf = probs.max(axis=2).ravel()
    decided = probs.argmax(axis=2).ravel()
    right = decided == np.tile(y, len(probs))
    rows = []
    for t in thresholds:
        sel = conf >= t
        row = {"threshold": t, "coverage": float(sel.mean()),
               "precision": float(right[sel].mean()) if sel.any() else float("nan")}
        per_class = {int(k): right[sel & (decided == k)].mean() for k in np.unique(decided[sel])}
        if per_class:
            worst = min(per_class, key=per_class.get)
            row.update(worst_class=worst, worst_precision=float(per_class[worst]))
        rows.append(row)
    return rows


def calibration_scores(probs: np.ndarray, y: np.ndarray, strata: dict, calibrated: np.ndarray | None,
                       temperatures: list) -> dict:
    """The report's calibration figures of one method: probs (R, N, K) out-of-fold, y (N,) true
    classes of the same cells, strata {name: (N,) bool}; calibrated: the same probabilities
    temperature-scaled without seeing their own cells (or None). ECE is the mean over repeats."""
    def ece(p, sel):
        return float(np.mean([expected_calibration_error(q[sel], y[sel]) for q in p]))

    everyone = np.ones(len(y), bool)
    out = {"ece": ece(probs, everyone), "strata": {k: {"ece": ece(probs, m)} for k, m in strata.items()},
           "reliability": reliability(probs.reshape(-1, probs.shape[2]), np.tile(y, len(probs))),
           "evidence": evidence_table(probs, y)}
    if calibrated is not None:
        out["temperatures"] = [float(t) for t in temperatures]
        out["ece_calibrated"] = ece(calibrated, everyone)
        for k, m in strata.items():
            out["strata"][k]["ece_calibrated"] = ece(calibrated, m)
        out["reliability_calibrated"] = reliability(calibrated.reshape(-1, probs.shape[2]), np.tile(y, len(probs)))
        out["evidence_calibrated"] = evidence_table(calibrated, y)
    return out


CALIBRATION_RIG_DRAWS = 8  # acquisition chains per calibration cell, besides its window as recorded


def calibrate_file_on_rigs(path, data, task, cells: np.ndarray, cfg) -> dict:
    """Fit the temperature of model file `path` on the (N,) bool `cells` (the shipped models' calibration
    split): their windows as recorded and through CALIBRATION_RIG_DRAWS random acquisition chains each (a
    seed of their own), so that one temperature serves every rig the model is meant for. Writes it into the
    file (a file calibrated before gets the factor that its probabilities needed); returns the new card."""
    from rtclassify.model.file_format import apply_temperature_to_file, load_model

    y = data.labels(task)
    keep = cells & (y >= 0)
    windows = data.rig_windows(task, CALIBRATION_RIG_DRAWS, cfg.rig_seed + 1, cells=keep)[keep]
    labels = np.repeat(y[keep], windows.shape[1])
    model = load_model(str(path), runtime="torchscript")
    probs = model.run(np.ascontiguousarray(windows.reshape(-1, windows.shape[-1]), dtype=np.float32))
    temperature = fit_temperature(probs, labels)
    evidence = {"fitted_on": f"{int(keep.sum())} calibration cells (one development donor in 8, never trained on), "
                             f"each as recorded and through {CALIBRATION_RIG_DRAWS} random acquisition chains",
                "ece_before_on_fit_cells": round(expected_calibration_error(probs, labels), 4),
                "ece_after_on_fit_cells": round(expected_calibration_error(apply_temperature(probs, temperature),
                                                                           labels), 4),
                "held_out_figures": "docs/rigs.md (the final split, python -m trainer rigs)"}
    return apply_temperature_to_file(str(path), temperature, evidence)


CONFIDENT = 0.9  # "confidently wrong": a wrong answer given with a top probability at least this high


def confident_wrong(probs: np.ndarray, y: np.ndarray, at: float = CONFIDENT) -> dict:
    """Of the answers probs (N, K) against y (N,) whose top probability is >= at: how many, how many
    wrong, and their share ("rate"; NaN with none)."""
    kept = probs.max(axis=1) >= at
    wrong = int(np.sum(kept & (probs.argmax(axis=1) != y)))
    return {"answers": int(kept.sum()), "wrong": wrong, "rate": wrong / kept.sum() if kept.any() else float("nan")}


def risk_coverage(probs: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> dict:
    """The risk-coverage curve of answering only when the top probability is >= t, for each t of
    thresholds (T,): "coverage" (share of the N answers kept) and "error" (share of the kept ones that
    are wrong; NaN where none is kept)."""
    top, wrong = probs.max(axis=1), probs.argmax(axis=1) != y
    kept = top[None, :] >= np.asarray(thresholds)[:, None]
    n = kept.sum(axis=1)
    with np.errstate(invalid="ignore"):
        error = (kept & wrong[None, :]).sum(axis=1) / n
    return {"threshold": np.asarray(thresholds).tolist(), "coverage": (n / max(len(y), 1)).tolist(), "error": error.tolist()}
