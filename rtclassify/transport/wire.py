"""The input wire format of ../shared/CONTRACT.md: encoding (simulator, plugins) and validation (daemon).

Data: [b"data", header JSON, payload]; header {"v": 1, "device", "headstage", "seq", "first_sample",
"n_samples", "fs", "channels": ["V", "I"], "units": ["mV", "pA"], "dtype": "<f4"}; payload
n_samples x 2 little-endian float32, V and I interleaved. Events: [b"event", JSON] with
{"v": 1, "type": "new_cell"|"stimulus", "headstage", "sample", "cell_id" (new_cell)}.
"""
import json
from dataclasses import dataclass

import numpy as np

from rtclassify.model.envelope import RIG_UNITS, RigInfo, parse_rig_fields
from rtclassify.units import I_SCALE, V_SCALE

WIRE_VERSION = 1
DTYPE = "<f4"
# Bounds on what a sender controls (docs/streaming.md "Hostile input"): a message outside them is
# malformed, so no buffer, headstage or pending stimulus is ever sized by a number a sender made up.
MAX_CHUNK_SAMPLES = 1 << 22  # one message: ~21 s at 200 kHz, 32 MiB of payload; whole sweeps fit
FS_RANGE_HZ = (100.0, 10e6)  # a rate outside cannot be an amplifier's (the model's own range is narrower: qc)
MAX_SAMPLE_INDEX = 1 << 53  # sample indices and seq stay exact in float64 and in every JSON reader
MAX_HEADSTAGE_NUMBER = 1 << 16  # the wire's own bound; `serve --max-headstages` is the daemon's, lower
MAX_CELL_ID_CHARS = 256
MAX_DEVICE_CHARS = 256


class MalformedMessage(ValueError):
    """A message that breaks the wire format; the text names the field and what was expected, `code`
    is the reason's short name counted in the heartbeat (e.g. "not_json", "out_of_range")."""

    def __init__(self, text: str, code: str = "format"):
        super().__init__(text)
        self.code = code


@dataclass
class DataChunk:
    device: str
    headstage: int
    seq: int
    first_sample: int
    fs: float
    samples: np.ndarray  # (n, 2) float64 [V mV, I pA]
    rig: RigInfo | None = None  # the header's optional filter_hz / temperature_c (None: neither given)
    rig_errors: tuple = ()  # (code, detail) of rig fields ignored as unusable: the data are kept


def encode_data(device: str, headstage: int, seq: int, first_sample: int, fs: float, v_mv, i_pa,
                rig: RigInfo | None = None) -> list[bytes]:
    """Frames of one data message; `rig`'s declared filter_hz / temperature_c go into the header."""
    payload = np.empty((len(v_mv), 2), dtype=DTYPE)
    payload[:, 0] = v_mv
    payload[:, 1] = i_pa
    header = {"v": WIRE_VERSION, "device": device, "headstage": int(headstage), "seq": int(seq),
              "first_sample": int(first_sample), "n_samples": len(payload), "fs": float(fs),
              "channels": ["V", "I"], "units": ["mV", "pA"], "dtype": DTYPE}
    if rig is not None:
        header.update({k: v for k, v in (("filter_hz", rig.filter_hz), ("temperature_c", rig.temperature_c))
                       if v is not None})
    return [b"data", json.dumps(header).encode(), payload.tobytes()]


def encode_event(event: dict) -> list[bytes]:
    return [b"event", json.dumps({"v": WIRE_VERSION, **event}).encode()]


