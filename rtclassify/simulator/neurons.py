"""Built-in conductance-based cortical neurons, so that the simulator needs no recordings.

Minimal Hodgkin-Huxley-type models after Pospischil et al. 2008 (Biol Cybern 99:427): a single
compartment with Traub-Miles Na+ and delayed-rectifier K+ currents, a slow M-type K+ current and
a T-type Ca2+ current (LTS only). Units: ms, mV, mS/cm2, uA/cm2, uF/cm2. One neuron stands for
each genetic class: RS (Exc), FS (Pvalb), LTS (Sst) from the published models, VIP (Vip) and NGF
(Ndnf) from RS; their parameters are fitted to the class-median APs of the Allen recordings by
`python -m trainer fit-neurons`, which writes `neuron_params.csv` here (docs/neurons.md).
Each is driven by a 3 ms current step just above its threshold for one AP; the response passes
through the amplifier's 10 kHz Bessel filter and is sampled at the stream rate, and the AP is cut
1 ms before to 2 ms after its peak, as in the Allen data.
"""
import csv
import math
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np

from rtclassify.dsp.windows import resample_trace, samples_at

PARAMS_TABLE = Path(__file__).with_name("neuron_params.csv")  # written by `python -m trainer fit-neurons`
PARAM_NAMES = ("g_l", "e_l", "g_na", "g_kd", "g_m", "tau_max", "g_t", "v_t", "k_na", "k_k", "diam_um")
# the published models (Pospischil et al. 2008, Table 1; kinetics factors 1): the fit's starting points
PUBLISHED = {
    "RS": dict(g_l=0.1, e_l=-70.3, g_na=56.0, g_kd=6.0, g_m=0.075, tau_max=608.0, g_t=0.0, v_t=-56.2,
               k_na=1.0, k_k=1.0, diam_um=61.4),
    "FS": dict(g_l=0.038, e_l=-70.4, g_na=58.0, g_kd=3.9, g_m=0.0787, tau_max=502.0, g_t=0.0, v_t=-57.9,
               k_na=1.0, k_k=1.0, diam_um=56.9),
    "LTS": dict(g_l=0.019, e_l=-50.0, g_na=50.0, g_kd=4.0, g_m=0.028, tau_max=4000.0, g_t=0.4, v_t=-50.0,
                k_na=1.0, k_k=1.0, diam_um=96.0),
}
# built-in neuron: (class it stands for, published model it is fitted from)
NEURONS = {"RS": ("Exc", "RS"), "FS": ("Pvalb", "FS"), "LTS": ("Sst", "LTS"), "VIP": ("Vip", "RS"),
           "NGF": ("Ndnf", "RS")}
E_NA, E_K, E_CA = 50.0, -90.0, 120.0
DT_MS = 0.0025  # integration step (400 kHz)
SETTLE_MS = 60.0  # at rest before the step (gates start at their steady state)
AMPLIFIER_LPF_HZ = 10_000.0  # 4-pole Bessel, as the Allen rigs filtered before digitising
CELL_SPREAD = 0.04  # cell-to-cell variety: conductances and kinetics drawn log-normal with this sd
SWEEP_STEP = (1.05, 1.25)  # sweep-to-sweep: the step, a factor of the cell's threshold step
SWEEP_NOISE_MV = 0.06  # recording noise on each sweep's AP, mV rms


def read_params(path: Path = PARAMS_TABLE) -> dict:
    """{name: (class, params)} of the built-in neurons: the fitted table, or the published models
    (Exc, Pvalb, Sst only) when no table has been written."""
    if not path.exists():
        return {n: (NEURONS[n][0], dict(PUBLISHED[n])) for n in PUBLISHED}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return {r["name"]: (r["class"], {k: float(r[k]) for k in PARAM_NAMES}) for r in rows}


