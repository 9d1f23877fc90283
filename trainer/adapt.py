"""Adapting a shipped model to a lab's own rig from a few labelled cells (`python -m trainer adapt`).

The lab's cells (a cells.csv folder with a `label` column) are read exactly as `rtclassify predict`
reads them (declared filter and temperature, temperature warp), so the adapted model learns the
windows it will be given. Few cells call for restraint: only the dense head (w1, b1, w2, b2 of the
folded network) learns, its convolutional features stay the base model's; the loss is class-balanced
and pulls the weights back towards the base model's (L2-SP), over a fixed, small number of epochs on
jittered copies of the cells. With at least 2 cells of every class, stratified cross-validation over
the lab's cells measures the base and the adapted model on cells the adaptation did not see, and
its out-of-fold probabilities fit the adapted file's temperature (with >= 20 cells; else calibration
is marked unknown).
"""
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

HEAD = ("w1", "b1", "w2", "b2")  # the folded network's dense layers (rtclassify.model.folding.FoldedCNN)


@dataclass(frozen=True)
class AdaptConfig:
    """Options of one adaptation (stored in the adapted card)."""

    epochs: int = 60
    copies: int = 16  # jittered copies of each cell per epoch (peak shift +-1 sample, gain 3%, 1 mV, 0.2 mV noise)
    lr: float = 3e-3
    anchor: float = 0.1  # weight of the pull towards the base model's head weights (L2-SP); 0.01 and 1.0 measured
    # beside it (docs/adapt.md)
    prior: str = "base"  # the class prior the adapted head keeps: "base" (the base model's, from its training
    # cells and logit adjustment: the lab's labelled cells are chosen per class, not as they come) or "lab"
    # (the labelled cells' own class shares, usually equal: maximises balanced accuracy, costs precision)
    folds: int = 5  # cross-validation folds over the lab's cells (fewer when a class has fewer cells); 0: none
    # (the learning curve, which scores on cells of its own)
    seed: int = 0


def read_lab_cells(folder: Path, model) -> tuple[np.ndarray, np.ndarray, list, dict]:
    """(windows (N, L) mV, labels (N,) class index, rows used, summary) of a lab's cells.csv folder with
    a `label` column of the model's class names, read as predict reads them. ValueError naming the
    file, row and value for a missing column, an unknown label, or when no cell can be used."""
    from rtclassify.dsp.temperature import warp_factor
    from rtclassify.formats.spike_folder import CellError, load_cell_window, read_cells_table
    from rtclassify.offline.predict import declared_rig

    rows = read_cells_table(folder)
    if "label" not in rows[0].columns if rows else True:
        raise ValueError(f"{folder}/cells.csv: adaptation needs a 'label' column holding the model's class names "
                         f"({', '.join(model.classes)})")
    windows, labels, used, skipped = [], [], [], {}
    for row in rows:
        name = (row.columns.get("label") or "").strip()
        if name not in model.classes:
            raise ValueError(f"{folder}/cells.csv: cell {row.specimen_id} has label {name!r}; "
                             f"{model.name} knows {model.classes}")
        try:
            rig = declared_rig(row)
            windows.append(load_cell_window(folder, row, model.spec, warp_factor(rig.temperature_c)))
        except CellError as exc:
            skipped[row.specimen_id] = str(exc)
            continue
        labels.append(model.classes.index(name))
        used.append(row)
    if not windows:
        raise ValueError(f"{folder}: no usable cell ({len(skipped)} refused, e.g. {next(iter(skipped.items()), '')})")
    y = np.array(labels)
    summary = {"n_cells": len(y), "per_class": {c: int(np.sum(y == k)) for k, c in enumerate(model.classes)},
               "skipped": skipped, **rig_summary(used)}
    return np.stack(windows), y, used, summary


def rig_summary(rows) -> dict:
    """The rates, filters and temperatures the lab's cells declare."""
    def values(column):
        return sorted({r.columns.get(column) or "not declared" for r in rows})

    return {"fs_hz": sorted({float(r.fs_hz) for r in rows}), "filter_hz": values("filter_hz"),
            "temperature_c": values("temperature_c")}


def jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, L) windows with a random +-1 sample shift, 3% gain, 1 mV offset and 0.2 mV noise each."""
    b = x.shape[0]
    shift = torch.randint(-1, 2, (1,), generator=gen).item()
    x = torch.roll(x, shift, dims=1) if shift else x
    return (x * (1 + 0.03 * torch.randn(b, 1, generator=gen)) + torch.randn(b, 1, generator=gen)
            + 0.2 * torch.randn(x.shape, generator=gen))


def fine_tune(module, x: np.ndarray, y: np.ndarray, n_classes: int, cfg: AdaptConfig, base_log_prior=None):
    """A copy of the folded scripted `module` whose head is fine-tuned on windows x (N, L) mV, labels y (N,).
    base_log_prior: (K,) log class prior of the base model; with cfg.prior "base" the output bias is
    moved from the labelled cells' class shares back to it after training (label-shift correction)."""
    net = copy_script(module)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [getattr(net, name) for name in HEAD]
    start = [p.detach().clone() for p in params]
    for p in params:
        p.requires_grad_(True)
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = torch.tensor(np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0),
                           dtype=torch.float32)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(y).long()
    xt, yt = xt.repeat(cfg.copies, 1), yt.repeat(cfg.copies)
    for _ in range(cfg.epochs):
        logp = torch.log(net(jitter(xt, gen)).clamp_min(1e-8))
        loss = torch.nn.functional.nll_loss(logp, yt, weight=weights)
        loss = loss + cfg.anchor * sum(((p - s) ** 2).sum() for p, s in zip(params, start))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    if cfg.prior == "base" and base_log_prior is not None:
        shares = np.maximum(counts / counts.sum(), 1e-3)
        with torch.no_grad():  # the head's softmax output is the last layer: its bias carries the prior
            net.b2 += torch.tensor(base_log_prior - np.log(shares), dtype=net.b2.dtype)
    # a fresh copy: TorchScript's executor, having profiled the graph with gradients, refuses the
    # inference-mode calls of predict and of the model-file writer's verification
    return copy_script(net).eval()


def copy_script(module):
    """An independent copy of a scripted module (its own weights and executor state)."""
    import io

    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def base_log_prior(card: dict, classes: list) -> np.ndarray | None:
    """(K,) log class prior (up to a constant) the base model decides with, from its card: training
    class counts raised to (1 - balance_power) for the class-weighted loss, less logit_adjust for the
    output shift (trainer.fit), plus the file's own output shift (card `output_shift`); None when the card
    does not say."""
    from rtclassify.model.file_format import output_shift

    arch, data = card.get("architecture", {}), card.get("training_data", {})
    counts = data.get("per_class")
    if not counts or any(c not in counts for c in classes):
        return None
    power = (1.0 - arch.get("balance_power", 1.0) if arch.get("balance", True) else 1.0) - arch.get("logit_adjust", 0.0)
    freq = np.array([counts[c] for c in classes], dtype=float)
    shift = dict(zip(card["classes"], output_shift(card)))
    return power * np.log(np.maximum(freq / freq.sum(), 1e-6)) + np.array([shift.get(c, 0.0) for c in classes])


def probabilities(net, x: np.ndarray) -> np.ndarray:
    """(N, K) probabilities of `net` on windows x (N, L) mV. no_grad, not inference_mode: TorchScript
    refuses inference tensors in a graph it profiled with gradients (fine_tune's)."""
    with torch.no_grad():
        return net(torch.from_numpy(np.asarray(x, np.float32))).double().numpy()


