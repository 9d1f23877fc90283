"""Long steps of recorded sweeps (rtclassify.formats Sweep records) measured as a family per channel.

A sweep's long steps are the steps of more than SHORT_STEP_MS[1] ms on its command (one sweep may
hold two: a variable step and a fixed hyperpolarising one). Each is measured on its own
(features.step.measure_step); the steps of one channel make that cell's family.
"""
import numpy as np

from rtclassify.features.step import StepFeatures, measure_step, rebound_end_sample
from rtclassify.formats.stimuli import LEVEL_LAYOUTS, SHORT_STEP_MS, steps_after_test_pulse

MIN_LONG_STEP_MS = SHORT_STEP_MS[1]  # longer than a short square's upper bound


LEVEL_SMOOTH_MS = 2.0  # a measured current is median-filtered over this long before its levels are read
LEVEL_CHANGE_PA = 5.0  # a change of level this large inside a step ends the step there


def long_steps(s) -> list[tuple[int, int]]:
    """(onset, offset) of the long steps of Sweep `s` (none without a command of the response's length).
    A step that goes from one level straight to another (a "dual" protocol: -100 pA, then the test
    amplitude) ends at the first change: only that part starts from the holding current."""
    return [(a, b) for a, b, _ in long_steps_and_rebounds(s)]


def long_steps_and_rebounds(s) -> list[tuple[int, int, int]]:
    """(onset, offset, rebound_end) of the long steps of Sweep `s`: rebound_end is where the window for
    rebound APs after the step stops (features.step.rebound_end_sample: 0.5 s on, the next step's
    onset or the sweep's end), or the offset itself when the step went straight to another level."""
    if s.command is None or len(s.command) != len(s.response):
        return []
    found = steps_after_test_pulse(s.command, s.fs, s.layout)
    out = []
    for k, (a, b_return) in enumerate(found):
        b = first_level_change(s.command, s.fs, a, b_return, measured=not s.layout.startswith(LEVEL_LAYOUTS))
        if (b - a) / s.fs * 1e3 > MIN_LONG_STEP_MS:
            next_onset = found[k + 1][0] if k + 1 < len(found) else None
            rebound = rebound_end_sample(b, s.fs, len(s.response), next_onset) if b == b_return else b
            out.append((a, b, rebound))
    return out


def first_level_change(i_pa: np.ndarray, fs: float, a: int, b: int, measured: bool) -> int:
    """The first sample in (a, b) where the step's level changes by LEVEL_CHANGE_PA, else b. measured:
    the current is a recording (noise, AP-coupled transients): median-filtered first."""
    seg = np.asarray(i_pa[a:b], dtype=np.float64)
    if measured:
        from scipy.ndimage import median_filter

        seg = median_filter(seg, size=max(3, int(LEVEL_SMOOTH_MS * fs / 1e3) | 1), mode="nearest")
    settle = min(len(seg) - 1, max(1, int(LEVEL_SMOOTH_MS * fs / 1e3)))
    level = float(np.median(seg[settle:settle + max(1, int(0.01 * fs))]))
    moved = np.flatnonzero(np.abs(seg[settle:] - level) > LEVEL_CHANGE_PA)
    return a + settle + int(moved[0]) if len(moved) else b


def measure_sweep(s, found: list | None = None) -> list[StepFeatures]:
    """The features of every long step of Sweep `s` whose onset has a baseline before it and whose end
    is inside the sweep (steps cut by the sweep's ends are left out). found: its
    long_steps_and_rebounds(s), when the caller has them already."""
    out = []
    for a, b, rebound in long_steps_and_rebounds(s) if found is None else found:
        if b >= len(s.response) or a < int(0.01 * s.fs):
            continue
        out.append(measure_step(s.response, s.command, s.fs, a, b, rebound_end=rebound))
    return out


def family_of(sweeps) -> list[StepFeatures]:
    """Every long step of the current-clamp, membrane-potential sweeps of one channel."""
    out = []
    for s in sweeps:
        if s.clamp_mode == "current" and not s.refusal and np.all(np.isfinite(s.response)):
            out.extend(measure_sweep(s))
    return out
