"""Host-independent half of the ACQ4 module: ACQ4 clamp records -> sweeps, and the module's settings.

ACQ4's clamp devices return each task's recording as a MetaArray of shape (channels, time): an
axis "Channel" whose `cols` name the rows (`command`, `primary`), an axis "Time", and a last info
entry {"ClampState": {"mode": "IC" | "VC" | "I=0", "primaryUnits": "V", ...}, "DAQ": {channel:
{"rate": Hz, "numPts": n, ...}}}. The rows' own units may be missing: ACQ4 0.10.39's MockClamp
writes `'units': None` for both rows. Then the clamp state tells them, as ACQ4's clamp devices
define them: in current clamp the command is in A and the primary signal in `primaryUnits` (V).
The mode is matched without case ('IC', 'ic'). `sweep_from_record` takes that array and info
list (MetaArray's `asarray()` and `infoCopy()`), so it is tested without ACQ4, and inside real
ACQ4 by tests/test_acq4_host.py.
"""
from dataclasses import dataclass, field

import numpy as np

from rtclassify.config import dataclass_from_dict

V_ROW = "primary"
I_ROW = "command"
CURRENT_CLAMP_MODES = ("IC",)  # I=0 injects no current: nothing to classify


class RecordError(ValueError):
    """A clamp record that cannot be forwarded (the message names the device and the field)."""


@dataclass
class Sweep:
    v_mv: np.ndarray  # (n,) membrane potential, mV
    i_pa: np.ndarray  # (n,) command current, pA
    fs: float  # Hz


@dataclass
class Acq4Settings:
    """The module's `config:` block in ACQ4's configuration (see docs/plugins.md)."""

    devices: dict = field(default_factory=lambda: {"Clamp1": 0})  # clamp device name -> headstage number
    publish: str = "tcp://127.0.0.1:5560"  # where the module binds its PUB socket (serve --connect here)
    labels: str = "tcp://127.0.0.1:5561"  # the daemon's --publish endpoint (the module subscribes)
    task_runner: str = "Task Runner"  # name of the ACQ4 TaskRunner module whose sweeps are forwarded
    device_name: str = "acq4"  # the `device` field of the data headers

    @classmethod
    def from_config(cls, config: dict | None) -> "Acq4Settings":
        s = dataclass_from_dict(cls, dict(config or {}), "rtclassify ACQ4 module config")
        if not isinstance(s.devices, dict) or not s.devices:
            raise ValueError(f"rtclassify ACQ4 module config: devices={s.devices!r}; give a mapping of clamp "
                             "device names to headstage numbers, e.g. {Clamp1: 0, Clamp2: 1}")
        for name, hs in s.devices.items():
            if not isinstance(hs, int) or hs < 0:
                raise ValueError(f"rtclassify ACQ4 module config: device {name!r} -> {hs!r}; headstage numbers "
                                 "are integers >= 0")
        return s


def channel_rows(info: list, device: str) -> dict[str, tuple[int, str]]:
    """{row name: (row index, units)} from the "Channel" axis of a record's info."""
    for axis in info:
        if isinstance(axis, dict) and axis.get("name") == "Channel":
            rows = {}
            for k, col in enumerate(axis.get("cols", [])):
                name, units = (col.get("name"), col.get("units")) if isinstance(col, dict) else (col[0], col[1])
                rows[str(name)] = (k, str(units))
            return rows
    raise RecordError(f"{device}: record has no 'Channel' axis; is this a clamp device's result?")


def scale_to(data: np.ndarray, units: str, target: str, device: str, row: str) -> np.ndarray:
    """Convert V -> mV or A -> pA (units as ACQ4 writes them)."""
    factors = {("V", "mV"): 1e3, ("mV", "mV"): 1.0, ("A", "pA"): 1e12, ("pA", "pA"): 1.0}
    if (units, target) not in factors:
        raise RecordError(f"{device}: row {row!r} is in {units!r}; expected {'V' if target == 'mV' else 'A'} "
                          "(is the amplifier in current clamp?)")
    return np.asarray(data, dtype=np.float64) * factors[(units, target)]


def sweep_from_record(data: np.ndarray, info: list, device: str) -> Sweep:
    """One ACQ4 clamp record (array (channels, time) and its info list) -> a current-clamp sweep.

    Raises RecordError (naming the device and field) for voltage-clamp records, records without a
    command or primary row, or without a sampling rate.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise RecordError(f"{device}: record has shape {data.shape}; expected (channels, time)")
    extra = info[-1] if info and isinstance(info[-1], dict) else {}
    state = extra.get("ClampState", {}) or {}
    mode = state.get("mode")
    if str(mode).upper() not in CURRENT_CLAMP_MODES:
        raise RecordError(f"{device}: clamp mode {mode!r}; only current-clamp ({', '.join(CURRENT_CLAMP_MODES)}) "
                          "sweeps are classified")
    implied = {V_ROW: str(state.get("primaryUnits") or "V"), I_ROW: "A"}  # current clamp, as ACQ4 defines it
    rows = {name: (k, implied.get(name, units) if units in ("None", "") else units)
            for name, (k, units) in channel_rows(info, device).items()}
    missing = [r for r in (V_ROW, I_ROW) if r not in rows]
    if missing:
        raise RecordError(f"{device}: record lacks rows {missing} (has {sorted(rows)}); record the command "
                          "and the primary signal in the task")
    rate = extra.get("DAQ", {}).get(V_ROW, {}).get("rate")
    if not rate or not rate > 0:
        raise RecordError(f"{device}: no sampling rate in info['DAQ']['{V_ROW}']['rate']")
    (kv, uv), (ki, ui) = rows[V_ROW], rows[I_ROW]
    return Sweep(v_mv=scale_to(data[kv], uv, "mV", device, V_ROW), i_pa=scale_to(data[ki], ui, "pA", device, I_ROW),
                 fs=float(rate))