def require(obj: dict, key: str, kind, where: str, lo=None, hi=None):
    """obj[key], checked to be of `kind` (int, float or str) and, for numbers, within [lo, hi]
    (for strings: at most `hi` characters); MalformedMessage naming the field otherwise."""
    if key not in obj:
        raise MalformedMessage(f"{where}: missing field {key!r}", "missing_field")
    value = obj[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise MalformedMessage(f"{where}: field {key!r}={shorten(value)} must be an integer", "wrong_type")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise MalformedMessage(f"{where}: field {key!r}={shorten(value)} must be a number", "wrong_type")
    if kind is str and not isinstance(value, str):
        raise MalformedMessage(f"{where}: field {key!r}={shorten(value)} must be a string", "wrong_type")
    if kind is str:
        if hi is not None and len(value) > hi:
            raise MalformedMessage(f"{where}: field {key!r} has {len(value)} characters, at most {hi}", "out_of_range")
    elif (lo is not None and not value >= lo) or (hi is not None and not value <= hi):  # NaN fails both
        raise MalformedMessage(f"{where}: field {key!r}={shorten(value)} outside [{lo:g}, {hi:g}]", "out_of_range")
    return value


def shorten(value, chars: int = 40) -> str:
    """repr(value) cut to `chars`: a hostile field must not flood the log."""
    text = repr(value)
    return text if len(text) <= chars else text[:chars] + "..."


def parse_json(frame: bytes, where: str) -> dict:
    try:
        obj = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedMessage(f"{where}: not UTF-8 JSON ({shorten(str(exc), 80)})", "not_json") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{where}: JSON must be an object, got {type(obj).__name__}", "not_json")
    if obj.get("v") != WIRE_VERSION:
        raise MalformedMessage(f"{where}: version v={shorten(obj.get('v'))}, this daemon reads v={WIRE_VERSION}",
                               "wrong_version")
    return obj


def parse_data(header_frame: bytes, payload: bytes) -> DataChunk:
    """Validate a data message; converts units to mV and pA. Raises MalformedMessage."""
    where = "data header"
    h = parse_json(header_frame, where)
    n = require(h, "n_samples", int, where, 1, MAX_CHUNK_SAMPLES)
    fs = require(h, "fs", float, where, *FS_RANGE_HZ)
    first = require(h, "first_sample", int, where, 0, MAX_SAMPLE_INDEX)
    headstage = require(h, "headstage", int, where, 0, MAX_HEADSTAGE_NUMBER)
    seq = require(h, "seq", int, where, -MAX_SAMPLE_INDEX, MAX_SAMPLE_INDEX)
    device = require(h, "device", str, where, hi=MAX_DEVICE_CHARS) if "device" in h else ""
    if h.get("channels", ["V", "I"]) != ["V", "I"]:
        raise MalformedMessage(f"{where}: channels={shorten(h.get('channels'))}, expected ['V', 'I']", "wrong_channels")
    if h.get("dtype", DTYPE) != DTYPE:
        raise MalformedMessage(f"{where}: dtype={shorten(h.get('dtype'))}, expected {DTYPE!r}", "wrong_dtype")
    scale = unit_scales(h.get("units", ["mV", "pA"]))
    if len(payload) != n * 2 * 4:
        raise MalformedMessage(f"data payload: {len(payload)} bytes, expected n_samples*2*4 = {n * 8}",
                               "payload_size")
    samples = np.frombuffer(payload, dtype=DTYPE).reshape(n, 2).astype(np.float64)
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).any(axis=1).sum())
        raise MalformedMessage(f"data payload: {bad} samples with NaN/Inf (chunk starting at {first})", "non_finite")
    if scale != (1.0, 1.0):
        samples *= np.array(scale)
    rig, rig_errors = None, ()
    if any(key in h for key in RIG_UNITS):  # the optional filter_hz (Hz; 0 or null: none or unknown), temperature_c
        # an unusable value is not a reason to lose samples: it is ignored (as not declared) and counted
        rig, why = parse_rig_fields(h)
        rig_errors = tuple(("rig_field", f"{where}: {reason}; ignored") for reason in why)
    return DataChunk(device=device, headstage=headstage, seq=seq, first_sample=first, fs=float(fs), samples=samples,
                     rig=rig, rig_errors=rig_errors)


def unit_scales(units) -> tuple[float, float]:
    """Factors to mV and pA for the header's units."""
    if (not isinstance(units, list) or len(units) != 2 or not all(isinstance(u, str) for u in units)
            or units[0] not in V_SCALE or units[1] not in I_SCALE):
        raise MalformedMessage(f"data header: units={shorten(units)}, expected ['mV', 'pA'] (or V; nA or A)",
                               "wrong_units")
    return V_SCALE[units[0]], I_SCALE[units[1]]


def parse_event(frame: bytes, sample_required: bool = True) -> dict:
    """Validate an event; returns {"type", "headstage", "sample", "cell_id"?}. Raises MalformedMessage.

    `sample` (the data-stream index the event applies from) may be missing from a `new_cell`
    event, and from a `stimulus` event when `sample_required` is False (LSL markers: their
    timestamp then places them); it is None then.
    """
    e = parse_json(frame, "event")
    kind = require(e, "type", str, "event", hi=32)
    if kind not in ("new_cell", "stimulus"):
        raise MalformedMessage(f"event: type={shorten(kind)}, expected 'new_cell' or 'stimulus'", "unknown_event")
    out = {"type": kind, "headstage": require(e, "headstage", int, "event", 0, MAX_HEADSTAGE_NUMBER)}
    if kind == "new_cell":
        out["cell_id"] = require(e, "cell_id", str, "event", hi=MAX_CELL_ID_CHARS)
    if "sample" in e or (kind == "stimulus" and sample_required):
        out["sample"] = require(e, "sample", int, "event", 0, MAX_SAMPLE_INDEX)
    else:
        out["sample"] = None
    return out
