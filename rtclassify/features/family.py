"""A cell's features from its family of long steps, named and defined as in the Allen Cell Types
Database's per-cell table (`cell_features.csv`; IPFX `LongSquareAnalysis`):

| feature | from |
|---|---|
| `threshold_i_long_square` (pA) | rheobase: the smallest depolarising step with an AP |
| `latency` (s) | the rheobase step: onset to the first AP's threshold |
| `*_long_square` AP shape (`threshold_v`, `peak_v`, `fast_trough_v`, `trough_v`, `upstroke_downstroke_ratio`) | the rheobase step's first AP; in a family without a depolarising step that fired (hyperpolarising steps only), the first rebound AP after a step's end (`ap_shape_from` says which) |
| `f_i_curve_slope` (Hz/pA) | least squares of AP rate on amplitude over the steps with APs |
| `adaptation`, `avg_isi` (ms) | the "hero" step: the first with amplitude 39-61 pA above rheobase, else the nearest to rheobase + 39 pA |
| `sag`, `vm_for_sag` | the step without APs whose peak deflection is nearest -100 mV |
| `tau` (ms), `ri` = `input_resistance_mohm` (MΩ) | steps above -100 and below 0 pA without APs (a family without one: its -100 pA steps): mean tau; slope of peak deflection on current |
| `vrest` (mV) | mean pre-step baseline over all steps |

Missing pieces leave their features NaN: no hyperpolarising step (no sag, tau, ri), a single
amplitude (no f-I slope), no AP (no rheobase, latency or AP shape).

Temperature (warp_features): a family recorded at a declared T °C below the Allen 34 °C has its time
features (`latency`, `avg_isi`, `tau`) divided by the project's AP warp (rtclassify.dsp.temperature.warp_factor), the
same Q10 that reads an AP window faster; `f_i_curve_slope` is multiplied by it (rates scale
inversely with intervals).
"""
import numpy as np

from rtclassify.features.step import StepFeatures

SAG_TARGET_MV = -100.0
SUBTHRESH_MIN_PA = -100.0  # tau and ri use steps above SUBTHRESH_MIN_PA and below 0 pA (IPFX's Allen setting)
HERO_OFFSET_PA = (39.0, 61.0)

# every feature a family of steps gives, in the order the cell models read them (Allen's names)
FAMILY_FEATURES = ("threshold_i_long_square", "latency", "threshold_v_long_square", "peak_v_long_square",
                   "fast_trough_v_long_square", "trough_v_long_square", "upstroke_downstroke_ratio_long_square",
                   "f_i_curve_slope", "adaptation", "avg_isi", "sag", "vm_for_sag", "tau", "ri",
                   "input_resistance_mohm", "vrest")
BANDWIDTH_FEATURE = "bandwidth_hz"  # how fast a recording can follow an AP (bandwidth_hz()); the cell
# models read it beside the features, so that a 10 kHz file's blunted AP is not read as another type's
REFERENCE_BANDWIDTH_HZ = 10_000.0  # the Allen features' own: 50-200 kHz through IPFX's 10 kHz filter
TIME_FEATURES = ("latency", "avg_isi", "tau")  # divided by the warp at a declared temperature below 34 °C
RATE_FEATURES = ("f_i_curve_slope",)  # multiplied by it


