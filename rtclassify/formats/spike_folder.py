"""Reader for a folder of single action potentials, one per cell (the `allen-ctdb-spikes` layout).

Layout: `cells.csv` with at least `specimen_id` and `fs_hz` columns, and `traces/<specimen_id>.npy`,
each a 1-D array in mV from 1 ms before to 2 ms after the AP peak at the cell's own rate.
Every row yields either a window or a reason why not: nothing is dropped.
"""
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtclassify.dsp.windows import WindowSpec, check_stream_rate, samples_at, window_from_trace

# geometry of the stored traces: 1 ms before to 2 ms after the AP peak
TRACE_BEFORE_MS = 1.0
TRACE_AFTER_MS = 2.0
REQUIRED_COLUMNS = ("specimen_id", "fs_hz")
# a membrane potential in mV spans tens of mV; a trace whose largest value is below this is in volts
VOLTS_SUSPECT_MAX_ABS = 1.0


class CellError(ValueError):
    """A single cell could not be turned into a window; the message says why and what to do."""


@dataclass
class CellRow:
    """One row of cells.csv: its id, sampling rate (Hz, NaN if unknown) and all its columns."""

    specimen_id: str
    fs_hz: float
    columns: dict


def read_cells_table(folder: Path) -> list[CellRow]:
    """Read `folder/cells.csv`.

    Raises FileNotFoundError / ValueError with the fix when the folder or table is unusable;
    a bad value in one row (e.g. an empty rate) is kept as NaN and reported per cell later.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist or is not a folder")
    table = folder / "cells.csv"
    if not table.is_file():
        raise FileNotFoundError(
            f"{table} not found: the data folder needs cells.csv (specimen_id, fs_hz) and traces/<specimen_id>.npy"
        )
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{table}: missing column(s) {missing}; found {reader.fieldnames}")
        rows = []
        for r in reader:
            rows.append(CellRow(specimen_id=(r["specimen_id"] or "").strip(), fs_hz=parse_rate(r["fs_hz"]), columns=r))
    return rows


def parse_rate(text) -> float:
    """Sampling rate in Hz from a table cell, NaN when empty or not a positive number."""
    try:
        fs = float(text)
    except (TypeError, ValueError):
        return math.nan
    return fs if fs > 0 and math.isfinite(fs) else math.nan


def load_cell_window(folder: Path, row: CellRow, spec: WindowSpec, warp: float = 1.0) -> np.ndarray:
    """Load one cell's trace and return its model window, (spec.n_samples,) float32 in mV, read
    `warp` times faster than recorded (the temperature warp; 1.0: as recorded).

    Raises CellError naming the file or value and the fix, also when the trace holds no action
    potential the network may classify (rtclassify.dsp.ap_check: flat, noise, an EPSP, inverted,
    clipped, a step artefact): the network would give such a trace a class all the same.
    """
    from rtclassify.dsp.ap_check import ap_problem

    trace = load_cell_trace(folder, row, spec)
    why = ap_problem(trace, row.fs_hz, samples_at(TRACE_BEFORE_MS, row.fs_hz))
    if why:
        raise CellError(f"{Path(folder) / 'traces' / (row.specimen_id + '.npy')}: {why}")
    return stored_window(trace, row.fs_hz, spec, warp)


def stored_window(trace: np.ndarray, fs_hz: float, spec: WindowSpec, warp: float = 1.0) -> np.ndarray:
    """The model window of a stored trace (n,) mV at fs_hz, its peak TRACE_BEFORE_MS in, read `warp`
    times faster than recorded: (spec.n_samples,) float32 mV."""
    return window_from_trace(trace, fs_hz, samples_at(TRACE_BEFORE_MS, fs_hz), spec, warp)


def load_cell_trace(folder: Path, row: CellRow, spec: WindowSpec) -> np.ndarray:
    """One cell's stored trace (n,) in mV at row.fs_hz, checked (length, finite values, units, rate).

    Raises CellError naming the file or value and the fix.
    """
    if spec.anchor != "peak":
        raise CellError(
            f"this folder holds peak-aligned traces but the model's window is anchored on {spec.anchor!r}"
        )
    if not row.specimen_id:
        raise CellError("empty specimen_id")
    if math.isnan(row.fs_hz):
        raise CellError(f"unknown sampling rate fs_hz={row.columns.get('fs_hz')!r}: give the rate in Hz")
    unusable = check_stream_rate(row.fs_hz, spec)
    if unusable:  # e.g. below 10 kHz: an AP's upstroke spans too few samples to be told apart
        raise CellError(f"fs_hz={row.fs_hz:g}: {unusable}")
    path = Path(folder) / "traces" / f"{row.specimen_id}.npy"
    if not path.is_file():
        raise CellError(f"trace file {path} not found")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt files
        raise CellError(f"cannot read {path}: {exc}") from None
    x = np.asarray(x).squeeze()
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.number):
        raise CellError(f"{path}: expected a 1-D numeric array, got shape {x.shape} dtype {x.dtype}")
    check_trace(x, row.fs_hz, path)
    return x


def check_trace(x: np.ndarray, fs_hz: float, path) -> None:
    """Refuse traces of the wrong length, with non-finite values, or in volts."""
    expected = samples_at(TRACE_BEFORE_MS + TRACE_AFTER_MS, fs_hz)
    if abs(len(x) - expected) > 1:
        raise CellError(
            f"{path}: {len(x)} samples, expected {expected} (3 ms at fs_hz={fs_hz:g} Hz); "
            "check fs_hz or cut 1 ms before to 2 ms after the peak"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        raise CellError(f"{path}: {int(bad.sum())} NaN/Inf samples (first at index {int(np.argmax(bad))})")
    peak = float(np.max(np.abs(x)))
    if peak < VOLTS_SUSPECT_MAX_ABS:
        raise CellError(f"{path}: largest |value| is {peak:.3g}, which looks like volts; give mV (multiply by 1000)")
