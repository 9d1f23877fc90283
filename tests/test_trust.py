"""rtclassify.model.trust: the second reading of a window whose temperature is not declared, the
tempering of inputs outside the envelope, and `uncertain` under --min-confidence."""
import csv
import json

import numpy as np
import pytest

from rtclassify.dsp.temperature import warp_factor
from rtclassify.model.trust import DEFAULTS, TEMPERED_NOTE, Trust, is_uncertain, read_faster

L, ANCHOR = 150, 50  # the shipped window: 3 ms at 50 kHz, the peak 1 ms in


def gaussian_ap(width_samples: float) -> np.ndarray:
    t = np.arange(L) - ANCHOR
    return (-65.0 + 100.0 * np.exp(-0.5 * (t / width_samples) ** 2)).astype(np.float32)


def half_width(v: np.ndarray) -> float:
    """Samples above half the AP's height (linear between samples)."""
    half = (v.max() + v.min()) / 2
    fine = np.interp(np.arange(0, L - 1, 0.01), np.arange(L), v)
    return float((fine > half).sum() * 0.01)


def policy(share=0.25, outside=0.5, prior=(0.6, 0.4)):
    return Trust(prior=np.array(prior), cool_share=share, cool_warp=warp_factor(25.0), outside_prior_share=outside,
                 min_confidence=0.9)


def test_read_faster_narrows_about_the_peak_and_holds_the_edges():
    v = gaussian_ap(6.0)
    fast = read_faster(v, 1.61, ANCHOR)
    assert fast.shape == v.shape and fast.dtype == np.float32
    assert int(np.argmax(fast)) == ANCHOR
    assert half_width(fast) == pytest.approx(half_width(v) / 1.61, rel=0.03)
    assert fast[0] == pytest.approx(v[0]) and fast[-1] == pytest.approx(v[-1])  # beyond the ends: the end values
    assert np.array_equal(read_faster(v, 1.0, ANCHOR), v)


def test_only_undeclared_windows_are_read_twice_and_their_readings_mixed():
    trust = policy(share=0.25)
    windows = np.stack([gaussian_ap(6.0), gaussian_ap(9.0), gaussian_ap(4.0)])
    undeclared = np.array([True, False, True])
    rows = trust.windows_to_read(windows, undeclared, ANCHOR)
    assert rows.shape == (5, L)
    assert np.allclose(rows[3], read_faster(windows[0], trust.cool_warp, ANCHOR))
    assert np.allclose(rows[4], read_faster(windows[2], trust.cool_warp, ANCHOR))

    def run(w):  # "Exc" for wide APs, "Inh" for narrow ones, by the half width
        p_inh = np.array([1.0 if half_width(x) < 12 else 0.0 for x in w])
        return np.stack([1 - p_inh, p_inh], axis=1)

    probs = trust.read(run, windows, undeclared, ANCHOR)
    # window 0 (half width 14 samples) reads Exc at 34 °C and Inh (8.7) at 25 °C: mixed 0.75 / 0.25
    assert probs[0] == pytest.approx([0.75, 0.25])
    assert probs[1] == pytest.approx([1.0, 0.0])  # declared: one reading
    assert probs[2] == pytest.approx([0.0, 1.0])  # both readings agree: unchanged
    assert Trust.read(policy(share=0.0), run, windows, undeclared, ANCHOR)[0] == pytest.approx([1.0, 0.0])


def test_outside_inputs_are_never_given_with_top_confidence():
    trust = policy(outside=0.5, prior=(0.6, 0.4))
    tempered = trust.temper(np.array([0.999, 0.001]))
    assert tempered.sum() == pytest.approx(1.0)
    assert tempered.max() < 0.9 and int(np.argmax(tempered)) == 0
    assert np.allclose(trust.temper(np.array([[0.6, 0.4]])), [[0.6, 0.4]])  # the prior itself is a fixed point
    assert is_uncertain(tempered, 0.9) and not is_uncertain([0.95, 0.05], 0.9)


