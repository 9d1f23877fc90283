"""Axon Binary Format (ABF 1 and 2, pCLAMP / Clampex) through pyabf.

pyabf reads both versions, scales each channel to its units, and builds each sweep's command
waveform from the file's epoch table (`sweepC`), which is where pCLAMP keeps the stimulus: most
files record no current channel. neo's AxonIO reads the same files but leaves the epoch table's
waveform to the caller; pyabf is the reader here (neo serves the other formats, formats/neo_files.py).

Clamp mode, per file (the amplifier's mode), the first of these that speaks:
1. the amplifier's telegraph, when enabled and from a MultiClamp (whose mode codes ABF stores as
   0 voltage clamp, 1 current clamp, 2 I=0); other instruments' codes are not trusted (an
   Axopatch 200B file in current clamp telegraphs 0);
2. the protocol's name: `cc`, `IC`, `cclamp`, `current clamp` say current clamp; `vc`, `vclamp`,
   `voltage clamp`, `memtest` say voltage clamp (labs name protocols by mode);
3. the content: a channel in voltage units that holds action potentials (peaks above -20 mV, 40 mV
   or more above their threshold) in the first sweeps is a membrane potential in current clamp,
   whatever the channel order (rat CA1 files put a current monitor `Imemb` first);
4. the first recorded channel's units: a current (pA, nA) is what an amplifier's primary output
   gives in voltage clamp, a voltage (mV, V) what it gives in current clamp.

Channels, per sweep: in current clamp a channel is a membrane potential when its units are a
voltage and its values can be one (median -160 to +20 mV, all within -250 to +150 mV: deep
hyperpolarising steps reach below -120 mV); any other channel is kept, with `refusal` saying why it
gets no label (a current monitor, a trigger). Each channel's command is the epoch-table waveform of
the DAC of the same index, in pA; when that DAC is not a current command (a file whose stimulus
went out another way), a recorded current channel (the current monitor) is the command.
"""
import re
from pathlib import Path

import numpy as np

from rtclassify.formats import RecordingError
from rtclassify.formats.nwb import Sweep

V_UNITS = {"mV": 1.0, "V": 1e3, "uV": 1e-3, "µV": 1e-3}
I_UNITS = {"pA": 1.0, "nA": 1e3, "uA": 1e6, "µA": 1e6, "A": 1e12, "fA": 1e-3}
MULTICLAMP = 24  # ABF's telegraph instrument code of the MultiClamp 700A/B
MULTICLAMP_MODES = {0: "voltage", 1: "current", 2: "current"}  # 2: I=0
VM_MEDIAN_MV = (-160.0, 20.0)
VM_LIMITS_MV = (-250.0, 150.0)
CURRENT_CLAMP_NAME = re.compile(r"(^|[^a-z])(cc|ic|iclamp|cclamp|current[ _-]?clamp)([^a-z]|$)", re.IGNORECASE)
VOLTAGE_CLAMP_NAME = re.compile(r"(^|[^a-z])(vc|vclamp|voltage[ _-]?clamp|memtest)([^a-z]|$)", re.IGNORECASE)
AP_PEAK_MIN_MV = -20.0  # an AP that tells a membrane potential overshoots this...
AP_HEIGHT_MIN_MV = 40.0  # ...and rises this far above its threshold
CONTENT_SWEEPS = 3  # sweeps looked at for APs


class AbfError(RecordingError):
    """An ABF file that cannot be read; the text names the file and why."""


def open_abf(path):
    """The pyabf.ABF of `path` (data loaded), or AbfError naming the file."""
    import warnings

    import pyabf

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pyabf.ABF(str(path), loadData=True)
    except Exception as exc:  # pyabf raises plain exceptions of many kinds on truncated or foreign files
        short = truncation(path)
        if short:
            raise AbfError(f"{path}: truncated ABF file ({short}): still being written, or cut short in a copy; "
                           "read it again once complete") from None
        raise AbfError(f"{path}: not a readable ABF file ({type(exc).__name__}: {str(exc)[:120]})") from None


def truncation(path) -> str | None:
    """How a file that starts like an ABF is shorter than its header says ("N of M bytes"), or None.
    The header's own sections are read with pyabf's header readers alone (no data), which need only
    the first few kB; a file too short for even those is truncated by definition."""
    import warnings

    import pyabf

    size = Path(path).stat().st_size
    try:
        with open(path, "rb") as f:
            signature = f.read(4)
        if signature not in (b"ABF ", b"ABF2"):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            abf = pyabf.ABF(str(path), loadData=False)
        expected = abf.dataByteStart + abf.dataPointCount * abf.dataPointByteSize
    except Exception:
        return f"{size} bytes, shorter than the sections its header points to"
    return f"{size} of {expected} bytes" if size < expected else None


