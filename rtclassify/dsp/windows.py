"""Window specification and cutting: the one place where a window's geometry is defined.

A model is trained on windows of a fixed length at a fixed sampling rate, anchored on either the
action-potential peak or the stimulus onset. Every window, offline or live, is cut and resampled
through the functions here, and the spec travels inside every model file.
"""
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from rtclassify.dsp import _kernels
from rtclassify.config import dataclass_from_dict

ANCHORS = ("peak", "stimulus")


@dataclass(frozen=True)
class WindowSpec:
    """Geometry of a model's input window.

    anchor: what sample 0 + n_before is aligned on: "peak" (AP peak) or "stimulus" (step onset).
    before_ms: window length before the anchor, in ms.
    after_ms: window length after the anchor, in ms (the anchor sample itself is the first of these).
    fs_hz: the model's sampling rate, in Hz; every input is resampled to it.
    """

    anchor: str = "peak"
    before_ms: float = 1.0
    after_ms: float = 2.0
    fs_hz: float = 50_000.0

    def __post_init__(self):
        if self.anchor not in ANCHORS:
            raise ValueError(f"WindowSpec.anchor={self.anchor!r}: expected one of {ANCHORS}")
        if not (self.before_ms >= 0 and self.after_ms > 0):
            raise ValueError(
                f"WindowSpec before_ms={self.before_ms}, after_ms={self.after_ms}: "
                "need before_ms >= 0 and after_ms > 0"
            )
        if not self.fs_hz > 0:
            raise ValueError(f"WindowSpec.fs_hz={self.fs_hz}: must be a positive rate in Hz")
        if self.n_samples < 8:
            raise ValueError(
                f"WindowSpec gives n_samples={self.n_samples} at {self.fs_hz} Hz: too short for a "
                "model (need >= 8); lengthen the window or raise fs_hz"
            )

    @property
    def n_before(self) -> int:
        """Samples before the anchor at the model rate."""
        return samples_at(self.before_ms, self.fs_hz)

    @property
    def n_after(self) -> int:
        """Samples from the anchor on (anchor included) at the model rate."""
        return samples_at(self.after_ms, self.fs_hz)

    @property
    def n_samples(self) -> int:
        """Window length in samples at the model rate."""
        return self.n_before + self.n_after

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSpec":
        return dataclass_from_dict(cls, d, "window spec keys")


def samples_at(ms: float, fs_hz: float) -> int:
    """Number of samples spanning `ms` milliseconds at `fs_hz`."""
    return int(round(ms * fs_hz / 1000.0))


def segment_samples(spec: "WindowSpec", fs_hz: float) -> tuple[int, int]:
    """(before, after): the stream samples cut before an anchor and from it on (anchor included) at
    fs_hz, rounded up so that they cover the window at any rate (at 12.4 kHz, 1 ms is 12.4 samples:
    12 would leave the window's first model sample uncovered). Exact at 10, 20, 25, 50, 200 kHz."""
    return (int(np.ceil(spec.before_ms * fs_hz / 1000.0 - 1e-6)), int(np.ceil(spec.after_ms * fs_hz / 1000.0 - 1e-6)))


MIN_STREAM_HZ = 10_000.0  # below this an AP's upstroke (~0.3 ms) spans 3 samples or fewer
MAX_STREAM_HZ = 1_000_000.0
RATIO_TOLERANCE = 1e-3  # relative error allowed in the rational resampling ratio


