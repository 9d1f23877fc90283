"""Detector kernels against their numpy references (random and real inputs) and on real evoked spikes."""
import csv

import numpy as np
import pytest

from rtclassify.dsp import _kernels
from rtclassify.dsp.detector import (DetectorConfig, compute_dvdt_reference, detect_spikes, detect_steps, detect_trace,
                                  find_hidden_upstroke_reference, find_spikes_reference, find_steps_reference,
                                  scan_step_edges_reference, summarise_detection)


def synthetic_sweep(fs=50_000, n=5000, onset=1000, width_ms=3.0, amp_pa=400.0, spike_at=None, seed=0):
    """A passive membrane charged by a current step, plus an AP shape, plus noise (mV, pA)."""
    rng = np.random.default_rng(seed)
    i = np.zeros(n)
    off = onset + int(width_ms * fs / 1000)
    i[onset:off] = amp_pa
    t = np.arange(n) / fs * 1000
    v = np.full(n, -70.0)
    tau = 10.0
    ton, toff = onset / fs * 1000, off / fs * 1000
    v += np.where(t >= ton, 15 * (1 - np.exp(-(t - ton) / tau)), 0)
    v -= np.where(t >= toff, 15 * (1 - np.exp(-(t - toff) / tau)), 0)
    if spike_at is not None:
        tp = spike_at / fs * 1000
        v += 100 * np.exp(-((t - tp) / 0.25) ** 2) * (t < tp) + 100 * np.exp(-((t - tp) / 0.6) ** 2) * (t >= tp)
    return v + rng.normal(0, 0.05, n), i + rng.normal(0, 1.0, n), onset, off


@pytest.mark.parametrize("seed", range(5))
def test_find_steps_matches_reference_on_random_pulses(seed):
    rng = np.random.default_rng(seed)
    i = rng.normal(0, 5, 20_000)
    for start in rng.choice(19_000, 6, replace=False):
        i[start:start + rng.integers(10, 500)] += rng.choice([-300, 300])
    on, off = detect_steps(i, DetectorConfig(), holding_pa=0.0)
    ref_on, ref_off = find_steps_reference(i, 0.0, DetectorConfig().i_threshold_pa)
    assert np.array_equal(on, ref_on) and np.array_equal(off, ref_off)


@pytest.mark.parametrize("seed", range(5))
def test_streamed_step_scan_matches_reference_chunk_by_chunk(seed):
    """The daemon's per-chunk scan (strided column of its ring buffer, state carried between
    chunks) finds the same edges and quiet level as the numpy reference."""
    rng = np.random.default_rng(seed)
    n = 5_000
    two = np.zeros((n, 2))
    two[:, 1] = rng.normal(0, 5, n)
    for start in rng.choice(n - 600, 4, replace=False):
        two[start:start + rng.integers(3, 500), 1] += rng.choice([-300, 300])
    in_step = bool(rng.integers(2))
    edges = np.empty(n, np.int64)
    for a in range(0, n, 37):  # chunk boundaries that cut through steps
        chunk = two[a:a + 37, 1]
        count, quiet_sum, quiet_n = _kernels.scan_step_edges(chunk, 0.0, 50.0, in_step, edges)
        ref_edges, ref_sum, ref_n = scan_step_edges_reference(chunk, 0.0, 50.0, in_step)
        assert np.array_equal(edges[:count], ref_edges) and quiet_n == ref_n
        assert quiet_sum == pytest.approx(ref_sum, abs=1e-9)
        in_step = in_step if count % 2 == 0 else not in_step


def test_step_already_on_at_the_first_sample():
    i = np.r_[np.full(75, 0.4), np.full(175, -1499.6)]  # a real layout: the trace starts inside the pulse
    on, off = detect_steps(i)
    assert list(on) == [0] and list(off) == [75]


