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
    assert np.allclose(p["declared"], one, atol=1e-5)
    assert np.allclose(p["undeclared"], both, atol=1e-5)
    assert np.allclose(p["outside"], shipped.trust.temper(one), atol=1e-5)
    assert got["outside"]["envelope"].startswith("outside: filter 1000 Hz")
    assert got["outside"]["envelope"].endswith(TEMPERED_NOTE)
    assert got["declared"]["uncertain"] == str(bool(one.max() < 0.99)).lower()
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
