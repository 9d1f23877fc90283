"""Task definitions and label assignment from the cell table (Cre line, dendrite type)."""
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAPPING_FILE = Path(__file__).parent / "cre_classes.csv"
RELATED_FILE = Path(__file__).parent / "cre_related.csv"  # extra training cells only, never scored
# broad2: spiny = excitatory, aspiny = inhibitory. Sparsely spiny cells are left out: the Allen
# annotation uses it for both excitatory and inhibitory cells, so it is no ground truth for either.
DENDRITE_TO_BROAD = {"spiny": "Exc", "aspiny": "Inh"}


@dataclass(frozen=True)
class Task:
    """A classification task: its name, classes (model output order) and how labels are derived."""

    name: str
    classes: tuple
    source: str  # "cre" (genetic class from the Cre line) or "dendrite" (spiny/aspiny)
    description: str


TASKS = {
    "genetic5": Task("genetic5", ("Exc", "Ndnf", "Pvalb", "Sst", "Vip"), "cre",
                     "genetic class from the Cre line (strict mapping)"),
    "broad2": Task("broad2", ("Exc", "Inh"), "dendrite",
                   "spiny = Exc, aspiny = Inh (sparsely spiny left out)"),
    "exc_pvalb_sst": Task("exc_pvalb_sst", ("Exc", "Pvalb", "Sst"), "cre",
                          "Exc / Pvalb / Sst subset of genetic5 (the published 3-class table)"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {sorted(TASKS)}")
    return TASKS[name]


def read_mapping(path: Path = MAPPING_FILE) -> list[tuple[str, str, str]]:
    """(class, line_prefix, dendrite_type or '') rows of the Cre-line table."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    return [(r["class"], r["line_prefix"], r["dendrite_type"] or "") for r in rows]


def genetic_class(line_name: str, dendrite_type: str, mapping) -> str | None:
    """Genetic class of one cell, or None when its line is not in the strict mapping."""
    for cls, prefix, dendrite in mapping:
        if line_name.startswith(prefix) and (not dendrite or dendrite == dendrite_type):
            return cls
    return None


def assign_labels(line_names, dendrite_types, task: Task, mapping=None) -> list[str | None]:
    """One label (or None: not part of the task) per cell."""
    mapping = mapping or read_mapping()
    labels = []
    for line, dendrite in zip(line_names, dendrite_types):
        line, dendrite = str(line or ""), str(dendrite or "")
        if task.source == "dendrite":
            lab = DENDRITE_TO_BROAD.get(dendrite)
        else:
            lab = genetic_class(line, dendrite, mapping)
        labels.append(lab if lab in task.classes else None)
    return labels


# TrainConfig.aux_target -> what the report calls its labels
AUX_TARGETS = {"dendrite": "spiny/aspiny", "line": "Cre-line", "line_layer": "Cre-line-and-layer"}
AUX_MIN_CELLS = 10  # a Cre line (or line and layer) is an auxiliary class with this many training-side cells


def auxiliary_labels(line_names, dendrite_types, target: str, train: np.ndarray, layers=None) -> np.ndarray:
    """(N,) auxiliary label of each cell as a class index (-1: none) for TrainConfig.aux_target:
    "dendrite": spiny 0, aspiny 1 (sparsely spiny: none); "line": the Cre line (the full line_name);
    "line_layer": the Cre line and cortical layer (layers, (N,) str; None or "" = unknown), a line's
    cells in its rarer layers pooled as "<line>|other". For the last two the classes are the groups
    with >= AUX_MIN_CELLS cells where the (N,) bool mask `train` is set, in alphabetical order, so
    that no test cell shapes them."""
    lines, dendrites = np.asarray(line_names, dtype=str), np.asarray(dendrite_types, dtype=str)
    train = np.asarray(train, dtype=bool)
    if target == "dendrite":
        return np.select([dendrites == "spiny", dendrites == "aspiny"], [0, 1], -1)
    if target == "line":
        return index_common(lines, lines != "", train)
    if target == "line_layer":
        layer = np.full(len(lines), "") if layers is None else np.asarray(layers, dtype=str)
        detailed = np.char.add(np.char.add(lines, "|"), layer)
        common = index_common(detailed, (lines != "") & (layer != ""), train) >= 0
        groups = np.where(common, detailed, np.char.add(lines, "|other"))
        return index_common(groups, lines != "", train)
    raise ValueError(f"aux_target={target!r}: valid targets are {list(AUX_TARGETS)}")


def index_common(groups: np.ndarray, valid: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(N,) index of each cell's group among the valid groups (sorted) that have >= AUX_MIN_CELLS
    cells where train is set; -1 for the others."""
    names, counts = np.unique(groups[valid & train], return_counts=True)
    index = {n: i for i, n in enumerate(names[counts >= AUX_MIN_CELLS])}  # np.unique's names are sorted
    return np.array([index.get(g, -1) if ok else -1 for g, ok in zip(groups, valid)], dtype=int)
