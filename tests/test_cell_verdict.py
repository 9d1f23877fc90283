"""Long steps and the cell verdict: step-family features against signals of known properties, the
served trees against scikit-learn, the joining rule, and real files of other labs end to end."""
import csv
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from rtclassify.features.family import family_features, warp_features
from rtclassify.features.step import measure_step
from rtclassify.verdict.combine import Rule, join_log_probs, verdict
from rtclassify.verdict.trees import probabilities
from tests.conftest import SHARED as SHARED_DATA

FS = 20_000.0
LAB = SHARED_DATA / "lab-cells"
ABF = SHARED_DATA / "abf-recordings"


def sweeps_lines(path, model: str) -> list[dict]:
    """`rtclassify sweeps PATH --model MODEL`'s JSON lines (its exit status checked)."""
    from rtclassify.cli import main

    out = CliRunner().invoke(main, ["sweeps", str(path), "--model", model])
    assert out.exit_code == 0, out.output
    return [json.loads(x) for x in out.output.splitlines()]


def passive_step(amp_pa, r_mohm=200.0, tau_ms=20.0, sag=0.0, vrest=-70.0, fs=FS, onset_s=0.2, dur_s=0.6, total_s=1.2,
                 noise_mv=0.05, seed=0):
    """(v mV, i pA, onset, offset): an RC membrane's response to a step, with an optional sag that
    relaxes a fraction `sag` of the peak deflection back over 80 ms (an h-current's signature)."""
    n = int(total_s * fs)
    t = np.arange(n) / fs
    onset, offset = int(onset_s * fs), int((onset_s + dur_s) * fs)
    i = np.zeros(n)
    i[onset:offset] = amp_pa
    dv = amp_pa * r_mohm * 1e-3  # pA x MΩ = µV -> mV
    v = np.full(n, vrest)
    ts = t[onset:offset] - t[onset]
    charge = 1 - np.exp(-ts / (tau_ms / 1e3))
    relax = 1 - sag * (1 - np.exp(-ts / 0.08)) * (1 - np.exp(-ts / 0.01))
    v[onset:offset] = vrest + dv * charge * relax
    v[offset:] = v[offset - 1] + (vrest - v[offset - 1]) * (1 - np.exp(-(t[offset:] - t[offset]) / (tau_ms / 1e3)))
    v += np.random.default_rng(seed).normal(0, noise_mv, n)
    return v, i, onset, offset


def add_spikes(v, times_s, fs=FS, height=100.0):
    """APs at the given threshold times: a 1 ms rise (its slope greatest half-way, as an AP's), a 2 ms
    fall to an AHP 15% of `height` deep and a 5 ms recovery from it, added to the local V (mV)."""
    v = v.copy()
    for t0 in times_s:
        k = int(t0 * fs)
        rise = (1 - np.cos(np.pi * np.linspace(0, 1, int(0.001 * fs)))) / 2
        fall = np.linspace(1, -0.15, int(0.002 * fs))
        recover = -0.15 * np.exp(-np.arange(int(0.02 * fs)) / (0.005 * fs))
        shape = np.concatenate([rise, fall, recover]) * height
        v[k:k + len(shape)] += shape
    return v


def test_a_passive_membranes_tau_resistance_and_sag_are_measured_as_built():
    steps = [measure_step(*passive_step(a, r_mohm=200.0, tau_ms=20.0)[:2], FS, *passive_step(a)[2:])
             for a in (-100.0, -75.0, -50.0, -25.0)]
    f = family_features(steps)
    assert f["tau"] == pytest.approx(20.0, rel=0.1)
    assert f["ri"] == pytest.approx(200.0, rel=0.05)
    assert f["vrest"] == pytest.approx(-70.0, abs=0.1)
    assert abs(f["sag"]) < 0.03  # no sag was built in
    v, i, a, b = passive_step(-100.0, sag=0.3)
    clean = passive_step(-100.0, sag=0.3, noise_mv=0.0)[0]
    steady = clean[b - int(0.03 * FS):b].mean()
    built = (clean[a:b].min() - steady) / (clean[a:b].min() - clean[a - 1])  # IPFX's sag of the noise-free curve
    assert built > 0.1  # a clear sag
    assert measure_step(v, i, FS, a, b).sag == pytest.approx(built, abs=0.02)


