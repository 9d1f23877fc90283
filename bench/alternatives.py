"""The routes a user would otherwise take, timed on the same sweeps as rtclassify.

Every route starts from the same simulated 50 kHz sweeps (a 3 ms step and an AP from the built-in
RS / FS / LTS neuron models) and ends with class probabilities. For each we report the compute
time per stimulus and how long after the stimulus onset the label can exist: the moment the last
sample the route needs has been recorded, plus its compute time. The physical limit of a
spike-aligned label is the moment the window's last sample exists (2 ms after the AP peak).

- rtclassify: the daemon's detector, a 3 ms spike-aligned window, the shipped TorchScript model.
- features: eFEL spike features (AP amplitude, half-width, rise and fall time, AHP depth, ...) of
  the sweep, then a gradient-boosted classifier (scikit-learn), the usual hand-crafted route; it
  needs the after-hyperpolarisation, i.e. about 10 ms after the peak (our assumption, stated in
  the output).
- published: the published triple-input CNN as described (raw, FFT real and imaginary branches)
  on its 50 ms stimulus-aligned window (25 ms before and after the onset), eager PyTorch; it
  needs the samples up to 25 ms after the onset.
"""
import time

import numpy as np

from bench.suite import percentiles

FS = 50_000.0
EFEL_FEATURES = ("AP_peak_upstroke", "AP_peak_downstroke", "AP_duration_half_width", "AP_rise_time", "AP_fall_time", "AHP_depth_abs",
                 "AP_begin_voltage", "peak_voltage", "time_to_first_spike")
FEATURES_NEED_AFTER_PEAK_MS = 10.0  # AHP minimum of cortical APs lies within ~10 ms of the peak
PUBLISHED_HALF_WINDOW_MS = 25.0


def make_sweeps(n: int, seed: int = 0) -> list[tuple]:
    """n sweeps (v mV, i pA, onset sample, peak sample, class name) from the built-in neuron models."""
    from rtclassify.simulator.neurons import builtin_cells
    from rtclassify.simulator.amplifier import synthesise_sweep

    rng = np.random.default_rng(seed)
    cells = builtin_cells(FS, variants=2)
    out = []
    for k in range(n):
        cell = cells[k % len(cells)]
        plan = synthesise_sweep(cell, FS, True, rng, pre_ms=30.0, post_ms=30.0)
        out.append((plan.v_mv, plan.i_pa, plan.onset, plan.peak, cell.meta["class"]))
    return out


def route_rtclassify(model):
    """Detector + spike-aligned window + model, as in the daemon; returns classify(v, i) -> probs."""
    import torch

    from rtclassify.dsp.detector import detect_spikes, detect_steps
    from rtclassify.dsp.windows import samples_at, window_from_segment

    n_before, n_after = samples_at(model.spec.before_ms, FS), samples_at(model.spec.after_ms, FS)

    def classify(v, i):
        peak = int(detect_spikes(v, FS, detect_steps(i, holding_pa=0.0)).peaks[0])
        window = window_from_segment(v[peak - n_before:peak + n_after], FS, n_before, model.spec)
        with torch.inference_mode():
            return model.module(torch.from_numpy(window[None].astype(np.float32))).numpy()[0]

    return classify


def efel_features(v, onset: int) -> np.ndarray:
    import efel

    t_ms = np.arange(len(v)) / FS * 1000
    trace = {"T": t_ms, "V": v, "stim_start": [onset / FS * 1000], "stim_end": [onset / FS * 1000 + 3.0]}
    values = efel.get_feature_values([trace], list(EFEL_FEATURES), raise_warnings=False)[0]
    return np.array([float(values[f][0]) if values[f] is not None and len(values[f]) else np.nan
                     for f in EFEL_FEATURES])


def route_features(train_sweeps):
    """eFEL features + gradient boosting, trained on other simulated sweeps (labels: the model class)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.array([efel_features(v, onset) for v, i, onset, peak, cls in train_sweeps])
    y = np.array([cls for *_, cls in train_sweeps])
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y)

    def classify(v, onset):
        return clf.predict_proba(efel_features(v, onset)[None])[0]

    return classify


def route_published():
    """The published architecture on a 50 ms stimulus-aligned window, eager PyTorch (weights untrained:
    the timing does not depend on them)."""
    import torch

    from rtclassify.model.network import PUBLISHED_BRANCHES, TripleInputCNN
    from rtclassify.dsp.windows import samples_at

    half = samples_at(PUBLISHED_HALF_WINDOW_MS, FS)
    net = TripleInputCNN(2 * half, FS, 5, branches=PUBLISHED_BRANCHES).eval()

    def classify(v, onset):
        x = torch.from_numpy(np.ascontiguousarray(v[onset - half:onset + half], dtype=np.float32)[None])
        with torch.inference_mode():
            return torch.softmax(net(x), dim=1).numpy()[0]

    return classify, half


def time_route(fn, sweeps, args) -> np.ndarray:
    """Compute time (ms) of fn over the sweeps, after two warm-up calls."""
    for s in sweeps[:2]:
        fn(*args(s))
    out = []
    for s in sweeps:
        t = time.perf_counter()
        fn(*args(s))
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def summarise(compute_ms: np.ndarray, needed_after_onset_ms: np.ndarray, needs: str) -> dict:
    label = needed_after_onset_ms + compute_ms
    return {"compute_ms": percentiles(compute_ms), "data_needed_after_onset_ms": round(float(np.median(needed_after_onset_ms)), 3),
            "label_after_onset_ms": percentiles(label), "needs": needs}


def bench_alternatives(quick: bool) -> dict:
    """All routes on the same sweeps; routes whose packages are missing are reported as absent."""
    import torch

    from rtclassify.model.file_format import load_model

    torch.set_num_threads(1)
    sweeps = make_sweeps(30 if quick else 120, seed=1)
    peak_ms = np.array([(peak - onset) / FS * 1000 for v, i, onset, peak, cls in sweeps])
    limit = peak_ms + 2.0
    out = {"sweeps": len(sweeps), "fs_hz": FS, "threads": 1,
           "physical_limit_after_onset_ms": round(float(np.median(limit)), 3),
           "note": "label_after_onset = last needed sample after the stimulus onset + compute; in-process, "
                   "no transport", "routes": {}}
    model = load_model("genetic5")
    ours = time_route(route_rtclassify(model), sweeps, lambda s: (s[0], s[1]))
    out["routes"]["rtclassify"] = summarise(ours, limit, "the AP window: 1 ms before to 2 ms after the peak")
    try:
        feats = route_features(make_sweeps(36, seed=2))
        t = time_route(feats, sweeps, lambda s: (s[0], s[2]))
        out["routes"]["efel_features_gbm"] = summarise(
            t, peak_ms + FEATURES_NEED_AFTER_PEAK_MS,
            f"the AP and its after-hyperpolarisation: up to {FEATURES_NEED_AFTER_PEAK_MS:g} ms after the peak")
    except ImportError as exc:
        out["routes"]["efel_features_gbm"] = {"absent": f"{exc.name} not installed: pip install efel scikit-learn"}
    published, half = route_published()
    t = time_route(published, sweeps, lambda s: (s[0], s[2]))
    out["routes"]["published_50ms_eager"] = summarise(t, np.full(len(sweeps), PUBLISHED_HALF_WINDOW_MS),
                                                      "the 50 ms window: up to 25 ms after the onset")
    for r in out["routes"].values():
        if "label_after_onset_ms" in r:
            r["margin_over_limit_ms_p50"] = round(r["label_after_onset_ms"]["p50"] - out["physical_limit_after_onset_ms"], 3)
    return out
