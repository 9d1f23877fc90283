"""Acquisition chains: a stored Allen AP as another rig would have recorded it.

A rig here is what stands between the neuron and the model: the bath temperature (APs widen as it
cools), the amplifier's analog low-pass (Bessel, 4 or 8 poles), the digitiser's rate and phase, the
gain, the junction-potential offset, noise and mains hum. `record_through` plays a stored 3 ms AP
(1 ms before to 2 ms after its peak, at 50 or 200 kHz) through one rig; `window_through` then cuts the
model window exactly as `serve` and `predict` do: the AP found by the daemon's detector, the window
cut at its peak by rtclassify.dsp.windows (window_from_trace, which the daemon's WindowCutter is held
equal to), read with the temperature warp of the declared temperature. One code path, so the models
train on the windows the tools will give them.

The training distribution (`draw_rig`, documented in docs/rigs.md):
- rate: one of 10, 20, 25, 40, 50, 100, 200 kHz (60%) or log-uniform 10-200 kHz (40%)
- analog low-pass: none (15%), else Bessel 4 poles (70%) or 8 (30%), corner log-uniform from
  1 kHz to min(10 kHz, 0.45 x rate)
- gain 0.95-1.05, offset -15..+15 mV, white noise 0-0.5 mV s.d., mains hum (30%: 50 or 60 Hz, 0-0.3 mV)
- temperature 34 °C (50%) or uniform 22-34 °C; each AP widened by its family's ratio at that
  temperature (rtclassify.dsp.temperature.width_ratio, with a 5% log-normal spread per cell), and
  read back with the warp of the declared temperature; half of the cooled windows are stored 3 ms
  files (edges repeated, as predict reads a cells.csv folder), half streams (the whole AP in view).
"""
import math
from dataclasses import dataclass

import numpy as np

from rtclassify.dsp.detector import detect_spikes
from rtclassify.dsp.temperature import REFERENCE_C, WIDTH_RATIO_25C, warp_factor, width_ratio
from rtclassify.dsp.windows import WindowSpec, resample_ratio, samples_at, window_from_trace
from rtclassify.formats.spike_folder import TRACE_AFTER_MS, TRACE_BEFORE_MS

DENSE_HZ = 1_000_000.0  # the "analog" signal: stored APs upsampled to 1 MHz before the rig's filter
PAD_MS = 3.0  # baseline and tail repeated around the stored 3 ms, so that cooled, filtered APs fit
COMMON_RATES_HZ = (10_000.0, 20_000.0, 25_000.0, 40_000.0, 50_000.0, 100_000.0, 200_000.0)
_GEOMEAN = math.exp(sum(math.log(r) for r in WIDTH_RATIO_25C.values()) / len(WIDTH_RATIO_25C))
# 25 °C / 34 °C AP width ratio per class; Vip, Ndnf and unknown interneurons have no published
# figure: the four families' geometric mean
FAMILY_RATIO_25C = {"Exc": math.sqrt(WIDTH_RATIO_25C["IT"] * WIDTH_RATIO_25C["ET"]), "Pvalb": WIDTH_RATIO_25C["Pvalb"],
                    "Sst": WIDTH_RATIO_25C["Sst"], "Vip": _GEOMEAN, "Ndnf": _GEOMEAN, "Inh": _GEOMEAN}


@dataclass(frozen=True)
class Rig:
    """One acquisition chain (units in the names). filter_hz None: no analog low-pass."""

    fs_hz: float = 50_000.0
    filter_hz: float | None = None
    filter_poles: int = 4
    gain: float = 1.0
    offset_mv: float = 0.0
    noise_mv: float = 0.0
    hum_mv: float = 0.0
    hum_hz: float = 50.0
    temperature_c: float = REFERENCE_C
    stored: bool = False  # the window is read from a stored 3 ms file (edges repeated) rather than a stream


