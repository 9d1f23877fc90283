"""The cell models' protocol (trainer/cli/cmd_cells.py): development folds, one score on the final
split, the shipped files. Every figure of docs/cells/ is made here."""
import json
from pathlib import Path

import numpy as np

from rtclassify.features.family import BANDWIDTH_FEATURE, FAMILY_FEATURES
from rtclassify.verdict.cell_model import SHIPPED, CellModel
from rtclassify.verdict.combine import Rule, join_log_probs
from rtclassify.verdict.trees import probabilities
from trainer.calibration import expected_calibration_error
from trainer.cell_model import cool, distort, export_trees, fit_trees, read_features, training_copies
from trainer.evaluate import final_split, make_folds, score_rate_strata
from trainer.labels import get_task
from trainer.metrics import score_repeats

DEV_FOLDS = 5
WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
CONFIDENCES = tuple(np.round(np.arange(0.4, 0.96, 0.05), 2))
AP_PREDICTIONS = {"dev": Path("docs/report-dev/predictions.npz"), "final": Path("docs/report/predictions.npz")}
INPUTS = ("ap+all", "ap+long_steps", "all", "long_steps", "ap")


def ap_probabilities(stage: str, task: str, specimen_ids, as_tools_give: bool = True) -> np.ndarray:
    """(R, N, K) the AP network's probabilities per repeat, from the evaluation report's saved
    out-of-fold (dev) or final-split (final) predictions, aligned to specimen_ids (NaN: absent).
    as_tools_give: as the tools hand them to a verdict, with the shipped file's output shift and temperature
    and held to its class ceilings (rtclassify.model.trust), so that the rule is chosen on what it will
    join; else raw."""
    d = np.load(AP_PREDICTIONS[stage], allow_pickle=True)
    probs, ids = d[f"cnn_{task}"], [str(s) for s in d["specimen_id"]]
    where = {s: k for k, s in enumerate(ids)}
    out = np.full((probs.shape[0], len(specimen_ids), probs.shape[2]), np.nan)
    for n, s in enumerate(specimen_ids):
        if str(s) in where:
            out[:, n] = probs[:, where[str(s)]]
    if as_tools_give:
        from rtclassify.model.file_format import load_model
        from trainer.calibration import as_file_gives

        shipped = load_model(task)
        out = np.array([shipped.trust.settle(as_file_gives(p, shipped.card), False) for p in out])
    return out


def fit_temperature_raw(raw: np.ndarray, y: np.ndarray) -> float:
    """The temperature of least log-loss for raw tree scores (N, K') against y (N,)."""
    from scipy.optimize import minimize_scalar

    def nll(t):
        p = probabilities(raw, t)
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)))

    return float(minimize_scalar(nll, bounds=(0.2, 5.0), method="bounded").x)


def joined(ap: np.ndarray | None, steps: np.ndarray | None, prior: np.ndarray, rule: Rule) -> np.ndarray:
    """(N, K) joined probabilities of per-cell AP probabilities (N, K) and step probabilities (N, K)."""
    n = len(ap) if ap is not None else len(steps)
    return np.array([join_log_probs(None if ap is None else ap[i:i + 1], None if steps is None else steps[i],
                                    prior, rule) for i in range(n)])


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1))))


def fit_model(x, y, names, n_classes, seed, distortions=None):
    return export_trees(fit_trees(*training_copies(x, y, names, seed, distortions=distortions), n_classes, seed))


LAB_WARP = 1.6  # the "lab-like" condition: a held-out rig draw's AP shape and bandwidth, read 1.6 x slower (~25 °C)