def telegraph(abf) -> tuple[list, list, list, list]:
    """(enabled, instrument, mode, filter Hz) per ADC channel, from the ABF 1 or 2 header."""
    if abf.abfVersion["major"] == 1:
        h = abf._headerV1
        adcs = list(abf.channelList)
        pick = lambda values: [values[k] if k < len(values) else 0 for k in adcs]  # noqa: E731
        return (pick(h.nTelegraphEnable), pick(h.nTelegraphInstrument), pick(h.nTelegraphMode),
                pick(h.fTelegraphFilter))
    a = abf._adcSection
    return list(a.nTelegraphEnable), list(a.nTelegraphInstrument), list(a.nTelegraphMode), list(a.fTelegraphFilter)


def file_clamp_mode(abf) -> tuple[str, str]:
    """("current" | "voltage", how it was decided) for the file (see the module docstring)."""
    enabled, instrument, mode, _ = telegraph(abf)
    if enabled and enabled[0] and instrument[0] == MULTICLAMP and mode[0] in MULTICLAMP_MODES:
        return MULTICLAMP_MODES[mode[0]], f"MultiClamp telegraph mode {mode[0]}"
    protocol = str(abf.protocol or "")
    if CURRENT_CLAMP_NAME.search(protocol):
        return "current", f"protocol name {protocol!r} says current clamp"
    if VOLTAGE_CLAMP_NAME.search(protocol):
        return "voltage", f"protocol name {protocol!r} says voltage clamp"
    ch = channel_with_aps(abf)
    if ch is not None:
        return "current", f"channel {abf.adcNames[ch]!r} ({abf.adcUnits[ch]}) holds action potentials"
    unit = abf.adcUnits[0]
    if unit in I_UNITS:
        return "voltage", f"first channel {abf.adcNames[0]!r} records a current ({unit})"
    if unit in V_UNITS:
        return "current", f"first channel {abf.adcNames[0]!r} records a voltage ({unit})"
    raise AbfError(f"{abf.abfFilePath}: cannot tell the clamp mode: no MultiClamp telegraph, no mode in the "
                   f"protocol name {protocol!r}, and the first channel's units {unit!r} are neither a voltage "
                   "nor a current")


def channel_with_aps(abf) -> int | None:
    """The first channel in voltage units whose first sweeps hold an action potential, or None."""
    from rtclassify.dsp.detector import detect_spikes
    from rtclassify.formats.nwb import counting_rules

    for ch, unit in enumerate(abf.adcUnits):
        if unit not in V_UNITS:
            continue
        for sweep in range(min(abf.sweepCount, CONTENT_SWEEPS)):
            abf.setSweep(sweep, channel=ch)
            v = np.array(abf.sweepY, dtype=np.float64) * V_UNITS[unit]
            if not np.all(np.isfinite(v)):
                continue
            sp = detect_spikes(v, float(abf.sampleRate), ((), ()), counting_rules())
            if np.any((v[sp.peaks] > AP_PEAK_MIN_MV) & (v[sp.peaks] - v[sp.thresholds] >= AP_HEIGHT_MIN_MV)):
                return ch
    return None


def membrane_potential_refusal(y_mv: np.ndarray, name: str, unit: str) -> str | None:
    """Why channel values (mV) cannot be a membrane potential, or None when they can."""
    if not np.all(np.isfinite(y_mv)):
        return f"channel {name!r}: NaN/Inf samples"
    median = float(np.median(y_mv))
    lo, hi = float(y_mv.min()), float(y_mv.max())
    if not (VM_MEDIAN_MV[0] <= median <= VM_MEDIAN_MV[1] and VM_LIMITS_MV[0] <= lo and hi <= VM_LIMITS_MV[1]):
        return (f"channel {name!r} ({unit}) holds {lo:.4g} to {hi:.4g} mV, median {median:.4g} mV: not a membrane "
                f"potential (expected a median of {VM_MEDIAN_MV[0]:g} to {VM_MEDIAN_MV[1]:g} mV)")
    return None