def test_firing_features_follow_the_allen_definitions_on_known_spike_times():
    onset_s, fam = 0.2, []
    trains = {50.0: [], 100.0: [0.25, 0.45], 150.0: [0.22, 0.27, 0.34, 0.43, 0.54], 200.0: [0.21, 0.24, 0.28, 0.33,
                                                                                           0.39, 0.46, 0.54, 0.63]}
    for amp, times in trains.items():
        v, i, a, b = passive_step(amp, r_mohm=100.0)
        fam.append(measure_step(add_spikes(v, times), i, FS, a, b))
    f = family_features(fam)
    assert f["threshold_i_long_square"] == 100.0  # the smallest step that fired
    assert f["latency"] == pytest.approx(0.25 - onset_s, abs=1e-3)
    # hero: first step 39-61 pA above rheobase (150 pA): ISIs 50, 70, 90, 110 ms
    isis = np.diff(trains[150.0]) * 1e3
    assert f["avg_isi"] == pytest.approx(isis.mean(), abs=0.5)
    norm = (isis[1:] - isis[:-1]) / (isis[1:] + isis[:-1])
    assert f["adaptation"] == pytest.approx(norm.mean(), abs=0.01)
    rates = [len(trains[a]) / 0.6 for a in (100.0, 150.0, 200.0)]
    assert f["f_i_curve_slope"] == pytest.approx(np.polyfit([100, 150, 200], rates, 1)[0], rel=0.01)
    assert f["peak_v_long_square"] > 0 and f["upstroke_downstroke_ratio_long_square"] > 1


def test_missing_pieces_leave_features_missing_and_never_fail():
    v, i, a, b = passive_step(150.0, r_mohm=100.0)
    one = family_features([measure_step(add_spikes(v, [0.3, 0.4, 0.5]), i, FS, a, b)])
    assert math.isnan(one["f_i_curve_slope"])  # a single amplitude
    assert math.isnan(one["sag"]) and math.isnan(one["tau"]) and math.isnan(one["ri"])  # no hyperpolarising step
    assert one["threshold_i_long_square"] == 150.0
    assert all(math.isnan(x) for k, x in family_features([]).items() if k != "ap_shape_from")


def test_time_features_are_read_faster_at_a_declared_room_temperature():
    from rtclassify.dsp.temperature import warp_factor

    w = warp_factor(24.0)
    warped = warp_features({"latency": 0.05, "avg_isi": 40.0, "tau": 30.0, "f_i_curve_slope": 0.2, "sag": 0.1}, w)
    assert w > 1.5
    assert warped["latency"] == pytest.approx(0.05 / w) and warped["tau"] == pytest.approx(30.0 / w)
    assert warped["f_i_curve_slope"] == pytest.approx(0.2 * w) and warped["sag"] == 0.1


@pytest.mark.parametrize("n_classes", [2, 5])
def test_served_trees_give_scikit_learns_probabilities_with_missing_values(n_classes):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from trainer.cell_model import export_trees

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (n_classes == 5) * (x[:, 2] > 0.5) * 2 + (n_classes == 5) * (x[:, 3] > 1)
    x[rng.random(x.shape) < 0.2] = np.nan
    clf = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    test = rng.normal(size=(200, 6))
    test[rng.random(test.shape) < 0.3] = np.nan
    np.testing.assert_allclose(probabilities(export_trees(clf).raw(test)), clf.predict_proba(test), atol=1e-9)


