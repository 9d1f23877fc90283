"""Writing a model's per-sweep labels back into an NWB file, beside the untouched recording.

NWB 2 files get a processing module `rtclassify` holding a DynamicTable `labels` (pynwb; readable
with pynwb's `nwb.processing["rtclassify"]["labels"].to_dataframe()`). NWB 1 files (Allen, MIES),
which pynwb does not read, get the same columns as datasets under `/processing/rtclassify/labels`
(h5py). Only new groups are added; no existing dataset is changed.
"""
import shutil
from pathlib import Path

import numpy as np

MODULE = "rtclassify"
TABLE = "labels"


class AnnotateError(ValueError):
    pass


def label_columns(model, cut, probs, min_confidence: float) -> dict[str, np.ndarray]:
    """Columns of the labels table: one row per classified sweep; `uncertain`: its top probability below
    min_confidence."""
    cols = {"sweep_number": np.array([r["sweep"] for r in cut.rows], dtype=np.int64),
            "label": np.array([model.classes[int(k)] for k in probs.argmax(axis=1)] if len(probs) else [], dtype=str),
            "stim_onset_s": np.array([r["onset_s"] for r in cut.rows], dtype=np.float64),
            "peak_s": np.array([r["peak_s"] for r in cut.rows], dtype=np.float64)}
    for k, c in enumerate(model.classes):
        cols[f"p_{c}"] = probs[:, k].astype(np.float64) if len(probs) else np.zeros(0)
    cols["uncertain"] = (probs.max(axis=1) < min_confidence if len(probs) else np.zeros(0, bool))
    return cols


def describe(model) -> str:
    return (f"rtclassify model {model.name} (sha256 {model.sha256[:12]}), window {model.spec.to_dict()}; "
            "one row per short-square sweep that evoked exactly one AP")


def annotate_file(path: Path, model, out: Path | None = None, min_confidence: float | None = None) -> dict:
    """Classify every usable short-square sweep of `path` and write the labels into `out` (default:
    into `path` itself); min_confidence: below it a label is uncertain (None: the card's). Returns
    {"file", "labels", "skipped": {sweep: reason}}."""
    from rtclassify.formats.nwb import read_sweeps
    from rtclassify.offline.sweep_windows import windows_from_sweeps
    from rtclassify.offline.predict import classify_windows

    path = Path(path)
    sweeps = read_sweeps(path)
    cut = windows_from_sweeps(sweeps, model.spec)
    # no temperature is declared to annotate: both readings (rtclassify.model.trust)
    n = len(cut.windows)
    probs = np.zeros((0, len(model.classes)))
    if n:
        read = model.trust.read(lambda w: classify_windows(model, w), cut.windows, np.ones(n, bool), model.spec.n_before)
        probs = model.trust.settle(read, False)  # a sweep file has no envelope judged per row
    target = Path(out) if out else path
    if out:
        shutil.copy2(path, target)
    cols = label_columns(model, cut, probs, model.trust.asked(min_confidence))
    if sweeps and sweeps[0].layout == "nwb2":
        write_nwb2(target, cols, describe(model))
    else:
        write_hdf5(target, cols, describe(model))
    return {"file": str(target), "labels": len(cut.rows), "skipped": cut.skipped}


def write_nwb2(target: Path, cols: dict, description: str) -> None:
    from hdmf.common import DynamicTable
    from pynwb import NWBHDF5IO

    try:
        io = NWBHDF5IO(str(target), "a", load_namespaces=True)
        nwb = io.read()
    except Exception as exc:  # early NWB 2 files (2.0b) do not load in pynwb
        raise AnnotateError(f"{target}: pynwb cannot open this NWB 2 file for writing ({type(exc).__name__}: {exc})")
    with io:
        if MODULE in nwb.processing:
            raise AnnotateError(f"{target}: already has a processing module {MODULE!r}; annotate a copy "
                                "(--out) or remove the module first")
        table = DynamicTable(name=TABLE, description=description)
        for name, values in cols.items():
            table.add_column(name=name, description=name.replace("_", " "))
        for k in range(len(cols["sweep_number"])):
            table.add_row({name: values[k].item() if hasattr(values[k], "item") else values[k]
                           for name, values in cols.items()})
        module = nwb.create_processing_module(name=MODULE, description="cell-type labels from rtclassify")
        module.add(table)
        io.write(nwb)