def selective(p: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share kept, accuracy of the kept) of decisions whose top probability is >= threshold."""
    keep = p.max(axis=1) >= threshold
    return float(keep.mean()), float((p[keep].argmax(1) == y[keep]).mean()) if keep.any() else float("nan")


def run_task(task_name: str, data, groups, features_csv: Path, target: float, seeds, ship: bool,
             distortions: np.ndarray, held_out_rigs: np.ndarray) -> dict:
    """distortions: (N, D, 6) the training rigs of every cell (cell_model.shape_distortions);
    held_out_rigs: (N, 6) one other draw per cell, for the lab-like condition."""
    task = get_task(task_name)
    k = len(task.classes)
    y = data.labels(task)
    x, names = read_features(features_csv, data.specimen_ids)
    family = np.array([n in FAMILY_FEATURES or n == BANDWIDTH_FEATURE for n in names])
    lab_like = cool(distort(np.where(family, x, np.nan), names, held_out_rigs), names, np.full(len(x), LAB_WARP))
    has = np.isfinite(x).any(axis=1)
    final = final_split(data, groups)
    dev, test = ~final & (y >= 0) & has, final & (y >= 0) & has
    prior = np.bincount(y[dev], minlength=k) / dev.sum()

    # 1. dev: out-of-fold raw scores, all features and long-step features only
    folds = make_folds(data, DEV_FOLDS, 1, 0, groups, cells=~final)[0]
    raw = {"all": np.full((len(y), 1 if k == 2 else k), np.nan)}
    raw["long_steps"], raw["lab_like"] = raw["all"].copy(), raw["all"].copy()
    for f in range(DEV_FOLDS):
        tr, te = dev & (folds != f), dev & (folds == f)
        trees = fit_model(x[tr], y[tr], names, k, f, distortions[tr])
        raw["all"][te] = trees.raw(x[te])
        raw["long_steps"][te] = trees.raw(np.where(family, x[te], np.nan))
        raw["lab_like"][te] = trees.raw(lab_like[te])
    temperature = fit_temperature_raw(np.concatenate([raw["all"][dev], raw["long_steps"][dev]]),
                                      np.concatenate([y[dev], y[dev]]))
    steps_dev = {m: probabilities(raw[m][dev], temperature) for m in ("all", "long_steps")}
    ap_dev = ap_probabilities("dev", task_name, data.specimen_ids)[0][dev]
    ok = np.isfinite(ap_dev).all(axis=1)
    best = None
    for w_ap in WEIGHTS:
        for w_steps in WEIGHTS:
            rule = Rule(w_ap, w_steps)
            loss = np.mean([log_loss(joined(ap_dev[ok], steps_dev[m][ok], prior, rule), y[dev][ok])
                            for m in ("all", "long_steps")])
            if best is None or loss < best[0]:
                best = (loss, rule)
    rule = best[1]
    dev_probs = {"ap+all": joined(ap_dev[ok], steps_dev["all"][ok], prior, rule),
                 "ap+long_steps": joined(ap_dev[ok], steps_dev["long_steps"][ok], prior, rule),
                 "all": steps_dev["all"][ok], "long_steps": steps_dev["long_steps"][ok], "ap": ap_dev[ok]}
    y_dev = y[dev][ok]
    # the thinnest evidence a lab's file gives (long steps alone) sets the bar for every verdict
    min_conf = next((c for c in CONFIDENCES if selective(dev_probs["long_steps"], y_dev, c)[1] >= target),
                    CONFIDENCES[-1])
    rule = Rule(rule.w_ap, rule.w_steps, float(min_conf))
    dev_probs["long_steps, lab-like rig"] = probabilities(raw["lab_like"][dev], temperature)[ok]
    dev_scores = {m: score_repeats(y_dev, p.argmax(1)[None], k, n_boot=200) for m, p in dev_probs.items()}

    # 2. final: trees on every dev cell (one per seed), the AP network's final-split probabilities
    ap_final = ap_probabilities("final", task_name, data.specimen_ids)[:, test]
    y_test = y[test]
    finals = {m: [] for m in INPUTS}
    for r, seed in enumerate(seeds):
        trees = fit_model(x[dev], y[dev], names, k, 100 + seed, distortions[dev])
        p_all = probabilities(trees.raw(x[test]), temperature)
        p_long = probabilities(trees.raw(np.where(family, x[test], np.nan)), temperature)
        ap = ap_final[r % len(ap_final)]
        finals["all"].append(p_all)
        finals["long_steps"].append(p_long)
        finals["ap"].append(ap)
        finals["ap+all"].append(joined(ap, p_all, prior, rule))
        finals["ap+long_steps"].append(joined(ap, p_long, prior, rule))
    final_scores = {}
    for m, ps in finals.items():
        s = score_repeats(y_test, np.array([p.argmax(1) for p in ps]), k, n_boot=1000)
        s["ece"] = float(np.mean([expected_calibration_error(p, y_test) for p in ps]))
        wrong_conf = [((p.max(1) >= 0.9) & (p.argmax(1) != y_test)).sum() / max(1, (p.max(1) >= 0.9).sum()) for p in ps]
        s["confident_wrong"] = float(np.mean(wrong_conf))
        s["kept_at_min_confidence"] = [float(np.mean(v)) for v in zip(*[selective(p, y_test, rule.min_confidence)
                                                                         for p in ps])]
        s["strata"] = score_rate_strata(task_name, task.classes, y_test, np.array([p.argmax(1) for p in ps]),
                                        data.fs_hz[test], n_boot=200)
        final_scores[m] = s

    summary = {"classes": list(task.classes), "n_dev": int(dev.sum()), "n_final": int(test.sum()),
               "temperature": temperature, "rule": rule.to_dict(),
               **{f"final_{m}_balanced_accuracy": round(final_scores[m]["balanced_accuracy"], 4) for m in INPUTS},
               "final_min_recall": {m: round(float(np.nanmin(final_scores[m]["recall"])), 4) for m in INPUTS}}
    summary["dev_lab_like_balanced_accuracy"] = round(dev_scores["long_steps, lab-like rig"]["balanced_accuracy"], 4)
    result = {"summary": summary, "dev": dev_scores, "final": final_scores, "features": names}
    if ship:
        labelled = (y >= 0) & has
        trees = fit_model(x[labelled], y[labelled], names, k, 0, distortions[labelled])
        card = {"trained_on": f"{int(labelled.sum())} labelled Allen Cell Types Database cells (mouse visual cortex, "
                              "34 °C, per-cell features of cell_features.csv)",
                "validated_on": "the frozen final split (one donor in 5) by trees fitted on the development cells; "
                                "temperature and rule from donor-grouped development folds",
                "temperature_c": 34.0, "figures": summary, "made_by": "python -m trainer cells"}
        prior_all = np.bincount(y[labelled], minlength=k) / labelled.sum()
        model = CellModel(task_name, task.classes, tuple(names), trees, temperature, prior_all, rule.to_dict(), card)
        model.save(SHIPPED / f"cells_{task_name}.json")
    return result


def write_report(results: dict, out: Path) -> None:
    """docs/cells/report.json (every figure) and report.md (the tables)."""
    (out / "report.json").write_text(json.dumps(results, indent=1, default=float))
    lines = ["# Cell models: figures", "", "Made by `python -m trainer cells` (see docs/cells.md for what they mean).", ""]
    for task, r in results.items():
        s = r["summary"]
        lines += [f"## {task}", "",
                  f"Development cells {s['n_dev']}, final split {s['n_final']} (cells with per-cell features). "
                  f"Temperature {s['temperature']:.3f}; rule w_ap {s['rule']['w_ap']}, w_steps {s['rule']['w_steps']}, "
                  f"uncertain below {s['rule']['min_confidence']} (the lowest confidence at which development verdicts from long "
                  "steps alone are right 95% of the time).", "",
                  "Final split (scored once; mean over 3 seeds [95% interval over cells and seeds]):", "",
                  "| evidence | accuracy | balanced accuracy | macro-F1 | ECE | wrong among p >= 0.9 | kept at min_confidence (accuracy) | "
                  + " | ".join(f"recall {c}" for c in s["classes"]) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(s["classes"])]
        for m in INPUTS:
            f = r["final"][m]
            ci = f["ci95"]
            lines.append(f"| {m} | {f['accuracy']:.3f} | {f['balanced_accuracy']:.3f} [{ci['balanced_accuracy'][0]:.2f}, "
                         f"{ci['balanced_accuracy'][1]:.2f}] | {f['macro_f1']:.3f} | {f['ece']:.3f} | "
                         f"{f['confident_wrong']:.3f} | {f['kept_at_min_confidence'][0]:.2f} "
                         f"({f['kept_at_min_confidence'][1]:.3f}) | "
                         + " | ".join(f"{v:.2f}" for v in f["recall"]) + " |")
            for stratum, st in f["strata"].items():
                lines.append(f"| ↳ {stratum} (n {st['n']}) | {st['accuracy']:.3f} | {st['balanced_accuracy']:.3f} | "
                             f"{st['macro_f1']:.3f} | | | | " + " | ".join("" if v != v else f"{v:.2f}" for v in st["recall"])
                             + " |")
        lines += ["", "Development folds (out-of-fold, donor-grouped; where the rule was chosen; the lab-like row: long-step "
                  "features through one held-out rig draw per cell (its bandwidth and AP shape) and read 1.6 times "
                  "slower, as at ~25 °C undeclared):", "",
                  "| evidence | balanced accuracy | macro-F1 |", "|---|---|---|"]
        for m, d in r["dev"].items():
            lines.append(f"| {m} | {d['balanced_accuracy']:.3f} | {d['macro_f1']:.3f} |")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n")
