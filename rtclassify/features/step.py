"""Features of one long current step (one sweep's step of hundreds of ms), by the definitions of the
Allen Institute's feature extractors (IPFX: `spike_features`, `spike_train_features`,
`subthresh_features`), so that a lab's step family can be read by a model trained on the Allen
Cell Types Database's per-cell table (`cell_features.csv`).

Times are in seconds from the step's onset unless a name says ms; voltages in mV; currents in pA.
A value that cannot be measured (no AP, too few APs, a depolarising step for `sag`) is NaN.
"""
from dataclasses import dataclass, field

import numpy as np

BASELINE_S = 0.05  # the mean V over this long before the onset (IPFX: 0.1 s; half of it, so that the
# baseline lies inside the sweep in the families seen (steps from 80 ms in) and a live stream, which
# does not know where a sweep began, reads the same samples as the file does)
SAG_PEAK_WIDTH_S = 0.005  # IPFX: the deflection's peak averaged over this window
SAG_STEADY_S = 0.03  # IPFX sag(): steady state is the mean over the step's last 30 ms
TAU_FRAC = 0.1  # IPFX: the exponential fit starts where the deflection reaches 10% of its peak
TAU_MIN_SNR = 20.0  # IPFX: no tau below this deflection / baseline noise ratio
THRESH_FRAC = 0.05  # IPFX: an AP's threshold is where dV/dt rises past 5% of its upstroke
TERM_FRAC = 0.01  # IPFX: the fast trough is where dV/dt, past the downstroke, climbs back to 1% of it
MAX_SPIKE_SEARCH_S = 0.005  # an AP's threshold lies at most this long before its peak
REBOUND_S = 0.5  # APs this soon after a hyperpolarising step's end are its rebound


@dataclass
class StepFeatures:
    """One step's features. Spike arrays hold one value per AP inside the step, in time order."""

    stim_amp: float  # pA, the step's level minus the holding current before it
    duration_s: float
    v_baseline: float  # mV, mean over BASELINE_S before the onset
    peak_deflect_v: float  # mV, V's extreme inside the step (min for a hyperpolarising step)
    peak_deflect_s: float  # s from the onset
    v_steady: float  # mV, mean over the step's last SAG_STEADY_S
    sag: float  # IPFX sag (hyperpolarising steps), NaN otherwise
    tau_ms: float  # membrane time constant (hyperpolarising steps without APs), NaN otherwise
    spike_thresholds_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    threshold_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    peak_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fast_trough_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trough_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    upstroke: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mV/ms
    downstroke: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mV/ms (negative)
    width_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # at half of threshold-to-peak
    rebound: dict | None = None  # the shape of the first AP within REBOUND_S after a hyperpolarising step
    # (keys threshold_v, peak_v, fast_trough_v, trough_v, upstroke_downstroke_ratio), None without one

    @property
    def n_spikes(self) -> int:
        return int(len(self.spike_thresholds_s))

    @property
    def avg_rate(self) -> float:
        """APs per second over the step (IPFX avg_rate)."""
        return self.n_spikes / self.duration_s if self.duration_s > 0 else float("nan")

    @property
    def isis_ms(self) -> np.ndarray:
        return np.diff(self.spike_thresholds_s) * 1e3

    @property
    def latency_s(self) -> float:
        """Onset to the first AP's threshold (IPFX latency), NaN without APs."""
        return float(self.spike_thresholds_s[0]) if self.n_spikes else float("nan")

    @property
    def avg_isi_ms(self) -> float:
        isis = self.isis_ms
        return float(np.mean(isis)) if len(isis) else float("nan")

    @property
    def adaptation(self) -> float:
        """IPFX adaptation index: mean of (isi[k+1] - isi[k]) / (isi[k+1] + isi[k]); NaN with < 2 ISIs."""
        isis = self.isis_ms
        if len(isis) < 2:
            return float("nan")
        total = isis[1:] + isis[:-1]
        return float(np.mean(np.where(total > 0, (isis[1:] - isis[:-1]) / np.where(total > 0, total, 1.0), 0.0)))

    @property
    def upstroke_downstroke_ratio(self) -> np.ndarray:
        return self.upstroke / -self.downstroke

    def summary(self) -> dict:
        """The step's own features as one flat dict (JSON-ready: NaN -> None), Allen's names where they exist."""
        first = lambda a: float(a[0]) if len(a) else float("nan")  # noqa: E731
        out = {"stim_amp": self.stim_amp, "n_spikes": self.n_spikes, "avg_rate": self.avg_rate,
               "latency": self.latency_s, "avg_isi": self.avg_isi_ms, "adaptation": self.adaptation,
               "v_baseline": self.v_baseline, "peak_deflect_v": self.peak_deflect_v, "sag": self.sag,
               "tau": self.tau_ms, "threshold_v": first(self.threshold_v), "peak_v": first(self.peak_v),
               "fast_trough_v": first(self.fast_trough_v),
               "upstroke_downstroke_ratio": first(self.upstroke_downstroke_ratio), "width_ms": first(self.width_ms)}
        return {k: (v if k == "n_spikes" else finite_or_none(v)) for k, v in out.items()}


