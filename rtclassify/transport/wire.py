"""The input wire format of ../shared/CONTRACT.md: encoding (simulator, plugins) and validation (daemon).

Data: [b"data", header JSON, payload]; header {"v": 1, "device", "headstage", "seq", "first_sample",
"n_samples", "fs", "channels": ["V", "I"], "units": ["mV", "pA"], "dtype": "<f4"}; payload
n_samples x 2 little-endian float32, V and I interleaved. Events: [b"event", JSON] with
{"v": 1, "type": "new_cell"|"stimulus", "headstage", "sample", "cell_id" (new_cell)}.
"""
import json
from dataclasses import dataclass

import numpy as np

from rtclassify.units import I_SCALE, V_SCALE

WIRE_VERSION = 1
DTYPE = "<f4"


class MalformedMessage(ValueError):
    """A message that breaks the wire format; the text names the field and what was expected."""


@dataclass
class DataChunk:
    device: str
    headstage: int
    seq: int
    first_sample: int
    fs: float
    samples: np.ndarray  # (n, 2) float64 [V mV, I pA]


def encode_data(device: str, headstage: int, seq: int, first_sample: int, fs: float, v_mv, i_pa) -> list[bytes]:
    """Frames of one data message."""
    payload = np.empty((len(v_mv), 2), dtype=DTYPE)
    payload[:, 0] = v_mv
    payload[:, 1] = i_pa
    header = {"v": WIRE_VERSION, "device": device, "headstage": int(headstage), "seq": int(seq),
              "first_sample": int(first_sample), "n_samples": len(payload), "fs": float(fs),
              "channels": ["V", "I"], "units": ["mV", "pA"], "dtype": DTYPE}
    return [b"data", json.dumps(header).encode(), payload.tobytes()]


def encode_event(event: dict) -> list[bytes]:
    return [b"event", json.dumps({"v": WIRE_VERSION, **event}).encode()]


def require(obj: dict, key: str, kind, where: str):
    if key not in obj:
        raise MalformedMessage(f"{where}: missing field {key!r}")
    value = obj[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise MalformedMessage(f"{where}: field {key!r}={value!r} must be an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise MalformedMessage(f"{where}: field {key!r}={value!r} must be a number")
    if kind is str and not isinstance(value, str):
        raise MalformedMessage(f"{where}: field {key!r}={value!r} must be a string")
    return value


def parse_json(frame: bytes, where: str) -> dict:
    try:
        obj = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"{where}: not UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{where}: JSON must be an object, got {type(obj).__name__}")
    if obj.get("v") != WIRE_VERSION:
        raise MalformedMessage(f"{where}: version v={obj.get('v')!r}, this daemon reads v={WIRE_VERSION}")
    return obj


def parse_data(header_frame: bytes, payload: bytes) -> DataChunk:
    """Validate a data message; converts units to mV and pA. Raises MalformedMessage."""
    h = parse_json(header_frame, "data header")
    n = require(h, "n_samples", int, "data header")
    fs = require(h, "fs", float, "data header")
    first = require(h, "first_sample", int, "data header")
    if n <= 0 or not np.isfinite(fs) or fs <= 0 or first < 0:
        raise MalformedMessage(f"data header: n_samples={n}, fs={fs}, first_sample={first} must be positive")
    if h.get("channels", ["V", "I"]) != ["V", "I"]:
        raise MalformedMessage(f"data header: channels={h.get('channels')!r}, expected ['V', 'I']")
    if h.get("dtype", DTYPE) != DTYPE:
        raise MalformedMessage(f"data header: dtype={h.get('dtype')!r}, expected {DTYPE!r}")
    units = h.get("units", ["mV", "pA"])
    scale = unit_scales(units)
    if len(payload) != n * 2 * 4:
        raise MalformedMessage(f"data payload: {len(payload)} bytes, expected n_samples*2*4 = {n * 8}")
    samples = np.frombuffer(payload, dtype=DTYPE).reshape(n, 2).astype(np.float64)
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).any(axis=1).sum())
        raise MalformedMessage(f"data payload: {bad} samples with NaN/Inf (chunk starting at {first})")
    if scale != (1.0, 1.0):
        samples *= np.array(scale)
    return DataChunk(device=str(h.get("device", "")), headstage=require(h, "headstage", int, "data header"),
                     seq=require(h, "seq", int, "data header"), first_sample=first, fs=float(fs), samples=samples)


def unit_scales(units) -> tuple[float, float]:
    """Factors to mV and pA for the header's units."""
    if not isinstance(units, list) or len(units) != 2 or units[0] not in V_SCALE or units[1] not in I_SCALE:
        raise MalformedMessage(f"data header: units={units!r}, expected ['mV', 'pA'] (or V; nA or A)")
    return V_SCALE[units[0]], I_SCALE[units[1]]


def parse_event(frame: bytes, sample_required: bool = True) -> dict:
    """Validate an event; returns {"type", "headstage", "sample", "cell_id"?}. Raises MalformedMessage.

    `sample` (the data-stream index the event applies from) may be missing from a `new_cell`
    event, and from a `stimulus` event when `sample_required` is False (LSL markers: their
    timestamp then places them); it is None then.
    """
    e = parse_json(frame, "event")
    kind = require(e, "type", str, "event")
    out = {"type": kind, "headstage": require(e, "headstage", int, "event")}
    if kind not in ("new_cell", "stimulus"):
        raise MalformedMessage(f"event: type={kind!r}, expected 'new_cell' or 'stimulus'")
    if kind == "new_cell":
        out["cell_id"] = str(require(e, "cell_id", str, "event"))
    if "sample" in e or (kind == "stimulus" and sample_required):
        out["sample"] = require(e, "sample", int, "event")
        if out["sample"] < 0:
            raise MalformedMessage(f"event: field 'sample'={out['sample']} must be >= 0")
    else:
        out["sample"] = None
    return out
