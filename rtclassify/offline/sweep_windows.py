"""Windows from recorded sweeps: every short square that evoked exactly one AP gives one window.

Shared by the dataset build (trainer/build.py) and `rtclassify annotate`, so that a model is
applied to NWB files exactly as its training windows were cut.
"""
from dataclasses import dataclass, field

import numpy as np

from rtclassify.dsp.detector import EVOKED_SEARCH_MS
from rtclassify.dsp.windows import WindowSpec, samples_at, segment_samples, window_from_trace

OBSCURED = "AP peak hidden by a stimulus edge (obscured)"


@dataclass
class SweepWindows:
    """windows (k, L) mV at spec.fs_hz; rows: one dict per window; skipped: {sweep: reason}."""

    windows: np.ndarray
    rows: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)


def windows_from_sweeps(sweeps, spec: WindowSpec) -> SweepWindows:
    """Cut the windows of the short-square sweeps among `sweeps` (rtclassify.formats.nwb.Sweep records).

    Row fields: sweep, stimulus, by_name (the stimulus name says short square), fs_native (Hz),
    onset_s and peak_s (s from the sweep's first sample). Short squares without exactly one
    evoked AP, with NaN samples, too close to the sweep's ends or whose AP peak a stimulus edge hides are listed
    in `skipped`.
    """
    from rtclassify.formats.stimuli import find_short_square

    windows, rows, skipped = [], [], {}
    for s in sweeps:
        if s.clamp_mode != "current" or s.refusal:
            continue
        step = find_short_square(s.stimulus, s.command, s.fs, s.layout)
        if step is None:
            continue
        cut = evoked_window(s, step.onset, step.offset, spec)
        if isinstance(cut, str):
            skipped[s.sweep] = cut
            continue
        window, peak = cut
        windows.append(window)
        rows.append({"sweep": s.sweep, "stimulus": s.stimulus, "by_name": step.by_name, "fs_native": s.fs,
                     "onset_s": step.onset / s.fs, "peak_s": peak / s.fs})
    return SweepWindows(np.array(windows, np.float32).reshape(-1, spec.n_samples), rows, skipped)


def evoked_window(s, onset: int, offset: int, spec: WindowSpec, first_in_step: bool = False, warp: float = 1.0):
    """(window (L,) float32 mV at spec.fs_hz, peak sample) of the one AP the step [onset, offset)
    of sweep `s` evoked, or the reason (str) there is none: NaN samples, not exactly one AP within
    EVOKED_SEARCH_MS of the onset, its peak hidden by a stimulus edge, or the window past the ends.
    first_in_step: a longer step's first AP anywhere before the step's end (a train may follow). warp: the
    temperature warp (dsp.temperature.warp_factor) the window is read with, as serve reads it."""
    from rtclassify.dsp.ap_check import clipped_top
    from rtclassify.dsp.detector import detect_spikes

    if not np.all(np.isfinite(s.response)):
        return "NaN/Inf in the response"
    sp = detect_spikes(s.response, s.fs, ([onset], [offset]))
    end = max(offset, onset + 1) if first_in_step else onset + samples_at(EVOKED_SEARCH_MS, s.fs)
    evoked = [k for k, p in enumerate(sp.peaks) if onset <= p < end]
    if first_in_step and evoked:
        evoked = evoked[:1]
    if len(evoked) != 1:
        elsewhere = len(sp.peaks) - len(evoked)
        seen = f" ({elsewhere} AP{'s' if elsewhere != 1 else ''} outside it: spontaneous or rebound)" if elsewhere else ""
        return (f"{len(evoked)} APs evoked (need exactly 1){seen}" if not first_in_step
                else f"0 APs during the step{seen}")
    if sp.obscured[evoked[0]]:
        return OBSCURED
    peak = int(sp.peaks[evoked[0]])
    clipped = clipped_top(s.response, peak, s.fs)
    if clipped:
        return clipped
    anchor = peak if spec.anchor == "peak" else onset
    n_before, n_after = segment_samples(spec, s.fs * warp)
    if anchor - n_before < 0 or anchor + n_after > len(s.response):
        return "window runs past the sweep's ends"
    return window_from_trace(s.response, s.fs, anchor, spec, warp), peak