def cross_validate(module, x: np.ndarray, y: np.ndarray, n_classes: int, cfg: AdaptConfig,
                   prior=None) -> dict | None:
    """Out-of-fold figures of the base and the adapted model on the lab's cells (stratified folds),
    None when a class present has fewer than 2 cells."""
    from sklearn.model_selection import StratifiedKFold

    from trainer.metrics import score_repeats

    present = np.bincount(y, minlength=n_classes)
    k = min(cfg.folds, int(present[present > 0].min()))
    if k < 2:
        return None  # too few cells of some class to hold any out (or cfg.folds 0)
    adapted = np.zeros((len(y), n_classes))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=cfg.seed).split(x, y):
        adapted[test] = probabilities(fine_tune(module, x[train], y[train], n_classes, cfg, prior), x[test])
    base = probabilities(module, x)
    out = {"folds": k, "n_cells": len(y)}
    for name, p in (("base", base), ("adapted", adapted)):
        s = score_repeats(y, p.argmax(axis=1)[None], n_classes, n_boot=1000, seed=cfg.seed)  # 95% over cells
        out[name] = {**{key: round(s[key], 4) for key in ("balanced_accuracy", "macro_f1", "accuracy")},
                     "balanced_accuracy_ci95": [round(v, 3) for v in s["ci95"]["balanced_accuracy"]]}
    out["oof_probs"] = adapted
    return out


def adapt_model(base: str, folder: Path, out: Path, cfg: AdaptConfig = AdaptConfig()) -> dict:
    """Fine-tune model `base` (file or built-in name) on the lab's cells of `folder`; write `out`; return
    its card (with `adaptation`: base sha256, cells, cross-validated figures, calibration)."""
    from rtclassify.model.file_format import (ModelFileError, hash_weights, load_model, resolve_model_path,
                                              write_model_file)
    from trainer.calibration import apply_temperature, expected_calibration_error, fit_temperature

    model = load_model(base, runtime="torchscript")
    if model.module.original_name != "FoldedCNN":
        raise ModelFileError(f"{model.path}: adaptation needs a folded single network (this is "
                             f"{model.module.original_name})")
    x, y, rows, summary = read_lab_cells(Path(folder), model)
    k = len(model.classes)
    prior = base_log_prior(model.card, model.classes)
    cv = cross_validate(model.module, x, y, k, cfg, prior)
    net = fine_tune(model.module, x, y, k, cfg, prior)
    calibration = {"method": "unknown", "why": "fewer than 20 cells, or a class with fewer than 2: no "
                                                 "out-of-fold probabilities to fit a temperature on"}
    if cv is not None and len(y) >= 20:
        t = fit_temperature(cv["oof_probs"], y)
        with torch.no_grad():
            net.w2.div_(t)
            net.b2.div_(t)
        calibration = {"method": "temperature", "temperature": round(t, 4),
                       "fitted_on": f"out-of-fold probabilities of the lab's {len(y)} cells",
                       "ece_before": round(expected_calibration_error(cv["oof_probs"], y), 4),
                       "ece_after": round(expected_calibration_error(apply_temperature(cv["oof_probs"], t), y), 4)}
    if cv is not None:
        cv.pop("oof_probs")
    card = dict(model.card)
    base_sha = hashlib.sha256(resolve_model_path(base).read_bytes()).hexdigest()
    card["name"] = f"{model.name}-adapted"
    card["calibration"] = calibration
    card["adaptation"] = {"base": {"name": model.name, "file_sha256": base_sha, "weights_sha256": model.sha256},
                          "cells": summary, "options": asdict(cfg), "layers_trained": list(HEAD),
                          "cross_validation": cv if cv is not None else
                          ("not run (folds 0)" if not cfg.folds else
                           "not run: a class has fewer than 2 cells (label more cells to measure the adaptation)")}
    card["envelope"] = adapted_envelope(model.envelope, summary)
    card["evaluation"] = {"note": "the base model's figures do not hold for the adapted file; see "
                                  "adaptation.cross_validation", "base_evaluation": model.card.get("evaluation", {})}
    card["weights_sha256"] = hash_weights(net)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_model_file(net, card, Path(out))
    return card


def adapted_envelope(base: dict | None, summary: dict) -> dict:
    """The base model's envelope, its temperature range widened to the lab's declared temperatures."""
    if not base:
        return {}
    env = dict(base)
    temps = [float(t) for t in summary["temperature_c"] if t != "not declared"]
    if env and temps:
        env["temperature_c"] = [min(env["temperature_c"][0], *temps), max(env["temperature_c"][1], *temps)]
    env.pop("figures", None)  # the base model's held-out figures are not this file's
    env["lab_cells"] = summary["n_cells"]
    return env