def test_the_card_sets_the_policy_and_the_prior_is_the_training_frequency():
    card = {"classes": ["Exc", "Inh"], "training_data": {"per_class": {"Exc": 300, "Inh": 100}},
            "trust": {"undeclared_temperature": {"temperature_c": 28.0, "share": 0.3}, "min_confidence": 0.8}}
    trust = Trust.from_card(card)
    assert np.allclose(trust.prior, [0.75, 0.25])
    assert trust.cool_share == 0.3 and trust.cool_warp == warp_factor(28.0) and trust.min_confidence == 0.8
    assert trust.outside_prior_share == DEFAULTS["outside_prior_share"]
    bare = Trust.from_card({"classes": ["a", "b", "c"]})  # an older file: defaults, a uniform prior
    assert np.allclose(bare.prior, 1 / 3) and bare.cool_share == DEFAULTS["undeclared_temperature"]["share"]


@pytest.fixture
def shipped():
    from rtclassify.model.file_format import load_model

    return load_model("broad2")


def write_folder(folder, rows, window):
    (folder / "traces").mkdir(parents=True)
    with open(folder / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["specimen_id", "fs_hz", "temperature_c", "filter_hz"])
        for sid, temperature, filt in rows:
            np.save(folder / "traces" / f"{sid}.npy", window)
            w.writerow([sid, 50000, temperature, filt])


def test_predict_reads_an_undeclared_row_twice_and_tempers_an_outside_one(shipped, spikes_dir, tmp_path):
    from rtclassify.formats.spike_folder import CellRow, load_cell_window
    from rtclassify.offline.predict import classify_windows, predict_folder

    with open(spikes_dir / "cells.csv") as f:  # a cell stored at 50 kHz, as the rows below say
        sid = next(r["specimen_id"] for r in csv.DictReader(f) if float(r["fs_hz"]) == 50000)
    trace = np.load(spikes_dir / "traces" / f"{sid}.npy").astype(np.float32)
    write_folder(tmp_path, [("declared", 34, ""), ("undeclared", "", ""), ("outside", 34, 1000)], trace)
    out = tmp_path / "p.csv"
    predict_folder(shipped, tmp_path, out, min_confidence=0.99)
    got = {r["specimen_id"]: r for r in csv.DictReader(open(out))}
    window = load_cell_window(tmp_path, CellRow("declared", 50000.0, {}), shipped.spec)
    one = classify_windows(shipped, window[None])[0]
    both = shipped.trust.read(lambda w: classify_windows(shipped, w), window[None], [True], shipped.spec.n_before)[0]
    p = {k: np.array([float(got[k][f"p_{c}"]) for c in shipped.classes]) for k in got}
    assert np.allclose(p["declared"], shipped.trust.settle(one, False), atol=1e-5)  # held to its class's ceiling
    assert np.allclose(p["undeclared"], shipped.trust.settle(both, False), atol=1e-5)
    assert np.allclose(p["outside"], shipped.trust.settle(one, True), atol=1e-5)
    assert np.allclose(shipped.trust.settle(one, True), shipped.trust.temper(one), atol=1e-5)  # under any ceiling
    assert got["outside"]["envelope"].startswith("outside: filter 1000 Hz")
    assert got["outside"]["envelope"].endswith(TEMPERED_NOTE)
    assert got["declared"]["uncertain"] == "true"  # 0.99 asked: above every broad2 ceiling
    assert got["outside"]["uncertain"] == "true"


def test_sweeps_says_uncertain_under_the_confidence_asked_for_and_tempers_long_step_aps():
    """`sweeps --steps any --min-confidence P` on a real step family: the first AP of each long step is
    outside the training protocol, so its probabilities are tempered (never >= 0.9); P = 1 makes every
    label uncertain, P = 0 none."""
    from click.testing import CliRunner

    from rtclassify.cli import main
    from tests.conftest import SHARED

    path = SHARED / "abf-recordings" / "171116sh_0018.abf"
    if not path.exists():
        pytest.skip(f"{path} not here (../shared/data holds the real recordings)")
    for asked, expected in (("1", True), ("0", False)):
        res = CliRunner().invoke(main, ["sweeps", str(path), "--model", "broad2", "--steps", "any",
                                        "--min-confidence", asked])
        assert res.exit_code == 0, res.output
        labelled = [x for x in map(json.loads, res.output.splitlines()) if "label" in x]
        assert len(labelled) >= 5, res.output
        assert all(x["uncertain"] is expected for x in labelled)
        assert all(x["envelope"].endswith(TEMPERED_NOTE) for x in labelled)
        assert all(max(x["p_Exc"], x["p_Inh"]) < 0.9 for x in labelled)


