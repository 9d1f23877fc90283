"""The field's other file formats through neo (Axograph, WinWCP, Igor, Spike2, Neuroshare, ...).

neo reads each into segments (sweeps) of analog signals with units. What neo does not give in a
uniform way is the clamp mode and the command waveform: a signal in voltage units is taken as a
membrane potential in current clamp, one in current units as a recorded current (the command
when a voltage channel is beside it); a file whose signals are all currents is voltage clamp.
ABF files are read by rtclassify.formats.abf (pyabf builds their epoch-table command).
"""
from pathlib import Path

import numpy as np

from rtclassify.formats import RecordingError
from rtclassify.formats.abf import I_UNITS, V_UNITS, membrane_potential_refusal
from rtclassify.formats.nwb import Sweep

# extension -> neo IO class name; formats neo reads whose sweeps are patch-clamp traces
NEO_IOS = {".axgd": "AxographIO", ".axgx": "AxographIO", ".wcp": "WinWcpIO", ".ibw": "IgorIO", ".pxp": "IgorIO",
           ".smr": "Spike2IO", ".smrx": "Spike2IO", ".edr": "WinEdrIO"}


class NeoError(RecordingError):
    """A file neo cannot read; the text names the file and why."""


def read_with_neo(path) -> list[Sweep]:
    """Every segment x analog channel of a file in one of NEO_IOS's formats."""
    import neo

    path = Path(path)
    io_name = NEO_IOS.get(path.suffix.lower())
    if io_name is None:
        raise NeoError(f"{path}: no neo reader for {path.suffix!r} here (readable: {', '.join(sorted(NEO_IOS))})")
    try:
        block = getattr(neo.io, io_name)(filename=str(path)).read_block(lazy=False)
    except Exception as exc:
        raise NeoError(f"{path}: {io_name} could not read it ({type(exc).__name__}: {str(exc)[:120]})") from None
    out = []
    for k, seg in enumerate(block.segments):
        signals = [(sig, j) for sig in seg.analogsignals for j in range(sig.shape[1])]
        units = [str(sig.units.dimensionality) for sig, _ in signals]
        mode = "current" if any(u in V_UNITS for u in units) else "voltage"
        currents = [np.asarray(sig[:, j].magnitude, np.float64).ravel() * I_UNITS[u]
                    for (sig, j), u in zip(signals, units) if u in I_UNITS]
        for ch, ((sig, j), unit) in enumerate(zip(signals, units)):
            y = np.asarray(sig[:, j].magnitude, np.float64).ravel()
            refusal, command = None, None
            if mode == "voltage":
                refusal, y = "voltage clamp (no voltage channel in the file): no label", y * I_UNITS.get(unit, 1.0)
            elif unit not in V_UNITS:
                refusal = f"channel {ch} records {unit!r}, not a voltage: not a membrane potential"
            else:
                y = y * V_UNITS[unit]
                refusal = membrane_potential_refusal(y, str(sig.name or ch), unit)
                command = next((c for c in currents if len(c) == len(y)), None)
            out.append(Sweep(k, str(seg.name or ""), mode, float(sig.sampling_rate.rescale("Hz").magnitude), y,
                             command, f"neo:{io_name}", channel=ch, channel_name=str(sig.name or ""), units=unit,
                             refusal=refusal))
    return out