def finite_or_none(x):
    """x rounded for output, None when it is NaN or infinite (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None


def mean_between(v: np.ndarray, a: int, b: int) -> float:
    a, b = max(0, a), min(len(v), b)
    return float(np.mean(v[a:b])) if b > a else float("nan")


def measure_step(v_mv: np.ndarray, i_pa: np.ndarray | None, fs: float, onset: int, offset: int,
                 stim_amp: float | None = None, spikes=None, rebound_end: int | None = None) -> StepFeatures:
    """Features of the step [onset, offset) of one sweep.

    v_mv: (n,) membrane potential, mV; i_pa: (n,) the current (command or monitor), pA, used for the
    step's amplitude when stim_amp is None; fs: Hz; spikes: (thresholds, peaks) sample indices of the
    APs inside the step when already found (else found here with `rtclassify.dsp.detector`);
    rebound_end: where the rebound window after a hyperpolarising step must stop (the next step's
    onset; at or before `offset`: no rebound is looked for), default REBOUND_S after the offset.
    """
    v = np.asarray(v_mv, dtype=np.float64)
    nb = int(round(BASELINE_S * fs))
    if stim_amp is None:
        if i_pa is None:
            raise ValueError("measure_step needs the current or the step's amplitude")
        i = np.asarray(i_pa, dtype=np.float64)
        stim_amp = float(np.median(i[onset:offset]) - np.median(i[max(0, onset - nb):onset]))
    v_base = mean_between(v, onset - nb, onset)
    inside = v[onset:offset]
    hyper = stim_amp < 0
    k = int(np.argmin(inside) if hyper else np.argmax(inside))
    deflect_v, deflect_at = float(inside[k]), onset + k
    n_steady = int(round(SAG_STEADY_S * fs))
    v_steady = mean_between(v, offset - n_steady, offset)
    if spikes is None:
        spikes = find_step_spikes(v, fs, onset, offset)
    thresholds, peaks = spikes
    sag, tau = float("nan"), float("nan")
    if hyper and len(peaks) == 0:
        half = int(round(SAG_PEAK_WIDTH_S * fs / 2))
        v_peak = mean_between(v, deflect_at - half, deflect_at + half + 1)
        base_sag = mean_between(v, onset - int(round(SAG_STEADY_S * fs)), onset)
        if v_peak != base_sag:
            sag = (v_peak - v_steady) / (v_peak - base_sag)
        tau = fit_tau_ms(v, fs, onset, deflect_at, v_base, mean_noise=np.std(v[max(0, onset - nb):onset]))
    out = StepFeatures(stim_amp=float(stim_amp), duration_s=(offset - onset) / fs, v_baseline=v_base,
                       peak_deflect_v=deflect_v, peak_deflect_s=(deflect_at - onset) / fs, v_steady=v_steady,
                       sag=sag, tau_ms=tau)
    if hyper and len(peaks) == 0 and (rebound_end is None or rebound_end > offset):
        out.rebound = rebound_shape(v, fs, offset, rebound_end)
    if len(peaks):
        shape = spike_shapes(v, fs, np.asarray(peaks), offset)
        out.spike_thresholds_s = (shape["threshold"] - onset) / fs
        out.threshold_v, out.peak_v = v[shape["threshold"]], v[peaks]
        out.fast_trough_v, out.trough_v = shape["fast_trough_v"], shape["trough_v"]
        out.upstroke, out.downstroke, out.width_ms = shape["upstroke"], shape["downstroke"], shape["width_ms"]
    return out


def rebound_end_sample(offset: int, fs: float, n: int, next_onset: int | None = None) -> int:
    """Where the rebound window after a step ending at `offset` stops: REBOUND_S on, the trace's end
    (n samples) or the next step's onset, whichever comes first."""
    end = min(n, offset + int(REBOUND_S * fs))
    return end if next_onset is None else min(end, next_onset)


def rebound_shape(v: np.ndarray, fs: float, offset: int, end: int | None = None) -> dict | None:
    """The shape of the first AP in [offset, end) after a step's end (rebound firing), or None; end:
    default REBOUND_S after the offset."""
    end = rebound_end_sample(offset, fs, len(v), end)
    _, peaks = find_step_spikes(v, fs, offset, end)
    if not len(peaks):
        return None
    shape = spike_shapes(v, fs, peaks[:2], end)
    return {"threshold_v": float(v[shape["threshold"][0]]), "peak_v": float(v[peaks[0]]),
            "fast_trough_v": float(shape["fast_trough_v"][0]), "trough_v": float(shape["trough_v"][0]),
            "upstroke_downstroke_ratio": float(shape["upstroke"][0] / -shape["downstroke"][0])}