def draw_rig(rng: np.random.Generator, rates_hz: tuple | None = None, cooled_share: float = 0.5) -> Rig:
    """One rig of the training distribution (see the module docstring); rates_hz (low, high): the rate
    log-uniform in that range instead (a rate specialist's distribution); cooled_share: the share of
    rigs below 34 °C."""
    if rates_hz is not None:
        fs = round(math.exp(rng.uniform(math.log(rates_hz[0]), math.log(rates_hz[1]))), -2)
    elif rng.random() < 0.6:
        fs = float(rng.choice(COMMON_RATES_HZ))
    else:
        fs = round(math.exp(rng.uniform(math.log(10_000.0), math.log(200_000.0))), -2)
    filter_hz, poles = None, 4
    if rng.random() >= 0.15:
        top = min(10_000.0, 0.45 * fs)
        filter_hz = float(math.exp(rng.uniform(math.log(1_000.0), math.log(top))))
        poles = 4 if rng.random() < 0.7 else 8
    cooled = rng.random() < cooled_share
    return Rig(fs_hz=fs, filter_hz=filter_hz, filter_poles=poles, gain=float(rng.uniform(0.95, 1.05)),
               offset_mv=float(rng.uniform(-15.0, 15.0)), noise_mv=float(rng.uniform(0.0, 0.5)),
               hum_mv=float(rng.uniform(0.0, 0.3)) if rng.random() < 0.3 else 0.0,
               hum_hz=50.0 if rng.random() < 0.5 else 60.0,
               temperature_c=float(rng.uniform(22.0, 34.0)) if cooled else REFERENCE_C,
               stored=bool(cooled and rng.random() < 0.5))


def upsample_to_dense(trace: np.ndarray, fs_hz: float) -> np.ndarray:
    """(n,) mV at fs_hz, edges extended by PAD_MS of their first and last values -> (m,) at DENSE_HZ."""
    from scipy.signal import resample_poly

    pad = samples_at(PAD_MS, fs_hz)
    x = np.pad(np.asarray(trace, dtype=np.float64), pad, mode="edge")
    up, down = resample_ratio(fs_hz, DENSE_HZ)  # exact for the stored rates (50, 200 kHz: 20/1, 5/1)
    return resample_poly(x, up, down, padtype="edge")


def record_through(trace: np.ndarray, fs_hz: float, rig: Rig, stretch: float, rng: np.random.Generator) -> np.ndarray:
    """A stored AP (n,) mV at fs_hz as `rig` records it, widened in time by `stretch` (1: as it is):
    (k,) mV at rig.fs_hz, covering the stored 3 ms plus PAD_MS each side (times stretch)."""
    from scipy.signal import bessel, sosfilt, sosfilt_zi

    dense = upsample_to_dense(trace, fs_hz)
    if stretch != 1.0:  # a slower AP: the same shape on a longer time axis
        t = np.arange(int(len(dense) * stretch)) / stretch
        dense = np.interp(t, np.arange(len(dense)), dense)
    if rig.filter_hz:
        sos = bessel(rig.filter_poles, rig.filter_hz, norm="mag", output="sos", fs=DENSE_HZ)
        dense, _ = sosfilt(sos, dense, zi=sosfilt_zi(sos) * dense[0])
    step = DENSE_HZ / rig.fs_hz  # dense samples per recorded sample; the clock's phase is random
    at = rng.uniform(0.0, step) + step * np.arange(int((len(dense) - 1 - step) / step))
    v = np.interp(at, np.arange(len(dense)), dense)
    t_s = at / DENSE_HZ
    v = rig.gain * v + rig.offset_mv + rig.noise_mv * rng.standard_normal(len(v))
    if rig.hum_mv:
        v = v + rig.hum_mv * np.sin(2 * np.pi * rig.hum_hz * t_s + rng.uniform(0, 2 * np.pi))
    return v


def find_peak(v: np.ndarray, fs_hz: float, expected: int) -> int:
    """The AP peak the daemon's detector finds nearest to sample `expected`; where it finds none
    (an AP too slow or small for its rules: serve would skip it), the highest sample within 1 ms."""
    spikes = detect_spikes(v, fs_hz)
    if len(spikes.peaks):
        return int(spikes.peaks[np.argmin(np.abs(spikes.peaks - expected))])
    half = samples_at(1.0, fs_hz)
    lo = max(0, expected - half)
    return lo + int(np.argmax(v[lo:expected + half]))


def recorded_ap(trace: np.ndarray, fs_hz: float, rig: Rig, rng: np.random.Generator, family_ratio_25c: float = 1.0,
                spread: float = 0.0) -> tuple[np.ndarray, int]:
    """(v, peak): a stored AP (n,) mV at fs_hz (peak at TRACE_BEFORE_MS) as `rig` records it, (k,) mV
    at rig.fs_hz, and the sample of its peak as the daemon's detector finds it; when rig.stored, only
    the 1 ms before to 2 ms after that peak, as a cells.csv folder holds it.

    family_ratio_25c: the AP's 25/34 °C width ratio (FAMILY_RATIO_25C), applied at rig.temperature_c
    with a log-normal spread (s.d. `spread`)."""
    stretch = width_ratio(family_ratio_25c, rig.temperature_c) if rig.temperature_c != REFERENCE_C else 1.0
    if spread:
        stretch *= math.exp(spread * rng.standard_normal())
    v = record_through(trace, fs_hz, rig, stretch, rng)
    expected = int(round((PAD_MS + TRACE_BEFORE_MS) * stretch * rig.fs_hz / 1000.0))
    peak = find_peak(v, rig.fs_hz, expected)
    if rig.stored:
        lo = max(peak - samples_at(TRACE_BEFORE_MS, rig.fs_hz), 0)
        v, peak = v[lo:peak + samples_at(TRACE_AFTER_MS, rig.fs_hz)], peak - lo
    return v, peak