@lru_cache(maxsize=64)
def resample_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down) integers with fs_in * up / down == fs_out within RATIO_TOLERANCE (relative).

    Any rate has such a ratio with denominator <= 1000; an inexact one (33,333 Hz -> 50 kHz is
    taken as 3/2, 1e-5 off) stretches a 3 ms window by at most 3 us, a sixth of a 50 kHz sample.
    """
    frac = Fraction(fs_out / fs_in).limit_denominator(1000)
    if frac == 0 or abs(float(frac) * fs_in - fs_out) > RATIO_TOLERANCE * fs_out:
        raise ValueError(
            f"cannot resample {fs_in:g} Hz to {fs_out:g} Hz by a rational factor with denominator <= 1000"
        )
    return frac.numerator, frac.denominator


def check_stream_rate(fs_hz: float, spec: "WindowSpec") -> str | None:
    """Why a stream at fs_hz cannot feed a model of `spec` (None when it can)."""
    if not np.isfinite(fs_hz) or not MIN_STREAM_HZ <= fs_hz <= MAX_STREAM_HZ:
        return (f"sampling rate {fs_hz:g} Hz is outside {MIN_STREAM_HZ:g}-{MAX_STREAM_HZ:g} Hz, the range an "
                "action potential can be classified from; record at 20-200 kHz")
    try:
        resample_ratio(float(fs_hz), spec.fs_hz)
    except ValueError as exc:
        return str(exc)
    return None


def resample_trace(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Anti-aliased polyphase resampling along the last axis.

    x: (..., n) samples at fs_in (Hz). Returns (..., ceil(n * fs_out / fs_in)) at fs_out, float64.
    The ends are padded by linear extrapolation, not zeros, so that a trace sitting at -60 mV does
    not acquire a filter transient at its edges.
    """
    x = np.asarray(x, dtype=np.float64)
    if fs_in == fs_out:
        return x.copy()
    up, down = resample_ratio(fs_in, fs_out)
    taps, first, n_out = resampling_plan(up, down, x.shape[-1])
    rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    out = np.empty((rows.shape[0], n_out))
    _kernels.resample_rows(rows, taps, up, down, first, out)
    return out.reshape(x.shape[:-1] + (n_out,))