@numba.jit(nopython=True, nogil=True, cache=True)
def integrate(i_ua_cm2, dt, g_l, e_l, g_na, g_kd, g_m, tau_max, g_t, v_t, k_na, k_k, v0):
    """Membrane potential (n,) in mV for the injected current density i_ua_cm2 (n,), uA/cm2.

    k_na, k_k scale the Na+ and K+ (delayed rectifier) gating rates: the published kinetics are
    for one temperature and cell; the fit uses them to match the widths of recorded APs."""
    n = len(i_ua_cm2)
    v_out = np.empty(n)
    v = v0
    # start every gate at its steady state at v0, so that the model does not fire on start-up
    x = v0 - v_t
    am = 0.32 * (13.0 - x) / (math.exp((13.0 - x) / 4.0) - 1.0)
    bm = 0.28 * (x - 40.0) / (math.exp((x - 40.0) / 5.0) - 1.0)
    ah = 0.128 * math.exp((17.0 - x) / 18.0)
    bh = 4.0 / (1.0 + math.exp((40.0 - x) / 5.0))
    an = 0.032 * (15.0 - x) / (math.exp((15.0 - x) / 5.0) - 1.0)
    bn = 0.5 * math.exp((10.0 - x) / 40.0)
    m, h, nk = am / (am + bm), ah / (ah + bh), an / (an + bn)
    p = 1.0 / (1.0 + math.exp(-(v0 + 35.0) / 10.0))
    u = 1.0 / (1.0 + math.exp((v0 + 83.0) / 4.0))
    for k in range(n):
        x = v - v_t
        am = k_na * (0.32 * (13.0 - x) / (math.exp((13.0 - x) / 4.0) - 1.0) if abs(13.0 - x) > 1e-6 else 1.28)
        bm = k_na * (0.28 * (x - 40.0) / (math.exp((x - 40.0) / 5.0) - 1.0) if abs(x - 40.0) > 1e-6 else 1.4)
        ah = k_na * 0.128 * math.exp((17.0 - x) / 18.0)
        bh = k_na * 4.0 / (1.0 + math.exp((40.0 - x) / 5.0))
        an = k_k * (0.032 * (15.0 - x) / (math.exp((15.0 - x) / 5.0) - 1.0) if abs(15.0 - x) > 1e-6 else 0.16)
        bn = k_k * 0.5 * math.exp((10.0 - x) / 40.0)
        p_inf = 1.0 / (1.0 + math.exp(-(v + 35.0) / 10.0))
        tau_p = tau_max / (3.3 * math.exp((v + 35.0) / 20.0) + math.exp(-(v + 35.0) / 20.0))
        s_inf = 1.0 / (1.0 + math.exp(-(v + 59.0) / 6.2))
        u_inf = 1.0 / (1.0 + math.exp((v + 83.0) / 4.0))
        tau_u = (30.8 + (211.4 + math.exp((v + 115.2) / 5.0)) / (1.0 + math.exp((v + 86.0) / 3.2))) / 3.7
        # exponential Euler for the gates, forward Euler for V
        m = (am / (am + bm)) + (m - am / (am + bm)) * math.exp(-dt * (am + bm))
        h = (ah / (ah + bh)) + (h - ah / (ah + bh)) * math.exp(-dt * (ah + bh))
        nk = (an / (an + bn)) + (nk - an / (an + bn)) * math.exp(-dt * (an + bn))
        p = p_inf + (p - p_inf) * math.exp(-dt / tau_p)
        u = u_inf + (u - u_inf) * math.exp(-dt / tau_u)
        i_ion = (g_l * (v - e_l) + g_na * m ** 3 * h * (v - E_NA) + g_kd * nk ** 4 * (v - E_K)
                 + g_m * p * (v - E_K) + g_t * s_inf ** 2 * u * (v - E_CA))
        v += dt * (i_ua_cm2[k] - i_ion)  # C = 1 uF/cm2
        v_out[k] = v
    return v_out


def area_cm2(diam_um: float) -> float:
    """Membrane area of a cylinder with length = diameter (the published geometry), cm2."""
    d = diam_um * 1e-4
    return math.pi * d * d


def respond(params: dict, step_pa: float, settle_ms: float = SETTLE_MS, after_ms: float = 20.0):
    """(t ms, v mV, onset index) of the response to a 3 ms step of step_pa after settling at rest."""
    p = dict(params)
    a = area_cm2(p.pop("diam_um"))
    n_settle = int(settle_ms / DT_MS)
    n = n_settle + int((3.0 + after_ms) / DT_MS)
    i = np.zeros(n)
    i[n_settle:n_settle + int(3.0 / DT_MS)] = step_pa * 1e-6 / a  # pA -> uA, per cm2
    v = integrate(i, DT_MS, v0=p["e_l"], **p)
    return np.arange(n) * DT_MS, v, n_settle


def count_spikes(v: np.ndarray) -> int:
    above = v > -10.0
    return int(np.sum(above[1:] & ~above[:-1]))


def threshold_step(params: dict, lo_pa: float = 10.0, hi_pa: float = 20_000.0) -> float:
    """Smallest 3 ms step (pA, within 2%) that evokes an AP; RuntimeError when there is none or the
    model fires at rest."""
    def evoked(step):
        t, v, onset = respond(params, step)
        return count_spikes(v[onset:])

    v_rest = respond(params, 0.0)[1]
    if not np.all(np.isfinite(v_rest)) or count_spikes(v_rest) > 0:
        raise RuntimeError("model fires at rest (or diverges); adjust its parameters")
    if evoked(hi_pa) == 0:
        raise RuntimeError("model does not spike even at the largest step")
    for _ in range(30):
        mid = math.sqrt(lo_pa * hi_pa)
        if evoked(mid) >= 1:
            hi_pa = mid
        else:
            lo_pa = mid
        if hi_pa / lo_pa < 1.02:
            break
    return hi_pa


@lru_cache(maxsize=1)
def amplifier_filter():
    """(b, a) of the amplifier's low-pass at the integration rate."""
    from scipy import signal

    return signal.bessel(4, AMPLIFIER_LPF_HZ, fs=1000.0 / DT_MS, norm="phase")