def window_through(trace: np.ndarray, fs_hz: float, rig: Rig, spec: WindowSpec, rng: np.random.Generator,
                   family_ratio_25c: float = 1.0, spread: float = 0.0,
                   declared_temperature_c: float | None = None) -> np.ndarray:
    """The model window (spec.n_samples,) float32 mV that serve / predict would take from `trace`
    (a stored AP, (n,) mV at fs_hz, peak at TRACE_BEFORE_MS) recorded through `rig` (recorded_ap),
    read with the warp of declared_temperature_c (default: the rig's own; math.nan: not told)."""
    v, peak = recorded_ap(trace, fs_hz, rig, rng, family_ratio_25c, spread)
    told = rig.temperature_c if declared_temperature_c is None else declared_temperature_c
    return window_from_trace(v, rig.fs_hz, peak, spec, warp_factor(told))


def family_ratios(classes: list[str], labels: np.ndarray, dendrite_types: np.ndarray) -> np.ndarray:
    """(N,) 25/34 °C width ratio of each cell: its class's (labels (N,) into classes, -1 = none), else
    by dendrite type (spiny: Exc, otherwise an interneuron of unknown family)."""
    out = np.empty(len(labels))
    for i, (y, d) in enumerate(zip(labels, dendrite_types)):
        name = classes[y] if y >= 0 else ("Exc" if d == "spiny" else "Inh")
        out[i] = FAMILY_RATIO_25C.get(name, _GEOMEAN)
    return out