def test_the_shape_envelope_calls_unlike_windows_unlike_and_held_out_ones_alike():
    """Windows of a family of APs (widths, heights, offsets varied): held-out ones of the same family score
    under the threshold (but for the quantile's share), a flat line, an inverted AP and a doublet far above."""
    from rtclassify.model.envelope import judge, shape_score
    from trainer.trust import fit_shape

    rng = np.random.default_rng(0)

    def family(n):
        t = np.arange(L) - ANCHOR
        width = rng.uniform(3, 9, (n, 1))
        height = rng.uniform(70, 110, (n, 1))
        rest = rng.uniform(-75, -55, (n, 1))
        ahp = rng.uniform(0, 10, (n, 1)) * (t > 0) * (1 - np.exp(-np.clip(t, 0, None) / 20.0))
        return rest + height * np.exp(-0.5 * (t / width) ** 2) - ahp + rng.normal(0, 0.3, (n, L))

    shape = fit_shape(family(2000), family(1000), k=6, quantile=0.99)
    held = shape_score(shape, family(1000))
    assert 0.002 <= np.mean(held > shape["threshold"]) <= 0.03
    t = np.arange(L) - ANCHOR
    doublet = -65 + 90 * (np.exp(-0.5 * (t / 4) ** 2) + np.exp(-0.5 * ((t - 40) / 4) ** 2))
    odd = np.stack([np.full(L, -70.0), -130 - gaussian_ap(6.0), doublet])
    assert np.all(shape_score(shape, odd) > 3 * shape["threshold"])
    envelope = {"fs_hz": [1e4, 2e5], "filter_hz_min": 2e3, "temperature_c": [22, 34], "window_start_mv": [-90, 0],
                "peak_mv": [-40, 70], "shape": shape}
    assert np.mean([judge(envelope, 50_000.0, window=w) == "inside" for w in family(100)]) >= 0.95
    assert "shape is unlike every training window" in judge(envelope, 50_000.0, window=doublet)


def test_min_confidence_is_the_lowest_threshold_whose_kept_answers_meet_the_error_target():
    from trainer.calibration import confident_wrong, risk_coverage
    from trainer.trust import MAX_MIN_CONFIDENCE, choose_min_confidence

    # 100 answers at top p 0.95 (2 wrong), 100 at 0.75 (20 wrong), 100 at 0.55 (40 wrong)
    top = np.repeat([0.95, 0.75, 0.55], 100)
    probs = np.stack([top, 1 - top], axis=1)
    y = np.zeros(300, int)
    y[[0, 1]] = 1
    y[100:120] = 1
    y[200:240] = 1
    assert confident_wrong(probs, y) == {"answers": 100, "wrong": 2, "rate": 0.02}
    curve = risk_coverage(probs, y, np.array([0.5, 0.7, 0.9]))
    assert curve["coverage"] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert curve["error"] == pytest.approx([62 / 300, 22 / 200, 2 / 100])
    chosen, _ = choose_min_confidence(probs, y, target=0.03)
    assert 0.75 < chosen <= 0.95
    assert choose_min_confidence(probs, y, target=0.12)[0] <= 0.75
    assert choose_min_confidence(probs, 1 - y, target=0.03)[0] == MAX_MIN_CONFIDENCE  # never that good


def test_the_daemon_reads_an_undeclared_rig_twice_and_a_declared_one_once():
    """Same sweep on two headstages: one whose rig declares 34 °C gets the network's probabilities of its
    window, the other (no temperature) the two readings mixed; --min-confidence 1 makes both uncertain."""
    from helpers import spike_sweep
    from rtclassify.daemon.engine import Engine, ServeConfig
    from rtclassify.model.envelope import RigInfo
    from rtclassify.model.file_format import load_model

    model = load_model("genetic5")
    out = []
    eng = Engine(model, ServeConfig(shed_factor=1e9, include_window=True, min_confidence=1.0),
                 lambda topic, msg: out.append((topic, msg)))
    fs = 50_000.0
    v, i = spike_sweep(fs=fs, n=4000)
    for hs, rig in ((0, RigInfo(temperature_c=34.0)), (1, None)):  # as a ZMQ header declares it
        for a in range(0, len(v), 50):
            eng.on_data(hs, a, None, fs, np.column_stack([v[a:a + 50], i[a:a + 50]]), rig=rig)
            eng.classify_ready()
    labels = {m["headstage"]: m for t, m in out if t == "label"}
    assert set(labels) == {0, 1}
    for hs, label in labels.items():
        window = np.array(label["window"]["v_mv"], np.float32)[None]
        read = (model.run(window)[0] if hs == 0 else model.trust.read(model.run, window, [True], model.spec.n_before)[0])
        expected = model.trust.settle(read, label["envelope"] != "inside")  # the per-class temperature last
        got = np.array([label["probs"][c] for c in model.classes])
        assert np.abs(got - expected).max() < 2e-3  # the window travels with 2 decimals
        assert label["uncertain"] is True and label["envelope"] == "inside"
    assert labels[0]["rig"]["temperature_c"] == 34.0 and labels[1]["rig"]["temperature_c"] is None


