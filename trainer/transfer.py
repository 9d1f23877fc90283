"""The published sampling-rate transfer: a model trained on cells recorded at one rate, adapted to
cells recorded at another with a fraction of them, against training from scratch on that fraction.

All windows are at the model rate (anti-aliased resampling), so what transfers is the recording
rate's signature (amplifier filter, digitisation), the confound described in
../shared/data/README.md. Per repeat: the target-rate cells are split in half, stratified by
class; one half is the test set, and the training fractions are drawn from the other half.
"""
from dataclasses import replace

import numpy as np

from trainer.fit import TrainConfig, fit_network, predict_proba
from trainer.labels import Task


def stratified_halves(idx: np.ndarray, y: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Split cell indices idx into (pool, test) halves with every class on both sides."""
    pool, test = [], []
    for c in np.unique(y[idx]):
        members = rng.permutation(idx[y[idx] == c])
        half = len(members) // 2
        test.extend(members[:half])
        pool.extend(members[half:])
    return np.array(pool, dtype=int), np.array(test, dtype=int)


def stratified_take(pool: np.ndarray, y: np.ndarray, fraction: float, rng) -> np.ndarray:
    """About fraction of the pool, per class, at least 2 cells of each class."""
    out = []
    for c in np.unique(y[pool]):
        members = rng.permutation(pool[y[pool] == c])
        out.extend(members[:max(2, int(round(fraction * len(members))))])
    return np.array(out, dtype=int)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def run_transfer(data, task: Task, source_rate: float, target_rate: float, fractions, repeats: int,
                 cfg: TrainConfig, finetune_epochs: int, seed: int = 0, progress=None) -> dict:
    """Balanced accuracy on held-out target-rate cells: zero-shot, fine-tuned and from scratch per fraction."""
    y = data.labels(task)
    k = len(task.classes)
    src = np.flatnonzero((data.fs_hz == source_rate) & (y >= 0))
    tgt = np.flatnonzero((data.fs_hz == target_rate) & (y >= 0))
    if len(src) < 4 or len(tgt) < 8:
        raise ValueError(f"{task.name}: {len(src)} cells at {source_rate:g} Hz and {len(tgt)} at {target_rate:g} Hz; "
                         "need at least 4 and 8")
    tune = replace(cfg, max_epochs=finetune_epochs, patience=min(cfg.patience, finetune_epochs))
    rows = {"zero_shot": [], **{f"transfer_{f:g}": [] for f in fractions}, **{f"scratch_{f:g}": [] for f in fractions}}
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        base = fit_network(data.windows[src], y[src], k, data.spec.fs_hz, cfg, seed + r).model
        pool, test = stratified_halves(tgt, y, rng)

        def score(net):
            return balanced_accuracy(y[test], predict_proba([net], data.windows[test]).argmax(axis=1))

        rows["zero_shot"].append(score(base))
        for f in fractions:
            sub = stratified_take(pool, y, f, rng)
            tuned = fit_network(data.windows[sub], y[sub], k, data.spec.fs_hz, tune, seed + 100 + r, init=base).model
            scratch = fit_network(data.windows[sub], y[sub], k, data.spec.fs_hz, cfg, seed + 200 + r).model
            rows[f"transfer_{f:g}"].append(score(tuned))
            rows[f"scratch_{f:g}"].append(score(scratch))
            if progress:
                progress(r, f)
    summary = {name: {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v)), 4), "values": v}
               for name, v in rows.items()}
    return {"task": task.name, "source_rate_hz": source_rate, "target_rate_hz": target_rate,
            "fractions": list(fractions), "repeats": repeats, "source_cells": int(len(src)),
            "target_cells": int(len(tgt)), "finetune_epochs": finetune_epochs, "config": cfg.to_dict(),
            "balanced_accuracy": summary}


def render_markdown(res: dict) -> str:
    b = res["balanced_accuracy"]
    lines = [f"# Sampling-rate transfer: {res['source_rate_hz'] / 1000:g} kHz -> {res['target_rate_hz'] / 1000:g} kHz "
             f"({res['task']})", "",
             f"{res['source_cells']} source cells, {res['target_cells']} target cells (half held out for testing in "
             f"each of {res['repeats']} repeats); balanced accuracy on the held-out target cells, mean ± sd.", "",
             f"Zero-shot (source model unchanged): {b['zero_shot']['mean']} ± {b['zero_shot']['sd']}", "",
             "| fraction of target training cells | fine-tuned from the source model | from scratch |", "|---|---|---|"]
    for f in res["fractions"]:
        t, s = b[f"transfer_{f:g}"], b[f"scratch_{f:g}"]
        lines.append(f"| {f:g} | {t['mean']} ± {t['sd']} | {s['mean']} ± {s['sd']} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, f = res["balanced_accuracy"], res["fractions"]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    for name, label, style in (("transfer", "fine-tuned from the source model", "o-"), ("scratch", "from scratch", "s--")):
        m = [b[f"{name}_{x:g}"]["mean"] for x in f]
        sd = [b[f"{name}_{x:g}"]["sd"] for x in f]
        ax.errorbar(f, m, yerr=sd, fmt=style, capsize=3, label=label)
    ax.axhline(b["zero_shot"]["mean"], color="grey", ls=":", label="zero-shot")
    ax.set_xlabel(f"fraction of {res['target_rate_hz'] / 1000:g} kHz training cells")
    ax.set_ylabel("balanced accuracy")
    ax.set_title(f"{res['source_rate_hz'] / 1000:g} → {res['target_rate_hz'] / 1000:g} kHz ({res['task']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
