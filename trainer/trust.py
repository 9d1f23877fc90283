"""How far a shipped model's answers may be trusted, chosen on the calibration split (`python -m trainer
trust`): the shape envelope (rtclassify.model.envelope.shape_score) and the card's `trust` section
(rtclassify.model.trust: the default --min-confidence).

- **Shape envelope.** The first SHAPE_COMPONENTS principal components of the development cells' windows
  (the calibration and final splits left out), as recorded and through SHAPE_DRAWS random acquisition
  chains each (trainer.rigs, the training distribution), cut and read as the tools read them. Its
  threshold is the SHAPE_QUANTILE quantile of the calibration cells' scores through the same chains:
  one unseen window of the training distribution in 200 is called unlike them.
- **class_ceiling.** Per predicted class, the precision vouched for at 90% (the CEILING_QUANTILE quantile
  of its posterior) of the development folds' out-of-fold answers at top p >= CEILING_AT (the shipped
  recipe on donor-grouped folds, `python -m trainer evaluate --stage dev`, with the file's output shift and temperature):
  no answer of that class is given surer than its class's answers have been right.
- **min_confidence.** With the ceilings, on the calibration cells through CONFIDENCE_CONDITIONS (the rigs that the
  confident-wrong target is judged on, trainer.rigs.REPORT_CONDITIONS), read as `predict` reads them
  (both temperature readings where none is declared, outside inputs tempered), the answers of every
  condition pooled: the lowest threshold on the top probability at which at most TARGET_ERROR of the
  answers kept are wrong. A model that cannot reach it anywhere gets MAX_MIN_CONFIDENCE.
"""
import numpy as np

SHAPE_COMPONENTS = 10
SHAPE_DRAWS = 4
SHAPE_QUANTILE = 0.995
CONFIDENCE_CONDITIONS = ("as recorded", "20 kHz, 5 kHz", "-10 mV offset", "10 kHz, 2 kHz",
                         "25 °C not told, 50 kHz, 10 kHz")
TARGET_ERROR = 0.03
THRESHOLDS = np.round(np.arange(0.50, 0.995, 0.01), 2)  # candidate min_confidence values
MAX_MIN_CONFIDENCE = 0.99


def fit_shape(train: np.ndarray, held: np.ndarray, k: int = SHAPE_COMPONENTS, quantile: float = SHAPE_QUANTILE) -> dict:
    """The card's `envelope.shape` from training windows train (N, L) mV, its threshold the `quantile`
    of the scores of held-out windows held (M, L) mV."""
    from rtclassify.model.envelope import shape_score

    mean = train.mean(axis=0)
    _, s, vt = np.linalg.svd(train - mean, full_matrices=False)
    components = vt[:k]
    variances = s[:k] ** 2 / (len(train) - 1)
    centred = train - mean
    residual = centred - (centred @ components.T) @ components
    shape = {"mean": mean.round(4).tolist(), "components": components.round(6).tolist(),
             "variances": variances.round(6).tolist(), "residual": round(float((residual ** 2).sum(axis=1).mean()), 6)}
    held_scores = shape_score(shape, held)
    shape["threshold"] = round(float(np.quantile(held_scores, quantile)), 3)
    shape["fitted_on"] = (f"{len(train)} windows of the development cells (calibration and final splits left out), "
                          f"as recorded and through {SHAPE_DRAWS} random acquisition chains each; threshold: the "
                          f"{quantile:.1%} quantile of {len(held)} calibration-split windows through the same chains")
    return shape


def chained_windows(data, cells: np.ndarray, seed: int) -> np.ndarray:
    """(n * (1 + SHAPE_DRAWS), L) float32 mV: the windows of `cells` (N,) bool, as recorded and through
    SHAPE_DRAWS random acquisition chains each."""
    from trainer.labels import get_task

    windows = data.rig_windows(get_task("genetic5"), SHAPE_DRAWS, seed, cells=cells)[cells]
    return windows.reshape(-1, windows.shape[-1])


def choose_min_confidence(probs: np.ndarray, y: np.ndarray, target: float = TARGET_ERROR) -> tuple[float, dict]:
    """(the lowest threshold of THRESHOLDS whose kept answers are at most `target` wrong, else
    MAX_MIN_CONFIDENCE; the risk-coverage curve it was read from) for pooled answers probs (N, K), y (N,)."""
    from trainer.calibration import risk_coverage

    curve = risk_coverage(probs, y, THRESHOLDS)
    ok = [t for t, e in zip(curve["threshold"], curve["error"]) if e == e and e <= target]
    return (float(ok[0]) if ok else MAX_MIN_CONFIDENCE), curve


def condition_answers(model, data, held: np.ndarray, conditions, seed: int, tmp) -> dict:
    """{condition name: (probs (n, K), y (n,), outside (n,) bool)}: the task's cells among `held` (N,)
    bool through each named condition of trainer.rigs.REPORT_CONDITIONS, classified by `predict`'s code
    (rows refused left out; outside: the envelope said so)."""
    from pathlib import Path

    from trainer.labels import get_task
    from trainer.rig_report import predict_rows
    from trainer.rigs import REPORT_CONDITIONS, family_ratios, write_condition_folder

    g5 = get_task("genetic5")
    ratios = family_ratios(list(g5.classes), data.labels(g5), data.dendrite_types)
    idx = np.flatnonzero(held)
    y_all = data.labels(get_task(model.card["task"]))[idx]
    out = {}
    for c_i, condition in enumerate(REPORT_CONDITIONS):
        if condition.name not in conditions:
            continue
        folder = Path(tmp) / f"c{c_i}"
        if not (folder / "cells.csv").exists():
            write_condition_folder(folder, condition, [data.traces[i] for i in idx], data.fs_hz[idx],
                                   data.specimen_ids[idx], ratios[idx], seed + c_i)
        run = predict_rows(model, folder)
        ok = (y_all >= 0) & ~run["refused"]
        out[condition.name] = (run["probs"][ok], y_all[ok], run["outside"][ok])
    return out


