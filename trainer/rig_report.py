"""The rig-stratified report (`python -m trainer rigs`): held-out cells through each condition of
trainer.rigs.REPORT_CONDITIONS, written as the cells.csv folder a lab would have, classified by
`rtclassify predict`'s own code (rtclassify.offline.predict.predict_folder: temperature warp, refusals
and envelope included), scored per condition: balanced accuracy, macro-F1, accuracy, per-class recall,
ECE, with 95% intervals over cells and model seeds, and how many rows were refused or flagged outside."""
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from trainer.calibration import CONFIDENT, confident_wrong, expected_calibration_error, risk_coverage
from trainer.metrics import score_repeats

HEADLINE = ("balanced_accuracy", "macro_f1", "accuracy")
RISK_THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.02), 2)  # top-probability thresholds of the risk-coverage curves


def run_rig_report(models: dict, data_dir, metadata_dir, cells: str, out_dir: Path, seed: int, n_boot: int,
                   write_cards: bool, held: np.ndarray | None = None, data=None, card_to: dict | None = None) -> dict:
    """models: {task: [model file or built-in name, ...]}; cells: "final" or "calibration" (the split
    scored), or any name when `held` ((N,) bool over data's cells) says which. Writes out_dir/rigs.json
    and rigs.md; returns the results. card_to: {task: [file, ...]}, files trained on every cell (the
    shipped ones) that carry the scored siblings' figures in their cards too (with write_cards)."""
    from tqdm import tqdm

    from rtclassify.model.file_format import load_model
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split
    from trainer.labels import get_task
    from trainer.rigs import REPORT_CONDITIONS, family_ratios, write_condition_folder

    data = load(data_dir, 50_000.0) if data is None else data
    if held is None:
        final, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
        held = final if cells == "final" else calibration
    results = {"meta": {"cells": cells, "seed": seed, "data": str(data_dir), "models": models,
                        "conditions": [c.name for c in REPORT_CONDITIONS]}, "tasks": {}}
    loaded = {task: [load_model(m) for m in files] for task, files in models.items()}
    g5 = get_task("genetic5")
    ratios = family_ratios(list(g5.classes), data.labels(g5), data.dendrite_types)  # the rig widens by family
    idx = np.flatnonzero(held)
    declared = {}  # task -> [(runs, y)] of every condition whose rig is declared
    with tempfile.TemporaryDirectory() as tmp:
        for c_i, condition in enumerate(tqdm(REPORT_CONDITIONS, desc="conditions", unit="rig")):
            folder = Path(tmp) / f"c{c_i}"
            write_condition_folder(folder, condition, [data.traces[i] for i in idx], data.fs_hz[idx],
                                   data.specimen_ids[idx], ratios[idx], seed + c_i)
            for task_name, nets in loaded.items():
                task = get_task(task_name)
                y = data.labels(task)[idx]
                runs = [predict_rows(m, folder) for m in nets]
                results["tasks"].setdefault(task_name, {})[condition.name] = score_condition(
                    runs, y, list(task.classes), n_boot, seed, task_name, data.fs_hz[idx])
                if "not told" not in condition.name:  # a rig declared as it is: pooled into one calibration figure
                    declared.setdefault(task_name, []).append((runs, y))
    results["pooled_ece"] = {task: pooled_ece(pairs) for task, pairs in declared.items()}
    results["pooled_confident_wrong"] = {task: pooled_confident_wrong(rows) for task, rows in results["tasks"].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rigs.json").write_text(json.dumps(results, indent=1))
    (out_dir / "rigs.md").write_text(render_markdown(results))
    plot_risk_coverage(results, out_dir / "risk_coverage.png")
    if write_cards:
        write_figures_to_cards(results, models, card_to or {})
    return results


def predict_rows(model, folder: Path) -> dict:
    """rtclassify predict on `folder`: {"specimen_ids": (N,) str, "probs": (N, K) NaN where refused,
    "refused": (N,) bool, "outside": (N,) bool, "reasons": {reason: count}}, rows in cells.csv's order."""
    from rtclassify.offline.predict import predict_folder

    out = folder / f"pred-{model.sha256[:8]}.csv"
    predict_folder(model, folder, out)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(r[f"p_{c}"]) if r["label"] else np.nan for c in model.classes] for r in rows])
    refused = np.array([not r["label"] for r in rows])
    outside = np.array([bool(r["label"]) and r["envelope"] != "inside" for r in rows])
    reasons = {}  # the first reason of each refused or outside row: errors by their field, envelopes whole
    for r in rows:
        if not r["label"]:
            key = r["error"].split(":")[0]
        elif r["envelope"] != "inside":
            key = r["envelope"].split(";")[0]
        else:
            continue
        reasons[key] = reasons.get(key, 0) + 1
    return {"specimen_ids": np.array([r["specimen_id"] for r in rows]), "probs": probs, "refused": refused,
            "outside": outside, "reasons": reasons}


