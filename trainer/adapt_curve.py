"""How many labelled cells of a lab's own rig an adaptation needs (`python -m trainer adapt-curve`).

The lab is simulated: the cells a held-out sibling never trained on (the final and calibration splits) are
recorded through one rig (trainer.rigs.Condition, by default 25 °C, 50 kHz, 10 kHz filter, temperature
declared) and written as a labelled cells.csv folder. For each number of cells per class and seed, that
many cells of each class are drawn as the lab's labelled cells, `python -m trainer adapt`'s code adapts
the model on them, and `rtclassify predict`'s code scores the adapted file on all the other cells.
Rows 0: the base model, told the temperature; "not told": the base model without temperature_c.
"""
import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trainer.metrics import balanced_accuracy_and_macro_f1


def subset_folder(src: Path, dst: Path, ids: set, drop_temperature: bool = False) -> None:
    """A cells.csv folder holding the rows of `src` whose specimen_id is in ids (traces linked)."""
    (dst / "traces").mkdir(parents=True)
    with open(src / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    with open(dst / "cells.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            if r["specimen_id"] in ids:
                if drop_temperature:
                    r = {**r, "temperature_c": ""}
                w.writerow(r)
                (dst / "traces" / f"{r['specimen_id']}.npy").symlink_to((src / "traces" / f"{r['specimen_id']}.npy").resolve())


def score_folder(model_path, folder: Path, truth: dict, classes: list) -> dict:
    """rtclassify predict's code on `folder` (trainer.rig_report.predict_rows), scored against truth
    {specimen_id: class name} on the rows it classified."""
    from rtclassify.model.file_format import load_model
    from trainer.rig_report import predict_rows

    run = predict_rows(load_model(str(model_path)), folder)
    ok = ~run["refused"]
    y = np.array([classes.index(truth[sid]) for sid in run["specimen_ids"][ok]])
    ba, f1 = balanced_accuracy_and_macro_f1(y, run["probs"][ok].argmax(axis=1), len(classes))
    return {"balanced_accuracy": round(float(ba), 4), "macro_f1": round(float(f1), 4), "n_test": int(ok.sum())}


def run_adapt_curve(model: str, task_name: str, data_dir, metadata_dir, condition, sizes, seeds: int,
                    out_dir: Path, min_test: int = 3, options: dict | None = None) -> dict:
    """The learning curve of adaptation; writes out_dir/adapt_curve.json, .md and .png."""
    from tqdm import tqdm

    from trainer.adapt import AdaptConfig, adapt_model
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split
    from trainer.labels import get_task
    from trainer.rigs import family_ratios, write_condition_folder

    task = get_task(task_name)
    classes = list(task.classes)
    data = load(data_dir, 50_000.0)
    final, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
    y = data.labels(task)
    g5 = get_task("genetic5")
    ratios = family_ratios(list(g5.classes), data.labels(g5), data.dendrite_types)
    idx = np.flatnonzero((final | calibration) & (y >= 0))
    truth = {data.specimen_ids[i]: classes[y[i]] for i in idx}
    results = {"meta": {"model": model, "task": task_name, "rig": condition.name, "seeds": seeds,
                        "options": options or {},
                        "lab_cells": {c: int(np.sum(y[idx] == k)) for k, c in enumerate(classes)}}, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp) / "lab"
        write_condition_folder(lab, condition, [data.traces[i] for i in idx], data.fs_hz[idx], data.specimen_ids[idx],
                               ratios[idx], seed=11, labels=[classes[y[i]] for i in idx])
        for told, name in ((False, "not told"), (True, "0")):
            folder = Path(tmp) / f"base-{told}"
            subset_folder(lab, folder, set(truth), drop_temperature=not told)
            results["rows"].append({"cells_per_class": name, **score_folder(model, folder, truth, classes)})
        by_class = {c: [sid for sid, t in truth.items() if t == c] for c in classes}
        for n in tqdm(sizes, desc="cells per class"):
            runs = []
            for seed in range(seeds):
                rng = np.random.default_rng(1000 * n + seed)
                chosen = set()
                for c, ids in by_class.items():
                    take = min(n, len(ids) - min_test)  # leave every class some cells to score
                    chosen |= set(rng.choice(sorted(ids), size=max(take, 0), replace=False))
                work = Path(tmp) / f"n{n}-s{seed}"
                subset_folder(lab, work / "adapt", chosen)
                subset_folder(lab, work / "test", set(truth) - chosen)
                adapt_model(model, work / "adapt", work / "adapted.pt", AdaptConfig(seed=seed, folds=0, **(options or {})))
                runs.append(score_folder(work / "adapted.pt", work / "test", truth, classes))
                shutil.rmtree(work)
            ba = [r["balanced_accuracy"] for r in runs]
            f1 = [r["macro_f1"] for r in runs]
            results["rows"].append({"cells_per_class": n, "balanced_accuracy": round(float(np.mean(ba)), 4),
                                    "balanced_accuracy_sd": round(float(np.std(ba)), 4),
                                    "balanced_accuracy_range": [min(ba), max(ba)],
                                    "macro_f1": round(float(np.mean(f1)), 4), "n_test": runs[0]["n_test"],
                                    "runs": runs})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapt_curve.json").write_text(json.dumps(results, indent=1))
    (out_dir / "adapt_curve.md").write_text(render(results))
    plot(results, out_dir / "adapt_curve.png")
    return results


def render(results: dict) -> str:
    m = results["meta"]
    lines = [f"# Adapting {m['model']} to one lab's rig: {m['rig']}", "",
             f"Lab cells (never trained on by the shipped model): {m['lab_cells']}. {m['seeds']} seeds per size; "
             "each seed draws other labelled cells and scores the adapted file on all the rest.", "",
             "| labelled cells per class | balanced accuracy (mean ± s.d. over seeds) | range | macro-F1 | cells scored |",
             "|---|---|---|---|---|"]
    for r in results["rows"]:
        if "balanced_accuracy_sd" in r:
            lines.append(f"| {r['cells_per_class']} | {r['balanced_accuracy']:.3f} ± {r['balanced_accuracy_sd']:.3f} | "
                         f"{r['balanced_accuracy_range'][0]:.3f}-{r['balanced_accuracy_range'][1]:.3f} | "
                         f"{r['macro_f1']:.3f} | {r['n_test']} |")
        else:
            label = "0 (base model, temperature told)" if r["cells_per_class"] == "0" else "0 (base model, temperature not told)"
            lines.append(f"| {label} | {r['balanced_accuracy']:.3f} | | {r['macro_f1']:.3f} | {r['n_test']} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if "balanced_accuracy_sd" in r]
    base = {r["cells_per_class"]: r["balanced_accuracy"] for r in results["rows"] if "balanced_accuracy_sd" not in r}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    n = [r["cells_per_class"] for r in rows]
    ax.errorbar(n, [r["balanced_accuracy"] for r in rows], yerr=[r["balanced_accuracy_sd"] for r in rows],
                marker="o", capsize=3, label="adapted (mean ± s.d. over seeds)")
    ax.axhline(base["0"], color="gray", ls="--", label="base, temperature told")
    ax.axhline(base["not told"], color="red", ls=":", label="base, temperature not told")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(v) for v in n])
    ax.set_xlabel("labelled cells per class")
    ax.set_ylabel("balanced accuracy")
    ax.set_title(results["meta"]["rig"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
