"""The cell models: a cell's type from its per-cell features (Allen's names), and the file they ship in.

A cell model file is JSON (`rtclassify.cell_model/1`): the task's classes, the feature names it
reads (in order), its trees (verdict.trees), the temperature that calibrates them, the class prior of
its training cells, the rule that joins it with the AP network (verdict.combine) and a card saying
what it was trained and validated on. The built-in ones sit beside the AP models:
`rtclassify/model/shipped/cells_<task>.json`.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtclassify.verdict.trees import TreeEnsemble, probabilities

SCHEMA = "rtclassify.cell_model/1"
SHIPPED = Path(__file__).resolve().parents[1] / "model" / "shipped"


class CellModelError(ValueError):
    """A cell model file that cannot be used; the text names the file and why."""


@dataclass
class CellModel:
    task: str
    classes: tuple
    features: tuple  # names, in the order of the trees' columns
    trees: TreeEnsemble
    temperature: float
    prior: np.ndarray  # (K,) class shares of the training cells
    rule: dict  # how the verdict joins this model with the AP network (verdict.combine.Rule fields)
    card: dict = field(default_factory=dict)
    path: str | None = None  # the file it was read from

    def matrix(self, rows) -> np.ndarray:
        """(N, F) float matrix from a list of {feature name: value} dicts (absent, None, '' -> NaN)."""
        out = np.full((len(rows), len(self.features)), np.nan)
        for r, row in enumerate(rows):
            for c, name in enumerate(self.features):
                value = row.get(name)
                if value is None or value == "":
                    continue
                try:
                    out[r, c] = float(value)
                except (TypeError, ValueError):
                    continue
        return out

    def predict(self, rows) -> np.ndarray:
        """(N, K) calibrated probabilities for a list of {feature name: value} dicts."""
        return probabilities(self.trees.raw(self.matrix(rows)), self.temperature)

    def n_present(self, row: dict) -> int:
        """How many of the model's cell features a row gives (finite values; the recording's bandwidth
        is context for them, not evidence of its own)."""
        from rtclassify.features.family import BANDWIDTH_FEATURE

        present = np.isfinite(self.matrix([row])[0])
        return int(sum(p for p, name in zip(present, self.features) if name != BANDWIDTH_FEATURE))

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "task": self.task, "classes": list(self.classes), "features": list(self.features),
                "temperature": self.temperature, "prior": [float(p) for p in self.prior], "rule": self.rule,
                "card": self.card, "trees": self.trees.to_dict()}

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")))


def load_cell_model(name_or_path) -> CellModel:
    """A cell model by task name (genetic5, broad2: the built-in file) or file path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SHIPPED / f"cells_{name_or_path}.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CellModelError(f"{path}: not a readable cell model file ({exc})") from None
    if d.get("schema") != SCHEMA:
        raise CellModelError(f"{path}: schema {d.get('schema')!r}, expected {SCHEMA!r}")
    return CellModel(task=d["task"], classes=tuple(d["classes"]), features=tuple(d["features"]),
                     trees=TreeEnsemble.from_dict(d["trees"]), temperature=float(d["temperature"]),
                     prior=np.asarray(d["prior"], float), rule=d["rule"], card=d.get("card", {}), path=str(path))


def cell_model_for(ap_model) -> CellModel | None:
    """The built-in cell model of an AP model's task (by its classes), None when there is none."""
    for task in ("genetic5", "broad2"):
        path = SHIPPED / f"cells_{task}.json"
        if path.exists():
            m = load_cell_model(path)
            if tuple(m.classes) == tuple(ap_model.classes):
                return m
    return None