def scored_rows(runs: list, y: np.ndarray) -> np.ndarray:
    """(N,) bool: the task's cells (y >= 0) that no model seed refused, the rows a condition is scored on."""
    return (y >= 0) & ~np.any([r["refused"] for r in runs], axis=0)


def score_condition(runs: list, y: np.ndarray, classes: list, n_boot: int, seed: int, task_name: str | None = None,
                    native_fs_hz: np.ndarray | None = None) -> dict:
    """Scores of one condition over the task's cells (y >= 0), one run per model seed; given the task's
    name and each cell's native rate (N,), also the balanced accuracy [95%] within each rate stratum
    (trainer.evaluate.score_rate_strata: the Allen data's sampling-rate confound)."""
    task_cells = y >= 0
    refused = np.mean([r["refused"][task_cells].mean() for r in runs])
    outside = np.mean([r["outside"][task_cells].mean() for r in runs])
    out = {"n": int(task_cells.sum()), "refused_share": round(float(refused), 4),
           "outside_share": round(float(outside), 4), "reasons": runs[0]["reasons"]}
    ok = scored_rows(runs, y)
    if ok.sum() < 2:
        return out
    preds = np.stack([r["probs"][ok].argmax(axis=1) for r in runs])
    scores = score_repeats(y[ok], preds, len(classes), n_boot=n_boot, seed=seed)
    eces = [expected_calibration_error(r["probs"][ok], y[ok]) for r in runs]
    out.update({k: round(scores[k], 4) for k in HEADLINE})
    out["ci95"] = {k: [round(v, 4) for v in scores["ci95"][k]] for k in HEADLINE}
    out["seed_sd"] = {k: round(scores["repeat_sd"][k], 4) for k in HEADLINE}
    out["recall"] = {c: round(v, 4) for c, v in zip(classes, scores["recall"])}
    wrong = [confident_wrong(r["probs"][ok], y[ok]) for r in runs]  # summed over the seeds' answers
    answers, n_wrong = sum(w["answers"] for w in wrong), sum(w["wrong"] for w in wrong)
    out["confident_wrong"] = {"at": CONFIDENT, "answers": answers, "wrong": n_wrong,
                              "rate": round(n_wrong / answers, 4) if answers else None,
                              "coverage": round(answers / (len(runs) * int(ok.sum())), 4)}
    out["risk_coverage"] = risk_coverage(np.concatenate([r["probs"][ok] for r in runs]), np.tile(y[ok], len(runs)),
                                         RISK_THRESHOLDS)
    strata = {}
    if task_name is not None:
        from trainer.evaluate import score_rate_strata

        strata = score_rate_strata(task_name, classes, y[ok], preds, native_fs_hz[ok], n_boot, seed)
    out["rate_strata"] = {name: {"n": s["n"], "balanced_accuracy": round(s["balanced_accuracy"], 4),
                                 "ci95": [round(v, 4) for v in s["ci95"]["balanced_accuracy"]]}
                          for name, s in strata.items()}
    out["ece"] = round(float(np.mean(eces)), 4)
    out["ece_max_seed"] = round(float(np.max(eces)), 4)
    out["scored"] = int(ok.sum())
    out["seeds"] = len(runs)
    return out


