"""Windows from recorded sweeps: every short square that evoked exactly one AP gives one window.

Shared by the dataset build (trainer/build.py) and `rtclassify annotate`, so that a model is
applied to NWB files exactly as its training windows were cut.
"""
from dataclasses import dataclass, field

import numpy as np

from rtclassify.dsp.detector import EVOKED_SEARCH_MS
from rtclassify.dsp.windows import WindowSpec, samples_at, window_from_segment

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
    from rtclassify.dsp.detector import detect_spikes
    from rtclassify.formats.stimuli import find_short_square

    windows, rows, skipped = [], [], {}
    for s in sweeps:
        if s.clamp_mode != "current":
            continue
        step = find_short_square(s.stimulus, s.command, s.fs)
        if step is None:
            continue
        if not np.all(np.isfinite(s.response)):
            skipped[s.sweep] = "NaN/Inf in the response"
            continue
        sp = detect_spikes(s.response, s.fs, ([step.onset], [step.offset]))
        evoked = [k for k, p in enumerate(sp.peaks) if step.onset <= p < step.onset + samples_at(EVOKED_SEARCH_MS, s.fs)]
        if len(evoked) != 1:
            skipped[s.sweep] = f"{len(evoked)} APs evoked (need exactly 1)"
            continue
        if sp.obscured[evoked[0]]:
            skipped[s.sweep] = OBSCURED
            continue
        peak = int(sp.peaks[evoked[0]])
        anchor = peak if spec.anchor == "peak" else step.onset
        n_before, n_after = samples_at(spec.before_ms, s.fs), samples_at(spec.after_ms, s.fs)
        if anchor - n_before < 0 or anchor + n_after > len(s.response):
            skipped[s.sweep] = "window runs past the sweep's ends"
            continue
        windows.append(window_from_segment(s.response[anchor - n_before:anchor + n_after], s.fs, n_before, spec))
        rows.append({"sweep": s.sweep, "stimulus": s.stimulus, "by_name": step.by_name, "fs_native": s.fs,
                     "onset_s": step.onset / s.fs, "peak_s": peak / s.fs})
    return SweepWindows(np.array(windows, np.float32).reshape(-1, spec.n_samples), rows, skipped)
