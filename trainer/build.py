"""`python -m trainer build`: a folder of NWB files + a label table -> one windowed dataset file.

Every short-square sweep (by stimulus name/code or by its command step, rtclassify.formats.stimuli)
whose step evokes exactly one AP (the daemon's detector) gives one window, cut and resampled
through rtclassify.dsp.windows in either mode of the window spec: stimulus-aligned (the published
25 ms / 25 ms) or spike-aligned. Files are processed in parallel (a local process pool, or an
existing Dask cluster given its scheduler address); each file's result is saved as it completes,
so an interrupted build resumes where it stopped; a file that cannot be read is reported with the
reason and skipped, never the end of the build.
"""
import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtclassify.dsp.windows import WindowSpec

META_COLUMNS = ("cell_id", "nwb_file", "sweep", "stimulus", "by_name", "fs_native", "onset_s", "peak_s")
LABEL_COLUMNS = ("line_name", "dendrite_type")


@dataclass
class FileResult:
    """The windows of one file (k, L) mV at spec.fs_hz, their metadata rows, and what was left out."""

    file: str
    windows: np.ndarray
    rows: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # "sweep N: reason"
    error: str | None = None  # the whole file could not be read


def cell_id_of(path: Path) -> str:
    return path.stem


def windows_from_file(path: Path, spec: WindowSpec) -> FileResult:
    """Windows of every usable short-square sweep of one NWB file (never raises for a bad file)."""
    from rtclassify.formats.nwb import NwbError, read_sweeps
    from rtclassify.offline.sweep_windows import windows_from_sweeps

    path = Path(path)
    try:
        cut = windows_from_sweeps(read_sweeps(path), spec)
    except (NwbError, OSError, KeyError, ValueError) as exc:
        return FileResult(path.name, np.zeros((0, spec.n_samples), np.float32), error=str(exc))
    rows = [{"cell_id": cell_id_of(path), "nwb_file": path.name, **row} for row in cut.rows]
    return FileResult(path.name, cut.windows, rows, [f"sweep {k}: {why}" for k, why in cut.skipped.items()])


# ---- resumable parts ----

def part_path(parts: Path, nwb: Path) -> Path:
    return parts / f"{nwb.name}.npz"


def save_part(parts: Path, result: FileResult) -> None:
    """Write one file's result atomically (a half-written part would be taken for a finished file)."""
    target = parts / f"{result.file}.npz"
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, windows=result.windows, meta=json.dumps({"rows": result.rows, "skipped": result.skipped,
                                                            "error": result.error}))
    os.replace(tmp, target)


def load_part(path: Path) -> FileResult:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return FileResult(path.name[:-len(".npz")], z["windows"], meta["rows"], meta["skipped"], meta["error"])


# ---- labels ----

