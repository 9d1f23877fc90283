"""A simulated amplifier: continuous current-clamp streams with short-square stimuli and real APs.

Each headstage plays a sequence of cells; each cell gets several sweeps, some subthreshold. A
suprathreshold sweep places a real action potential (from a folder in the allen-ctdb-spikes
layout, or from the built-in conductance-based neuron models) at the cell's measured
stimulus-to-peak delay, the 3 ms step on the command channel, a realistic baseline and noise.
The AP itself is played unchanged (resampled only when the stream rate differs), so that the
daemon sees exactly the windows the model was evaluated on.
"""
import csv
import math
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import numpy as np

from rtclassify.formats.spike_folder import CellError, check_trace
from rtclassify.dsp.windows import resample_trace, samples_at

DEFAULT_STIM_TO_PEAK_S = 0.0032  # the Allen median
DELAY_RANGE_S = (0.0013, 0.010)  # stimulus-to-peak delays the simulator plays (others: clipped or the median)
STEP_MS = 3.0


@dataclass
class SimCell:
    cell_id: str
    ap_mv: np.ndarray  # (n,) 1 ms before to 2 ms after the peak, at the stream rate
    stim_to_peak_s: float
    meta: dict = field(default_factory=dict)  # line_name, dendrite_type, model… (ground truth)
    sweep_ap: Callable | None = None  # rng -> (AP mV, stim_to_peak s) of one sweep; None: the same
    # AP every sweep (a recording is played as it is)


@dataclass
class SweepPlan:
    """Timing of one simulated sweep, sample indices relative to the sweep start."""

    v_mv: np.ndarray
    i_pa: np.ndarray
    onset: int
    peak: int | None  # None: subthreshold sweep


