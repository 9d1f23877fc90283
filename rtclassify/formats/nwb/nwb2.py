"""NWB 2 (MIES, DANDI 000020): PatchClampSeries in /acquisition with their stimulus series, matched by
sweep_number; stimulus name in `stimulus_description`. Read with pynwb; files pynwb cannot load
(early 2.0b files written by MIES) are read from the same groups with h5py.
"""
import re

import numpy as np

from rtclassify.formats.nwb import NwbError, Sweep, mode_from, rate_of, scaled, text, to_mv_or_pa
from rtclassify.formats.nwb.mies_notebook import ad_channel, lowpass_by_sweep


def read_nwb2(path) -> list[Sweep]:
    try:
        sweeps = read_with_pynwb(path)
    except NwbError:
        raise
    except Exception:  # a file pynwb's schema handling refuses: same groups, plain HDF5
        import h5py

        with h5py.File(path, "r") as h:
            sweeps = read_with_h5py(h, path)
    if not sweeps:
        raise NwbError(f"{path}: NWB 2 file without patch-clamp series in /acquisition")
    return sorted(with_notebook_filters(sweeps, path), key=lambda s: s.sweep)


def with_notebook_filters(sweeps: list, path) -> list:
    """Sweeps whose electrode states no filter take it from a MIES lab notebook, when the file has one
    (MIES writes its electrodes' `filtering` empty). The series name (channel_name) gives the AD channel."""
    from dataclasses import replace

    import h5py

    if all(s.filter_hz for s in sweeps):
        return sweeps
    with h5py.File(path, "r") as h:
        lowpass = lowpass_by_sweep(h)
    return [s if s.filter_hz or not lowpass else
            replace(s, filter_hz=lowpass.get((s.sweep, ad_channel(s.channel_name)))) for s in sweeps]


def series_values(series, where: str) -> np.ndarray:
    return to_mv_or_pa(np.asarray(series.data[:], dtype=np.float64) * float(series.conversion), series.unit, where)


FILTER_TEXT = re.compile(r"(\d+(?:\.\d+)?)\s*(k?)hz", re.IGNORECASE)


def filter_from_text(text) -> float | None:
    """The low-pass corner (Hz) an electrode's free-text `filtering` field states ("Bessel 10 kHz",
    "low-pass 2000 Hz"), None when it states none. NWB 2 keeps the amplifier's filter only as this
    text; a field naming several frequencies gives the first."""
    m = FILTER_TEXT.search(str(text or ""))
    return float(m.group(1)) * (1000.0 if m.group(2) else 1.0) if m else None


def read_with_pynwb(path) -> list[Sweep]:
    import warnings

    from pynwb import NWBHDF5IO
    from pynwb.icephys import PatchClampSeries

    # pynwb warns about MIES files' unit spellings ('V' for 'volts') and old filtering fields, which
    # it fixes itself on reading: nothing for the user to act on
    with warnings.catch_warnings(), NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        warnings.simplefilter("ignore", UserWarning)
        nwb = io.read()
        stims = {s.sweep_number: s for s in nwb.stimulus.values()
                 if isinstance(s, PatchClampSeries) and s.sweep_number is not None}
        out = []
        for name, s in nwb.acquisition.items():
            if not isinstance(s, PatchClampSeries):
                continue
            mode = mode_from(type(s).__name__)
            sweep = int(s.sweep_number) if s.sweep_number is not None else len(out)
            stim = stims.get(s.sweep_number)
            electrode = getattr(s, "electrode", None)
            out.append(Sweep(sweep, str(s.stimulus_description or ""), mode, float(s.rate),
                             series_values(s, f"{path}:/acquisition/{name}"),
                             series_values(stim, f"{path}:/stimulus/presentation/{stim.name}") if stim is not None
                             else None, "nwb2", channel_name=name,
                             filter_hz=filter_from_text(electrode.filtering) if electrode is not None else None))
        return out


def read_with_h5py(h, path) -> list[Sweep]:
    stims = {}
    for name, g in h.get("stimulus/presentation", {}).items():
        if "sweep_number" in g.attrs:
            stims[int(g.attrs["sweep_number"])] = g
    out = []
    for name, g in h["acquisition"].items():
        kind = text(g.attrs.get("neurodata_type", ""))
        if "ClampSeries" not in kind:
            continue
        mode = mode_from(kind)
        sweep = int(g.attrs.get("sweep_number", len(out)))
        stim = stims.get(sweep)
        out.append(Sweep(sweep, text(g.attrs.get("stimulus_description", "")), mode, rate_of(g),
                         scaled(g["data"], mode, "response"),
                         scaled(stim["data"], mode, "command") if stim is not None else None, "nwb2",
                         channel_name=name))
    return out
