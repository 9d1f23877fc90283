"""One verdict per cell from all its evidence: the AP network's labels of its short squares and the
cell model's reading of its long-step features.

The rule (chosen on development folds by `python -m trainer cells`, stored in the cell model file):
log p(class) = w_ap * mean over short squares of log p_ap + w_steps * log p_steps
               - (w_ap + w_steps - 1) * log prior,       normalised,
a weighted product of the calibrated sources that counts the class prior once. A source that is
absent drops out; a source alone is taken as it is (its weight 1). The verdict is `uncertain` (label null) when no evidence is in, or when the
joined top probability is below `min_confidence`: the sources conflict or are too thin.
"""
from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-6


@dataclass(frozen=True)
class Rule:
    w_ap: float = 1.0
    w_steps: float = 1.0
    min_confidence: float = 0.6

    @classmethod
    def from_dict(cls, d: dict | None) -> "Rule":
        d = d or {}
        return cls(**{k: float(d[k]) for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    label: str | None
    probs: dict  # class -> p
    evidence: dict  # {"short_square": int, "long_step": int, "features": int (per-cell features read)}
    uncertain: bool
    reason: str  # "", "no evidence", "conflict", "thin"

    @property
    def n_features(self) -> int:
        return int(self.evidence.get("features", 0))

    def to_dict(self) -> dict:
        return {"label": self.label, "probs": {c: round(float(p), 4) for c, p in self.probs.items()},
                "evidence": self.evidence, "uncertain": self.uncertain, "reason": self.reason or None}


def join_log_probs(ap_probs: np.ndarray | None, step_probs: np.ndarray | None, prior: np.ndarray,
                   rule: Rule) -> np.ndarray | None:
    """(K,) joined probabilities from (n, K) AP-window probabilities (or None) and (K,) step-family
    probabilities (or None); None when neither is given."""
    log_prior = np.log(np.clip(prior, EPS, 1.0))
    total, weight = np.zeros_like(log_prior), 0.0
    has_ap, has_steps = ap_probs is not None and len(ap_probs) > 0, step_probs is not None
    w_ap, w_steps = (rule.w_ap, rule.w_steps) if has_ap and has_steps else (1.0, 1.0)
    if has_ap:
        total += w_ap * np.log(np.clip(ap_probs, EPS, 1.0)).mean(axis=0)
        weight += w_ap
    if has_steps:
        total += w_steps * np.log(np.clip(step_probs, EPS, 1.0))
        weight += w_steps
    if weight == 0:
        return None
    total -= (weight - 1.0) * log_prior
    total -= total.max()
    p = np.exp(total)
    return p / p.sum()


def verdict(classes, ap_probs: np.ndarray | None, step_probs: np.ndarray | None, prior: np.ndarray, rule: Rule,
            n_long_steps: int = 0, n_features: int = 0, n_short: int | None = None) -> Verdict:
    """The cell's verdict. ap_probs: (n, K) one row per classified short square (n may be 0);
    step_probs: (K,) the cell model's probabilities from the per-cell features, None without them;
    n_long_steps: how many long steps the features came from; n_features: how many features it read;
    n_short: how many short squares ap_probs stands for (default its rows)."""
    n_ap = 0 if ap_probs is None else len(ap_probs)
    evidence = {"short_square": int(n_ap if n_short is None else n_short), "long_step": int(n_long_steps if step_probs is not None else 0),
                "features": int(n_features if step_probs is not None else 0)}
    p = join_log_probs(ap_probs if n_ap else None, step_probs, prior, rule)
    if p is None:
        return Verdict(None, {}, evidence, True, "no evidence")
    probs = {c: float(v) for c, v in zip(classes, p)}
    top = int(np.argmax(p))
    if p[top] >= rule.min_confidence:
        return Verdict(classes[top], probs, evidence, False, "")
    disagree = bool(n_ap) and step_probs is not None and int(np.argmax(np.mean(ap_probs, axis=0))) != int(np.argmax(step_probs))
    return Verdict(None, probs, evidence, True, "conflict" if disagree else "thin")