def load_cells(folder: Path, fs: float, limit: int | None = None, rng=None) -> list[SimCell]:
    """Cells of an allen-ctdb-spikes folder (shuffled when rng is given), APs resampled to fs."""
    folder = Path(folder)
    with open(folder / "cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if rng is not None:
        rows = [rows[k] for k in rng.permutation(len(rows))]
    cells = []
    for r in rows:
        try:
            native = float(r["fs_hz"])
            x = np.load(folder / "traces" / f"{r['specimen_id']}.npy").astype(np.float64)
            check_trace(x, native, r["specimen_id"])
        except (OSError, ValueError, KeyError, CellError):
            continue  # the simulator plays what it can; `predict` is where bad rows are reported
        ap = resample_trace(x, native, fs) if native != fs else x
        delay = parse_delay(r.get("stimulus_to_peak_s"))
        cells.append(SimCell(str(r["specimen_id"]), ap, delay, {k: r.get(k, "") for k in ("line_name", "dendrite_type")}
                             | {"fs_hz_native": native}))
        if limit and len(cells) >= limit:
            break
    return cells


def parse_delay(text) -> float:
    """Stimulus-to-peak delay in s; invalid values (empty, negative, absurd) become the median."""
    try:
        d = float(text)
    except (TypeError, ValueError):
        return DEFAULT_STIM_TO_PEAK_S
    return d if DELAY_RANGE_S[0] <= d <= DELAY_RANGE_S[1] else DEFAULT_STIM_TO_PEAK_S


def synthesise_sweep(cell: SimCell, fs: float, spike: bool, rng: np.random.Generator, pre_ms: float = 20.0,
                     post_ms: float = 30.0, noise_mv: float = 0.08, step_pa: float = 600.0) -> SweepPlan:
    """One sweep: baseline, a 3 ms step, and the cell's real AP (or a passive response)."""
    n_pre = samples_at(pre_ms, fs)
    n_before = samples_at(1.0, fs)
    ap, delay_s = cell.sweep_ap(rng) if cell.sweep_ap is not None and spike else (cell.ap_mv, cell.stim_to_peak_s)
    delay = samples_at(delay_s * 1000, fs)
    rest = float(np.clip(ap[0] - 15.0, -80.0, -55.0))
    n = n_pre + delay + (len(ap) - n_before) + samples_at(post_ms, fs)
    t_ms = np.arange(n) / fs * 1000
    v = np.full(n, rest)
    i = np.zeros(n)
    onset = n_pre
    step = samples_at(STEP_MS, fs)
    i[onset:onset + step] = step_pa if spike else step_pa * 0.4
    if spike:
        start = onset + delay - n_before  # first sample of the real AP trace
        ramp = np.arange(start - onset) / fs * 1000
        tau = 1.5
        if len(ramp):
            shape = (1 - np.exp(-ramp / tau)) / (1 - math.exp(-(start - onset) / fs * 1000 / tau))
            v[onset:start] = rest + (ap[0] - rest) * shape
        v[start:start + len(ap)] = ap
        tail = t_ms[start + len(ap):] - t_ms[start + len(ap) - 1]
        v[start + len(ap):] = rest + (ap[-1] - rest) * np.exp(-tail / 5.0)
        peak = onset + delay
    else:  # passive: charge for 3 ms, then relax
        tau = 8.0
        on = (t_ms[onset:onset + step] - t_ms[onset])
        v[onset:onset + step] = rest + 8.0 * (1 - np.exp(-on / tau))
        top = v[onset + step - 1]
        off = t_ms[onset + step:] - t_ms[onset + step - 1]
        v[onset + step:] = rest + (top - rest) * np.exp(-off / tau)
        peak = None
    keep = np.ones(n, bool)
    if spike:
        keep[start:start + len(ap)] = False  # the real AP carries its own noise
    v[keep] += rng.normal(0, noise_mv, int(keep.sum()))
    i += rng.normal(0, 2.0, n)
    return SweepPlan(v_mv=v, i_pa=i, onset=onset, peak=peak)


def plan_cell_sweeps(cell: SimCell, fs: float, sweeps: int, subthreshold_every: int, rng) -> list[SweepPlan]:
    """The sweeps of one cell: every `subthreshold_every`-th sweep is subthreshold (0: none)."""
    plans = []
    for k in range(sweeps):
        spike = not (subthreshold_every and k % subthreshold_every == subthreshold_every - 1)
        plans.append(synthesise_sweep(cell, fs, spike, rng))
    return plans


class HeadstageStream:
    """The continuous stream of one simulated headstage, generated a cell at a time."""

    def __init__(self, number: int, cells: list[SimCell], fs: float, sweeps: int, subthreshold_every: int, rng):
        self.number = number
        self.cells = cells
        self.fs = fs
        self.sweeps = sweeps
        self.subthreshold_every = subthreshold_every
        self.rng = rng
        self.next_cell = 0
        self.cells_started = 0
        self.v = np.zeros(0)
        self.i = np.zeros(0)
        self.base = 0  # absolute sample of self.v[0]
        self.events: list[tuple[int, dict]] = []  # (sample, event) not yet sent
        self.truth: list[dict] = []  # stimuli not yet reported

    def extend(self) -> None:
        """Append the next cell's sweeps (cycling through the cells)."""
        cell = self.cells[self.next_cell % len(self.cells)]
        self.next_cell += 1
        self.cells_started += 1
        start = self.base + len(self.v)
        cell_id = f"{cell.cell_id}#hs{self.number}.{self.cells_started}"
        self.events.append((start, {"type": "new_cell", "headstage": self.number, "cell_id": cell_id,
                                    "sample": start}))
        vs, is_ = [self.v], [self.i]
        offset = start
        for plan in plan_cell_sweeps(cell, self.fs, self.sweeps, self.subthreshold_every, self.rng):
            self.truth.append({"headstage": self.number, "cell_id": cell_id, "specimen_id": cell.cell_id,
                               "stim_onset_sample": offset + plan.onset,
                               "peak_sample": None if plan.peak is None else offset + plan.peak,
                               "spike": plan.peak is not None, "fs": self.fs, **cell.meta})
            vs.append(plan.v_mv)
            is_.append(plan.i_pa)
            offset += len(plan.v_mv)
        self.v, self.i = np.concatenate(vs), np.concatenate(is_)

    def prepare(self, n: int) -> None:
        """Generate the cells' sweeps until n samples are ready, so that streaming them only slices
        (a cell's sweeps take tens of ms to simulate: in the stream that is a stall, then a burst)."""
        while len(self.v) < n:
            self.extend()

    def take(self, n: int) -> tuple[int, np.ndarray, np.ndarray]:
        """The next n samples: (first_sample, v mV, i pA)."""
        self.prepare(n)
        first = self.base
        v, i = self.v[:n], self.i[:n]
        self.v, self.i = self.v[n:], self.i[n:]
        self.base += n
        return first, v, i

    def due_events(self, before: int) -> list[dict]:
        """Events whose sample is before `before` (to be sent ahead of that data)."""
        due = [e for s, e in self.events if s < before]
        self.events = [(s, e) for s, e in self.events if s >= before]
        return due


def run_simulation(sink, streams: list[HeadstageStream], chunk_n: int, speed: float = 1.0,
                   max_cells: int | None = None, seconds: float | None = None, truth=None,
                   stim_events: bool = False, stop=None, on_chunk=None) -> dict:
    """Stream all headstages chunk by chunk, paced at `speed` x real time (0: as fast as possible).

    Stops after `max_cells` cells in total have been played completely, after `seconds` of
    simulated time, or when `stop` (a threading.Event) is set. truth: a writable text file that
    receives one JSON line per stimulus (ground truth for scoring). on_chunk(headstage,
    first_sample, n, t_sent) is called after each chunk is sent (for latency measurement).
    Returns counts.
    """
    import json
    import time

    fs = streams[0].fs
    chunk_s = chunk_n / fs
    t_start = time.perf_counter()
    k = 0
    sent_stimuli = 0
    while True:
        if stop is not None and stop.is_set():
            break
        if seconds is not None and k * chunk_s >= seconds:
            break
        if max_cells is not None and completed_cells(streams) >= max_cells:
            break
        if speed > 0:
            due = t_start + k * chunk_s / speed
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        for hs in streams:
            first, v, i = hs.take(chunk_n)
            for event in hs.due_events(first + chunk_n):
                sink.send_event(event, fs)
            if stim_events:
                for t in hs.truth:
                    if first <= t["stim_onset_sample"] < first + chunk_n and not t.get("_event_sent"):
                        sink.send_event({"type": "stimulus", "headstage": hs.number,
                                         "sample": t["stim_onset_sample"]}, fs)
                        t["_event_sent"] = True
            sink.send_data(hs.number, first, fs, v, i)
            if on_chunk is not None:
                on_chunk(hs.number, first, chunk_n, time.perf_counter())
            # a stimulus is reported once all of its sweep's needed samples have been streamed
            done = [t for t in hs.truth if t["stim_onset_sample"] + int(0.015 * fs) < first + chunk_n]
            for t in done:
                t.pop("_event_sent", None)
                if truth is not None:
                    truth.write(json.dumps(t) + "\n")
                sent_stimuli += 1
            hs.truth = [t for t in hs.truth if t not in done]
        k += 1
    return {"chunks": k, "stimuli": sent_stimuli, "seconds": k * chunk_s,
            "cells": sum(hs.cells_started for hs in streams)}


def completed_cells(streams: list[HeadstageStream]) -> int:
    """Cells whose stimuli have all been streamed (a cell's sweeps are queued when it starts,
    possibly ahead of time: see prepare_streams)."""
    return sum(hs.cells_started - len({t["cell_id"] for t in hs.truth}) for hs in streams)


def prepare_streams(streams: list[HeadstageStream], max_cells: int | None = None,
                    seconds: float | None = None) -> None:
    """Simulate ahead what a bounded run will play (its cells, or its seconds), so that streaming
    only slices: a cell's sweeps take tens of ms to simulate, which in the stream is a stall and a
    burst, and beside the daemon on a small machine, CPU taken from it. Unbounded runs simulate
    as they go."""
    if max_cells is not None:
        per_stream = -(-max_cells // len(streams))
        for hs in streams:
            while hs.cells_started < per_stream:
                hs.extend()
    if seconds is not None:
        for hs in streams:
            hs.prepare(int(seconds * hs.fs))
