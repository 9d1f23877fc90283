import numpy as np
import pytest

from rtclassify.dsp.windows import WindowSpec, resample_trace, window_from_segment


def test_spec_geometry_and_roundtrip():
    spec = WindowSpec(anchor="peak", before_ms=1.0, after_ms=2.0, fs_hz=50_000)
    assert (spec.n_before, spec.n_after, spec.n_samples) == (50, 100, 150)
    assert WindowSpec.from_dict(spec.to_dict()) == spec
    stim = WindowSpec(anchor="stimulus", before_ms=25, after_ms=25, fs_hz=200_000)
    assert stim.n_samples == 10_000


@pytest.mark.parametrize("kwargs, match", [
    ({"anchor": "onset"}, "anchor"),
    ({"fs_hz": 0}, "fs_hz"),
    ({"after_ms": 0}, "after_ms"),
    ({"before_ms": 0.01, "after_ms": 0.01}, "too short"),
])
def test_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WindowSpec(**kwargs)


def test_spec_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown window spec keys"):
        WindowSpec.from_dict({"anchor": "peak", "pre_ms": 1})


def test_resampling_keeps_passband_and_removes_aliases():
    fs = 200_000
    t = np.arange(4000) / fs
    slow = np.sin(2 * np.pi * 1000 * t)  # 1 kHz: must survive
    fast = np.sin(2 * np.pi * 40_000 * t)  # 40 kHz: above the 25 kHz Nyquist of 50 kHz, must vanish
    y_slow = resample_trace(slow, fs, 50_000)
    y_fast = resample_trace(fast, fs, 50_000)
    t50 = np.arange(len(y_slow)) / 50_000
    mid = slice(100, -100)
    assert np.max(np.abs(y_slow[mid] - np.sin(2 * np.pi * 1000 * t50)[mid])) < 0.01
    # plain decimation (stretching) would alias 40 kHz onto 10 kHz at full amplitude
    assert np.max(np.abs(y_fast[mid])) < 0.01
    assert np.max(np.abs(fast[::4])) > 0.5


def test_resampling_has_no_edge_transient_on_an_offset_trace():
    x = np.full(600, -65.0)
    y = resample_trace(x, 200_000, 50_000)
    assert np.allclose(y, -65.0, atol=1e-6)


def test_resampling_to_an_odd_rate():
    x = np.sin(np.arange(300) * 0.01)
    y = resample_trace(x, 20_000, 50_000)
    assert len(y) == 750


def test_window_is_cut_at_the_anchor_across_rates():
    spec = WindowSpec(fs_hz=50_000)
    fs = 200_000
    x = np.full(2000, -60.0)
    x[1000] = 40.0  # a one-sample spike at 200 kHz
    w = window_from_segment(x, fs, 1000, spec)
    assert w.shape == (150,) and w.dtype == np.float32
    assert int(np.argmax(w)) == spec.n_before


def test_window_at_the_model_rate_is_the_plain_slice():
    spec = WindowSpec(fs_hz=50_000)
    x = np.random.default_rng(0).normal(-60, 5, 400)
    w = window_from_segment(x, 50_000, 200, spec)
    assert w.dtype == np.float32 and np.array_equal(w, x[200 - spec.n_before:200 + spec.n_after].astype(np.float32))
    # one sample short at the end (rounding between rates elsewhere): the edge sample is repeated
    short = window_from_segment(x[:200 + spec.n_after - 1], 50_000, 200, spec)
    assert np.array_equal(short[:-1], w[:-1]) and short[-1] == np.float32(x[200 + spec.n_after - 2])


def test_window_refuses_a_segment_too_short():
    with pytest.raises(ValueError, match="does not cover"):
        window_from_segment(np.zeros(100), 50_000, 10, WindowSpec())


@pytest.mark.parametrize("fs_in,fs_out", [(200_000.0, 50_000.0), (50_000.0, 200_000.0), (100_000.0, 50_000.0),
                                          (40_000.0, 50_000.0)])
def test_cached_resampling_plan_gives_scipys_resample_poly(fs_in, fs_out):
    from scipy.signal import resample_poly

    from rtclassify.dsp.windows import resample_ratio

    up, down = resample_ratio(fs_in, fs_out)
    for n in (7, 150, 601, 12_000):
        x = np.random.default_rng(n).normal(-60.0, 10.0, (2, n))
        expected = resample_poly(x, up, down, axis=-1, padtype="line")
        for _ in range(2):  # the second call uses the cached plan
            got = resample_trace(x, fs_in, fs_out)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n_taps,cutoff", [(81, 0.25), (41, 0.5), (61, 1 / 3), (20_021, 1 / 1001)])
def test_the_numpy_lowpass_is_scipys_firwin(n_taps, cutoff):
    from scipy.signal import firwin

    from rtclassify.dsp.windows import kaiser_lowpass

    np.testing.assert_allclose(kaiser_lowpass(n_taps, cutoff, 5.0), firwin(n_taps, cutoff, window=("kaiser", 5.0)),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("fs", [200_000.0, 100_000.0, 96_000.0, 41_666.0, 33_333.333, 25_000.0, 50_000.0, 10_000.0])
def test_the_daemons_cutter_gives_window_from_segment_from_a_wrapping_ring(fs):
    """WindowCutter.cut reads the segment out of the ring buffer (wrapping or not) and resamples
    only the kept outputs: the same window as the general path, to float32 rounding."""
    from rtclassify.daemon.ring_buffer import RingBuffer
    from rtclassify.dsp.windows import WindowCutter

    spec, rng = WindowSpec(), np.random.default_rng(int(fs))
    cutter, buf = WindowCutter(fs, spec), RingBuffer(1000)
    compared = 0
    for _ in range(60):
        n = int(rng.integers(1, 700))
        buf.write(np.stack([-60 + 2 * rng.standard_normal(n).cumsum(), rng.standard_normal(n)], 1))
        if buf.end - buf.start < cutter.n_in:
            continue
        a = int(rng.integers(buf.start, buf.end - cutter.n_in + 1))
        expected = window_from_segment(buf.read(a, a + cutter.n_in)[:, 0], fs, cutter.n_before, spec)
        got = cutter.cut(buf, a)
        assert got.dtype == np.float32 and got.shape == (spec.n_samples,)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
        compared += 1
    assert compared > 30
    with pytest.raises(IndexError, match="not in buffer"):
        cutter.cut(buf, buf.end - cutter.n_in + 1)


def test_the_daemons_cutter_on_real_200khz_action_potentials(spikes_dir):
    """The recorded 3 ms APs (200 kHz) written into a ring so that each straddles its wrap."""
    import csv

    from rtclassify.daemon.ring_buffer import RingBuffer
    from rtclassify.dsp.windows import WindowCutter

    rows = [r for r in csv.DictReader(open(spikes_dir / "cells.csv")) if r["fs_hz"] == "200000"][:25]
    spec = WindowSpec()
    cutter = WindowCutter(200_000.0, spec)
    for k, row in enumerate(rows):
        v = np.load(spikes_dir / "traces" / f"{row['specimen_id']}.npy").astype(np.float64).ravel()[:cutter.n_in]
        buf = RingBuffer(1024)
        buf.write(np.zeros((1024 - 50 - 10 * k, 2)))  # the AP's segment wraps 50 + 10 k samples in
        a = buf.end
        buf.write(np.stack([v, np.zeros_like(v)], 1))
        expected = window_from_segment(v, 200_000.0, cutter.n_before, spec)
        assert np.abs(cutter.cut(buf, a) - expected).max() <= 1e-4  # mV
