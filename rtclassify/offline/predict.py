"""Offline classification of a folder of single action potentials (`rtclassify predict`)."""
import csv
from pathlib import Path

import numpy as np
import torch

from rtclassify.formats.spike_folder import CellError, load_cell_window, read_cells_table
from rtclassify.dsp.temperature import warp_factor
from rtclassify.model.envelope import INSIDE, RigInfo, judge, parse_rig_fields
from rtclassify.model.file_format import LoadedModel

BATCH = 256


def classify_windows(model: LoadedModel, windows: np.ndarray) -> np.ndarray:
    """(N, L) windows in mV at the model rate -> (N, K) class probabilities (float64)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), BATCH):
            x = torch.from_numpy(np.ascontiguousarray(windows[start:start + BATCH], dtype=np.float32)).to(model.device)
            out.append(model.module(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)))


def predict_folder(model: LoadedModel, folder: Path, out_csv: Path, progress=None, rows=None) -> dict:
    """Classify every row of `folder/cells.csv` and write `out_csv` in the same row order.

    Columns: specimen_id, label, p_<class>..., error, envelope. A row that cannot be classified keeps
    its place with an empty label and the reason in `error`; `envelope` says whether a classified row
    lies inside what the model was validated on (rtclassify.model.envelope). Optional columns
    `filter_hz` (Hz) and `temperature_c` (°C) declare the rig: the window of a row recorded below
    34 °C is read faster by the temperature warp (rtclassify.dsp.temperature). Returns counts
    {"rows", "classified", "errors", "outside"}. rows: the table already read, else it is read here.
    """
    rows = read_cells_table(folder) if rows is None else rows
    windows, ok_rows, errors, envelopes = [], [], {}, {}
    iterator = progress(rows) if progress else rows
    for i, row in enumerate(iterator):
        try:
            rig = declared_rig(row)
            window = load_cell_window(folder, row, model.spec, warp_factor(rig.temperature_c))
        except CellError as exc:
            errors[i] = str(exc)
            continue
        windows.append(window)
        ok_rows.append(i)
        envelopes[i] = judge(model.envelope, row.fs_hz, rig, window)
    probs = classify_windows(model, np.stack(windows)) if windows else np.zeros((0, len(model.classes)))
    by_row = dict(zip(ok_rows, probs))
    write_predictions(out_csv, rows, model.classes, by_row, errors, envelopes)
    return {"rows": len(rows), "classified": len(ok_rows), "errors": len(errors),
            "outside": sum(e != INSIDE for e in envelopes.values())}


def declared_rig(row) -> RigInfo:
    """The rig a cells.csv row declares (optional columns filter_hz, temperature_c); CellError naming
    the column and value when one cannot be a filter's corner in Hz or a bath temperature in °C."""
    rig, why = parse_rig_fields(row.columns, text=True)
    if why:
        raise CellError("; ".join(why))
    return rig


def write_predictions(out_csv: Path, rows, classes, probs_by_row: dict, errors: dict, envelopes: dict) -> None:
    """Write the prediction CSV; every input row appears exactly once."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["specimen_id", "label"] + [f"p_{c}" for c in classes] + ["error", "envelope"])
        for i, row in enumerate(rows):
            if i in probs_by_row:
                p = probs_by_row[i]
                w.writerow([row.specimen_id, classes[int(np.argmax(p))]] + [f"{v:.6f}" for v in p]
                           + ["", envelopes[i]])
            else:
                w.writerow([row.specimen_id, ""] + [""] * len(classes) + [errors.get(i, "not classified"), ""])