def record(v_mv: np.ndarray, fs: float) -> np.ndarray:
    """A simulated membrane potential (at 1 / DT_MS) as a rig records it: low-pass filtered and
    sampled at fs (anti-aliased)."""
    from scipy import signal

    b, a = amplifier_filter()
    filtered = signal.lfilter(b, a, v_mv - v_mv[0]) + v_mv[0]  # causal, as an analogue filter
    return resample_trace(filtered, 1000.0 / DT_MS, fs)


def evoked_ap(params: dict, step_pa: float, fs: float):
    """(AP mV at fs from 1 ms before to 2 ms after its peak, stimulus-to-peak s) of the response to
    a step, or None unless it evokes exactly one AP."""
    t, v, onset = respond(params, step_pa)
    if count_spikes(v[onset:]) != 1:
        return None
    y = record(v, fs)
    k0 = int(round(onset * DT_MS * fs / 1000.0))
    peak = k0 + int(np.argmax(y[k0:]))
    before, after = samples_at(1.0, fs), samples_at(2.0, fs)
    if peak - before < 0 or peak + after > len(y):
        return None
    return y[peak - before:peak + after], (peak - k0) / fs


def played_delay(delay_s: float) -> float:
    """The stimulus-to-peak delay a model AP is played at: its own, within the simulator's range
    (just above threshold the LTS neuron's T-current delays its AP ~18 ms; it is played at 10)."""
    from rtclassify.simulator.amplifier import DELAY_RANGE_S

    return float(np.clip(delay_s, *DELAY_RANGE_S))


def near_threshold_ap(params: dict, fs: float):
    """(AP mV at fs, its own stimulus-to-peak s, step pA, threshold step pA) at 1.1 x the threshold
    step (or at it); RuntimeError when there is no single AP there."""
    threshold = threshold_step(params)
    for factor in (1.1, 1.0):
        got = evoked_ap(params, threshold * factor, fs)
        if got is not None:
            return got[0], got[1], threshold * factor, threshold
    raise RuntimeError("no single AP near its threshold")


def model_ap(name: str, fs: float, jitter: dict | None = None):
    """(AP mV at fs from 1 ms before to 2 ms after the peak, stimulus-to-peak s as played, step pA)
    of a built-in neuron at 1.1 x its threshold step."""
    cls, params = read_params()[name]
    ap, delay, step, _ = near_threshold_ap(dict(params, **(jitter or {})), fs)
    return ap, played_delay(delay), step


def draw_cell(params: dict, rng: np.random.Generator) -> dict:
    """One cell's parameters around a fit: conductances and kinetics log-normal (CELL_SPREAD),
    threshold and leak reversal +- ~1 mV."""
    p = dict(params)
    for k in ("g_l", "g_na", "g_kd", "g_m", "k_na", "k_k"):
        p[k] *= float(np.exp(rng.normal(0.0, CELL_SPREAD)))
    p["v_t"] += float(rng.normal(0.0, 1.0))
    p["e_l"] += float(rng.normal(0.0, 1.0))
    return p


class ModelCellSweeps:
    """Each sweep of a simulated cell: its own step (SWEEP_STEP x threshold) and recording noise."""

    def __init__(self, params: dict, threshold_pa: float, known_step_pa: float, fs: float):
        self.params, self.threshold_pa, self.fs = params, threshold_pa, fs
        self.known_step_pa = known_step_pa  # a step known to evoke one AP (the fallback)

    def __call__(self, rng: np.random.Generator):
        """(AP mV, stimulus-to-peak s) of one sweep."""
        for _ in range(5):
            got = evoked_ap(self.params, self.threshold_pa * rng.uniform(*SWEEP_STEP), self.fs)
            if got is not None:
                return got[0] + rng.normal(0.0, SWEEP_NOISE_MV, len(got[0])), played_delay(got[1])
        got = evoked_ap(self.params, self.known_step_pa, self.fs)
        return got[0], played_delay(got[1])


def builtin_cells(fs: float, variants: int = 2, seed: int = 0):
    """SimCells from the built-in neurons (`variants` cells each, parameters drawn around its fit),
    APs at fs, a new AP for every sweep."""
    from rtclassify.simulator.amplifier import SimCell

    rng = np.random.default_rng(seed)
    cells = []
    table = read_params()
    for k in range(variants):  # every neuron once before any of them twice: a short demo shows them all
        for name, (cls, params) in table.items():
            p = params if k == 0 else draw_cell(params, rng)
            try:
                ap, delay, step, threshold = near_threshold_ap(p, fs)
            except RuntimeError:  # a draw too far from the fit: keep the fit itself
                p = params
                ap, delay, step, threshold = near_threshold_ap(p, fs)
            cells.append(SimCell(f"{name}-{k}", ap, played_delay(delay),
                                 {"model": name, "class": cls, "line_name": "", "dendrite_type": "",
                                  "fs_hz_native": fs, "step_pa": round(step, 1)},
                                 sweep_ap=ModelCellSweeps(p, threshold, step, fs)))
    return cells
