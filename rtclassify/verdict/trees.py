"""Gradient-boosted trees evaluated with numpy: the cell models' serving form.

The trainer fits scikit-learn's HistGradientBoostingClassifier and writes its trees as flat arrays
(trainer/cell_model.export_trees); serving needs neither scikit-learn nor pickle. Every tree of every
class is one block of a single node table, so a batch walks all trees at once, one level per step.
A missing feature (NaN) goes the way its node learnt for missing values, as in scikit-learn.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class TreeEnsemble:
    """Flat node table of T trees (n nodes in all) and the tree -> class map.

    feature (n,) int, threshold (n,) float (x <= threshold goes left), missing_left (n,) bool,
    left / right (n,) int (absolute node indices), leaf (n,) bool, value (n,) float (leaf outputs);
    roots (T,) int, tree_class (T,) int; baseline (K,) float raw score before the trees. K = 1 for a
    binary model (raw score of the second class, sigmoid), else one softmax score per class.
    """

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    tree_class: np.ndarray
    baseline: np.ndarray

    def raw(self, x: np.ndarray) -> np.ndarray:
        """(N, F) float features (NaN: missing) -> (N, K) raw scores."""
        x = np.asarray(x, dtype=np.float64)
        n_rows = len(x)
        node = np.broadcast_to(self.roots, (n_rows, len(self.roots))).copy()  # (N, T)
        rows = np.arange(n_rows)[:, None]
        while True:
            inner = ~self.leaf[node]
            if not inner.any():
                break
            xv = x[rows, self.feature[node]]
            go_left = np.where(np.isnan(xv), self.missing_left[node], xv <= self.threshold[node])
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        leaf_values = self.value[node]  # (N, T)
        out = np.tile(self.baseline, (n_rows, 1))
        for k in range(len(self.baseline)):
            out[:, k] += leaf_values[:, self.tree_class == k].sum(axis=1)
        return out

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "TreeEnsemble":
        types = {"feature": np.int64, "left": np.int64, "right": np.int64, "roots": np.int64,
                 "tree_class": np.int64, "missing_left": np.bool_, "leaf": np.bool_}
        return cls(**{k: np.asarray(d[k], dtype=types.get(k, np.float64)) for k in cls.__dataclass_fields__})


def probabilities(raw: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, K) raw scores -> (N, classes) probabilities, scores divided by `temperature` first (K = 1:
    binary, sigmoid of the second class's score)."""
    z = raw / temperature
    if z.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.column_stack([1.0 - p1, p1])
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