def write_hdf5(target: Path, cols: dict, description: str) -> None:
    import h5py

    with h5py.File(target, "a") as h:
        group_path = f"processing/{MODULE}/{TABLE}"
        if group_path in h:
            raise AnnotateError(f"{target}: already has /{group_path}; annotate a copy (--out) or remove it first")
        g = h.require_group(group_path)
        g.attrs["description"] = description
        for name, values in cols.items():
            data = values.astype(h5py.string_dtype()) if values.dtype.kind in "US" else values
            g.create_dataset(name, data=data)


def sidecar_path(path: Path, out_dir: Path | None = None) -> Path:
    """Where the labels of a non-NWB recording go: `<file name>.rtclassify.csv` beside it (or in out_dir)."""
    path = Path(path)
    return (Path(out_dir) if out_dir else path.parent) / f"{path.name}.rtclassify.csv"


def annotate_sidecar(path: Path, model, out_dir: Path | None = None, steps: str = "short",
                     min_confidence: float | None = None) -> dict:
    """Labels of every sweep and channel of a recording in any readable format (ABF, neo's) into a
    CSV sidecar: sweep, channel, clamp_mode, fs_hz, stim_onset_s, protocol, label, p_<class>...,
    envelope, uncertain (the label's top probability below the card's min_confidence), skip (the reason, where no label), verdict, verdict_p, verdict_uncertain (the cell's
    verdict over the whole file, on each of its channel's rows), model, model_sha256. A sweep of long
    steps has no AP label: it is evidence for the verdict. The recording itself is not touched.
    Returns {"file", "sidecar", "labels", "skipped", "verdicts"}."""
    import csv

    from rtclassify.formats.recordings import read_recording
    from rtclassify.offline.sweep_labels import label_sweep
    from rtclassify.offline.verdicts import FileVerdicts

    path = Path(path)
    target = sidecar_path(path, out_dir)
    columns = ["sweep", "channel", "clamp_mode", "fs_hz", "stim_onset_s", "protocol", "label",
               *[f"p_{c}" for c in model.classes], "envelope", "uncertain", "skip", "verdict", "verdict_p", "verdict_uncertain",
               "model", "model_sha256"]
    rows, labels, cells = [], 0, FileVerdicts(model, min_confidence=min_confidence)
    for s in read_recording(path):
        r = label_sweep(s, model, steps, evidence=cells.evidence_for(s), min_confidence=min_confidence)
        onset = r.get("stim_onset_sample")
        row = {"sweep": s.sweep, "channel": s.channel, "clamp_mode": s.clamp_mode, "fs_hz": s.fs,
               "stim_onset_s": "" if onset is None else round(onset / s.fs, 9), "protocol": r.get("protocol", ""),
               "label": r.get("label", ""), "envelope": r.get("envelope", ""), "skip": r.get("skip", ""),
               "uncertain": str(r["uncertain"]).lower() if "uncertain" in r else "",
               "model": model.name, "model_sha256": model.sha256}
        row.update({f"p_{c}": r.get(f"p_{c}", "") for c in model.classes})
        labels += "label" in r
        rows.append(row)
    verdicts = {line["channel"]: line["verdict"] for line in cells.lines(str(path))}
    for row in rows:
        v = verdicts.get(row["channel"])
        if v is not None:
            row.update({"verdict": v["label"] or "", "verdict_p": max(v["probs"].values()) if v["probs"] else "",
                        "verdict_uncertain": str(v["uncertain"]).lower()})
    tmp = target.with_name(target.name + ".part")  # a reader never sees half a table
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(target)
    return {"file": str(path), "sidecar": str(target), "labels": labels, "skipped": len(rows) - labels,
            "verdicts": [{"channel": c, **v} for c, v in sorted(verdicts.items())]}
