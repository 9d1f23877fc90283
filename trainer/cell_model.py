"""The cell models: gradient-boosted trees on Allen's per-cell features (`cell_features.csv`), trained
to read any subset of them (a lab's step family gives the long-square features only), calibrated,
and joined with the AP network's out-of-fold probabilities into the cell verdict's rule.

Training copies: each training cell is seen with all its features, with the long-step features only
(what `rtclassify.features.family` measures in a lab's file), and twice with whole groups of features
dropped at random (ramp, short square, firing, long-step AP shape, passive), so that a family that
lacks a piece is read from what it has, never from what is missing.
"""
from pathlib import Path

import numpy as np

from rtclassify.features.family import FAMILY_FEATURES
from rtclassify.verdict.trees import TreeEnsemble

EXCLUDED = ("seal_gohm", "vm_for_sag")  # a recording's quality, and a protocol choice: not the cell's type
GROUPS = {
    "ramp": lambda c: c.endswith("_ramp"),
    "short_square": lambda c: c.endswith("_short_square"),
    "firing": lambda c: c in ("threshold_i_long_square", "latency", "f_i_curve_slope", "adaptation", "avg_isi"),
    "ap_long_square": lambda c: c.endswith("_long_square") and c != "threshold_i_long_square",
    "passive": lambda c: c in ("sag", "tau", "ri", "input_resistance_mohm", "vrest"),
}
DROP_P = 0.5
TREE_PARAMS = dict(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0)


def model_features(columns) -> list[str]:
    """The cell_features.csv columns a cell model reads: every feature but times within a sweep
    (`*_t_*`, where a protocol put its stimulus) and EXCLUDED."""
    return [c for c in columns if c != "specimen_id" and "_t_" not in c and c not in EXCLUDED]


def read_features(path: Path, specimen_ids) -> tuple[np.ndarray, list[str]]:
    """((N, F) float, feature names) for the given cells from cell_features.csv (NaN rows for absent cells)."""
    import pandas as pd

    table = pd.read_csv(path, dtype={"specimen_id": str}).drop_duplicates("specimen_id").set_index("specimen_id")
    names = model_features(["specimen_id"] + list(table.columns))
    x = table.reindex([str(s) for s in specimen_ids])[names].apply(pd.to_numeric, errors="coerce")
    return x.to_numpy(dtype=np.float64), names


def training_copies(x: np.ndarray, y: np.ndarray, names: list[str], seed: int, drop_copies: int = 2):
    """(X, y) with each row as given, long-step features only, and `drop_copies` with random groups dropped."""
    rng = np.random.default_rng(seed)
    family = np.array([n in FAMILY_FEATURES for n in names])
    only_family = np.where(family, x, np.nan)
    parts = [x, only_family]
    masks = {g: np.array([rule(n) for n in names]) for g, rule in GROUPS.items()}
    for _ in range(drop_copies):
        copy = x.copy()
        for mask in masks.values():
            drop = rng.random(len(x)) < DROP_P
            copy[np.ix_(drop, mask)] = np.nan
        parts.append(copy)
    return np.concatenate(parts), np.tile(y, len(parts))


def fit_trees(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    """A class-balanced HistGradientBoostingClassifier fitted on (x, y)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = (len(y) / (n_classes * np.maximum(counts, 1)))[y]
    clf = HistGradientBoostingClassifier(random_state=seed, early_stopping=False, **TREE_PARAMS)
    return clf.fit(x, y, sample_weight=weights)


def export_trees(clf) -> TreeEnsemble:
    """The fitted classifier's trees as one flat node table (rtclassify.verdict.trees)."""
    parts = {k: [] for k in ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")}
    roots, tree_class, offset = [], [], 0
    for per_iteration in clf._predictors:
        for k, predictor in enumerate(per_iteration):
            nodes = predictor.nodes
            roots.append(offset)
            tree_class.append(k)
            parts["feature"].append(nodes["feature_idx"].astype(np.int64))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            parts["left"].append(nodes["left"].astype(np.int64) + offset)
            parts["right"].append(nodes["right"].astype(np.int64) + offset)
            parts["leaf"].append(nodes["is_leaf"].astype(bool))
            parts["value"].append(nodes["value"].astype(np.float64))
            offset += len(nodes)
    flat = {k: np.concatenate(v) for k, v in parts.items()}
    return TreeEnsemble(**flat, roots=np.array(roots), tree_class=np.array(tree_class),
                        baseline=np.asarray(clf._baseline_prediction, np.float64).ravel())


def raw_scores(trees: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    return trees.raw(x)
