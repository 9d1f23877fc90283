"""Built-in conductance-based cortical neurons, so that the simulator needs no recordings.

Minimal Hodgkin-Huxley-type models of regular-spiking (excitatory), fast-spiking (Pvalb-like) and
low-threshold-spiking (Sst-like) cortical neurons after Pospischil et al. 2008 (Biol Cybern 99:427):
a single compartment with Traub-Miles Na+ and delayed-rectifier K+ currents, a slow M-type K+
current and, for LTS cells, a T-type Ca2+ current. Units: ms, mV, mS/cm2, uA/cm2, uF/cm2.
Each model is driven by a 3 ms current step just above its threshold for one AP; the AP is cut
1 ms before to 2 ms after its peak, as in the Allen data, and resampled to the stream rate.
"""
import math

import numba
import numpy as np

from rtclassify.windows import resample_trace, samples_at

# name: (class it stands for, parameters)
MODELS = {
    "RS": ("Exc", dict(g_l=0.1, e_l=-70.3, g_na=56.0, g_kd=6.0, g_m=0.075, tau_max=608.0, g_t=0.0, v_t=-56.2,
                       diam_um=61.4)),
    "FS": ("Pvalb", dict(g_l=0.038, e_l=-70.4, g_na=58.0, g_kd=3.9, g_m=0.0787, tau_max=502.0, g_t=0.0,
                         v_t=-57.9, diam_um=56.9)),
    "LTS": ("Sst", dict(g_l=0.019, e_l=-50.0, g_na=50.0, g_kd=4.0, g_m=0.028, tau_max=4000.0, g_t=0.4,
                        v_t=-50.0, diam_um=96.0)),
}
E_NA, E_K, E_CA = 50.0, -90.0, 120.0
DT_MS = 0.0025  # integration step (400 kHz)


@numba.jit(nopython=True, nogil=True, cache=True)
def integrate(i_ua_cm2, dt, g_l, e_l, g_na, g_kd, g_m, tau_max, g_t, v_t, v0):
    """Membrane potential (n,) in mV for the injected current density i_ua_cm2 (n,), uA/cm2."""
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
        am = 0.32 * (13.0 - x) / (math.exp((13.0 - x) / 4.0) - 1.0) if abs(13.0 - x) > 1e-6 else 1.28
        bm = 0.28 * (x - 40.0) / (math.exp((x - 40.0) / 5.0) - 1.0) if abs(x - 40.0) > 1e-6 else 1.4
        ah = 0.128 * math.exp((17.0 - x) / 18.0)
        bh = 4.0 / (1.0 + math.exp((40.0 - x) / 5.0))
        an = 0.032 * (15.0 - x) / (math.exp((15.0 - x) / 5.0) - 1.0) if abs(15.0 - x) > 1e-6 else 0.16
        bn = 0.5 * math.exp((10.0 - x) / 40.0)
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


def respond(params: dict, step_pa: float, settle_ms: float = 300.0, after_ms: float = 20.0):
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
    above = v > 0.0
    return int(np.sum(above[1:] & ~above[:-1]))


def find_single_spike(params: dict, lo_pa: float = 50.0, hi_pa: float = 20_000.0):
    """Smallest step (bisection, pA) that evokes exactly one AP, and that response."""
    def evoked(step):
        t, v, onset = respond(params, step)
        return count_spikes(v[onset:])

    if count_spikes(respond(params, 0.0)[1]) > 0:
        raise RuntimeError("model fires at rest; adjust its parameters")
    if evoked(hi_pa) == 0:
        raise RuntimeError("model does not spike even at the largest step")
    for _ in range(30):
        mid = 0.5 * (lo_pa + hi_pa)
        if evoked(mid) >= 1:
            hi_pa = mid
        else:
            lo_pa = mid
        if hi_pa - lo_pa < 1.0:
            break
    step = hi_pa * 1.1  # a little above threshold, as an experimenter would
    t, v, onset = respond(params, step)
    if count_spikes(v[onset:]) != 1:
        t, v, onset = respond(params, hi_pa)
    return step, t, v, onset


def model_ap(name: str, fs: float, jitter: dict | None = None):
    """(AP mV at fs from 1 ms before to 2 ms after the peak, stimulus-to-peak s, step pA) of a model."""
    cls, params = MODELS[name]
    params = dict(params, **(jitter or {}))
    step, t, v, onset = find_single_spike(params)
    peak = onset + int(np.argmax(v[onset:]))
    fs_sim = 1000.0 / DT_MS
    before, after = samples_at(1.0, fs_sim), samples_at(2.0, fs_sim)
    ap = v[peak - before:peak + after]
    return resample_trace(ap, fs_sim, fs), (peak - onset) * DT_MS / 1000.0, step


def builtin_cells(fs: float, variants: int = 2):
    """SimCells from the built-in models (a few parameter variants each), APs at fs."""
    from rtclassify.simulate import SimCell

    cells = []
    for name, (cls, params) in MODELS.items():
        for k in range(variants):
            jitter = {"v_t": params["v_t"] + 1.5 * k, "g_kd": params["g_kd"] * (1 + 0.15 * k)}
            ap, delay, step = model_ap(name, fs, jitter)
            cells.append(SimCell(f"{name}-{k}", ap, float(np.clip(delay, 0.0013, 0.010)),
                                 {"model": name, "class": cls, "line_name": "", "dendrite_type": "",
                                  "fs_hz_native": fs, "step_pa": round(step, 1)}))
    return cells
