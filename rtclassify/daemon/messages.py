"""The daemon's output messages (../shared/CONTRACT.md "Output"): label, skip and heartbeat JSON.

Pure construction: the engine decides, these functions only shape what it decided into the
contract's fields (plus additive ones: `late`, `peak_sample`, and the window when asked for).
"""
import time

import numpy as np

LABEL_SCHEMA = "rtclassify.label/1"
SKIP_SCHEMA = "rtclassify.skip/1"
HEARTBEAT_SCHEMA = "rtclassify.heartbeat/1"
PROB_DIGITS = 4  # probabilities to 1e-4: finer than any calibration can mean


def build_label(hs, ready, probs: np.ndarray, model, cell, latency_ms: dict, budget_ms: float,
                include_window: bool, envelope: str, uncertain: bool) -> dict:
    """A `label` for one classified window: the contract's fields, `late`, `peak_sample`, `envelope`
    (judged, and the probabilities tempered, by the engine) and `uncertain` (the top probability below
    the confidence asked for).

    hs: the Headstage; ready: its ReadyWindow; probs: (K,) class probabilities; cell: the
    CellEntry of the cell on the headstage at the onset (already holding this window);
    latency_ms: the breakdown, `process` included. Kept small on purpose (~0.5 kB): labels go to
    acquisition software at every sweep; the window itself (~1.5 kB) only with include_window.
    """
    classes = model.classes
    p = probs.tolist()
    msg = {
        "schema": LABEL_SCHEMA, "headstage": hs.number, "seq": hs.out_seq, "cell_id": cell.cell_id,
        "stim_onset_sample": ready.stim.onset, "window_end_sample": ready.window_end,
        "label": classes[p.index(max(p))], "probs": {c: round(x, PROB_DIGITS) for c, x in zip(classes, p)},
        "cell": cell.verdict(classes),
        "model": {"name": model.name, "sha256": model.sha256},
        "latency_ms": {k: round(v, 3) for k, v in latency_ms.items()},
        "late": latency_ms["process"] > budget_ms, "peak_sample": ready.stim.peak, "protocol": "short_square",
        "envelope": envelope, "uncertain": uncertain,
        "rig": {"fs": hs.fs, "filter_hz": hs.rig.filter_hz, "temperature_c": hs.rig.temperature_c, "warp": hs.warp},
    }
    if include_window:
        msg["window"] = {"fs_hz": model.spec.fs_hz, "anchor_index": model.spec.n_before,
                         "v_mv": np.round(ready.window.astype(np.float64), 2).tolist()}
    return msg


def build_long_label(hs, stim, step, model, cell, latency_ms: dict, budget_ms: float) -> dict:
    """A `label` for one long step (protocol "long_step"): `label` and `probs` are the cell's verdict
    with this step in (its most likely class, also when the verdict is uncertain: `cell` says so),
    `features` the step's own and the cell's so far (Allen's names, null where not measurable yet).
    window_end_sample is the last sample the features needed (the step's end, or its rebound window's)."""
    verdict = cell.verdict(model.classes)
    probs = verdict["probs"] or {c: round(1.0 / len(model.classes), PROB_DIGITS) for c in model.classes}
    cell_features = cell.evidence.reported_features() if cell.evidence is not None else {}
    return {
        "schema": LABEL_SCHEMA, "headstage": hs.number, "seq": hs.out_seq, "cell_id": cell.cell_id,
        "stim_onset_sample": stim.onset, "window_end_sample": stim.needed_end - 1,
        "label": max(probs, key=probs.get), "probs": probs, "protocol": "long_step",
        "features": {"step": step.summary(), "cell": cell_features}, "cell": verdict,
        "model": {"name": model.name, "sha256": model.sha256},
        "latency_ms": {k: round(v, 3) for k, v in latency_ms.items()}, "late": latency_ms["process"] > budget_ms,
        "envelope": "inside", "uncertain": verdict["uncertain"],
        "rig": {"fs": hs.fs, "filter_hz": hs.rig.filter_hz if hs.rig else None,
                "temperature_c": hs.rig.temperature_c if hs.rig else None, "warp": hs.warp},
    }


def build_skip(hs, stim, cell_id, reason: str, detail: str) -> dict:
    """A `skip` for a stimulus that gets no label (reasons: no_spike, qc, gap, late, shutdown)."""
    return {"schema": SKIP_SCHEMA, "headstage": hs.number, "seq": hs.out_seq, "cell_id": cell_id,
            "stim_onset_sample": stim.onset, "reason": reason, "detail": detail}


def build_heartbeat(engine) -> dict:
    """The periodic heartbeat: model, counters, per-headstage status."""
    classes = engine.model.classes
    now = time.time()
    return {"schema": HEARTBEAT_SCHEMA, "time": round(now, 3), "uptime_s": round(now - engine.started, 3),
            "budget_ms": engine.cfg.budget_ms,
            "model": {"name": engine.model.name, "sha256": engine.model.sha256, "classes": classes},
            "onsets": engine.cfg.onsets, "malformed": engine.malformed,
            "refused": {kind: dict(counts) for kind, counts in engine.refused.items()}, "primes": engine.batch.primes,
            "sources": engine.source_status,
            "headstages": {str(k): hs.status(classes) for k, hs in engine.headstages.items()}}
