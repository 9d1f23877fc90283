"""HEKA PatchMaster bundles (`.dat`) through pyheka (an optional extra: `pip install "rtclassify[heka]"`).

Why pyheka: it is the reader on the package index that reads all four shared PatchMaster v2x90
bundles (groups, series, sweeps, traces with units, the pulse generator tree), and the three file
format generations (v9, v1000, v2000) of PatchMaster and PatchMaster Next. It is AGPL-3.0 (its
README's badge and its licence file agree on that, whatever older listings said), so it is an
optional extra rather than a dependency of the BSD-licensed core: a lab that installs it accepts its
licence for its own use. load-heka-python (MIT) is not on the package index.

The tree: group -> series -> sweep -> trace. Each trace of each sweep is one Sweep record, numbered
in file order (`sweep`), its place in the tree in `location` ("group 1, series 6, sweep 1, trace 1",
HEKA's 1-based numbers) and its series' label in `stimulus`. Clamp mode per trace from its
recording mode (`CClamp` is current clamp; `WholeCell`, `VClamp`, `OnCell`, `OutOut`, `InOut` are
voltage clamp). The command of a current-clamp trace is built from the pulse generator tree (the
stimulus the sweep's StimCount names, the channel whose DAC unit is amperes): constant segments at
their level plus the sweep's increment, `Hold` segments at the holding current; other segment kinds
(ramps, sines) are left at holding, and said so in `refusal` only when no step remains.
"""
from pathlib import Path

import numpy as np

from rtclassify.formats import RecordingError
from rtclassify.formats.abf import membrane_potential_refusal
from rtclassify.formats.nwb import Sweep

LAYOUT = "heka"  # its command is levels (formats.stimuli.LEVEL_LAYOUTS)
CURRENT_CLAMP_MODES = {"CClamp"}
SCALE = {"V": 1e3, "A": 1e12}  # to mV, pA


class HekaError(RecordingError):
    """A PatchMaster file that cannot be read; the text names the file and why."""


def open_bundle(path):
    try:
        import pyheka
    except ImportError:
        raise HekaError(f"{path}: HEKA PatchMaster files need pyheka (AGPL-3.0): pip install \"rtclassify[heka]\"") \
            from None
    try:
        return pyheka.Bundle(str(path))
    except Exception as exc:  # pyheka raises plain exceptions on truncated or foreign files
        raise HekaError(f"{path}: not a readable PatchMaster bundle ({type(exc).__name__}: {str(exc)[:120]}); "
                        "a file still being written, or truncated, is read once complete") from None


def read_heka(path) -> list[Sweep]:
    """Every trace of every sweep of every series of a PatchMaster bundle, in file order."""
    bundle = open_bundle(path)
    out = []
    try:
        stimuli = list(bundle.pgf.children) if bundle.pgf is not None else []
        for g, group in enumerate(bundle.pul.children):
            for s, series in enumerate(group.children):
                for w, sweep in enumerate(series.children):
                    for t, trace in enumerate(sweep.children):
                        out.append(read_trace(bundle, stimuli, (g, s, w, t), series, sweep, trace, len(out)))
    except RecordingError:
        raise
    except Exception as exc:
        raise HekaError(f"{path}: {type(exc).__name__} while reading its tree ({str(exc)[:120]})") from None
    finally:
        bundle.close()
    if not out:
        raise HekaError(f"{path}: a PatchMaster bundle without recorded traces")
    return out


def read_trace(bundle, stimuli, where, series, sweep, trace, number: int) -> Sweep:
    g, s, w, t = where
    unit = str(trace.YUnit).strip()
    y = np.asarray(bundle.data[g, s, w, t], dtype=np.float64) * SCALE.get(unit, 1.0)
    fs = 1.0 / float(trace.XInterval)
    mode = "current" if str(trace.RecordingMode) in CURRENT_CLAMP_MODES else "voltage"
    location = f"group {g + 1}, series {s + 1}, sweep {w + 1}, trace {t + 1}"
    refusal, command = None, None
    if mode == "voltage":
        refusal = f"voltage clamp (recording mode {trace.RecordingMode}): no label"
    elif unit != "V":
        refusal = f"trace {trace.Label!r} records {unit!r}, not a voltage: not a membrane potential"
    else:
        refusal = membrane_potential_refusal(y, str(trace.Label), "mV")
        command = command_pa(stimuli, sweep, w, len(y), fs)
    return Sweep(number, str(series.Label), mode, fs, y, command, LAYOUT, channel=t, channel_name=str(trace.Label),
                 units=unit, refusal=refusal, location=location)


def command_pa(stimuli, sweep, index: int, n: int, fs: float) -> np.ndarray | None:
    """The current command (n,) pA of the sweep (its index in the series), from the pulse generator
    tree; None when the stimulus has no channel in amperes."""
    k = int(sweep.StimCount) - 1
    if not 0 <= k < len(stimuli):
        return None
    channel = next((c for c in stimuli[k].children if str(c.DacUnit).strip() == "A"), None)
    if channel is None:
        return None
    holding = float(channel.Holding)
    relative = bool(getattr(channel, "StimToDacID", {}).get("UseRelative", False)) \
        if isinstance(getattr(channel, "StimToDacID", None), dict) else False
    out = np.full(n, holding)
    at = 0
    for seg in channel.children:
        duration = float(seg.Duration) + (index * float(seg.DeltaTIncrement) if str(seg.DurationIncMode) == "Inc" else 0.0)
        m = int(round(duration * fs))
        if str(seg.VoltageSource) == "Hold" or str(seg.Class) != "Constant":
            level = holding
        else:
            level = float(seg.Voltage) + (index * float(seg.DeltaVIncrement) if str(seg.VoltageIncMode) == "Inc" else 0.0)
            level += holding if relative else 0.0
        out[at:at + m] = level
        at += m
        if at >= n:
            break
    return out * SCALE["A"]


def is_heka(path) -> bool:
    """A .dat name with PatchMaster's bundle signature ("DATA" or "DAT1"/"DAT2" in the first bytes)."""
    p = Path(path)
    if p.suffix.lower() != ".dat":
        return False
    try:
        with open(p, "rb") as f:
            return f.read(4) in (b"DAT1", b"DAT2", b"DATA")
    except OSError:
        return False
