"""Is it an action potential? The check a stored trace passes before the AP network sees it.

The network gives a class to any 3 ms of numbers, a flat line included. A trace given as an AP
(`predict`'s traces, 1 ms before to 2 ms after the peak) must show one to the project's own detector
(rtclassify.dsp.detector, the rules that find the evoked AP in `serve` and `sweeps`): an upstroke
faster than 20 mV/ms that accelerates and rises 30 mV above its threshold, peaking where the trace
says (within ISI_TOLERANCE_MS), falling back at least REPOLARISE_MV within the 2 ms after, and not
cut flat at its top (its maximum held for CLIPPED_MS). Otherwise the reason names what
was seen: flat, inverted, too slow or small (an EPSP, noise, mains hum), a step that does not
come back (an artefact), clipped.
"""
import numpy as np

PEAK_TOLERANCE_MS = 0.2  # the AP's peak must lie this close to where the trace puts it
REPOLARISE_MV = 15.0  # an AP falls at least this far from its peak within the trace's 2 ms after it
CLIPPED_MS = 0.1  # the maximum held this long: the top was cut by an amplifier or an ADC range (a real
# AP's top, quantised by the ADC, holds for at most 0.04 ms in the Allen recordings at 200 kHz)
MIN_CLIPPED_SAMPLES = 3  # and on at least this many samples: two equal ones at a broad AP's top are an
# ADC's quantisation at 10 kHz, not a clip
FLAT_MV = 5.0  # a trace spanning less than this holds no AP


def ap_problem(trace_mv: np.ndarray, fs_hz: float, peak_index: int) -> str | None:
    """Why trace_mv (n,) mV at fs_hz, whose AP peak should be at peak_index, is not an action potential
    the network may classify (None when it is one)."""
    from rtclassify.dsp.detector import detect_spikes

    v = np.asarray(trace_mv, dtype=np.float64)
    span = float(v.max() - v.min())
    if span < FLAT_MV:
        return f"not an action potential: flat (the trace spans {span:.2g} mV)"
    clipped = clipped_top(v, int(np.argmax(v)), fs_hz)
    if clipped:
        return clipped
    tol = max(1, int(round(PEAK_TOLERANCE_MS * fs_hz / 1e3)))
    lo, hi = max(0, peak_index - tol), min(len(v), peak_index + tol + 1)
    if float(v[lo:hi].min()) <= float(v.min()) + 0.1 * span and float(v[lo:hi].max()) < float(v.min()) + 0.5 * span:
        return "not an action potential: inverted (the trace dips where its peak should be)"
    sp = detect_spikes(v, fs_hz)
    near = [p for p in sp.peaks if abs(int(p) - peak_index) <= tol]
    if not near:
        dvdt = np.diff(v) * fs_hz / 1e3
        return (f"not an action potential: no AP at the expected peak (a rise of {span:.3g} mV at most "
                f"{float(dvdt.max()):.3g} mV/ms; an AP rises faster than 20 mV/ms and 30 mV above its threshold)")
    peak = int(near[0])
    if float(v[peak] - v[peak:].min()) < REPOLARISE_MV:
        return (f"not an action potential: no repolarisation (it falls only {float(v[peak] - v[peak:].min()):.3g} mV "
                "in the 2 ms after its peak: a step or an artefact)")
    return None


def clipped_top(v_mv: np.ndarray, peak: int, fs_hz: float) -> str | None:
    """Why the AP whose peak the detector put at v_mv[peak] (mV at fs_hz) was cut flat at its top (its
    value held CLIPPED_MS or longer on either side of the peak), or None: the check `sweeps`, `watch` and
    `serve` make on the AP they found (a stored trace gets all of ap_problem)."""
    top, n = v_mv[peak], len(v_mv)
    last = first = peak
    while last + 1 < n and v_mv[last + 1] == top:
        last += 1
    while first > 0 and v_mv[first - 1] == top:
        first -= 1
    held = (last - first) / fs_hz * 1e3  # from the first sample at the top to the last: a lone one holds 0
    if last - first + 1 >= MIN_CLIPPED_SAMPLES and held >= CLIPPED_MS:
        return (f"not a usable action potential: clipped (held at its peak {float(top):.4g} mV for {held:.2g} ms: "
                "an amplifier's or ADC's range)")
    return None
