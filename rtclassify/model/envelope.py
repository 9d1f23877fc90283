"""The acquisition envelope: what a model was validated on, and whether an input lies inside it.

A model file's card carries `envelope` (written by `python -m trainer ship` and `trainer adapt`, its
figures by `python -m trainer rigs`): the sampling rates, analog filters, recording temperatures and
the window statistics (membrane potential at the window's start, AP peak) its held-out figures cover.
`judge` answers `inside`, or `outside: <why>` naming the value and the bound, for one input: predict
writes it per row, serve and watch put it in every label, the overlay shows it. An input outside is
still labelled (the label may well be right), but a user should not trust it as the card's figures.

The rig is declared, not guessed: `filter_hz` and `temperature_c` come from cells.csv columns, serve's
--filter-hz / --temperature-c, the optional ZMQ header and LSL metadata fields (docs/streaming.md),
and file metadata (ABF telegraphs). Unknown is not outside: the card says what is assumed (34 °C).
"""
import math
from dataclasses import dataclass

import numpy as np

from rtclassify.dsp.temperature import check_temperature

INSIDE = "inside"
RIG_UNITS = {"filter_hz": "Hz", "temperature_c": "°C"}  # the fields a rig may declare, and their units
MAX_FILTER_HZ = 1e6


@dataclass(frozen=True)
class RigInfo:
    """What the acquisition declares about its rig (None: not declared)."""

    filter_hz: float | None = None  # analog low-pass corner (-3 dB), Hz
    temperature_c: float | None = None  # bath temperature, °C

    @classmethod
    def from_values(cls, filter_hz=None, temperature_c=None) -> "RigInfo":
        """From table cells or message fields: empty, None, NaN or 0 (filter bypassed) mean not declared."""
        return cls(filter_hz=positive_or_none(filter_hz), temperature_c=number_or_none(temperature_c))

    def merged_over(self, default: "RigInfo") -> "RigInfo":
        """This rig's declared values, `default`'s where this one declares none."""
        return RigInfo(self.filter_hz if self.filter_hz is not None else default.filter_hz,
                       self.temperature_c if self.temperature_c is not None else default.temperature_c)


def number_or_none(value) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    return None if math.isnan(x) else x


def positive_or_none(value) -> float | None:
    x = number_or_none(value)
    return x if x is not None and x > 0 else None


def check_filter(filter_hz: float) -> str | None:
    """Why filter_hz (Hz) cannot be an analog filter's corner (None when it can; 0: none or unknown)."""
    if not 0 <= filter_hz <= MAX_FILTER_HZ:
        return f"filter_hz={filter_hz:g} is not a low-pass corner in Hz (0-{MAX_FILTER_HZ:g}; 0 for none)"
    return None


def parse_rig_fields(values: dict, text: bool = False) -> tuple[RigInfo, list[str]]:
    """The rig that {field: value} declares (fields of RIG_UNITS; absent or None, or empty text: not declared), as
    every source gives them: a ZMQ header's JSON numbers (text False: a string is not a number), or the
    text of a cells.csv column or of LSL metadata (text True). Returns the rig of the usable values and,
    for each unusable one, why, naming the field and the value; the callers decide what that costs
    (a header's field ignored and counted, a table row refused)."""
    checks = {"filter_hz": check_filter, "temperature_c": check_temperature}
    usable, why = {}, []
    for key, unit in RIG_UNITS.items():
        value = values.get(key)
        if value is None or (text and isinstance(value, str) and not value.strip()):
            continue  # not declared (JSON: null; a table or XML: empty)
        number = None
        if not isinstance(value, bool) and (isinstance(value, (int, float)) or (text and isinstance(value, str))):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            why.append(f"{key}={repr(value)[:40]} is not a number: give it in {unit} or leave it out")
            continue
        reason = checks[key](number)
        if reason:
            why.append(reason)
            continue
        usable[key] = number
    return RigInfo.from_values(**usable), why