def pooled_ece(pairs: list) -> dict:
    """ECE over the rows of every declared condition together, per model seed: pairs = [(runs, y)], one
    per condition (runs as score_condition's, one per seed); refused rows, cells outside the task and
    conditions refused whole left out. Returns the mean over seeds, the worst seed, the rows per seed and
    the conditions pooled."""
    kept = []
    for runs, y in pairs:
        ok = scored_rows(runs, y)
        if ok.any():
            kept.append((runs, y, ok))
    labels = np.concatenate([y[ok] for _, y, ok in kept])
    eces = [expected_calibration_error(np.concatenate([runs[s]["probs"][ok] for runs, _, ok in kept]), labels)
            for s in range(len(kept[0][0]))]
    return {"ece": round(float(np.mean(eces)), 4), "ece_max_seed": round(float(np.max(eces)), 4),
            "rows_per_seed": len(labels), "conditions": len(kept)}


def pooled_confident_wrong(rows: dict) -> dict:
    """The confident-wrong rate of trainer.trust.CONFIDENCE_CONDITIONS' answers together, and the worst
    one of them (rows: {condition: score_condition's result})."""
    from trainer.trust import CONFIDENCE_CONDITIONS

    scored = {n: rows[n]["confident_wrong"] for n in CONFIDENCE_CONDITIONS if "confident_wrong" in rows.get(n, {})}
    answers, wrong = sum(c["answers"] for c in scored.values()), sum(c["wrong"] for c in scored.values())
    rates = {n: c["rate"] for n, c in scored.items() if c["rate"] is not None}
    worst = max(rates, key=rates.get) if rates else None
    return {"conditions": list(scored), "answers": answers, "wrong": wrong,
            "rate": round(wrong / answers, 4) if answers else None,
            "worst": {"condition": worst, "rate": rates.get(worst)} if worst else None}


