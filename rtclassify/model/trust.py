"""How far a window's probabilities may be trusted, applied where every tool reads the AP network.

The network gives its probabilities as if the window came from the rigs it was validated on. Four
things make that untrue or unhelpful, each handled here, once, for `predict`, `sweeps`, `watch`, `annotate`
and `serve`:

- **The temperature is not declared.** A window from a 25 °C rig read as 34 °C is wider than its
  type's; unwarned, the network calls a cooled Pvalb cell Sst and is sure of it. When the rig does not
  declare its temperature, the window is read under both hypotheses, as recorded at 34 °C and as
  recorded at COOL_C (the window read WARP times faster about its peak, its edges held, as a stored
  3 ms trace is read with a declared temperature), and the two readings are mixed with the weights of
  `undeclared_temperature`. Where the hypotheses agree, nothing changes; where they disagree, the
  probabilities say so. Declaring the temperature (`--temperature-c`, a `temperature_c` column or
  field) removes the second reading.
- **The input is outside the validated envelope** (rtclassify.model.envelope, or unlike every
  training window: `envelope` names why). Its probabilities are mixed with the class prior
  (`outside_prior_share` of it), so that an input the figures do not cover is never given with
  the confidence of one they do; `envelope` then ends with TEMPERED_NOTE.
- **A class is surer than it is right.** An AP alone cannot tell some cells of one Cre line from
  another's (Sst-IRES-Cre also labels fast-spiking cells whose APs are Pvalb's): of the development
  cells' out-of-fold answers at p >= 0.9, 99% of the Exc ones were right but only 84-92% of each
  interneuron class's. The card's `class_ceiling` is, per class, the precision those answers can be
  vouched for (`python -m trainer trust`); no answer's top probability exceeds its class's ceiling
  (`settle`, last; the excess goes to the other classes in proportion, decisions never change).
- **The lab asks for a confidence** (`--min-confidence`, default the card's `min_confidence`,
  chosen from the risk-coverage curves in docs/confidence.md): an answer whose top probability is
  below it carries `uncertain: true` (the label is still the most likely class).

The card's `trust` section (written by `python -m trainer trust`, chosen on development cells) holds
these numbers; a card without one gets the defaults below.
"""
import functools
from dataclasses import dataclass

import numpy as np

from rtclassify.dsp.temperature import warp_factor
from rtclassify.model.envelope import INSIDE

COOL_C = 25.0  # the other hypothesis when a rig's temperature is not declared: room temperature
TEMPERED_NOTE = "probabilities tempered toward the class prior"
DEFAULTS = {"undeclared_temperature": {"temperature_c": COOL_C, "share": 0.2}, "outside_prior_share": 0.5,
            "min_confidence": 0.9}


@dataclass(frozen=True)
class Trust:
    """A model's trust policy. prior: (K,) class frequencies of its training cells; cool_share: the
    weight of the COOL_C reading when the temperature is not declared (0: never read twice);
    cool_warp: that reading's time warp; outside_prior_share: how much of the prior an input outside
    the envelope gets; min_confidence: the default top probability below which an answer is uncertain;
    class_ceiling: (K,) the highest top probability an answer of each class may have, each >= 0.5
    (None: none)."""

    prior: np.ndarray
    cool_share: float
    cool_warp: float
    outside_prior_share: float
    min_confidence: float
    class_ceiling: np.ndarray | None = None

    @classmethod
    def from_card(cls, card: dict) -> "Trust":
        section = {**DEFAULTS, **(card.get("trust") or {})}
        classes = list(card["classes"])
        counts = (card.get("training_data") or {}).get("per_class") or {}
        prior = np.array([float(counts.get(c, 0.0)) for c in classes])
        prior = prior / prior.sum() if prior.sum() > 0 else np.full(len(classes), 1.0 / len(classes))
        cool = section["undeclared_temperature"]
        ceiling = section.get("class_ceiling")
        return cls(prior=prior, cool_share=float(cool["share"]), cool_warp=warp_factor(float(cool["temperature_c"])),
                   outside_prior_share=float(section["outside_prior_share"]),
                   min_confidence=float(section["min_confidence"]),
                   class_ceiling=None if ceiling is None else check_ceiling(ceiling, classes))

    def windows_to_read(self, windows: np.ndarray, undeclared: np.ndarray, anchor: int) -> np.ndarray:
        """(N + U, L) float32: windows (N, L) mV, then the COOL_C reading of the U whose temperature is
        not declared (undeclared (N,) bool; none when cool_share is 0). anchor: the peak's index."""
        undeclared = np.asarray(undeclared, bool) & (self.cool_share > 0)
        n, length = windows.shape
        out = np.empty((n + int(undeclared.sum()), length), np.float32)
        out[:n] = windows
        at, grid = reading_positions(length, anchor, self.cool_warp)
        for row, w in enumerate(windows[undeclared], start=n):
            out[row] = np.interp(at, grid, w)
        return out

    def join_readings(self, probs: np.ndarray, undeclared: np.ndarray) -> np.ndarray:
        """(N, K) probabilities from the (N + U, K) ones of windows_to_read's rows: each undeclared
        window's two readings mixed, (1 - cool_share) as recorded and cool_share cooled."""
        undeclared = np.asarray(undeclared, bool) & (self.cool_share > 0)
        n = len(undeclared)
        out = np.array(probs[:n], dtype=np.float64)
        if undeclared.any():
            out[undeclared] = (1.0 - self.cool_share) * out[undeclared] + self.cool_share * probs[n:]
        return out

    def read(self, run, windows: np.ndarray, undeclared, anchor: int) -> np.ndarray:
        """(N, K) probabilities of windows (N, L) mV through run ((M, L) float32 -> (M, K)), each window
        whose rig's temperature is not declared (undeclared (N,) bool) read under both hypotheses."""
        undeclared = np.asarray(undeclared, bool)
        if self.cool_share <= 0 or not undeclared.any():  # one reading: the network's own (no copy)
            return run(windows)
        return self.join_readings(run(self.windows_to_read(windows, undeclared, anchor)), undeclared)

    def temper(self, probs: np.ndarray) -> np.ndarray:
        """(K,) or (N, K) probabilities of inputs outside the envelope, mixed with the class prior."""
        return (1.0 - self.outside_prior_share) * np.asarray(probs, np.float64) + self.outside_prior_share * self.prior

    def settle(self, probs: np.ndarray, outside) -> np.ndarray:
        """The answer's probabilities from read's, (K,) or (N, K): tempered where the input is outside the
        envelope (outside: bool, or (N,) bool), then each top probability held to its class's ceiling."""
        p = np.asarray(probs, np.float64)
        if p.ndim == 1:  # one answer (the daemon's): no masks
            p = self.temper(p) if outside else p
        else:
            p = np.where(np.broadcast_to(np.asarray(outside, bool), p.shape[:1])[:, None], self.temper(p), p)
        return p if self.class_ceiling is None else hold_to_ceiling(p, self.class_ceiling)

    def asked(self, min_confidence: float | None) -> float:
        """The confidence an answer is held to: the lab's (--min-confidence), else the card's."""
        return self.min_confidence if min_confidence is None else min_confidence

    def answer(self, probs: np.ndarray, envelope: str) -> tuple[np.ndarray, str]:
        """One answer: its (K,) probabilities settled, and its envelope judgement (`inside`, or `outside: ...`,
        then with the tempering said)."""
        if envelope == INSIDE:
            return self.settle(probs, False), envelope
        return self.settle(probs, True), f"{envelope}; {TEMPERED_NOTE}"


