"""MIES NWB 1: acquisition/timeseries/data_XXXXX_ADn with stimulus/presentation/data_XXXXX_DAn."""
from rtclassify.formats.nwb import Sweep, mode_from, rate_of, scaled, text
from rtclassify.formats.nwb.mies_notebook import ad_channel, lowpass_by_sweep


def read_mies_v1(h, path) -> list[Sweep]:
    out = []
    lowpass = lowpass_by_sweep(h)  # the amplifier's filter per sweep and AD channel, from the lab notebook
    stims = h["stimulus/presentation"]
    for name, g in h["acquisition/timeseries"].items():
        if not name.startswith("data_"):
            continue
        sweep = int(name.split("_")[1])
        mode = mode_from(text(g.attrs.get("ancestry", "")))
        da = stims.get(name.replace("_AD", "_DA"))
        out.append(Sweep(sweep, text(g["stimulus_description"][()]) if "stimulus_description" in g else "", mode,
                         rate_of(g), scaled(g["data"], mode, "response"),
                         scaled(da["data"], mode, "command") if da is not None else None, "mies-nwb1",
                         filter_hz=lowpass.get((sweep, ad_channel(name)))))
    return sorted(out, key=lambda s: s.sweep)
