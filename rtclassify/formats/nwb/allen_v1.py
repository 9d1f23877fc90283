"""Allen Cell Types Database NWB 1: acquisition/timeseries/Sweep_N, stimulus/presentation/Sweep_N
(with aibs_stimulus_name), rate in starting_time.attrs['rate']."""
from rtclassify.formats.nwb import Sweep, rate_of, scaled, text


def read_allen_v1(h, path) -> list[Sweep]:
    out = []
    stims = h.get("stimulus/presentation", {})
    for name, g in h["acquisition/timeseries"].items():
        if not name.startswith("Sweep_"):
            continue
        sweep = int(name.split("_")[1])
        stim = stims.get(name)
        unit = text(g["data"].attrs.get("unit", ""))
        mode = "current" if unit in ("V", "volts", "Volts") else "voltage"
        name_attr = text(stim.attrs.get("aibs_stimulus_name", "")) if stim is not None else ""
        out.append(Sweep(sweep, name_attr, mode, rate_of(g), scaled(g["data"], mode, "response"),
                         scaled(stim["data"], mode, "command") if stim is not None else None, "allen-nwb1"))
    return sorted(out, key=lambda s: s.sweep)