def hold_to_ceiling(probs: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """(K,) or (N, K) probabilities whose top one is at most its class's ceiling (ceiling (K,), each
    >= 0.5), the excess given to the other classes in proportion to theirs (evenly when they have none):
    rows under their ceiling are unchanged, and no decision changes (no other class can pass 1 - ceiling)."""
    p = np.asarray(probs, np.float64)
    if p.ndim == 1:  # one answer (the daemon's): scalars, no fancy indexing
        top = int(p.argmax())
        if p[top] <= ceiling[top]:
            return p
        rest = 1.0 - p[top]
        out = p * ((1.0 - ceiling[top]) / rest) if rest > 0 else np.full_like(p, (1.0 - ceiling[top]) / (len(p) - 1))
        out[top] = ceiling[top]
        return out
    rows = np.arange(len(p))
    top = p.argmax(axis=1)
    high, cap = p[rows, top], ceiling[top]
    over = high > cap
    if not over.any():
        return p
    rest = 1.0 - high
    share = np.where((rest > 0)[:, None], p / np.maximum(rest, 1e-300)[:, None], 1.0 / (p.shape[1] - 1))
    out = np.where(over[:, None], share * (1.0 - cap)[:, None], p)
    out[rows, top] = np.where(over, cap, high)
    return out


def check_ceiling(ceiling, classes) -> np.ndarray:
    """(K,) float64 from a card's `trust.class_ceiling`, one per class, each in [0.5, 1]: a lower one
    could change a decision."""
    from rtclassify.model.file_format import ModelFileError

    c = np.asarray(ceiling, np.float64)
    if c.shape != (len(classes),) or not np.all((c >= 0.5) & (c <= 1.0)):
        raise ModelFileError(f"card trust.class_ceiling {list(ceiling)!r}: needs one value in [0.5, 1] per class "
                             f"({', '.join(classes)})")
    return c


def read_faster(window: np.ndarray, warp: float, anchor: int) -> np.ndarray:
    """(L,) mV window read `warp` times faster about its sample `anchor` (the peak): what the window
    would be had its rig been recorded at the temperature of that warp and declared. Samples beyond
    the window's ends take its end values, as a stored 3 ms trace read with a warp does (linear
    interpolation: at the model's 50 kHz an AP has little above the 15 kHz that a warp of 1.6 folds)."""
    at, grid = reading_positions(len(window), anchor, warp)
    return np.interp(at, grid, window).astype(np.float32)


@functools.lru_cache(maxsize=8)
def reading_positions(length: int, anchor: int, warp: float) -> tuple[np.ndarray, np.ndarray]:
    """(where each sample of a window read `warp` times faster about `anchor` falls in the window, the
    window's own sample positions): made once per window layout."""
    grid = np.arange(length, dtype=np.float64)
    return anchor + (grid - anchor) * warp, grid


def is_uncertain(probs, min_confidence: float) -> bool:
    """True where the top probability is below the confidence asked for."""
    return float(np.max(probs)) < min_confidence