def test_find_spikes_slope_is_the_reference_dvdt():
    v = np.random.default_rng(0).normal(-60, 5, 1000)
    ref = compute_dvdt_reference(v, 50_000.0)
    assert np.allclose([_kernels.slope(v, k, 50.0) for k in range(1, 1000)], ref[1:], rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_find_spikes_matches_reference_on_random_traces(seed):
    rng = np.random.default_rng(seed)
    spike = int(rng.integers(1100, 1200)) if seed % 2 else None
    v, i, onset, off = synthetic_sweep(spike_at=spike, seed=seed)
    v += np.cumsum(rng.normal(0, 0.3, len(v)))  # random walk: plenty of sub-threshold candidates
    sp = detect_spikes(v, 50_000, ([onset], [-1]))  # no known end: find_spikes alone
    ref_thr, ref_pk = find_spikes_reference(v, 50_000, [onset])
    assert np.array_equal(sp.thresholds, ref_thr) and np.array_equal(sp.peaks, ref_pk)


def test_spike_found_and_charging_ignored():
    v, i, onset, off = synthetic_sweep(spike_at=1120)
    det = detect_trace(v, i, 50_000)
    assert list(det.onsets) == [onset] and list(det.offsets) == [off]
    assert len(det.peaks) == 1 and abs(det.peaks[0] - 1120) <= 1
    v, i, _, _ = synthetic_sweep(spike_at=None, amp_pa=2000)
    assert len(detect_trace(v, i, 50_000).peaks) == 0


def test_a_spike_rising_at_the_end_of_the_data_is_left_for_later():
    v, i, onset, off = synthetic_sweep(spike_at=1120)
    sp = detect_spikes(v[:1110], 50_000, ([onset], [off]))
    assert len(sp.peaks) == 0 and sp.complete < 1110
    sp = detect_spikes(v[:1300], 50_000, ([onset], [off]))
    assert len(sp.peaks) == 1 and sp.complete == 1300 and not sp.obscured[0]


def bridge_sweep(fs=50_000, knee_ms=None, bridge_mv=60.0, seed=0):
    """A 3 ms step through an unbalanced bridge: V jumps by bridge_mv at the onset, the membrane
    charges, and (knee_ms) an AP starts inside the step and is still rising at its end."""
    rng = np.random.default_rng(seed)
    n, onset = 1000, 200
    off = onset + int(3e-3 * fs)
    t = (np.arange(n) - onset) / fs * 1e3  # ms from the onset
    i = np.where((t >= 0) & (t < 3), 1500.0, 0.0)
    v = -60 + np.where(t >= 0, 25 * (1 - np.exp(-t / 1.2)), 0) * np.where(t < 3, 1, np.exp(-(t - 3) / 1.2))
    v += np.where(i > 0, bridge_mv, 0)
    if knee_ms is not None:  # an upstroke of ~40 mV/ms whose top the offset cuts off
        v += np.where((t >= knee_ms) & (t < 3), 40 * (1 - np.exp(-(t - knee_ms) / 0.6)), 0)
    return v + rng.normal(0, 0.03, n), i + rng.normal(0, 1.0, n), onset, off


@pytest.mark.parametrize("seed", range(6))
def test_hidden_upstroke_matches_reference_on_random_traces(seed):
    rng = np.random.default_rng(seed)
    v, i, onset, off = bridge_sweep(knee_ms=float(rng.uniform(0.8, 2.6)) if seed % 2 else None, seed=seed)
    v += np.cumsum(rng.normal(0, 0.05, len(v)))
    for span in (1, 3, 5):
        for floor in (-2.0, -50.0):
            args = (onset + 20, off - 1, span, 50.0 / span, float(rng.uniform(1, 30)), floor)
            assert _kernels.find_hidden_upstroke(v, *args) == find_hidden_upstroke_reference(v, *args)


def test_an_ap_hidden_by_the_step_end_is_reported_obscured():
    for knee_ms in (2.3, 2.6, 2.8):
        v, i, onset, off = bridge_sweep(knee_ms=knee_ms)
        det = detect_trace(v, i, 50_000)
        assert len(det.peaks) == 1 and det.obscured[0], knee_ms
        assert -0.5 <= (det.thresholds[0] - onset) / 50 - knee_ms <= 0.05  # ms: where the knee began
        assert det.peaks[0] in (off - 2, off - 1)  # the last samples before the offset
    # an upstroke that rose >= min_amplitude_mv before the end is find_spikes's, its peak the
    # last sample before the end (the fraction of dV/dt left there does not tell a cut upstroke
    # from a true peak at 50 kHz: up to 42% of the top speed at the peaks of real Allen APs)
    for knee_ms in (1.0, 2.0):
        v, i, onset, off = bridge_sweep(knee_ms=knee_ms)
        det = detect_trace(v, i, 50_000)
        assert list(det.peaks) == [off - 1] and not det.obscured[0]
    assert summarise_detection(det, v, 50_000)["spikes"][0]["obscured"] is False
    v, i, _, _ = bridge_sweep(knee_ms=2.6)
    assert summarise_detection(detect_trace(v, i, 50_000), v, 50_000)["spikes"][0]["obscured"] is True
    for bridge_mv in (0.0, 60.0, 100.0):  # a passive membrane behind any bridge artefact: nothing
        v, i, _, _ = bridge_sweep(bridge_mv=bridge_mv)
        assert len(detect_trace(v, i, 50_000).peaks) == 0


def test_an_ap_in_view_is_never_also_reported_hidden():
    """A typical Allen short square: the upstroke starts inside the step and the peak comes after
    its end. find_spikes sees it; the hidden-AP rule must not add a second one."""
    v, i, onset, off = synthetic_sweep(spike_at=500 + 160)  # peak 3.2 ms after the onset
    v, i = v[:3000], i[:3000]
    det = detect_trace(v, i, 50_000)
    assert list(det.peaks) == [int(np.argmax(v))] and not det.obscured[0]


def test_a_hidden_ap_is_not_decided_before_the_data_passes_the_step_end():
    v, i, onset, off = bridge_sweep(knee_ms=2.6)
    sp = detect_spikes(v[:off + 10], 50_000, ([onset], [off]))  # 0.2 ms after the end: too early
    assert len(sp.peaks) == 0 and sp.complete <= onset
    sp = detect_spikes(v, 50_000, ([onset], [off]))
    assert len(sp.peaks) == 1 and sp.obscured[0]


def read_cases(evoked_dir):
    with open(evoked_dir / "cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_kernels_match_references_on_real_recordings(evoked_dir):
    for case in read_cases(evoked_dir):
        z = np.load(evoked_dir / f"{case['name']}.npz")
        v, i, fs = z["v"].astype(np.float64) * 1e3, z["i"].astype(np.float64) * 1e12, float(case["fs"])
        on, off = detect_steps(i)
        sp = detect_spikes(v, fs, (on, np.full(len(on), -1)))  # no step ends: find_spikes alone
        ref = find_spikes_reference(v, fs, on)
        assert np.array_equal(sp.thresholds, ref[0]) and np.array_equal(sp.peaks, ref[1]), case["name"]
        for a, b in zip(on, off):
            span = int(round(0.1e-3 * fs))
            start, stop = a + int(round(0.3e-3 * fs)) + span, b - 1
            args = (start, stop, span, fs / 1000 / span, 20.0, -2.0)
            assert _kernels.find_hidden_upstroke(v, *args) == find_hidden_upstroke_reference(v, *args), case["name"]


def test_agreement_with_the_audited_evoked_spikes(evoked_dir):
    """Spike / no spike against `spike_audited` (ambiguous cases left out), and peak-time error
    (`python -m bench.evoked` prints the same, with every disagreement).

    Measured 2026-12-02: 129 of 132 (0.977); 121 (0.917) before hidden APs were looked for. The
    three misses: two slow APs of one cell (1491942526.646_27_7) that peak inside a 1.5 ms pulse
    only ~28 mV above where they start, and one whose upstroke and peak both fall inside the
    offset's artefact (1521004040.059_24_4_3.014; only the shape of the decay after the pulse
    shows it). A hidden AP's peak time is not annotated (the annotation could not see it either).
    """
    from bench.evoked import score_evoked

    score = score_evoked(evoked_dir)
    assert score.agreement >= 0.95, score.misses
    assert score.hidden >= 5  # the bridge-artefact APs are found as hidden ones, not by chance in view
    assert np.median(score.peak_errors_ms) <= 0.05 and len(score.peak_errors_ms) >= 40


def allen_sweep(ap_mv: np.ndarray, fs: float, stim_to_peak_ms: float):
    """A bridge-balanced 3 ms short square carrying a real Allen AP (1 ms before to 2 ms after its
    peak): rest, passive charging from the onset up to the AP's first sample, the AP, and the
    decay back to rest; (v mV, i pA, onset, offset, peak) with 10 ms around it."""
    ms = fs / 1000
    onset = int(10 * ms)
    peak = onset + int(round(stim_to_peak_ms * ms))
    a, b = peak - int(round(ms)), peak - int(round(ms)) + len(ap_mv)
    n = b + int(10 * ms)
    rest = float(ap_mv[0]) - 8.0
    t = np.arange(n) / ms
    v = np.full(n, rest)
    rise = 1 - np.exp(-(t[onset:a] - t[onset]) / 3.0)
    v[onset:a] = rest + 8.0 * rise / (1 - np.exp(-(t[a] - t[onset]) / 3.0))
    v[a:b] = ap_mv
    v[b:] = rest + (float(ap_mv[-1]) - rest) * np.exp(-(t[b:] - t[b - 1]) / 5.0)
    i = np.zeros(n)
    i[onset:onset + int(3 * ms)] = 400.0
    return v, i, onset, onset + int(3 * ms), peak


def test_allen_short_square_aps_are_found_where_they_were(spikes_dir):
    """Every real AP of the Allen folder, placed in a short-square sweep at its own stimulus-to-peak
    delay (3.2 ms when that is unknown or under 1.4 ms): found exactly as find_spikes alone (the
    detector before hidden APs were looked for) finds it, so windows are cut where they were;
    none obscured; one AP at its top in all but a few traces (measured 2026-12-02: 10 of 1209:
    320654829 holds no AP, it rises 10 mV; in the others the recording's own step end notches the
    upstroke and find_spikes stops up to 0.08 ms before the top, as it always did)."""
    import pandas as pd

    cells = pd.read_csv(spikes_dir / "cells.csv")
    misses = []
    for row in cells.itertuples():
        ap = np.load(spikes_dir / "traces" / f"{row.specimen_id}.npy").astype(np.float64)
        delay = row.stimulus_to_peak_s * 1e3 if 1.4 <= row.stimulus_to_peak_s * 1e3 <= 10 else 3.2
        fs = float(row.fs_hz)
        v, i, onset, off, peak = allen_sweep(ap, fs, delay)
        det = detect_trace(v, i, fs)
        assert list(det.onsets) == [onset] and list(det.offsets) == [off]
        alone = detect_spikes(v, fs, (det.onsets, [-1]))
        assert list(alone.peaks) == list(det.peaks) and list(alone.thresholds) == list(det.thresholds)
        assert not det.obscured.any(), (row.specimen_id, delay)
        if len(det.peaks) != 1 or abs(det.peaks[0] - peak) > fs * 0.05e-3:
            misses.append(row.specimen_id)
    assert len(misses) <= 0.01 * len(cells), misses


def find_spikes_run_by_run(v, dvdt, masked, dvdt_threshold, min_acceleration, min_amplitude_mv, refractory):
    """The AP search as it was before the `hot` pre-pass: every run decided one by one (plain
    Python). Returns (thresholds, peaks, complete)."""
    n, k, thr, pk, complete = len(v), 1, [], [], len(v)
    while k < n:
        if masked[k] or dvdt[k] < dvdt_threshold:
            k += 1
            continue
        start = low = best_low = best_top = j = k
        best_gain = 0.0
        while j < n and not masked[j] and dvdt[j] > 0.0:
            if dvdt[j] < dvdt[low]:
                low = j
            if dvdt[j] - dvdt[low] > best_gain:
                best_gain, best_low, best_top = dvdt[j] - dvdt[low], low, j
            j += 1
        if j >= n:
            return thr, pk, start
        peak = j - 1
        if best_top < peak and best_gain >= min_acceleration and v[peak] - v[best_low] >= min_amplitude_mv:
            thr.append(best_low)
            pk.append(peak)
            k = peak + refractory
        else:
            k = j
        while k < n and dvdt[k] >= dvdt_threshold and not masked[k]:
            k += 1
    return thr, pk, complete


def test_the_jump_over_runs_that_cannot_be_aps_changes_no_result():
    """find_spikes skips runs whose rise cannot reach min_amplitude_mv: on noisy 200 kHz traces
    with APs, step artefacts and traces cut mid-upstroke, it gives the run-by-run search's spikes
    and `complete` exactly."""
    from rtclassify.dsp.detector import DetectorConfig, artifact_mask

    cfg, fs, rng = DetectorConfig(), 200_000.0, np.random.default_rng(7)
    t = np.arange(int(0.004 * fs)) / fs * 1e3
    ap = np.where(t < 1.0, 95 * np.exp(-((t - 1.0) / 0.3) ** 2), 95 * np.exp(-((t - 1.0) / 0.7) ** 2))
    cut_mid_rise = 0
    for trial in range(60):
        n = int(rng.integers(400, 6000))
        v = -70 + rng.normal(0, rng.choice([0.02, 0.1, 0.3]), n)
        for start in rng.integers(0, n, int(rng.integers(0, 4))):
            seg = ap[:n - start] * rng.uniform(0.2, 1.2)
            v[start:start + len(seg)] += seg
        onsets = np.sort(rng.integers(0, n, int(rng.integers(0, 3))))
        dv = compute_dvdt_reference(v, fs)
        mask = artifact_mask(n, onsets, fs, cfg)
        thr, pk, complete = np.empty(64, np.int64), np.empty(64, np.int64), np.zeros(1, np.int64)
        args = (cfg.dvdt_threshold, cfg.min_acceleration, cfg.min_amplitude_mv, 60)
        count = _kernels.find_spikes(v, fs / 1000.0, mask, *args, thr, pk, complete)
        ref_thr, ref_pk, ref_complete = find_spikes_run_by_run(v, dv, mask, *args)
        assert list(thr[:count]) == ref_thr and list(pk[:count]) == ref_pk and complete[0] == ref_complete
        cut_mid_rise += ref_complete < n
    assert cut_mid_rise > 5  # the end-of-data rule was exercised


def test_a_fast_ap_at_10_khz_whose_steepest_sample_is_its_last_rising_one_is_found():
    """A real Allen AP at 10 kHz (1 ms before the peak): dV/dt 27, 211, 331 mV/ms, then V falls. The
    upstroke is never seen to slow down, but V is seen to turn down: an AP, in the kernel and the reference."""
    v = np.array([-53.7, -53.0, -52.1, -51.2, -50.3, -49.3, -48.2, -47.0, -44.3, -23.2, 9.9, 0.2, -29.3, -48.0,
                  -56.4, -59.8, -61.0, -61.2, -61.0, -60.8, -60.6, -60.4, -60.2, -60.1, -60.1, -60.1, -60.2])
    assert list(detect_spikes(v, 10_000.0).peaks) == [10]
    thresholds, peaks = find_spikes_reference(v, 10_000.0)
    assert list(peaks) == [10] and list(thresholds) == [8]  # the first sample at >= 20 mV/ms (27)
    rising_into_the_end = v[:11]  # still rising at the end of the data: not decided yet
    assert len(detect_spikes(rising_into_the_end, 10_000.0).peaks) == 0