def load_with_trust(path, **changes):
    """The model file at `path` loaded, its trust policy (rtclassify.model.trust.Trust) with `changes`
    (e.g. cool_share=0.1), for reading answers under another policy than its card's."""
    from dataclasses import replace

    from rtclassify.model.file_format import load_model

    model = load_model(path)
    model.__dict__["trust"] = replace(model.trust, **changes)  # LoadedModel.trust is a cached property
    return model


def explore_shares(files: list, data, held: np.ndarray, shares, seed: int, tmp) -> list[dict]:
    """For each share of the 25 °C reading (rtclassify.model.trust, when no temperature is declared): the
    pooled confident-wrong rate over CONFIDENCE_CONDITIONS, the worst condition's, the share of answers at
    top p >= 0.9 and the balanced accuracy as recorded, over the model files (seeds) given, on `held` cells."""
    from trainer.calibration import confident_wrong
    from trainer.metrics import confusion, scores_from_confusion

    rows = []
    for share in shares:
        per = {name: [0, 0] for name in CONFIDENCE_CONDITIONS}
        bas = []
        for f in files:
            model = load_with_trust(f, cool_share=float(share))
            for name, (p, y, _) in condition_answers(model, data, held, CONFIDENCE_CONDITIONS, seed, tmp).items():
                c = confident_wrong(p, y)
                per[name][0] += c["wrong"]
                per[name][1] += c["answers"]
                if name == "as recorded":
                    bas.append(scores_from_confusion(confusion(y, p.argmax(1), p.shape[1]))["balanced_accuracy"])
                    n_recorded = len(y)
        wrong, answers = sum(w for w, _ in per.values()), sum(a for _, a in per.values())
        rates = {n: w / a for n, (w, a) in per.items() if a}
        rows.append({"share": float(share), "pooled": wrong / max(answers, 1), "answers": answers,
                     "worst": max(rates.values()) if rates else float("nan"),
                     "coverage_as_recorded": per["as recorded"][1] / (len(files) * n_recorded),
                     "balanced_accuracy_as_recorded": float(np.mean(bas))})
    return rows


CEILING_AT = 0.9  # the answers a class's ceiling is measured on: those the confident-wrong target counts
CEILING_QUANTILE = 0.1  # the ceiling: the precision vouched for at 90% (lower 10% quantile of its posterior)
CEILING_MIN_ANSWERS = 10  # a class with fewer such answers gets no ceiling (nothing to measure it on)


def class_ceilings(probs: np.ndarray, y: np.ndarray, at: float = CEILING_AT,
                   quantile: float = CEILING_QUANTILE) -> tuple[np.ndarray, list[dict]]:
    """((K,) the card's `trust.class_ceiling`, per class {answers, right, ceiling}) from answers probs
    (N, K) and true classes y (N,): for each predicted class, the answers with top probability >= `at`,
    and the `quantile` of the posterior of their precision (Jeffreys prior): the precision those answers
    can be vouched for. Never below 0.5 (a ceiling must not change a decision); 1 where too few answers."""
    from scipy.stats import beta

    k = probs.shape[1]
    sure = probs.max(axis=1) >= at
    predicted = probs.argmax(axis=1)
    ceilings, rows = np.ones(k), []
    for c in range(k):
        mine = sure & (predicted == c)
        n, right = int(mine.sum()), int((y[mine] == c).sum())
        if n >= CEILING_MIN_ANSWERS:
            ceilings[c] = max(0.5, float(beta.ppf(quantile, right + 0.5, n - right + 0.5)))
        rows.append({"answers": n, "right": right, "ceiling": round(float(ceilings[c]), 3)})
    return np.round(ceilings, 3), rows


def development_answers(model, data, final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, K), y (N,)): the out-of-fold answers of the development cells (every cell but the final
    split's) saved by `python -m trainer evaluate --stage dev` (trainer.cell_report.ap_probabilities,
    the shipped recipe on donor-grouped folds, one window as recorded), with `model`'s output shift and
    calibration temperature (the probabilities its tools give, before its trust policy)."""
    from trainer.calibration import as_file_gives
    from trainer.cell_report import ap_probabilities
    from trainer.labels import get_task

    task = model.card["task"]
    probs = ap_probabilities("dev", task, data.specimen_ids, as_tools_give=False)[0]
    y = data.labels(get_task(task))
    ok = ~final & (y >= 0) & np.isfinite(probs).all(axis=1)
    return as_file_gives(probs[ok], model.card), y[ok]


def target_ratio(by_condition: dict) -> float:
    """How far answers {condition: (probs (n, K), y (n,))} are from the confident-wrong target: the larger
    of the pooled rate over TARGET_ERROR and the worst condition's over twice that (1: on target)."""
    from trainer.calibration import confident_wrong

    counts = [confident_wrong(p, y) for p, y in by_condition.values()]
    answers = sum(c["answers"] for c in counts)
    pooled = sum(c["wrong"] for c in counts) / max(answers, 1)
    worst = max((c["rate"] for c in counts if c["answers"]), default=0.0)
    return max(pooled / TARGET_ERROR, worst / (2 * TARGET_ERROR))
