"""The long steps' worker process: a step measured, and the cell's reading from all its steps so far.

The daemon sends each ending step here (engine.Engine.advance_long) and gets back its features, the
cell model's probabilities over the cell's whole family and the family's features, so that nothing
heavier than joining two probability vectors happens in the daemon's loop, where short squares wait.
Jobs run one at a time in the order sent, so a cell's steps arrive here in order; the process keeps
each cell's steps (MAX_CELLS cells, the oldest forgotten first).
"""
from collections import OrderedDict

MAX_CELLS = 64
_CELLS: "OrderedDict[str, object]" = OrderedDict()  # cell key -> CellEvidence (of this process)
_MODELS: dict = {}  # cell model path -> CellModel


def cell_evidence(key: str, model_path: str | None, classes, temperature_c):
    """This process's CellEvidence of cell `key` (made on its first step)."""
    from rtclassify.verdict.cell import CellEvidence
    from rtclassify.verdict.cell_model import load_cell_model

    if key not in _CELLS:
        if model_path is not None and model_path not in _MODELS:
            _MODELS[model_path] = load_cell_model(model_path)
        _CELLS[key] = CellEvidence(classes, _MODELS.get(model_path), temperature_c)
        while len(_CELLS) > MAX_CELLS:
            _CELLS.popitem(last=False)
    _CELLS.move_to_end(key)
    return _CELLS[key]


def measure_for_cell(key: str, model_path: str | None, classes, temperature_c, bandwidth: float, v, i, fs: float,
                     onset: int, offset: int, rebound_end: int):
    """(StepFeatures, the cell model's probabilities (K,) or None, features read, the family's features)
    for a step [onset, offset) of v, i (mV, pA at fs Hz) of cell `key`, with the cell's earlier steps."""
    from rtclassify.features.step import measure_step

    step = measure_step(v, i, fs, onset, offset, rebound_end=rebound_end)
    evidence = cell_evidence(key, model_path, classes, temperature_c)
    evidence.add_step(step, bandwidth)
    probs, n_features = evidence.step_reading()
    return step, probs, n_features, evidence.family_now()