def test_a_clipped_ap_in_a_sweep_or_a_stream_gets_a_qc_skip_not_a_label():
    """The AP check's clip rule where the detector finds the AP (sweeps, watch, serve): a spike cut flat
    at -20 mV is refused with the reason, the same spike whole is labelled."""
    from helpers import spike_sweep
    from rtclassify.daemon.engine import Engine, ServeConfig
    from rtclassify.dsp.windows import WindowSpec
    from rtclassify.model.file_format import load_model
    from rtclassify.offline.sweep_windows import evoked_window

    fs = 50_000.0
    v, i = spike_sweep(fs=fs, n=4000, peak_delay_ms=4.5)  # the peak clear of the pulse end's artefact
    clipped = np.minimum(v, -20.0)

    class Sweep:
        response, fs = clipped, 50_000.0

    assert "clipped" in evoked_window(Sweep, 500, 650, WindowSpec())
    Sweep.response = v
    assert not isinstance(evoked_window(Sweep, 500, 650, WindowSpec()), str)
    model = load_model("broad2")
    out = []
    eng = Engine(model, ServeConfig(shed_factor=1e9), lambda topic, msg: out.append((topic, msg)))
    for hs, trace in ((0, clipped), (1, v)):
        for a in range(0, len(v), 50):
            eng.on_data(hs, a, None, fs, np.column_stack([trace[a:a + 50], i[a:a + 50]]))
            eng.classify_ready()
    answers = {m["headstage"]: (t, m) for t, m in out if t in ("label", "skip")}
    assert answers[0][0] == "skip" and answers[0][1]["reason"] == "qc" and "clipped" in answers[0][1]["detail"]
    assert answers[1][0] == "label"