@lru_cache(maxsize=64)
def resampling_plan(up: int, down: int, n_in: int) -> tuple[np.ndarray, int, int]:
    """(taps, first output kept, output length) for `_kernels.resample_rows`: the filter and
    alignment of scipy's resample_poly(x, up, down, padtype="line") with its default Kaiser
    (beta 5) low-pass, prepared once per ratio and input length. The daemon cuts same-length
    windows all day; resample_poly prepared all this on every call and took ~100 us per 3 ms
    window from 200 to 50 kHz, more on a cold CPU. The tests hold the result to resample_poly's."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = kaiser_lowpass(2 * half_len + 1, 1.0 / max_rate, 5.0) * up
    n_out = -(-n_in * up // down)
    pre_pad = down - half_len % down  # puts the output samples at the filter's centre
    first = (half_len + pre_pad) // down
    taps = np.concatenate([np.zeros(pre_pad), taps])  # shared between calls: never modify
    return taps, first, n_out


def kaiser_lowpass(n_taps: int, cutoff: float, beta: float) -> np.ndarray:
    """(n_taps,) windowed-sinc low-pass FIR with unit gain at DC: scipy.signal.firwin(n_taps, cutoff,
    window=("kaiser", beta)) (cutoff relative to Nyquist), computed with numpy alone, because
    importing scipy.signal costs every command ~1 s here (the tests hold the two equal)."""
    m = np.arange(n_taps) - (n_taps - 1) / 2.0
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(n_taps, beta)
    return h / h.sum()


def window_from_segment(segment: np.ndarray, fs_hz: float, anchor_index: float, spec: WindowSpec) -> np.ndarray:
    """Cut one model window out of a segment recorded at fs_hz.

    segment: (n,) membrane potential in mV at fs_hz, containing the window (plus any margin).
    anchor_index: position of the anchor (AP peak or stimulus onset) in `segment`, in samples at
    fs_hz (may be fractional). Returns (spec.n_samples,) float32 in mV at spec.fs_hz.
    Raises ValueError when the segment does not cover the window.
    """
    if fs_hz == spec.fs_hz and anchor_index == int(anchor_index):
        # already at the model rate (the daemon's usual case): a slice, as the general path gives
        start, stop = int(anchor_index) - spec.n_before, int(anchor_index) + spec.n_after
        if 0 <= start and stop <= len(segment):
            return np.asarray(segment[start:stop], dtype=np.float32)
    y = resample_trace(segment, fs_hz, spec.fs_hz)
    anchor_out = int(round(anchor_index * spec.fs_hz / fs_hz))
    start = anchor_out - spec.n_before
    stop = anchor_out + spec.n_after
    # a shortfall of one sample at either end comes from rounding between rates: repeat the edge
    if start < -1 or stop > len(y) + 1:
        raise ValueError(
            f"segment of {len(segment)} samples at {fs_hz} Hz with anchor at {anchor_index} does not "
            f"cover {spec.before_ms} ms before and {spec.after_ms} ms after the anchor"
        )
    idx = np.clip(np.arange(start, stop), 0, len(y) - 1)
    return y[idx].astype(np.float32)


def window_from_trace(trace: np.ndarray, fs_hz: float, anchor_index: int, spec: WindowSpec,
                      warp: float = 1.0) -> np.ndarray:
    """The model window of a trace around the sample `anchor_index`, read `warp` times faster than it
    was recorded (the temperature warp, rtclassify.dsp.temperature.warp_factor; 1.0: as recorded),
    cut exactly as the daemon's WindowCutter cuts its ring buffer: the segment_samples(spec, fs_hz * warp)
    around the anchor, through window_from_segment. Where the trace ends short of that segment (a stored 3 ms AP
    read 1.6 times faster covers only 1.9 ms of the window) its first and last samples are repeated,
    as the models saw in training (trainer/rigs.py).

    trace: (n,) mV at fs_hz. Returns (spec.n_samples,) float32 mV.
    """
    fs_read = fs_hz * warp
    n_before, n_after = segment_samples(spec, fs_read)
    a = int(anchor_index)
    if a - n_before < 0 or a + n_after > len(trace):
        segment = np.asarray(trace)[np.clip(np.arange(a - n_before, a + n_after), 0, len(trace) - 1)]
    else:
        segment = trace[a - n_before:a + n_after]
    return window_from_segment(segment, fs_read, n_before, spec)


class WindowCutter:
    """The daemon's window cut at one stream rate, straight out of its ring buffer.

    cut(buf, a) == window_from_segment(V of samples [a, a + n_in), fs_hz, n_before_in, spec) for
    the segment the daemon cuts around an anchor (segment_samples(spec, fs_hz): n_before_in before
    it, the rest from it on), in one kernel call that computes only
    the spec.n_samples outputs kept. Why: the general path makes ~10 numpy calls and a full-length
    resampled copy per window, ~35 us warm and ~200 us on a cold CPU at 200 kHz here; the window
    is on the label's critical path. The tests hold the two equal.
    """

    def __init__(self, fs_hz: float, spec: WindowSpec):
        self.fs_hz, self.spec = float(fs_hz), spec
        self.n_before, n_after = segment_samples(spec, fs_hz)
        self.n_in = self.n_before + n_after
        self.same_rate = self.fs_hz == spec.fs_hz
        if self.same_rate:
            return
        up, down = resample_ratio(self.fs_hz, spec.fs_hz)
        taps, first, n_out = resampling_plan(up, down, self.n_in)
        start = int(round(self.n_before * spec.fs_hz / self.fs_hz)) - spec.n_before
        if start < -1 or start + spec.n_samples > n_out + 1:  # window_from_segment's check, at construction
            raise ValueError(f"a {self.n_in}-sample segment at {fs_hz:g} Hz does not cover the window")
        points = np.clip(np.arange(start, start + spec.n_samples), 0, n_out - 1) + first
        # resample_rows' sum for output k runs over taps[j], taps[j + up], ... (j = k * down % up)
        # against the extended samples m0, m0 - 1, ...; laid out per phase, reversed and padded with
        # leading zeros to one width, every output is a forward dot product from m0 - width + 1
        self.ext = len(taps) // up + 2
        width = -(-len(taps) // up)
        self.phase_taps = np.zeros((up, width))
        for j in range(up):
            phase = taps[j::up][::-1]
            self.phase_taps[j, width - len(phase):] = phase
        pos = points * down
        self.phases = pos % up
        self.starts = (pos - self.phases) // up + self.ext - width + 1

    def cut(self, buf, a: int) -> np.ndarray:
        """(spec.n_samples,) float32 mV window of the segment starting at absolute sample `a` of
        `buf` (a buffers.RingBuffer); IndexError when the buffer does not hold the segment."""
        if self.same_rate:  # the window is the segment
            return buf.read(a, a + self.n_in)[:, 0].astype(np.float32)
        out = np.empty(self.spec.n_samples, np.float32)
        _kernels.resample_ring_window(buf.data, buf.locate(a, a + self.n_in), self.n_in, self.ext, self.phase_taps,
                                      self.phases, self.starts, out)
        return out
