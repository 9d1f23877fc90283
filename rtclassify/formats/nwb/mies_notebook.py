"""The amplifier's low-pass filter as MIES writes it into its lab notebook.

MIES (NWB 1 and NWB 2 files alike) keeps every amplifier setting in
`general/labnotebook/<device>/numericalValues`: (rows, keys, 9 layers), one layer per headstage 0-7
and a ninth for settings of no headstage; `numericalKeys[0]` names the keys. A row belongs to the
sweep in its `SweepNum` column; `ADC` says which AD channel a headstage records on, `LPF Cutoff`
its MultiClamp primary filter (Hz). The recorded series are named data_<sweep>_AD<channel>.
"""
import re

import numpy as np

NOTEBOOK = "general/labnotebook"
AD_NAME = re.compile(r"_AD(\d+)$")
HEADSTAGES = 8  # layers 0-7; layer 8 holds settings of no headstage


def ad_channel(series_name: str) -> int | None:
    """AD channel of a MIES series name ('data_00012_AD1' -> 1), None for other names."""
    m = AD_NAME.search(series_name)
    return int(m.group(1)) if m else None


def lowpass_by_sweep(h) -> dict[tuple[int, int], float]:
    """{(sweep, AD channel): low-pass corner, Hz} from every device notebook of an open h5py file
    (empty when the file has none, or its notebook lacks the keys)."""
    out = {}
    for device in h.get(NOTEBOOK, {}).values():
        if "numericalKeys" not in device or "numericalValues" not in device:
            continue
        names = [k.decode() if isinstance(k, bytes) else str(k) for k in device["numericalKeys"][0]]
        if not {"SweepNum", "ADC", "LPF Cutoff"} <= set(names):
            continue
        values = device["numericalValues"]
        column = {key: np.asarray(values[:, names.index(key), :HEADSTAGES], dtype=np.float64)
                  for key in ("SweepNum", "ADC", "LPF Cutoff")}
        out.update(settings_per_sweep(column["SweepNum"], column["ADC"], column["LPF Cutoff"]))
    return out


def settings_per_sweep(sweep: np.ndarray, adc: np.ndarray, lpf: np.ndarray) -> dict[tuple[int, int], float]:
    """(rows, headstages) columns of one notebook -> {(sweep, AD channel): Hz}: for each sweep and
    active headstage (one with an ADC entry), the last ADC and LPF values logged for that sweep (MIES
    appends rows as settings change; a non-positive or missing corner is no filter information)."""
    out = {}
    for hs in range(sweep.shape[1]):
        s, a, f = sweep[:, hs], adc[:, hs], lpf[:, hs]
        for number in np.unique(s[np.isfinite(s)]):
            rows = s == number
            channels, corners = a[rows & np.isfinite(a)], f[rows & np.isfinite(f)]
            if len(channels) and len(corners) and corners[-1] > 0:
                out[(int(number), int(channels[-1]))] = float(corners[-1])
    return out
