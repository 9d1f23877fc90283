"""A folder of Igor binary waves (`.ibw`) where each sweep's membrane potential and injected current
are separate waves, as Igor-based acquisition (e.g. the Igor `FirePattern` protocols of many slice
labs) exports them.

The pairing rule: a wave's name ends in `_ch<C>_<N>.ibw`; waves that share N are one sweep, their
channel C telling the signals apart; units (read by neo's IgorIO, which needs the `igor2` package)
say which is which: the wave in volts is the membrane potential (mV), the one in amperes the current
(pA) that was injected, the command. That current is a recording (noise, AP-coupled transients), so
it is read as levels (formats.abf.monitor_as_command) before its steps are found. Sweeps are ordered by N. The folder is one cell: every sweep
gets channel 0 (the voltage wave's channel number is in `channel_name`). A wave without a partner of
the other kind is kept, with `refusal` saying what is missing. Waves whose names do not follow the
rule are read one by one as single-wave sweeps (formats.neo_files).
"""
import re
from pathlib import Path

import numpy as np

from rtclassify.formats import RecordingError
from rtclassify.formats.abf import I_UNITS, V_UNITS, membrane_potential_refusal, monitor_as_command
from rtclassify.formats.nwb import Sweep

LAYOUT = "igor-waves"  # its command is levels (formats.stimuli.LEVEL_LAYOUTS)
WAVE_NAME = re.compile(r"^(?P<stem>.*)_ch(?P<channel>\d+)_(?P<sweep>\d+)\.ibw$", re.IGNORECASE)


def is_wave_folder(path) -> bool:
    """A folder holding at least one .ibw file."""
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() == ".ibw" for f in p.iterdir())


def read_wave(path: Path) -> tuple[np.ndarray, str, float]:
    """(values, unit, rate Hz) of one .ibw wave, or RecordingError naming the file."""
    import neo

    try:
        block = neo.io.IgorIO(filename=str(path)).read_block(lazy=False)
        sig = block.segments[0].analogsignals[0]
    except Exception as exc:  # igor2 and neo raise many kinds on truncated or foreign files
        raise RecordingError(f"{path}: not a readable Igor wave ({type(exc).__name__}: {str(exc)[:120]})") from None
    unit = str(sig.units.dimensionality)
    return np.asarray(sig.magnitude, np.float64).ravel(), unit, float(sig.sampling_rate.rescale("Hz").magnitude)


def read_wave_folder(folder) -> list[Sweep]:
    """Every sweep of a folder of Igor waves, paired by the rule of the module docstring."""
    folder = Path(folder)
    groups: dict[int, list[tuple[int, Path]]] = {}
    loose = []
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() != ".ibw":
            continue
        m = WAVE_NAME.match(f.name)
        if m:
            groups.setdefault(int(m["sweep"]), []).append((int(m["channel"]), f))
        else:
            loose.append(f)
    out = []
    for k, n in enumerate(sorted(groups)):
        out.append(pair_sweep(k, n, groups[n]))
    if loose:
        from rtclassify.formats.neo_files import read_with_neo

        for f in loose:
            out.extend(read_with_neo(f))
    if not out:
        raise RecordingError(f"{folder}: no .ibw waves")
    return out


def pair_sweep(k: int, n: int, waves: list[tuple[int, Path]]) -> Sweep:
    """One sweep (index k, file number n) from its waves: the voltage wave is the response, the current
    wave the command."""
    voltage, current = None, None
    for channel, path in sorted(waves):
        values, unit, fs = read_wave(path)
        if unit in V_UNITS and voltage is None:
            voltage = (channel, path, values * V_UNITS[unit], unit, fs)
        elif unit in I_UNITS and current is None:
            current = (monitor_as_command(values * I_UNITS[unit], fs), fs)
    stem = WAVE_NAME.match(waves[0][1].name)["stem"]
    if voltage is None:
        values, fs = current if current else (np.zeros(0), 0.0)
        return Sweep(k, stem, "current", fs, values, None, LAYOUT, channel=0, channel_name=f"sweep {n}",
                     units="pA", refusal=f"sweep {n}: no wave in volts (a membrane potential) among {len(waves)}")
    channel, path, v, unit, fs = voltage
    command, refusal = None, membrane_potential_refusal(v, path.name, unit)
    if current is not None and len(current[0]) == len(v) and current[1] == fs:
        command = current[0]
    elif refusal is None:
        refusal = f"sweep {n}: no current wave of the same length and rate beside {path.name}: the stimulus is unknown"
    return Sweep(k, stem, "current", fs, v, command, LAYOUT, channel=0, channel_name=f"ch{channel}",
                 units=unit, refusal=refusal)
