"""Offline classification of a folder of single action potentials (`rtclassify predict`)."""
import csv
from pathlib import Path

import numpy as np
import torch

from rtclassify.formats.spike_folder import CellError, load_cell_window, read_cells_table
from rtclassify.dsp.temperature import warp_factor
from rtclassify.features.family import BANDWIDTH_FEATURE, REFERENCE_BANDWIDTH_HZ, bandwidth_hz
from rtclassify.model.envelope import INSIDE, RigInfo, judge, parse_rig_fields
from rtclassify.model.file_format import LoadedModel
from rtclassify.model.trust import is_uncertain

BATCH = 256


def classify_windows(model: LoadedModel, windows: np.ndarray) -> np.ndarray:
    """(N, L) windows in mV at the model rate -> (N, K) class probabilities (float64)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), BATCH):
            x = torch.from_numpy(np.ascontiguousarray(windows[start:start + BATCH], dtype=np.float32)).to(model.device)
            out.append(model.module(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)))


def predict_folder(model: LoadedModel, folder: Path, out_csv: Path, progress=None, rows=None,
                   min_confidence: float | None = None) -> dict:
    """Classify every row of `folder/cells.csv` and write `out_csv` in the same row order.

    Columns: specimen_id, label, p_<class>..., error, envelope, evidence, uncertain, trace_error. A
    row that cannot be classified keeps its place with an empty label and the reason in `error`;
    `envelope` says whether a classified row's AP lies inside what the model was validated on
    (rtclassify.model.envelope). Optional columns `filter_hz` (Hz) and `temperature_c` (°C) declare
    the rig: the window of a row recorded below 34 °C is read faster by the temperature warp
    (rtclassify.dsp.temperature), and its time features are warped alike. Optional per-cell feature
    columns named as in Allen's cell_features.csv join the AP in the cell verdict (the cell model of
    the model's classes, rtclassify.verdict); a row whose trace is absent or unusable but whose
    features are present is classified from its features alone (`evidence` "features", the trace's
    problem in `trace_error`). The AP's probabilities are read as rtclassify.model.trust says (both
    temperature hypotheses when the row declares none; tempered toward the class prior when outside
    the envelope). `label` and `p_<class>` are the verdict's; `uncertain` is true where the verdict's
    top probability is below min_confidence (None: the card's for an AP alone, the cell model's when
    features join; the label is still the most likely class). Returns counts {"rows", "classified",
    "errors", "outside", "features_only"}. rows: the table already read, else it is read here.
    """
    from rtclassify.verdict.cell import CellEvidence
    from rtclassify.verdict.cell_model import cell_model_for

    rows = read_cells_table(folder) if rows is None else rows
    cell_model = cell_model_for(model)
    windows, ok_rows, errors, envelopes, trace_errors, rigs = [], [], {}, {}, {}, {}
    iterator = progress(rows) if progress else rows
    for i, row in enumerate(iterator):
        try:
            rig = declared_rig(row)
        except CellError as exc:
            errors[i] = str(exc)
            continue
        rigs[i] = rig
        try:
            window = load_cell_window(folder, row, model.spec, warp_factor(rig.temperature_c))
        except CellError as exc:
            trace_errors[i] = str(exc)
            continue
        windows.append(window)
        ok_rows.append(i)
        envelopes[i] = judge(model.envelope, row.fs_hz, rig, window)
    trust = model.trust
    undeclared = [rigs[i].temperature_c is None for i in ok_rows]
    probs = (trust.read(lambda w: classify_windows(model, w), np.stack(windows), undeclared, model.spec.n_before)
             if windows else np.zeros((0, len(model.classes))))
    ap_by_row = {}
    for i, p in zip(ok_rows, probs):
        ap_by_row[i], envelopes[i] = trust.answer(p, envelopes[i])
    verdicts = {}
    for i, rig in rigs.items():
        evidence = CellEvidence(model.classes, cell_model, rig.temperature_c, min_confidence, trust.class_ceiling)
        if cell_model is not None:
            given = {name: row_value(rows[i], name) for name in cell_model.features}
            if given.get(BANDWIDTH_FEATURE) is None:  # what the row's rate and filter let an AP's shape show
                fs = rows[i].fs_hz
                given[BANDWIDTH_FEATURE] = bandwidth_hz(fs, rig.filter_hz) if fs == fs else REFERENCE_BANDWIDTH_HZ
            evidence.give_features(given)
        if i in ap_by_row:
            evidence.add_ap(ap_by_row[i])
        v = evidence.verdict()
        if v.probs:
            if not v.n_features:  # an AP alone: the confidence asked of labels
                v.uncertain = is_uncertain(list(v.probs.values()),
                                           trust.asked(min_confidence))
            verdicts[i] = v
        else:
            errors[i] = f"{trace_errors.pop(i, 'no AP trace')}; and no per-cell features to classify from"
    write_predictions(out_csv, rows, model.classes, verdicts, errors, envelopes, trace_errors)
    return {"rows": len(rows), "classified": len(verdicts), "errors": len(errors),
            "outside": sum(e != INSIDE for e in envelopes.values()),
            "features_only": sum(1 for i in verdicts if i not in ap_by_row)}


def row_value(row, name: str):
    """A cells.csv cell as a number (None when empty or not a number)."""
    text = (row.columns.get(name) or "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None


def declared_rig(row) -> RigInfo:
    """The rig a cells.csv row declares (optional columns filter_hz, temperature_c); CellError naming
    the column and value when one cannot be a filter's corner in Hz or a bath temperature in °C."""
    rig, why = parse_rig_fields(row.columns, text=True)
    if why:
        raise CellError("; ".join(why))
    return rig


def write_predictions(out_csv: Path, rows, classes, verdicts: dict, errors: dict, envelopes: dict,
                      trace_errors: dict) -> None:
    """Write the prediction CSV; every input row appears exactly once. verdicts: row -> Verdict."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["specimen_id", "label"] + [f"p_{c}" for c in classes]
                   + ["error", "envelope", "evidence", "uncertain", "trace_error"])
        for i, row in enumerate(rows):
            if i in verdicts:
                v = verdicts[i]
                p = [v.probs[c] for c in classes]
                kinds = [k for k, n in (("ap", v.evidence["short_square"]), ("features", v.n_features)) if n]
                w.writerow([row.specimen_id, classes[int(np.argmax(p))]] + [f"{x:.6f}" for x in p]
                           + ["", envelopes.get(i, ""), "+".join(kinds), str(v.uncertain).lower(),
                              trace_errors.get(i, "")])
            else:
                w.writerow([row.specimen_id, ""] + [""] * len(classes) + [errors.get(i, "not classified"), "", "", "",
                                                                            trace_errors.get(i, "")])