def find_step_spikes(v: np.ndarray, fs: float, onset: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, peaks) sample indices of the APs whose peak lies inside [onset, offset), found by
    the project's detector with the counting rules of `sweeps` (late, small APs of a train count)."""
    from rtclassify.dsp.detector import detect_spikes
    from rtclassify.formats.nwb import counting_rules

    sp = detect_spikes(v, fs, ([onset], [offset]), counting_rules())
    keep = (sp.peaks >= onset) & (sp.peaks < offset) & ~sp.obscured
    return sp.thresholds[keep], sp.peaks[keep]


def spike_shapes(v: np.ndarray, fs: float, peaks: np.ndarray, end: int) -> dict:
    """Per-AP shape by IPFX's definitions, on its forward-difference dV/dt (mV/ms): upstroke / downstroke
    (max / min dV/dt before the peak / from the peak to the trough), threshold (going back from the
    upstroke, the first sample where dV/dt is at most THRESH_FRAC of the mean upstroke of the step's
    APs), fast trough (the end of the spike: where dV/dt, after its most negative value before the next
    AP, climbs back to TERM_FRAC of it), trough (min before the next AP or `end`), width at half the
    threshold-to-peak height (ms)."""
    dvdt = np.append(np.diff(v), 0.0) * fs / 1e3
    back = int(round(MAX_SPIKE_SEARCH_S * fs))
    out = {k: np.empty(len(peaks)) for k in ("fast_trough_v", "trough_v", "upstroke", "downstroke", "width_ms")}
    starts = np.array([max(0, p - back, int(peaks[j - 1]) + 1 if j else 0) for j, p in enumerate(peaks)], np.int64)
    up_at = np.array([a + int(np.argmax(dvdt[a:p + 1])) for a, p in zip(starts, peaks)], np.int64)
    target = THRESH_FRAC * float(np.mean(dvdt[up_at]))
    thresholds = np.empty(len(peaks), np.int64)
    for j, p in enumerate(peaks):
        lo, up = int(starts[j]), int(up_at[j])
        below = np.flatnonzero(dvdt[lo:up + 1] <= target)
        t = lo + int(below[-1]) if len(below) else lo
        nxt = int(peaks[j + 1]) if j + 1 < len(peaks) else min(end, len(v))
        nxt = max(nxt, p + 2)
        trough_at = p + int(np.argmin(v[p:nxt]))
        down_at = p + int(np.argmin(dvdt[p:nxt]))
        back_up = np.flatnonzero(dvdt[down_at:nxt] >= TERM_FRAC * dvdt[down_at])
        fast_at = down_at + int(back_up[0]) if len(back_up) else trough_at
        half = (v[t] + v[p]) / 2.0
        a = t + int(np.argmax(v[t:p + 1] >= half))
        after = np.flatnonzero(v[p:nxt] < half)
        b = p + int(after[0]) if len(after) else nxt
        thresholds[j] = t
        out["fast_trough_v"][j] = float(v[fast_at])
        out["trough_v"][j] = float(v[trough_at])
        out["upstroke"][j] = float(dvdt[up])
        out["downstroke"][j] = float(np.min(dvdt[p:max(trough_at, p + 1) + 1]))
        out["width_ms"][j] = (b - a) / fs * 1e3
    out["threshold"] = thresholds
    return out


def fit_tau_ms(v: np.ndarray, fs: float, onset: int, peak_at: int, v_base: float, mean_noise: float) -> float:
    """IPFX time_constant: a single exponential fitted from where the hyperpolarising deflection reaches
    TAU_FRAC of its peak to the peak; NaN when the deflection is below TAU_MIN_SNR x baseline noise or
    the fit fails. Returns ms."""
    from scipy.optimize import curve_fit

    v_peak = float(v[peak_at])
    signal = abs(v_base - v_peak)
    if mean_noise > 0 and signal / mean_noise < TAU_MIN_SNR:
        return float("nan")
    seg = v[onset:peak_at + 1]
    start = np.flatnonzero(seg <= v_base + TAU_FRAC * (v_peak - v_base))
    if not len(start) or peak_at - (onset + start[0]) < 5:
        return float("nan")
    y = v[onset + start[0]:peak_at + 1]
    t = np.arange(len(y)) / fs
    guess = (y[0] - y[-1], 50.0, y[-1])
    try:
        (a, inv_tau, y0), _ = curve_fit(lambda x, a, k, c: c + a * np.exp(-k * x), t, y, p0=guess, maxfev=2000)
    except (RuntimeError, ValueError):
        return float("nan")
    if not np.isfinite(inv_tau) or inv_tau <= 0:
        return float("nan")
    return 1e3 / inv_tau
