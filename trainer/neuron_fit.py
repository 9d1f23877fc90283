"""Fit the built-in model neurons to the class-typical APs of the Allen recordings.

Target of each neuron: the median AP of its class's cells recorded at 50 kHz (the rate every class
has enough cells at, and the demo's default), 1 ms before to 2 ms after the peak, in mV. Fitted:
leak conductance and reversal, Na+, K+ and M-current conductances, the threshold shift v_t and
the Na+ / K+ kinetics factors (log scale for the positive ones), by Nelder-Mead from the published
model the neuron derives from (rtclassify.simulator.neurons.NEURONS).

Objective (per AP, after the amplifier filter and sampling, rtclassify.simulator.neurons.record):
    mean (V - V*)^2 [mV^2] + mean (dV/dt - dV/dt*)^2 / 25 [(mV/ms)^2] - 4 log p(class)
The waveform terms carry the fit; the last one, the shipped genetic5's probability of the class the
neuron stands for, breaks the ties the waveform leaves between Exc, Vip and Ndnf, whose median APs
differ by less than a millivolt in places (the neurons exist to show the classifier at work: one it
does not recognise demonstrates nothing). The report gives both terms.
"""
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIT_FS_HZ = 50_000.0
FITTED = ("g_l", "e_l", "g_na", "g_kd", "g_m", "v_t", "k_na", "k_k")
LINEAR = ("e_l", "v_t")  # fitted as they are (mV); the others on a log scale
DVDT_WEIGHT = 1 / 25.0
CLASS_WEIGHT = 4.0
SIMPLEX_STEP = {"log": 0.4, "mV": 6.0}


@dataclass
class NeuronFit:
    name: str
    cls: str
    params: dict
    target: np.ndarray  # (150,) mV, the class-median AP at 50 kHz
    ap: np.ndarray  # (150,) mV, the fitted neuron's AP
    n_cells: int  # cells in the median
    rms_mv: float
    rms_dvdt: float  # mV/ms
    p_class: float  # shipped genetic5's probability of cls on ap
    evaluations: int


