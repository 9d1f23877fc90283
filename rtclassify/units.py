"""Unit handling at the boundaries: everything inside rtclassify is mV, pA, Hz and s."""
import numpy as np

V_SCALE = {"V": 1e3, "mV": 1.0}
I_SCALE = {"A": 1e12, "nA": 1e3, "pA": 1.0}


def guess_voltage_units(v: np.ndarray) -> str:
    """'V' when the largest |v| is below 1 (a membrane potential in mV spans tens of mV), else 'mV'."""
    finite = np.abs(v[np.isfinite(v)])
    return "V" if finite.size and finite.max() < 1.0 else "mV"


def guess_current_units(i: np.ndarray) -> str:
    """'A' when the largest |i| is below 1e-6 (stimuli are pA to nA), else 'pA'."""
    finite = np.abs(i[np.isfinite(i)])
    return "A" if finite.size and finite.max() < 1e-6 else "pA"


def to_mv(v: np.ndarray, units: str | None) -> np.ndarray:
    units = units or guess_voltage_units(v)
    if units not in V_SCALE:
        raise ValueError(f"voltage units {units!r}: expected one of {sorted(V_SCALE)}")
    return np.asarray(v, dtype=np.float64) * V_SCALE[units]


def to_pa(i: np.ndarray, units: str | None) -> np.ndarray:
    units = units or guess_current_units(i)
    if units not in I_SCALE:
        raise ValueError(f"current units {units!r}: expected one of {sorted(I_SCALE)}")
    return np.asarray(i, dtype=np.float64) * I_SCALE[units]