def read_abf(path) -> list[Sweep]:
    """Every sweep x recorded channel of an ABF file, in file order (see the module docstring)."""
    abf = open_abf(path)
    mode, why = file_clamp_mode(abf)
    _, _, _, filters = telegraph(abf)
    layout = f"abf{abf.abfVersion['major']}"
    out = []
    for sweep in range(abf.sweepCount):
        for ch in range(abf.channelCount):
            try:
                abf.setSweep(sweep, channel=ch)
            except Exception as exc:
                raise AbfError(f"{path}: sweep {sweep} channel {ch}: {type(exc).__name__}: {exc}") from None
            name, unit = abf.adcNames[ch], abf.adcUnits[ch]
            y = np.array(abf.sweepY, dtype=np.float64)
            refusal, command = None, None
            if mode == "voltage":
                refusal = f"voltage clamp ({why}): no label"
                response = y * I_UNITS.get(unit, 1.0)
            elif unit not in V_UNITS:
                refusal = (f"channel {name!r} records {unit!r}, not a voltage: not a membrane potential"
                           if unit in I_UNITS else f"channel {name!r}: unknown units {unit!r}")
                response = y
            else:
                response = y * V_UNITS[unit]
                refusal = membrane_potential_refusal(response, name, unit)
            if mode == "current" and refusal is None:
                command = command_pa(abf, ch, len(response))
                if command is None:
                    command = current_monitor_pa(abf, sweep, ch)
                abf.setSweep(sweep, channel=ch)
            filt = float(filters[ch]) if ch < len(filters) and filters[ch] and filters[ch] < 1e5 else None
            out.append(Sweep(sweep, str(abf.protocol or ""), mode, float(abf.sampleRate), response, command, layout,
                             channel=ch, channel_name=name, units=unit, refusal=refusal, filter_hz=filt))
    return out


def command_pa(abf, ch: int, n: int) -> np.ndarray | None:
    """The epoch-table command of channel `ch`'s DAC in pA (the current sweep), None when that DAC
    is not a current command or the waveform does not fit the sweep."""
    try:
        c = np.array(abf.sweepC, dtype=np.float64)
        unit = abf.sweepUnitsC
    except Exception:
        return None
    if unit not in I_UNITS or len(c) != n:
        return None
    return c * I_UNITS[unit]


MONITOR_SMOOTH_MS = 2.0  # median filter: removes the AP-coupled transients of a current monitor
MONITOR_STEP_PA = 10.0  # a filtered monitor this far from the holding current is inside a step
MONITOR_HOLDING_S = 0.02  # the holding current is the monitor's median over the sweep's first 20 ms
MONITOR_MIN_STEP_MS = 5.0  # shorter stretches of a monitor are an AP's own current transient, not a step


def current_monitor_pa(abf, sweep: int, ch: int) -> np.ndarray | None:
    """A recorded current channel of `sweep` (not `ch`) as a piecewise-constant command in pA (see
    monitor_as_command), used when the epoch table holds none for channel `ch`; None when the file
    records no current."""
    for other, unit in enumerate(abf.adcUnits):
        if other != ch and unit in I_UNITS:
            abf.setSweep(sweep, channel=other)
            return monitor_as_command(np.array(abf.sweepY, dtype=np.float64) * I_UNITS[unit], float(abf.sampleRate))
    return None


def monitor_as_command(i_pa: np.ndarray, fs: float) -> np.ndarray:
    """A measured current (n,) pA made into the command it followed: median-filtered over
    MONITOR_SMOOTH_MS, then each stretch further than MONITOR_STEP_PA from the holding current for
    at least MONITOR_MIN_STEP_MS set to its own median and the rest to the holding current, so that the
    step finder reads it as an epoch-table waveform (levels without noise). Shorter stretches are the
    current an AP draws through the electrode (1-3 ms on the rat CA1 files), not a command: a short
    square is read from a command channel or the epoch table, never from a monitor."""
    from scipy.ndimage import median_filter

    smooth = median_filter(i_pa, size=max(3, int(MONITOR_SMOOTH_MS * fs / 1e3) | 1), mode="nearest")
    holding = float(np.median(smooth[:max(1, int(MONITOR_HOLDING_S * fs))]))
    out = np.full(len(i_pa), holding)
    on = np.abs(smooth - holding) > MONITOR_STEP_PA
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    shortest = MONITOR_MIN_STEP_MS * fs / 1e3
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a >= shortest:
            out[a:b] = np.median(smooth[a:b])
    return out


def is_abf(path) -> bool:
    """An .abf name, or ABF's signature in the first bytes ('ABF ' for ABF 1, 'ABF2' for ABF 2)."""
    p = Path(path)
    if p.suffix.lower() == ".abf":
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) in (b"ABF ", b"ABF2")
    except OSError:
        return False