def rig_pool(traces: list, fs_hz: np.ndarray, ratios: np.ndarray, spec: WindowSpec, draws: int, seed: int,
             progress=None, rates_hz: tuple | None = None, cooled_share: float = 0.5,
             undeclared_share: float = 0.0) -> np.ndarray:
    """(N, draws, L) float32 mV: every stored AP through `draws` random rigs (draw_rig, its rates from
    rates_hz when given, cooled_share of them below 34 °C), each AP widened by its ratio (N,) at the rig's temperature (5% spread) and read
    at the declared temperature, except undeclared_share of the cooled ones, read as at 34 °C (their
    temperature not told). Seeded: the same pool for the same seed."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(traces), draws, spec.n_samples), np.float32)
    for i, (trace, fs) in enumerate(zip(traces, fs_hz)):
        for k in range(draws):
            rig = draw_rig(rng, rates_hz, cooled_share)
            told = None
            if undeclared_share > 0 and rig.temperature_c != REFERENCE_C and rng.random() < undeclared_share:
                told = math.nan  # (no draw when undeclared_share is 0: the pools of earlier recipes stay as they were)
            out[i, k] = window_through(trace, float(fs), rig, spec, rng, ratios[i], spread=0.05, declared_temperature_c=told)
        if progress:
            progress(1)
    return out


# The acquisition envelope a shipped model's card states (rtclassify.model.envelope.judge reads it):
# the rigs its held-out figures (docs/rigs.md) cover. Training drew 1-10 kHz filters, but the figures
# hold from 2 kHz on; temperatures 22-34 °C, declared.
ENVELOPE_RIGS = {"fs_hz": [10_000.0, 200_000.0], "filter_hz_min": 2_000.0, "temperature_c": [22.0, 34.0],
                 "assumed_temperature_c": REFERENCE_C, "offset_mv": [-15.0, 15.0], "noise_mv_max": 0.5}
ENVELOPE_QUANTILES = (0.1, 99.9)  # % of the training windows' values a window may fall between


def training_envelope(windows: np.ndarray) -> dict:
    """The card's `envelope` for a model trained on `windows` (N, [V,] L) mV (rig pools included): the
    rigs of ENVELOPE_RIGS and the range of the membrane potential at the window's start and of the AP
    peak over the training windows (ENVELOPE_QUANTILES), rounded outwards to 1 mV."""
    flat = windows.reshape(-1, windows.shape[-1])
    start = np.percentile(flat[:, 0], ENVELOPE_QUANTILES)
    peak = np.percentile(flat.max(axis=1), ENVELOPE_QUANTILES)
    return {**ENVELOPE_RIGS, "window_start_mv": [math.floor(start[0]), math.ceil(start[1])],
            "peak_mv": [math.floor(peak[0]), math.ceil(peak[1])],
            "training_rigs": "trainer/rigs.py draw_rig (docs/rigs.md): 10-200 kHz, Bessel 1-10 kHz or none, "
                             "offset +-15 mV, gain +-5%, noise 0-0.5 mV, hum, 22-34 °C"}


@dataclass(frozen=True)
class Condition:
    """One row of the rig-stratified report: a rig every held-out cell is recorded through (None:
    the stored APs as they are), and what the user declares of it."""

    name: str
    rig: Rig | None = None
    declare_temperature: bool = True  # False: the rig's temperature is not told (cells.csv has no value)
    native_offset_mv: float = 0.0  # with rig None: the stored AP shifted by this (junction potential) ...
    native_noise_mv: float = 0.0  # ... and given this white noise, at its own rate


def _rig(fs, filt=None, poles=4, **kw) -> Rig:
    return Rig(fs_hz=fs, filter_hz=filt, filter_poles=poles, stored=True, **kw)


REPORT_CONDITIONS = (
    Condition("as recorded"),
    Condition("+10 mV offset", native_offset_mv=10.0),
    Condition("-10 mV offset", native_offset_mv=-10.0),
    Condition("0.3 mV noise", native_noise_mv=0.3),
    Condition("100 kHz, 10 kHz 8-pole", _rig(100_000.0, 10_000.0, 8)),
    Condition("50 kHz, 5 kHz", _rig(50_000.0, 5_000.0)),
    Condition("25 kHz, 10 kHz", _rig(25_000.0, 10_000.0)),
    Condition("20 kHz, 10 kHz", _rig(20_000.0, 10_000.0)),
    Condition("20 kHz, 5 kHz", _rig(20_000.0, 5_000.0)),
    Condition("20 kHz, 5 kHz, -8 mV, 0.3 mV noise", _rig(20_000.0, 5_000.0, offset_mv=-8.0, noise_mv=0.3)),
    Condition("10 kHz, 5 kHz", _rig(10_000.0, 5_000.0)),
    Condition("10 kHz, 2 kHz", _rig(10_000.0, 2_000.0)),
    Condition("25 °C told, 50 kHz, 10 kHz", _rig(50_000.0, 10_000.0, temperature_c=25.0)),
    Condition("25 °C not told, 50 kHz, 10 kHz", _rig(50_000.0, 10_000.0, temperature_c=25.0),
              declare_temperature=False),
    Condition("25 °C told, 20 kHz, 5 kHz", _rig(20_000.0, 5_000.0, temperature_c=25.0)),
    Condition("8 kHz, 2 kHz", _rig(8_000.0, 2_000.0)),
)


def write_condition_folder(folder, condition: Condition, traces: list, fs_hz: np.ndarray, ids: np.ndarray,
                           ratios: np.ndarray, seed: int, labels: list | None = None) -> None:
    """A cells.csv folder of the held-out APs (traces (N,) of (n,) mV at fs_hz (N,)) as `condition`
    records them: 1 ms before to 2 ms after each detected peak at the rig's rate, with the rig's
    filter_hz and (when declared) temperature_c columns: what a lab would hand `rtclassify predict`.
    Cooled APs are widened by their family's ratio (N,). labels: (N,) class names for a `label` column
    (the layout `python -m trainer adapt` reads)."""
    import csv
    from pathlib import Path

    folder = Path(folder)
    (folder / "traces").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rig = condition.rig
    with open(folder / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["specimen_id", "fs_hz", "filter_hz", "temperature_c"] + (["label"] if labels is not None else []))
        for i, (sid, trace, fs, ratio) in enumerate(zip(ids, traces, fs_hz, ratios)):
            if rig is None:
                v = trace + condition.native_offset_mv + condition.native_noise_mv * rng.standard_normal(len(trace))
                rate, filt, temp = fs, "", ""
            else:
                v, _ = recorded_ap(trace, float(fs), rig, rng, ratio)
                rate, filt = rig.fs_hz, rig.filter_hz or ""
                cooled = rig.temperature_c != REFERENCE_C  # Allen's own temperature: left undeclared, as most do
                temp = rig.temperature_c if condition.declare_temperature and cooled else ""
            np.save(folder / "traces" / f"{sid}.npy", np.asarray(v, np.float32))
            w.writerow([sid, f"{rate:g}", filt, temp] + ([labels[i]] if labels is not None else []))