def class_median_aps(spikes_dir: Path, fs: float = FIT_FS_HZ) -> dict:
    """{class: (median AP (n,) mV, number of cells)} of the genetic5 classes at sampling rate fs."""
    from trainer.labels import assign_labels, get_task

    with open(spikes_dir / "cells.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if float(r["fs_hz"]) == fs]
    classes = assign_labels([r["line_name"] for r in rows], [r["dendrite_type"] for r in rows], get_task("genetic5"))
    out = {}
    for cls in sorted({c for c in classes if c}):
        aps = [np.load(spikes_dir / "traces" / f"{r['specimen_id']}.npy").astype(np.float64)
               for r, c in zip(rows, classes) if c == cls]
        aps = [a for a in aps if len(a) == len(aps[0])]
        out[cls] = (np.median(np.stack(aps), axis=0), len(aps))
    return out


def pack(params: dict) -> np.ndarray:
    return np.array([params[k] if k in LINEAR else math.log(params[k]) for k in FITTED])


def unpack(x: np.ndarray, base: dict) -> dict:
    p = dict(base)
    for k, value in zip(FITTED, x):
        p[k] = float(value) if k in LINEAR else float(math.exp(value))
    return p


def neuron_ap(params: dict):
    """The neuron's AP near threshold at FIT_FS_HZ, or None when it has none (or fires at rest)."""
    from rtclassify.simulator.neurons import near_threshold_ap

    try:
        return near_threshold_ap(params, FIT_FS_HZ)[0]
    except RuntimeError:
        return None


def score(ap: np.ndarray, target: np.ndarray, cls: str, model) -> tuple[float, float, float]:
    """(rms V error mV, rms dV/dt error mV/ms, p(cls)) of one AP against its target."""
    rms_v = float(np.sqrt(np.mean((ap - target) ** 2)))
    ms = FIT_FS_HZ / 1000.0
    rms_d = float(np.sqrt(np.mean(((np.diff(ap) - np.diff(target)) * ms) ** 2)))
    p = float(model.run(ap[None].astype(np.float32))[0][list(model.classes).index(cls)])
    return rms_v, rms_d, p


def fit_neuron(name: str, target: np.ndarray, n_cells: int, model, max_evaluations: int = 1000,
               start: dict | None = None) -> NeuronFit:
    """Fit neuron `name` (rtclassify.simulator.neurons.NEURONS) to `target` (150,) mV from `start` (default:
    its published model)."""
    from scipy import optimize

    from rtclassify.simulator.neurons import NEURONS, PUBLISHED

    cls, origin = NEURONS[name]
    base = dict(start or PUBLISHED[origin])

    def objective(x):
        ap = neuron_ap(unpack(x, base))
        if ap is None:
            return 1e4
        rms_v, rms_d, p = score(ap, target, cls, model)
        return rms_v ** 2 + DVDT_WEIGHT * rms_d ** 2 - CLASS_WEIGHT * math.log(max(p, 1e-6))

    x0 = pack(base)
    steps = np.array([SIMPLEX_STEP["mV"] if k in LINEAR else SIMPLEX_STEP["log"] for k in FITTED])
    simplex = np.vstack([x0] + [x0 + np.eye(len(x0))[j] * steps[j] for j in range(len(x0))])
    res = optimize.minimize(objective, x0, method="Nelder-Mead",
                            options=dict(maxfev=max_evaluations, xatol=1e-3, fatol=1e-3, initial_simplex=simplex,
                                         adaptive=True))
    params = unpack(res.x, base)
    ap = neuron_ap(params)
    if ap is None:
        raise RuntimeError(f"{name}: the fit ended on parameters without a single AP")
    rms_v, rms_d, p = score(ap, target, cls, model)
    return NeuronFit(name, cls, params, target, ap, n_cells, rms_v, rms_d, p, int(res.nfev))


def write_table(fits: list, path: Path, source: str) -> None:
    """The package's neuron_params.csv: one row per neuron, numbers only."""
    from rtclassify.simulator.neurons import PARAM_NAMES

    with open(path, "w", newline="") as f:
        f.write(f"# written by `python -m trainer fit-neurons` from {source} (class-median APs at 50 kHz)\n")
        w = csv.writer(f)
        w.writerow(["name", "class", *PARAM_NAMES, "fit_rms_mv", "fit_rms_dvdt", "fit_p_class", "n_cells"])
        for fit in fits:
            w.writerow([fit.name, fit.cls, *[f"{fit.params[k]:.6g}" for k in PARAM_NAMES], f"{fit.rms_mv:.3f}",
                        f"{fit.rms_dvdt:.2f}", f"{fit.p_class:.3f}", fit.n_cells])


def plot_fits(fits: list, path: Path) -> None:
    """Fitted vs target APs and their dV/dt, one column per neuron."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(fits), figsize=(3.2 * len(fits), 5.6), squeeze=False)
    for j, fit in enumerate(fits):
        t = np.arange(len(fit.target)) / FIT_FS_HZ * 1e3 - 1.0
        top, bottom = axes[0, j], axes[1, j]
        top.plot(t, fit.target, "k", lw=1.5, label=f"{fit.cls} median ({fit.n_cells} cells)")
        top.plot(t, fit.ap, "r", lw=1, label=f"{fit.name} (fit)")
        top.set_title(f"{fit.name} -> {fit.cls}: rms {fit.rms_mv:.2f} mV, p={fit.p_class:.2f}", fontsize=9)
        top.set_xlabel("ms from peak")
        top.set_ylabel("V (mV)")
        top.legend(fontsize=7, loc="upper right")
        ms = FIT_FS_HZ / 1000.0
        bottom.plot(t[1:], np.diff(fit.target) * ms, "k", lw=1.5)
        bottom.plot(t[1:], np.diff(fit.ap) * ms, "r", lw=1)
        bottom.set_xlim(-0.6, 1.2)
        bottom.set_xlabel("ms from peak")
        bottom.set_ylabel("dV/dt (mV/ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