def family_features(steps: list[StepFeatures]) -> dict:
    """{Allen feature name: value (NaN when not measurable)} for one cell's long steps (any order), and
    `ap_shape_from`: "rheobase", "rebound" or None (where the AP shape features were measured)."""
    out = {name: float("nan") for name in FAMILY_FEATURES}
    out["ap_shape_from"] = None
    if not steps:
        return out
    out["vrest"] = float(np.nanmean([s.v_baseline for s in steps]))
    spiking = sorted((s for s in steps if s.n_spikes > 0 and s.stim_amp > 0), key=lambda s: s.stim_amp)
    if spiking:
        rheo = spiking[0]
        out["threshold_i_long_square"] = rheo.stim_amp
        out["latency"] = rheo.latency_s
        out["threshold_v_long_square"] = float(rheo.threshold_v[0])
        out["peak_v_long_square"] = float(rheo.peak_v[0])
        out["fast_trough_v_long_square"] = float(rheo.fast_trough_v[0])
        out["trough_v_long_square"] = float(rheo.trough_v[0])
        out["upstroke_downstroke_ratio_long_square"] = float(rheo.upstroke_downstroke_ratio[0])
        out["ap_shape_from"] = "rheobase"
        amps = np.array([s.stim_amp for s in spiking])
        if len(np.unique(amps)) >= 2:
            rates = np.array([s.avg_rate for s in spiking])
            out["f_i_curve_slope"] = float(np.polyfit(amps, rates, 1)[0])
        hero = find_hero(spiking, rheo.stim_amp)
        out["adaptation"] = hero.adaptation
        out["avg_isi"] = hero.avg_isi_ms
    else:
        rebound = next((s.rebound for s in sorted(steps, key=lambda s: -s.stim_amp) if s.rebound), None)
        if rebound is not None:
            for name, value in rebound.items():
                out[f"{name}_long_square"] = value
            out["ap_shape_from"] = "rebound"
    quiet = [s for s in steps if s.n_spikes == 0 and s.stim_amp < 0]
    if quiet:
        sag_step = min(quiet, key=lambda s: abs(s.peak_deflect_v - SAG_TARGET_MV))
        out["sag"], out["vm_for_sag"] = sag_step.sag, sag_step.peak_deflect_v
        passive = [s for s in quiet if s.stim_amp > SUBTHRESH_MIN_PA + 0.5] or \
            [s for s in quiet if s.stim_amp >= SUBTHRESH_MIN_PA - 0.5]
        if passive:
            taus = [s.tau_ms for s in passive if np.isfinite(s.tau_ms)]
            out["tau"] = float(np.mean(taus)) if taus else float("nan")
            out["ri"] = out["input_resistance_mohm"] = input_resistance_mohm(passive)
    return out


def bandwidth_hz(fs: float, filter_hz: float | None = None) -> float:
    """The bandwidth an AP's shape was measured with: the lowest of 0.45 x the sampling rate, the
    amplifier's low-pass corner (when known) and REFERENCE_BANDWIDTH_HZ (Hz). Every Allen cell reads
    REFERENCE_BANDWIDTH_HZ, whatever its rate, so the rate confound of the Allen data (Vip and Ndnf at
    50 kHz) cannot enter through it."""
    corner = filter_hz if filter_hz and filter_hz > 0 else float("inf")
    return float(min(0.45 * fs, corner, REFERENCE_BANDWIDTH_HZ))


def warp_features(features: dict, warp: float) -> dict:
    """Features of a cell recorded at a declared temperature, as the 34 °C models read them: time
    features divided by the warp (rtclassify.dsp.temperature.warp_factor), rates multiplied by it.
    Returns a new dict; values that are absent or not numbers are left as they are."""
    out = dict(features)
    if warp == 1.0:
        return out
    for name in TIME_FEATURES + RATE_FEATURES:
        value = out.get(name)
        if isinstance(value, (int, float)) and value is not None:
            out[name] = value / warp if name in TIME_FEATURES else value * warp
    return out


def find_hero(spiking: list[StepFeatures], rheobase_pa: float) -> StepFeatures:
    """IPFX's hero step: the first with amplitude in (rheobase + 39, rheobase + 61) pA, otherwise the
    one nearest rheobase + 39 pA. `spiking` is sorted by amplitude."""
    lo, hi = rheobase_pa + HERO_OFFSET_PA[0], rheobase_pa + HERO_OFFSET_PA[1]
    for s in spiking:
        if lo < s.stim_amp < hi:
            return s
    return min(spiking, key=lambda s: abs(s.stim_amp - lo))


def input_resistance_mohm(steps: list[StepFeatures]) -> float:
    """Slope of peak deflection (mV) on amplitude (pA) over hyperpolarising steps, in MΩ (IPFX
    input_resistance; one step: through its own baseline at 0 pA)."""
    i = [s.stim_amp for s in steps]
    v = [s.peak_deflect_v for s in steps]
    if len(set(i)) == 1:
        i.append(0.0)
        v.append(float(np.mean([s.v_baseline for s in steps])))
    slope = np.polyfit(np.array(i, float), np.array(v, float), 1)[0]  # mV/pA = GΩ
    return float(slope * 1e3)