def test_a_ceiling_holds_each_top_probability_to_its_class_and_never_changes_a_decision():
    from rtclassify.model.trust import hold_to_ceiling

    rng = np.random.default_rng(4)
    logits = rng.normal(0, 4, (4000, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ceiling = np.array([0.99, 0.8, 0.5])
    held = hold_to_ceiling(probs, ceiling)
    top = probs.argmax(axis=1)
    assert np.array_equal(held.argmax(axis=1), top)  # 0.5: a tie at most, never a change
    assert np.allclose(held.sum(axis=1), 1.0)
    assert np.all(held.max(axis=1) <= ceiling[top] + 1e-12)
    under = probs.max(axis=1) <= ceiling[top]
    assert under.any() and (~under).any() and np.array_equal(held[under], probs[under])  # untouched below
    # the excess goes to the other classes in proportion: their ratio is kept
    i = int(np.flatnonzero(~under & (top == 1))[0])
    assert held[i, 0] / held[i, 2] == pytest.approx(probs[i, 0] / probs[i, 2])
    for row in probs[:50]:  # one answer (the daemon's path) is the same as a row of many
        assert hold_to_ceiling(row, ceiling) == pytest.approx(held[np.flatnonzero((probs == row).all(axis=1))[0]])
    assert hold_to_ceiling(np.array([1.0, 0.0, 0.0]), np.array([0.9, 1, 1])) == pytest.approx([0.9, 0.05, 0.05])
    assert hold_to_ceiling(np.array([[1.0, 0.0, 0.0]]), np.array([0.9, 1, 1]))[0] == pytest.approx([0.9, 0.05, 0.05])


def test_settle_tempers_outside_rows_then_holds_every_row_to_its_ceiling():
    trust = Trust(prior=np.array([0.5, 0.5]), cool_share=0.2, cool_warp=1.61, outside_prior_share=0.5,
                  min_confidence=0.9, class_ceiling=np.array([0.95, 0.85]))
    p = np.array([[0.99, 0.01], [0.99, 0.01], [0.02, 0.98], [0.1, 0.9], [0.2, 0.8]])
    got = trust.settle(p, np.array([False, True, False, False, False]))
    assert got[0] == pytest.approx([0.95, 0.05])  # held
    assert got[1] == pytest.approx([0.745, 0.255])  # tempered (0.5 * 0.99 + 0.25), already under its ceiling
    assert got[2] == pytest.approx([0.15, 0.85]) and got[3] == pytest.approx([0.15, 0.85])
    assert got[4] == pytest.approx(p[4])  # under the ceiling: as read
    assert trust.settle(p[0], False) == pytest.approx(got[0]) and trust.settle(p[1], True) == pytest.approx(got[1])
    assert trust.answer(p[2], "inside")[0] == pytest.approx(got[2])
    assert trust.settle(p, False) == pytest.approx(trust.settle(p, np.zeros(len(p), bool)))  # one flag for all rows
    assert trust.settle(p, True) == pytest.approx(trust.settle(p, np.ones(len(p), bool)))


def test_class_ceilings_are_the_precision_vouched_for_of_each_class_s_sure_answers():
    from trainer.trust import CEILING_MIN_ANSWERS, class_ceilings

    rng = np.random.default_rng(2)
    n = 2000
    y = rng.integers(0, 3, n)
    predicted = y.copy()
    # a quarter of class 0 answered 1 (class 1's sure answers right 80% of the time), 1% of class 1
    # answered 0 (class 0's ~99%); class 2 is never answered surely
    predicted[(y == 0) & (rng.random(n) < 0.25)] = 1
    predicted[(y == 1) & (rng.random(n) < 0.01)] = 0
    probs = np.full((n, 3), 0.02)
    probs[np.arange(n), predicted] = 0.96
    probs[predicted == 2] = [0.3, 0.3, 0.4]
    ceiling, rows = class_ceilings(probs, y)
    precision = [rows[c]["right"] / rows[c]["answers"] for c in (0, 1)]
    assert 0.97 < precision[0] and 0.75 < precision[1] < 0.85
    assert precision[0] - 0.02 < ceiling[0] < precision[0] and precision[1] - 0.05 < ceiling[1] < precision[1]
    assert ceiling[2] == 1.0 and rows[2]["answers"] == 0  # nothing to measure: no ceiling
    few = class_ceilings(probs[:CEILING_MIN_ANSWERS - 1], y[:CEILING_MIN_ANSWERS - 1])[0]
    assert np.all(few == 1.0)
    always_wrong = class_ceilings(np.tile([0.95, 0.05], (50, 1)), np.ones(50, int))[0]
    assert always_wrong[0] == 0.5  # the floor: a ceiling may not change a decision


def test_a_card_s_ceilings_are_checked_and_loaded():
    from rtclassify.model.file_format import ModelFileError

    card = {"classes": ["Exc", "Inh"], "trust": {"class_ceiling": [0.99, 0.9]}}
    assert Trust.from_card(card).class_ceiling == pytest.approx([0.99, 0.9])
    assert Trust.from_card({"classes": ["Exc", "Inh"]}).class_ceiling is None
    for bad in ([0.99], [0.99, 0.4], [0.99, 1.2]):
        with pytest.raises(ModelFileError, match="class_ceiling"):
            Trust.from_card({"classes": ["Exc", "Inh"], "trust": {"class_ceiling": bad}})


def test_a_verdict_from_short_squares_alone_is_held_as_its_labels_are():
    from rtclassify.verdict.cell import CellEvidence

    held = CellEvidence(("Exc", "Inh"), None, ap_ceiling=np.array([0.99, 0.8]))
    free = CellEvidence(("Exc", "Inh"), None)
    for p in ([0.02, 0.98], [0.05, 0.95], [0.01, 0.99]):  # one cell's APs, each sure of Inh
        held.add_ap(p)
        free.add_ap(p)
    assert free.verdict().probs["Inh"] > 0.95
    v = held.verdict()
    assert v.label == "Inh" and v.probs["Inh"] == pytest.approx(0.8)
