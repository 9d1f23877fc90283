"""Hand-crafted-feature baselines on the same folds as the CNN.

1. Features of the AP window itself (threshold, peak, amplitude, half-width, up/downstroke, trough…).
2. Allen's own precomputed electrophysiology features (`ef__*` from the cell table plus the
   short/long-square features of `ephys_features.csv`), which use many sweeps per cell, not one AP.
Both feed a gradient-boosted tree classifier with class-balanced weights.
"""
from pathlib import Path

import numpy as np

AP_FEATURES = ("threshold_mv", "peak_mv", "amplitude_mv", "half_width_ms", "upstroke_mv_per_ms",
               "downstroke_mv_per_ms", "up_down_ratio", "trough_mv", "trough_delay_ms", "peak_to_trough_mv",
               "threshold_to_peak_ms", "end_mv", "rise_10_90_ms")
THRESHOLD_DVDT = 20.0  # mV/ms, Allen's convention for AP threshold


def compute_ap_features(windows: np.ndarray, fs_hz: float, n_before: int) -> np.ndarray:
    """(N, L) peak-aligned windows in mV -> (N, len(AP_FEATURES)); the peak is at index n_before."""
    dt = 1000.0 / fs_hz  # ms per sample
    x = windows.astype(np.float64)
    dv = np.gradient(x, dt, axis=1)
    rows = np.arange(len(x))
    peak = x[:, n_before]
    pre = dv[:, :n_before + 1]
    # threshold: last crossing of 20 mV/ms before the peak (first sample if always above)
    above = pre >= THRESHOLD_DVDT
    below_idx = np.where(~above, np.arange(pre.shape[1]), -1).max(axis=1)
    thr_i = np.clip(below_idx + 1, 0, n_before)
    thr = x[rows, thr_i]
    amp = peak - thr
    half = thr + amp / 2
    half_width = (x > half[:, None]).sum(axis=1) * dt
    up = pre.max(axis=1)
    down = dv[:, n_before:].min(axis=1)
    post = x[:, n_before:]
    trough = post.min(axis=1)
    trough_delay = post.argmin(axis=1) * dt
    lo, hi = thr + 0.1 * amp, thr + 0.9 * amp
    rise = ((x[:, :n_before + 1] > lo[:, None]) & (x[:, :n_before + 1] < hi[:, None])).sum(axis=1) * dt
    return np.column_stack([thr, peak, amp, half_width, up, down, up / np.minimum(down, -1e-6) * -1,
                            trough, trough_delay, peak - trough, (n_before - thr_i) * dt, x[:, -1], rise])


def read_allen_features(metadata_dir: Path, specimen_ids) -> tuple[np.ndarray, list[str]]:
    """(N, F) numeric Allen features for the given specimen ids (NaN where a cell is absent)."""
    import pandas as pd

    metadata_dir = Path(metadata_dir)
    cells = pd.read_csv(metadata_dir / "cell_types_specimen_details.csv", low_memory=False)
    ef_cols = [c for c in cells.columns if c.startswith("ef__")]
    table = cells[["specimen__id"] + ef_cols].rename(columns={"specimen__id": "specimen_id"})
    eph = pd.read_csv(metadata_dir / "ephys_features.csv", low_memory=False)
    eph_cols = [c for c in eph.columns if c not in ("Unnamed: 0", "id", "specimen_id", "rheobase_sweep_id",
                                                    "rheobase_sweep_number", "thumbnail_sweep_id")
                and pd.api.types.is_numeric_dtype(eph[c])]
    table = table.merge(eph[["specimen_id"] + eph_cols], on="specimen_id", how="outer", suffixes=("", "_eph"))
    table = table.drop_duplicates("specimen_id").set_index("specimen_id")
    ids = np.array([int(s) for s in specimen_ids])
    feats = table.reindex(ids).apply(pd.to_numeric, errors="coerce").astype(float)
    return feats.to_numpy(), list(feats.columns)


def fit_predict_gbm(x_train, y_train, x_test, n_classes: int, seed: int) -> np.ndarray:
    """Class-balanced gradient-boosted trees: (N_test, K) probabilities."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, class_weight="balanced", random_state=seed)
    clf.fit(x_train, y_train)
    proba = np.zeros((len(x_test), n_classes))
    proba[:, clf.classes_] = clf.predict_proba(x_test)
    return proba
