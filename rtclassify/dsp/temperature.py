"""Recording temperature: how much wider an AP is at a rig's temperature than at the models' 34 °C,
and the time warp that undoes most of it before a window is classified.

Action potentials widen as the bath cools. Scala et al. 2021 (mouse M1 Patch-seq, the same cell
types recorded at 25 °C and at 34 °C) report median AP widths of Pvalb 0.60 vs 0.44 ms, Sst 0.92 vs
0.56 ms, IT (excitatory) 1.60 vs 0.88 ms and ET 1.28 vs 0.76 ms: 1.36-1.82 times wider at 25 °C,
by type. The type is what we want to learn, so the warp cannot use it: a window recorded at T °C is
read as if its samples came WARP(T) times faster, WARP(T) = Q10 ** ((34 - T) / 10), with Q10 fitted
to the geometric mean of those four ratios over 9 °C (1.70). What remains (a Pvalb AP a little
narrower than at 34 °C, an IT one a little wider) the models learnt from training windows drawn
through rigs at 22-34 °C with each family's own ratio (trainer/rigs.py).
"""
import math

REFERENCE_C = 34.0  # the Allen Cell Types Database's recording temperature, the shipped models' own
# median AP width ratio 25 °C / 34 °C by family (Scala et al. 2021, Nature 598:144, Extended Data)
WIDTH_RATIO_25C = {"Pvalb": 0.60 / 0.44, "Sst": 0.92 / 0.56, "IT": 1.60 / 0.88, "ET": 1.28 / 0.76}
_MEAN_LOG_RATIO = sum(math.log(r) for r in WIDTH_RATIO_25C.values()) / len(WIDTH_RATIO_25C)
Q10 = math.exp(_MEAN_LOG_RATIO * 10.0 / (REFERENCE_C - 25.0))  # ~1.70
PLAUSIBLE_C = (10.0, 42.0)  # a bath temperature outside this is a typo (Fahrenheit, Kelvin, a missing digit)


def width_ratio(family_ratio_25c: float, temperature_c: float) -> float:
    """How many times wider an AP of a family whose 25 °C / 34 °C width ratio is family_ratio_25c is
    at temperature_c than at 34 °C (Q10 form: log-linear in temperature)."""
    return family_ratio_25c ** ((REFERENCE_C - temperature_c) / (REFERENCE_C - 25.0))


def warp_factor(temperature_c: float | None) -> float:
    """The time warp for a window recorded at temperature_c (°C; None or NaN: unknown, taken as 34 °C):
    the window is cut as if the stream's rate were this many times its real one. 1.0 at 34 °C, ~1.61
    at 25 °C. Rounded to 0.01 so that the resampling ratio stays a small fraction."""
    if temperature_c is None or not math.isfinite(temperature_c):
        return 1.0
    return round(Q10 ** ((REFERENCE_C - temperature_c) / 10.0), 2)


def check_temperature(temperature_c: float | None) -> str | None:
    """Why temperature_c (°C) cannot be a recording temperature (None when it can, or is unknown)."""
    if temperature_c is None or (isinstance(temperature_c, float) and math.isnan(temperature_c)):
        return None
    if not math.isfinite(temperature_c) or not PLAUSIBLE_C[0] <= temperature_c <= PLAUSIBLE_C[1]:
        return (f"temperature_c={temperature_c:g} is not a bath temperature in °C "
                f"({PLAUSIBLE_C[0]:g}-{PLAUSIBLE_C[1]:g}); give it in °C, e.g. 25 for room temperature")
    return None