def test_the_joining_rule_takes_one_source_as_it_is_and_says_when_sources_conflict():
    prior = np.array([0.5, 0.5])
    rule = Rule(0.75, 0.75, 0.6)
    ap = np.array([[0.8, 0.2]])
    np.testing.assert_allclose(join_log_probs(ap, None, prior, rule), [0.8, 0.2], atol=1e-6)
    agree = verdict(("Exc", "Inh"), ap, np.array([0.9, 0.1]), prior, rule, 3)
    assert agree.label == "Exc" and agree.probs["Exc"] > 0.9 and not agree.uncertain
    clash = verdict(("Exc", "Inh"), np.array([[0.9, 0.1]]), np.array([0.1, 0.9]), prior, rule, 3)
    assert clash.label is None and clash.uncertain and clash.reason == "conflict"
    nothing = verdict(("Exc", "Inh"), None, None, prior, rule)
    assert nothing.label is None and nothing.uncertain and nothing.evidence == {"short_square": 0, "long_step": 0,
                                                                               "features": 0}


def test_a_deep_hyperpolarising_step_is_still_a_membrane_potential():
    from rtclassify.formats.abf import membrane_potential_refusal

    v = np.full(1000, -131.0)
    v[:100] = -65.0
    assert membrane_potential_refusal(v, "Vm", "mV") is None


@pytest.mark.data
def test_a_pyramidal_cell_whose_first_channel_is_a_current_monitor_gets_an_exc_verdict():
    path = LAB / "ferguson2015_PYR5_rebound.abf"
    if not path.is_file():
        pytest.skip(f"{path} absent: the shared lab-cells recordings are needed")
    lines = sweeps_lines(path, "broad2")
    sweeps = [x for x in lines if "sweep" in x]
    assert all(x["clamp_mode"] == "current" for x in sweeps)  # protocol cc-25pA1s, not the Imemb channel's units
    assert {x["channel"] for x in sweeps if "refusal" in x} == {0}  # Imemb: the current monitor
    assert all(x["protocol"] == "long_step" for x in sweeps if x["channel"] == 1)
    assert all("temperature_c" in x["rig"] for x in sweeps)
    verdicts = [x for x in lines if "verdict" in x]
    assert [v["channel"] for v in verdicts] == [1]
    assert verdicts[0]["verdict"]["label"] == "Exc"
    assert verdicts[0]["verdict"]["evidence"]["long_step"] == 10
    assert verdicts[0]["features"]["tau"] is not None and verdicts[0]["features"]["ap_shape_from"] == "rebound"


@pytest.mark.data
def test_a_voltage_named_channel_holding_action_potentials_is_current_clamp():
    path = ABF / "18425108_abf1.abf"
    if not path.is_file():
        pytest.skip(f"{path} absent: the shared ABF recordings are needed")
    from rtclassify.formats.recordings import read_recording

    sweeps = read_recording(path)
    assert {s.clamp_mode for s in sweeps} == {"current"}
    vm = [s for s in sweeps if s.channel == 1]
    assert vm and all(s.refusal is None for s in vm)


@pytest.mark.data
def test_every_shared_step_file_reaches_one_verdict_per_cell_with_its_features():
    for name in ("171116sh_0018.abf", "17o05028_ic_steps.abf", "File_axon_5.abf"):
        path = ABF / name
        if not path.is_file():
            pytest.skip(f"{path} absent: the shared ABF recordings are needed")
        lines = sweeps_lines(path, "genetic5")
        verdicts = [x for x in lines if "verdict" in x]
        assert len(verdicts) == 1 and verdicts[0]["source_file"] == str(path)
        v = verdicts[0]["verdict"]
        assert v["evidence"]["long_step"] > 0 and set(v["probs"]) == {"Exc", "Ndnf", "Pvalb", "Sst", "Vip"}
        assert (v["label"] is None) == v["uncertain"]
        assert verdicts[0]["features"]["threshold_i_long_square"] is not None


