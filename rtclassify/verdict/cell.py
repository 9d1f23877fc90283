"""One cell's evidence as it comes in (short-square AP labels, long steps, features a table gives)
and its verdict: what `sweeps`, `watch`, `annotate`, `predict` and the daemon share."""
from dataclasses import replace

import numpy as np

from rtclassify.dsp.temperature import warp_factor
from rtclassify.features.family import (BANDWIDTH_FEATURE, FAMILY_FEATURES, REFERENCE_BANDWIDTH_HZ, family_features,
                                        warp_features)
from rtclassify.model.trust import hold_to_ceiling
from rtclassify.verdict.cell_model import CellModel
from rtclassify.verdict.combine import EPS, Rule, Verdict, verdict


class CellEvidence:
    """Evidence of one cell. classes: the AP model's classes (the verdict's); cell_model: the cell
    model of the same classes, or None (then only short squares count); temperature_c: the declared
    bath temperature (None: unknown, read as 34 °C), which warps the time features; min_confidence: the
    top probability below which the verdict is uncertain (None: the cell model's rule's); ap_ceiling: the
    AP model's class ceilings (rtclassify.model.trust), which hold a verdict from short squares alone as
    they hold each of its labels: more APs of one cell do not tell its Cre line any better."""

    def __init__(self, classes, cell_model: CellModel | None, temperature_c: float | None = None,
                 min_confidence: float | None = None, ap_ceiling: np.ndarray | None = None):
        self.classes = tuple(classes)
        self.min_confidence = min_confidence
        self.ap_ceiling = ap_ceiling
        self.cell_model = cell_model
        self.temperature_c = temperature_c
        self.warp = warp_factor(temperature_c)
        self.n_ap = 0  # short squares taken
        self.ap_log_sum: np.ndarray | None = None  # running sum of their log-probabilities
        self.steps: list = []  # features.step.StepFeatures
        self.bandwidths: list = []  # Hz, of the recordings the steps came from (features.family.bandwidth_hz)
        self.given: dict = {}  # per-cell features from a table (Allen's names)
        self.cached: tuple | None = None  # (step probabilities, n features): recomputed when steps or features change
        self.family: dict | None = None  # family_features(self.steps), recomputed when a step comes

    def add_ap(self, probs) -> None:
        """A short square's AP labelled by the AP model: (K,) probabilities."""
        self.n_ap += 1
        logs = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))
        self.ap_log_sum = logs if self.ap_log_sum is None else self.ap_log_sum + logs

    def add_step(self, step, bandwidth: float = REFERENCE_BANDWIDTH_HZ) -> None:
        """A measured long step (features.step.StepFeatures) and the bandwidth (Hz) it was recorded with."""
        self.steps.append(step)
        self.bandwidths.append(bandwidth)
        self.cached = self.family = None

    def give_features(self, features: dict) -> None:
        """Per-cell features a table gives (Allen's names; absent or empty values are ignored)."""
        self.given.update({k: v for k, v in features.items() if v not in (None, "")})
        self.cached = None

    def features(self) -> dict:
        """The cell's features so far, as the cell model reads them (warped to 34 °C): measured from its
        long steps, with the table's values where it gives them."""
        measured = dict(self.family_now()) if self.steps else {}
        if self.bandwidths:
            measured[BANDWIDTH_FEATURE] = min(self.bandwidths)
        merged = {**measured, **self.given}
        return warp_features(merged, self.warp)

    def family_now(self) -> dict:
        """family_features of the steps so far, computed once per new step."""
        if self.family is None:
            self.family = family_features(self.steps)
        return self.family

    def reported_features(self) -> dict:
        """The long-step features as measured (not warped), JSON-ready: Allen's names, null where not measurable."""
        from rtclassify.features.step import finite_or_none

        measured = self.family_now()
        out = {name: finite_or_none(measured.get(name)) for name in FAMILY_FEATURES}
        out["ap_shape_from"] = measured.get("ap_shape_from")
        return out

    def verdict(self) -> Verdict:
        model = self.cell_model
        # the short squares as one row, the exp of their mean log-probability (what the rule takes the
        # mean of), from a running sum: a cell's hundredth label costs what its first did
        ap = np.exp(self.ap_log_sum / self.n_ap)[None, :] if self.n_ap else None
        rule = Rule.from_dict(model.rule if model is not None else None)
        if self.min_confidence is not None:
            rule = replace(rule, min_confidence=self.min_confidence)
        step_probs, n_features = self.step_reading()
        if ap is not None and step_probs is None and self.ap_ceiling is not None:
            ap = hold_to_ceiling(ap[0] / ap[0].sum(), self.ap_ceiling)[None, :]
        if model is None:
            prior = np.full(len(self.classes), 1.0 / len(self.classes))
            return verdict(self.classes, ap, None, prior, rule, 0, n_short=self.n_ap)
        return verdict(self.classes, ap, step_probs, model.prior, rule, len(self.steps), n_features, n_short=self.n_ap)

    def step_reading(self) -> tuple:
        """(the cell model's probabilities (K,) from the per-cell features, or None; how many features
        it read): the trees run once per new step or table, not once per short square."""
        model = self.cell_model
        if model is None:
            return None, 0
        if self.cached is None:
            feats = self.features()
            n_features = model.n_present(feats)
            self.cached = (model.predict([feats])[0] if n_features else None, n_features)
        return self.cached

    def add_measured_step(self, step, bandwidth: float, step_probs, n_features: int, family: dict) -> None:
        """A long step with the reading already made elsewhere (the daemon's step worker, from this
        cell's same steps): the step counted, its reading and family features taken as they are."""
        self.add_step(step, bandwidth)
        self.cached, self.family = (step_probs, n_features), family

    def cell_fields(self) -> dict:
        """The `cell` object of a label message: the verdict with `n_windows` (short squares and long
        steps that contributed)."""
        v = self.verdict()
        d = v.to_dict()
        d["n_windows"] = v.evidence["short_square"] + v.evidence["long_step"]
        return d