def plot_risk_coverage(results: dict, path: Path) -> None:
    """One panel per task: error of the answers kept against the share kept, as the top-probability
    threshold rises, one line per condition (the confident-wrong conditions drawn bold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.trust import CONFIDENCE_CONDITIONS

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for name, r in results["tasks"][task].items():
            if "risk_coverage" not in r:
                continue
            c = r["risk_coverage"]
            bold = name in CONFIDENCE_CONDITIONS
            ax.plot(c["coverage"], c["error"], lw=2.0 if bold else 0.7, alpha=1.0 if bold else 0.5,
                    label=name if bold else None)
            at = c["threshold"].index(CONFIDENT) if CONFIDENT in c["threshold"] else None
            if bold and at is not None:
                ax.plot(c["coverage"][at], c["error"][at], "o", color=ax.lines[-1].get_color())
        ax.axhline(0.03, color="k", ls=":", lw=0.8)
        ax.set(xlabel="share of answers kept (coverage)", ylabel="share of kept answers wrong",
               title=f"{task}: dots at top p >= {CONFIDENT:g}", xlim=(0, 1), ylim=(0, None))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# Rig-stratified figures ({meta['cells']} split)", "",
             "Made by `python -m trainer rigs " + " ".join(f"--model {t}={m}" for t, ms in meta["models"].items()
                                                       for m in ms) + f" --cells {meta['cells']}`.",
             "Each held-out cell's stored AP recorded through the condition's rig (trainer/rigs.py; filters are "
             "4-pole Bessel unless said), written as a cells.csv folder and classified by `rtclassify predict`'s "
             "code. Intervals: 95% over cells and model seeds; ECE: 10 bins of the top probability; confident "
             f"wrong: of the answers with top probability >= {CONFIDENT:g}, the share wrong (wrong / such answers, "
             "over the seeds), and the share of answers that confident (coverage). Risk-coverage curves: "
             "risk_coverage.png.", ""]
    for task, rows in results["tasks"].items():
        classes = next((list(r["recall"]) for r in rows.values() if "recall" in r), [])
        lines += [f"## {task}", "",
                  "| condition | balanced accuracy [95%] | macro-F1 | accuracy | ECE | confident wrong | coverage | "
                  + " | ".join(f"recall {c}" for c in classes) + " | refused | outside |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(classes) + "---|---|"]
        for name, r in rows.items():
            if "balanced_accuracy" not in r:
                lines.append(f"| {name} | refused | | | | | | " + " | " * len(classes)
                             + f"{r['refused_share']:.0%} | {r['outside_share']:.0%} |")
                continue
            ci = r["ci95"]["balanced_accuracy"]
            lines.append(f"| {name} | {r['balanced_accuracy']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | {r['macro_f1']:.3f} | "
                         f"{r['accuracy']:.3f} | {r['ece']:.3f} | {format_wrong(r['confident_wrong'])} | "
                         f"{r['confident_wrong']['coverage']:.0%} | "
                         + " | ".join(f"{r['recall'][c]:.2f}" for c in classes)
                         + f" | {r['refused_share']:.0%} | {r['outside_share']:.0%} |")
        strata = next((list(r["rate_strata"]) for r in rows.values() if r.get("rate_strata")), [])
        if strata:
            lines += ["", "Balanced accuracy [95%] within each native rate of the Allen cells (each rate's own "
                          "classes: the sampling-rate confound, docs/models.md):", "",
                      "| condition | " + " | ".join(strata) + " |", "|---|" + "---|" * len(strata)]
            for name, r in rows.items():
                if r.get("rate_strata"):
                    cells = [r["rate_strata"][s] for s in strata]
                    lines.append(f"| {name} | " + " | ".join(
                        f"{c['balanced_accuracy']:.3f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}] (n {c['n']})"
                        for c in cells) + " |")
        pooled = results.get("pooled_ece", {}).get(task)
        if pooled:
            lines += ["", f"Pooled over the {pooled['conditions']} scored conditions whose rig is declared "
                          f"({pooled['rows_per_seed']} rows per seed): ECE {pooled['ece']:.3f} (worst seed "
                          f"{pooled['ece_max_seed']:.3f})."]
        cw = results.get("pooled_confident_wrong", {}).get(task)
        if cw and cw["answers"]:
            lines += ["", f"Confident wrong pooled over {', '.join(cw['conditions'])}: {cw['rate']:.1%} "
                          f"({cw['wrong']} of {cw['answers']} answers with top probability >= {CONFIDENT:g}); the "
                          f"worst of them {cw['worst']['condition']}, {cw['worst']['rate']:.1%}."]
        lines.append("")
    return "\n".join(lines)


def format_wrong(c: dict) -> str:
    """'2.4% (3/125)', or '- (0/0)' when no answer was that confident."""
    return f"{c['rate']:.1%} ({c['wrong']}/{c['answers']})" if c["answers"] else "- (0/0)"


def write_figures_to_cards(results: dict, models: dict, card_to: dict) -> None:
    """Each model file's card, and each of card_to's (files of the same recipe trained on every cell):
    `envelope.figures` (balanced accuracy and ECE per condition) and `evaluation` (the as-recorded figures
    with intervals and per-class recall, the protocol)."""
    from rtclassify.model.file_format import load_model, update_card

    for task, rows in results["tasks"].items():
        files = models.get(task, [])
        figures = {name: ({"balanced_accuracy": r["balanced_accuracy"], "ece": r["ece"], "n": r["scored"],
                           "confident_wrong": r["confident_wrong"]["rate"], "coverage_at_0.9": r["confident_wrong"]["coverage"]}
                          if "balanced_accuracy" in r else {"refused_share": r["refused_share"]})
                   for name, r in rows.items()}
        recorded = rows["as recorded"]
        evaluation = {"protocol": f"the {results['meta']['cells']} split (never trained on), scored through "
                                  f"`python -m trainer rigs`, {recorded['seeds']} training seeds of this recipe",
                      "pooled": {k: recorded[k] for k in ("balanced_accuracy", "macro_f1", "accuracy", "recall",
                                                          "ci95", "seed_sd", "ece", "n", "confident_wrong")},
                      "report": "docs/rigs/rigs.md"}
        siblings = {"protocol": f"the {results['meta']['cells']} split, scored through `python -m trainer rigs`: "
                                f"{recorded['seeds']} training seeds of this recipe trained without that split "
                                "(held-out siblings); this file, the same recipe trained on every labelled cell (that "
                                "split included), has no held-out cells of its own and is expected to do at least as "
                                "well"}
        for path, extra in [(f, {}) for f in files] + [(f, siblings) for f in card_to.get(task, [])]:
            envelope = dict(load_model(path).card.get("envelope") or {})
            envelope["figures"] = {"split": results["meta"]["cells"], "report": "docs/rigs/rigs.md",
                                   "conditions": figures, "pooled_declared_ece": results.get("pooled_ece", {}).get(task),
                                   "pooled_confident_wrong": results.get("pooled_confident_wrong", {}).get(task)}
            update_card(path, {"envelope": envelope, "evaluation": {**evaluation, **extra}})