@pytest.mark.data
def test_predict_reads_feature_columns_and_classifies_a_row_without_its_trace(tmp_path):
    spikes, meta = SHARED_DATA / "allen-ctdb-spikes", SHARED_DATA / "allen-ctdb-metadata" / "cell_features.csv"
    if not meta.is_file():
        pytest.skip(f"{meta} absent: the shared Allen tables are needed")
    import pandas as pd

    from rtclassify.cli import main

    cells = pd.read_csv(spikes / "cells.csv")
    strict = {"Pvalb-IRES-Cre": "Pvalb", "Sst-IRES-Cre": "Sst", "Vip-IRES-Cre": "Vip", "Ndnf-IRES2-dgCre": "Ndnf"}
    cells = cells[cells.line_name.isin(strict)].groupby("line_name").head(6)
    table = cells[["specimen_id", "fs_hz"]].merge(pd.read_csv(meta), on="specimen_id")
    (tmp_path / "traces").mkdir()
    keep = set(table.specimen_id[::2])
    for s in keep:
        shutil.copy(spikes / "traces" / f"{s}.npy", tmp_path / "traces" / f"{s}.npy")
    empty = pd.DataFrame([{"specimen_id": 1, "fs_hz": 50000}])  # neither trace nor features
    pd.concat([table, empty]).to_csv(tmp_path / "cells.csv", index=False)
    out = CliRunner().invoke(main, ["predict", "--model", "genetic5", "--data", str(tmp_path), "--out",
                                    str(tmp_path / "p.csv")])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == len(table) + 1
    for r in rows[:-1]:
        assert r["label"] and r["error"] == ""
        assert r["evidence"] == ("ap+features" if int(r["specimen_id"]) in keep else "features")
    assert rows[-1]["label"] == "" and "no per-cell features" in rows[-1]["error"] and "1.npy" in rows[-1]["error"]
    truth = dict(zip(cells.specimen_id.astype(str), cells.line_name.map(strict)))
    right = [r["label"] == truth[r["specimen_id"]] for r in rows[:-1] if r["evidence"] == "features"]
    assert np.mean(right) >= 0.6  # four interneuron classes from features alone: chance is 0.25


@pytest.mark.data
@pytest.mark.parametrize("cell", ["001_150216_A1_CA1py_MPG", "001_150218_A1_CA1py_MPG"])
def test_a_folder_of_igor_waves_is_one_cell_its_v_and_i_paired_by_sweep_number(cell):
    folder = LAB / "igor" / cell
    if not folder.is_dir():
        pytest.skip(f"{folder} absent: the shared lab-cells recordings are needed")
    from rtclassify.formats.recordings import read_recording

    sweeps = read_recording(folder)
    numbers = sorted({p.name.rsplit("_", 1)[1] for p in folder.glob("*.ibw")})
    assert len(sweeps) == len(numbers) == 2
    for s in sweeps:
        assert s.channel == 0 and s.channel_name == "ch2" and s.refusal is None
        assert -90 < np.median(s.response) < 0 and s.fs == 10_000.0  # volts read as mV
        assert s.command is not None and len(s.command) == len(s.response)
    lines = sweeps_lines(folder, "broad2")
    steps = [f for x in lines if x.get("protocol") == "long_step" for f in x["features"]]
    assert len(steps) == 2 and all(f["stim_amp"] > 100 and f["n_spikes"] > 5 for f in steps)
    assert abs(steps[0]["stim_amp"] - steps[1]["stim_amp"]) > 50  # two amplitudes per cell
    assert lines[-1]["verdict"]["label"] == "Exc"  # rat CA1 pyramidal cells


def test_a_folder_without_igor_waves_is_refused_with_the_reason(tmp_path):
    from rtclassify.cli import main

    out = CliRunner().invoke(main, ["sweeps", str(tmp_path)])
    assert out.exit_code != 0 and "Igor waves" in out.output and "Traceback" not in out.output