def read_label_table(path: Path) -> dict[str, dict]:
    """{cell_id or file name: {line_name, dendrite_type}} from a CSV with a `cell_id` or `file` column."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: empty label table")
    key = "cell_id" if "cell_id" in rows[0] else "file" if "file" in rows[0] else None
    if key is None:
        raise ValueError(f"{path}: needs a 'cell_id' (the NWB file name without .nwb) or a 'file' column")
    missing = [c for c in LABEL_COLUMNS if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: lacks the label columns {missing}")
    return {r[key]: {c: r[c] for c in LABEL_COLUMNS} for r in rows}


def patchseq_label_table(metadata_csv: Path, manifest_csv: Path, out_csv: Path) -> int:
    """Labels of DANDI 000020 files: the manifest's NWB file names joined with the metadata's
    genotype (as line_name; the Cre mapping matches its prefix) and dendrite type. Returns rows."""
    with open(metadata_csv, newline="") as f:
        cells = {r["cell_specimen_id"]: r for r in csv.DictReader(f)}
    n = 0
    with open(manifest_csv, newline="") as f, open(out_csv, "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["file", *LABEL_COLUMNS])
        for r in csv.DictReader(f):
            if r["file_type"] != "nwb" or r["cell_specimen_id"] not in cells:
                continue
            c = cells[r["cell_specimen_id"]]
            w.writerow([r["file_name"], c["full_genotype"], c["dendrite_type"]])
            n += 1
    return n


# ---- the build ----

def run_files(files: list[Path], spec: WindowSpec, workers: int, scheduler: str | None, on_done) -> None:
    """windows_from_file over files (process pool, or a Dask cluster), on_done(result) as each completes."""
    if scheduler:
        try:
            from dask.distributed import Client, as_completed
        except ImportError:
            raise RuntimeError("--scheduler needs dask: pip install 'dask[distributed]'") from None
        with Client(scheduler) as client:
            for future in as_completed(client.map(windows_from_file, files, spec=spec, pure=False)):
                on_done(future.result())
        return
    if workers <= 1:
        for f in files:
            on_done(windows_from_file(f, spec))
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(windows_from_file, f, spec) for f in files]
        for future in as_completed(futures):
            on_done(future.result())


def build_dataset(folder: Path, labels_csv: Path, out: Path, spec: WindowSpec, workers: int = 2,
                  scheduler: str | None = None, progress=None) -> dict:
    """Build `out` (.npz) from every *.nwb under folder; returns the summary (also in the file).

    Per-file results go to `<out>.parts/` as they finish; a rerun reads those instead of the NWB
    files, so an interrupted build resumes. progress: optional callable(n_done, n_total, file).
    """
    folder, out = Path(folder), Path(out)
    files = sorted(folder.rglob("*.nwb"))
    if not files:
        raise ValueError(f"{folder}: no .nwb files")
    labels = read_label_table(Path(labels_csv))
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    spec_file = parts / "spec.json"
    if spec_file.exists() and json.loads(spec_file.read_text()) != spec.to_dict():
        raise ValueError(f"{parts} holds a build with another window spec ({spec_file.read_text()}); "
                         "delete it or choose another --out")
    spec_file.write_text(json.dumps(spec.to_dict()))
    todo = [f for f in files if not part_path(parts, f).exists()]
    done = len(files) - len(todo)

    def finished(result: FileResult):
        nonlocal done
        save_part(parts, result)
        done += 1
        if progress:
            progress(done, len(files), result.file)

    run_files(todo, spec, workers, scheduler, finished)
    return assemble(files, parts, labels, spec, out)


def assemble(files: list[Path], parts: Path, labels: dict, spec: WindowSpec, out: Path) -> dict:
    """Concatenate the parts into the dataset file, attaching labels; write and return the summary."""
    windows, rows, failed, no_label, skipped = [], [], {}, [], {}
    for f in files:
        r = load_part(part_path(parts, f))
        if r.error:
            failed[f.name] = r.error
            continue
        if r.skipped:
            skipped[f.name] = r.skipped
        if not r.rows:
            continue
        lab = labels.get(cell_id_of(f)) or labels.get(f.name)
        if lab is None:
            no_label.append(f.name)
            continue
        windows.append(r.windows)
        rows.extend({**row, **lab} for row in r.rows)
    reasons = Counter(item.split(": ", 1)[-1] for items in skipped.values() for item in items)
    summary = {"files": len(files), "windows": len(rows), "cells": len({r["cell_id"] for r in rows}),
               "failed": failed, "without_label": no_label, "skipped_sweeps": skipped,
               "skip_reasons": dict(reasons.most_common()), "window": spec.to_dict()}
    columns = {c: np.array([r[c] for r in rows]) for c in META_COLUMNS + LABEL_COLUMNS}
    x = np.concatenate(windows) if windows else np.zeros((0, spec.n_samples), np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, windows=x, summary=json.dumps(summary), **columns)
    return summary


def load_built(path: Path):
    """A built dataset as a trainer SpikeSet (one row per window; cell ids repeat across sweeps)."""
    from trainer.data import SpikeSet

    with np.load(path) as z:
        summary = json.loads(str(z["summary"]))
        return SpikeSet(specimen_ids=z["cell_id"].astype(str), fs_hz=z["fs_native"].astype(float),
                        windows=z["windows"].astype(np.float32), line_names=z["line_name"].astype(str),
                        dendrite_types=z["dendrite_type"].astype(str), spec=WindowSpec.from_dict(summary["window"]),
                        skipped=summary["failed"])