def judge(envelope: dict | None, fs_hz: float, rig: RigInfo = RigInfo(), window=None) -> str:
    """`inside`, or `outside: <why>` (every reason, joined by '; '), for one input of a model whose card
    has `envelope`: a stream or trace at fs_hz (Hz) from `rig`, and its model window (L,) mV if given."""
    if not envelope or "fs_hz" not in envelope:
        return "outside: the model's card states no validated envelope (a file older than this release)"
    why = []
    lo, hi = envelope["fs_hz"]
    if not lo <= fs_hz <= hi:
        why.append(f"sampling rate {fs_hz:g} Hz is outside the validated {lo:g}-{hi:g} Hz")
    if rig.filter_hz is not None:
        if rig.filter_hz < envelope["filter_hz_min"]:
            why.append(f"filter {rig.filter_hz:g} Hz is below the validated {envelope['filter_hz_min']:g} Hz")
        if rig.filter_hz > fs_hz / 2:
            why.append(f"filter {rig.filter_hz:g} Hz is above the Nyquist frequency {fs_hz / 2:g} Hz (aliasing)")
    if rig.temperature_c is not None:
        t_lo, t_hi = envelope["temperature_c"]
        if not t_lo <= rig.temperature_c <= t_hi:
            why.append(f"temperature {rig.temperature_c:g} °C is outside the validated {t_lo:g}-{t_hi:g} °C")
    if window is not None and len(window):
        shape = envelope.get("shape")
        if shape:
            score = float(shape_score(shape, np.asarray(window, np.float64)))
            if score > shape["threshold"]:
                why.append(f"the AP's shape is unlike every training window (shape score {score:.0f}, validated up to "
                           f"{shape['threshold']:.0f})")
        start, peak = float(window[0]), float(np.max(window))
        b_lo, b_hi = envelope["window_start_mv"]
        if not b_lo <= start <= b_hi:
            why.append(f"membrane potential {start:.1f} mV 1 ms before the peak is outside the validated "
                       f"{b_lo:g} to {b_hi:g} mV (offset or junction potential?)")
        p_lo, p_hi = envelope["peak_mv"]
        if not p_lo <= peak <= p_hi:
            why.append(f"AP peak {peak:.1f} mV is outside the validated {p_lo:g} to {p_hi:g} mV")
    return INSIDE if not why else "outside: " + "; ".join(why)


_SHAPE_ARRAYS: dict = {}  # id(shape dict) -> (the dict, its arrays): a card's lists made arrays once


def shape_score(shape: dict, windows: np.ndarray) -> np.ndarray:
    """(N,) how unlike the training windows each of windows (N, L) mV is (a float for one (L,) window):
    its squared Mahalanobis distance in the training windows' first principal components plus its
    squared residual outside them in units of the training windows' mean (about k + 1 for a typical
    training window). shape: the card's `envelope.shape` (mean (L,), components (k, L), variances
    (k,), residual, threshold), written by `python -m trainer trust`."""
    kept = _SHAPE_ARRAYS.get(id(shape))
    if kept is None or kept[0] is not shape:
        kept = (shape, np.asarray(shape["mean"]), np.asarray(shape["components"]), np.asarray(shape["variances"]))
        _SHAPE_ARRAYS[id(shape)] = kept
    _, mean, components, variances = kept
    x = windows - mean
    if x.ndim == 1:  # one window (every label's): dot products, no axis reductions
        z = components @ x
        return float((z * z) @ (1.0 / variances) + (x @ x - z @ z) / shape["residual"])
    z2 = (x @ components.T) ** 2
    # the components are orthonormal: the residual's squared norm is x's less its projection's
    return (z2 / variances).sum(axis=1) + ((x * x).sum(axis=1) - z2.sum(axis=1)) / shape["residual"]


def describe(envelope: dict | None) -> str:
    """One line for --help texts and logs."""
    if not envelope:
        return "no envelope stated"
    return (f"{envelope['fs_hz'][0] / 1e3:g}-{envelope['fs_hz'][1] / 1e3:g} kHz, filters >= "
            f"{envelope['filter_hz_min'] / 1e3:g} kHz, {envelope['temperature_c'][0]:g}-"
            f"{envelope['temperature_c'][1]:g} °C (assumed {envelope.get('assumed_temperature_c', 34):g} °C "
            "when not declared)")
