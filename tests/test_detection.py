"""Detector kernels against their numpy references (random and real inputs) and on real evoked spikes."""
import csv

import numpy as np
import pytest

from rtclassify import _kernels
from rtclassify.detection import (DetectorConfig, compute_dvdt_reference, detect_spikes, detect_steps, detect_trace,
                                  find_spikes_reference, find_steps_reference, scan_step_edges_reference,
                                  summarise_detection)


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


def test_dvdt_matches_reference():
    v = np.random.default_rng(0).normal(-60, 5, 1000)
    out = np.empty(1000)
    _kernels.compute_dvdt(v, 50_000.0, out)
    assert np.allclose(out, compute_dvdt_reference(v, 50_000.0))


@pytest.mark.parametrize("seed", range(6))
def test_find_spikes_matches_reference_on_random_traces(seed):
    rng = np.random.default_rng(seed)
    spike = int(rng.integers(1100, 1200)) if seed % 2 else None
    v, i, onset, off = synthetic_sweep(spike_at=spike, seed=seed)
    v += np.cumsum(rng.normal(0, 0.3, len(v)))  # random walk: plenty of sub-threshold candidates
    edges = [onset]
    thr, pk, _ = detect_spikes(v, 50_000, edges)
    ref_thr, ref_pk = find_spikes_reference(v, 50_000, edges)
    assert np.array_equal(thr, ref_thr) and np.array_equal(pk, ref_pk)


def test_spike_found_and_charging_ignored():
    v, i, onset, off = synthetic_sweep(spike_at=1120)
    det = detect_trace(v, i, 50_000)
    assert list(det.onsets) == [onset] and list(det.offsets) == [off]
    assert len(det.peaks) == 1 and abs(det.peaks[0] - 1120) <= 1
    v, i, _, _ = synthetic_sweep(spike_at=None, amp_pa=2000)
    assert len(detect_trace(v, i, 50_000).peaks) == 0


def test_a_spike_rising_at_the_end_of_the_data_is_left_for_later():
    v, i, onset, off = synthetic_sweep(spike_at=1120)
    thr, pk, complete = detect_spikes(v[:1110], 50_000, [onset])
    assert len(pk) == 0 and complete < 1110
    thr, pk, complete = detect_spikes(v[:1300], 50_000, [onset, off])
    assert len(pk) == 1 and complete == 1300


def read_cases(evoked_dir):
    with open(evoked_dir / "cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_kernels_match_references_on_real_recordings(evoked_dir):
    for case in read_cases(evoked_dir)[::7]:
        z = np.load(evoked_dir / f"{case['name']}.npz")
        v, i, fs = z["v"] * 1e3, z["i"] * 1e12, float(case["fs"])
        on, off = detect_steps(i)
        edges = on[on > 0]
        thr, pk, _ = detect_spikes(v, fs, edges)
        ref = find_spikes_reference(v, fs, edges)
        assert np.array_equal(thr, ref[0]) and np.array_equal(pk, ref[1]), case["name"]


def test_agreement_with_the_annotated_evoked_spikes(evoked_dir):
    """Spike/no-spike agreement and peak-time error on the 133 annotated real cases.

    Measured 2026-11-24: agreement 0.805 (107/133), peak error median 0 ms; the target is 0.95.
    The rest follows the annotation's own conventions rather than the traces: APs peaking just
    after the pulse's end count as no spike in some recordings and as spikes in others, and
    in-pulse APs that rise out of the onset artifact count as no spike. (The annotating library's
    own public detector, neuroanalysis 0.0.7, agrees on 98 of 133.) This test holds the measured
    level so that a change cannot make it worse unnoticed.
    """
    agree, errors = 0, []
    cases = read_cases(evoked_dir)
    for case in cases:
        z = np.load(evoked_dir / f"{case['name']}.npz")
        fs = float(case["fs"])
        v = z["v"].astype(np.float64) * 1e3
        det = detect_trace(v, z["i"].astype(np.float64) * 1e12, fs)
        found = len(det.peaks) > 0
        expected = case["spike"] == "True"
        agree += found == expected
        if found and expected and case["peak_time"]:
            expected_s = float(case["peak_time"]) - float(case["t0"])
            errors.append(abs(summarise_detection(det, v, fs)["spikes"][0]["peak_s"] - expected_s) * 1e3)
    assert agree / len(cases) >= 0.80
    assert np.median(errors) <= 0.05 and len(errors) >= 40
