"""Turning trained networks into a shipped model file with its card."""
import datetime
import platform
from pathlib import Path

import numpy as np
import torch

from rtclassify.model.inputs import describe_normalisation
from rtclassify.model.folding import FoldedCNN
from rtclassify.model.network import FusedEnsemble
from rtclassify.model.file_format import save_model
from trainer.data import SpikeSet
from trainer.fit import TrainConfig
from trainer.labels import Task


def summarise_training_data(data: SpikeSet, y: np.ndarray, task: Task, source: str,
                            distilled_unlabelled: bool = False) -> dict:
    """Counts of training cells per class and native rate (and, when the student also imitated its
    teachers on the cells outside the task, how many those were)."""
    used = y >= 0
    per_class = {c: int(np.sum(y == i)) for i, c in enumerate(task.classes)}
    per_rate = {}
    for rate in np.unique(data.fs_hz[used]):
        sel = used & (data.fs_hz == rate)
        per_rate[f"{rate:g}"] = {c: int(np.sum(y[sel] == i)) for i, c in enumerate(task.classes)}
    out = {"source": source, "n_cells": int(used.sum()), "per_class": per_class, "per_native_rate_hz": per_rate,
           "labels": task.description}
    if distilled_unlabelled:
        out["unlabelled_cells_distilled"] = int((~used).sum())  # teachers' outputs only, no label
    return out


def export_model(nets: list, name: str, task: Task, data: SpikeSet, y: np.ndarray, cfg: TrainConfig,
                 path: Path, source: str, evaluation: dict | None = None, seed: int = 0, processes: int = 1,
                 envelope: dict | None = None) -> dict:
    """Write `path` (TorchScript ensemble + card) and return the card; envelope: the card's acquisition
    envelope (trainer.rigs.training_envelope; rtclassify.model.envelope reads it)."""
    card = {
        "name": name,
        "task": task.name,
        "classes": list(task.classes),
        "window": data.spec.to_dict(),
        "fs_hz": data.spec.fs_hz,
        "input": "(N, n_samples) float32 membrane potential in mV at fs_hz; output (N, K) class probabilities",
        "normalisation": describe_normalisation(),
        "architecture": {"type": describe_export(nets, cfg), **cfg.to_dict(), "networks_in_file": len(nets)},
        "training_data": summarise_training_data(data, y, task, source, distilled_unlabelled=
                                                 cfg.distilled and cfg.distil_unlabelled),
        "evaluation": evaluation or {},
        "envelope": envelope or {},
        "seed": seed,
        "training_processes": processes,  # > 1: data-parallel under torchrun
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    # several networks: the fused form computes the same probabilities as ProbabilityEnsemble(nets),
    # faster; one network (e.g. distilled from an ensemble) is saved folded (rtclassify.model.folding), the
    # same function in fewer operations, with its softmax
    module = FusedEnsemble(nets) if len(nets) > 1 else FoldedCNN(nets[0])
    return save_model(module, card, Path(path))


def describe_export(nets: list, cfg: TrainConfig) -> str:
    if len(nets) > 1:
        return f"TripleInputCNN ensemble of {len(nets)} (fused)"
    folded = "folded for inference (rtclassify.model.folding)"
    if cfg.distilled:
        return f"TripleInputCNN distilled from an ensemble of {cfg.members}, {folded}"
    return f"TripleInputCNN, {folded}"
