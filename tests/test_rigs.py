"""Rigs other than Allen's: the temperature warp, the acquisition envelope, rig fields on the wire and
in LSL metadata, windows through simulated acquisition chains, and the same warp offline and live."""
import csv
import math
import signal
import time

import numpy as np
import pytest

from helpers import Subscriber, acquisition_pub, free_endpoint, spike_sweep
from rtclassify.dsp.temperature import Q10, WIDTH_RATIO_25C, check_temperature, warp_factor, width_ratio
from rtclassify.dsp.windows import WindowSpec, samples_at, segment_samples, window_from_segment, window_from_trace
from rtclassify.model.envelope import RigInfo, judge
from rtclassify.transport.wire import encode_data, parse_data

SPEC = WindowSpec()
ENVELOPE = {"fs_hz": [10_000.0, 200_000.0], "filter_hz_min": 2_000.0, "temperature_c": [22.0, 34.0],
            "window_start_mv": [-80, -20], "peak_mv": [-25, 65]}


def gaussian_ap(fs, n_ms=10.0, peak_ms=5.0, width_ms=0.3, stretch=1.0):
    """(n,) mV: a two-sided Gaussian AP (upstroke width_ms, decay 2.3x) on -65 mV, widened by stretch."""
    t = np.arange(int(n_ms * fs / 1000)) / fs * 1000
    w = width_ms * stretch
    return -65 + np.where(t < peak_ms, 95 * np.exp(-((t - peak_ms) / w) ** 2), 95 * np.exp(-((t - peak_ms) / (2.3 * w)) ** 2))


def test_the_warp_is_one_at_34_c_and_the_published_mean_ratio_at_25_c():
    assert warp_factor(34.0) == 1.0 and warp_factor(None) == 1.0 and warp_factor(math.nan) == 1.0
    mean_ratio = math.exp(np.mean(np.log(list(WIDTH_RATIO_25C.values()))))
    assert abs(warp_factor(25.0) - mean_ratio) < 0.01  # Q10 is fitted to the four published ratios
    assert 1.6 < Q10 < 1.8 and warp_factor(37.0) < 1.0
    assert width_ratio(WIDTH_RATIO_25C["Pvalb"], 25.0) == pytest.approx(0.60 / 0.44)
    assert check_temperature(25.0) is None and check_temperature(None) is None
    assert "°C" in check_temperature(77.0) and "°C" in check_temperature(298.15)


def test_window_from_trace_as_recorded_is_window_from_segment_exactly():
    for fs in (50_000.0, 200_000.0, 20_000.0):
        x = gaussian_ap(fs, n_ms=3.0, peak_ms=1.0)
        anchor = samples_at(1.0, fs)
        assert np.array_equal(window_from_trace(x, fs, anchor, SPEC), window_from_segment(x, fs, anchor, SPEC))


def test_a_warped_stored_trace_matches_the_warped_long_recording_where_both_hold_data():
    fs, warp = 50_000.0, warp_factor(25.0)
    long = gaussian_ap(fs, stretch=warp)  # 10 ms, peak at 5 ms
    peak = samples_at(5.0, fs)
    stored = long[peak - samples_at(1.0, fs):peak + samples_at(2.0, fs)]  # what a cells.csv folder holds
    full = window_from_trace(long, fs, peak, SPEC, warp)  # the daemon: the whole AP in its buffer
    short = window_from_trace(stored, fs, samples_at(1.0, fs), SPEC, warp)
    unwarped = window_from_trace(long, fs, peak, SPEC)
    assert short.shape == full.shape == (SPEC.n_samples,)
    # the stored 3 ms cover 1/warp of the window around the peak: inside it the two agree
    core = slice(SPEC.n_before - int(SPEC.n_before / warp) + 8, SPEC.n_before + int(SPEC.n_after / warp) - 8)
    assert np.max(np.abs(short[core] - full[core])) < 0.05
    # and the warp undoes the widening: the warped AP is as narrow as the original
    original = window_from_trace(gaussian_ap(fs), fs, peak, SPEC)
    def width(w):
        return int(np.sum(w > w.min() + 0.5 * (w.max() - w.min())))
    assert abs(width(full) - width(original)) <= 1 < abs(width(unwarped) - width(original))


def test_judge_names_every_bound_an_input_breaks():
    ok = np.r_[np.full(50, -55.0), np.linspace(-55, 40, 50), np.linspace(40, -60, 50)]
    assert judge(ENVELOPE, 50_000.0, RigInfo(), ok) == "inside"
    assert judge(ENVELOPE, 20_000.0, RigInfo(filter_hz=5_000.0, temperature_c=25.0), ok) == "inside"
    low = judge(ENVELOPE, 10_000.0, RigInfo(filter_hz=1_000.0), ok)
    assert low.startswith("outside: ") and "filter 1000 Hz is below the validated 2000 Hz" in low
    assert "above the Nyquist" in judge(ENVELOPE, 10_000.0, RigInfo(filter_hz=8_000.0), ok)
    assert "temperature 37 °C" in judge(ENVELOPE, 50_000.0, RigInfo(temperature_c=37.0), ok)
    shifted = judge(ENVELOPE, 50_000.0, RigInfo(), ok + 40)
    assert "1 ms before the peak" in shifted and "AP peak 80.0 mV" in shifted
    assert judge(None, 50_000.0).startswith("outside: the model's card states no validated envelope")
    from rtclassify.model.envelope import describe

    assert describe(ENVELOPE) == "10-200 kHz, filters >= 2 kHz, 22-34 °C (assumed 34 °C when not declared)"


def test_a_header_declares_the_rig_and_a_bad_rig_field_loses_no_sample():
    v, i = np.linspace(-70, -60, 10), np.zeros(10)
    frames = encode_data("amp", 0, 0, 0, 20_000.0, v, i, RigInfo(filter_hz=5_000.0, temperature_c=24.5))
    c = parse_data(frames[1], frames[2])
    assert c.rig == RigInfo(filter_hz=5_000.0, temperature_c=24.5) and not c.rig_errors
    import json

    header = json.loads(frames[1])
    for bad in ({"temperature_c": 298.15}, {"temperature_c": "warm"}, {"filter_hz": -3.0}):
        c = parse_data(json.dumps({**header, **bad}).encode(), frames[2])
        assert len(c.samples) == 10 and c.rig_errors and c.rig_errors[0][0] == "rig_field"
        key = next(iter(bad))
        assert key in c.rig_errors[0][1] and getattr(c.rig, key) is None
    plain = parse_data(json.dumps({k: v for k, v in header.items() if k not in ("filter_hz", "temperature_c")}).encode(),
                       frames[2])
    assert plain.rig is None


def test_lsl_metadata_declares_the_rig():
    import pylsl

    from rtclassify.transport.lsl_source import read_rig_metadata

    info = pylsl.StreamInfo(f"rig-meta-{time.monotonic_ns()}", "EPhys", 2, 20_000.0, pylsl.cf_float32, "rig-test")
    acq = info.desc().append_child("acquisition")
    acq.append_child_value("filter_hz", "5000")
    acq.append_child_value("temperature_c", "24")
    outlet = pylsl.StreamOutlet(info)
    found = pylsl.resolve_byprop("name", info.name(), 1, 5.0)
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(5.0)
    assert read_rig_metadata(inlet, info.name()) == RigInfo(filter_hz=5_000.0, temperature_c=24.0)
    inlet.close_stream()
    del outlet


def test_the_daemon_reads_a_cool_rig_as_predict_does():
    """The live cut with --temperature-c 25 equals the offline one: window_from_trace with the warp."""
    from rtclassify.daemon.engine import Engine, ServeConfig
    from rtclassify.model.file_format import load_model

    model = load_model("genetic5")
    out = []
    eng = Engine(model, ServeConfig(shed_factor=1e9, include_window=True, rig=RigInfo(temperature_c=25.0)),
                 lambda topic, msg: out.append((topic, msg)))
    fs = 50_000.0
    v, i = spike_sweep(fs=fs, n=4000)
    for a in range(0, len(v), 50):
        eng.on_data(0, a, None, fs, np.column_stack([v[a:a + 50], i[a:a + 50]]))
        eng.classify_ready()
    labels = [m for t, m in out if t == "label"]
    assert len(labels) == 1
    label, warp = labels[0], warp_factor(25.0)
    peak = label["peak_sample"]
    assert label["rig"]["warp"] == warp and label["rig"]["temperature_c"] == 25.0
    assert label["window_end_sample"] == peak + segment_samples(SPEC, fs * warp)[1] - 1
    offline = window_from_trace(v, fs, peak, model.spec, warp)
    assert np.max(np.abs(np.array(label["window"]["v_mv"]) - offline)) < 0.006  # labels carry 2 decimals
    assert label["envelope"] == judge(model.envelope, fs, RigInfo(temperature_c=25.0), offline)


@pytest.mark.slow
def test_serve_over_zmq_takes_the_rig_from_the_header_over_the_command_line(tmp_path):
    import subprocess
    import sys

    connect, publish = free_endpoint(), free_endpoint()
    proc = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect", connect,
                             "--publish", publish, "--model", "genetic5", "--temperature-c", "30", "--filter-hz",
                             "10000"], stderr=subprocess.PIPE, text=True)
    sub = Subscriber(publish)
    try:
        assert sub.wait_for(lambda s: s.of("heartbeat"), 60), "daemon sent no heartbeat"
        sock = acquisition_pub(connect)
        v, i = spike_sweep(fs=20_000.0, n=1600, onset=200)
        for hs, rig in ((0, RigInfo(temperature_c=24.0)), (1, None), (2, RigInfo(filter_hz=1_000.0))):
            for k, a in enumerate(range(0, len(v), 40)):  # headstage 0 declares its rig in its first header only
                said = rig if hs != 0 or k == 0 else None
                sock.send_multipart(encode_data("amp", hs, k, a, 20_000.0, v[a:a + 40], i[a:a + 40], said))
        assert sub.wait_for(lambda s: len([m for t, m, _ in s.messages if t == "label"]) >= 3, 30)
        labels = {m["headstage"]: m for t, m, _ in sub.messages if t == "label"}
        assert labels[0]["rig"]["temperature_c"] == 24.0 and labels[0]["rig"]["filter_hz"] == 10_000.0
        assert labels[1]["rig"]["temperature_c"] == 30.0 and labels[1]["rig"]["warp"] == warp_factor(30.0)
        assert labels[2]["rig"]["filter_hz"] == 1_000.0 and "filter 1000 Hz is below" in labels[2]["envelope"]
        sock.close()
    finally:
        sub.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


def write_folder(folder, traces, fs, extra_cols=None):
    (folder / "traces").mkdir(parents=True)
    cols = ["specimen_id", "fs_hz"] + list(extra_cols[0]) if extra_cols else ["specimen_id", "fs_hz"]
    with open(folder / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for k, x in enumerate(traces):
            np.save(folder / "traces" / f"c{k}.npy", x.astype(np.float32))
            w.writerow([f"c{k}", fs[k]] + (list(extra_cols[k].values()) if extra_cols else []))


def test_predict_reads_the_declared_rig_per_row_and_says_where_it_holds(tmp_path):
    from rtclassify.model.file_format import load_model
    from rtclassify.offline.predict import predict_folder

    ap = gaussian_ap(50_000.0, n_ms=3.0, peak_ms=1.0)
    ap8 = gaussian_ap(8_000.0, n_ms=3.0, peak_ms=1.0)
    rows = [{"filter_hz": "", "temperature_c": ""}, {"filter_hz": "1000", "temperature_c": "25"},
            {"filter_hz": "", "temperature_c": "warm"}, {"filter_hz": "", "temperature_c": "298"},
            {"filter_hz": "", "temperature_c": ""}]
    write_folder(tmp_path / "d", [ap, ap, ap, ap, ap8], [50_000, 50_000, 50_000, 50_000, 8_000], rows)
    model = load_model("genetic5")
    counts = predict_folder(model, tmp_path / "d", tmp_path / "p.csv")
    out = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert counts["rows"] == 5 and counts["classified"] == 2 and list(out[0])[-5:-3] == ["error", "envelope"]
    assert out[0]["label"] and out[0]["error"] == "" and out[0]["envelope"] == "inside"
    assert out[1]["label"] and "filter 1000 Hz is below" in out[1]["envelope"]
    assert out[0]["p_Exc"] != out[1]["p_Exc"]  # 25 °C: the window is read faster
    assert "temperature_c='warm' is not a number" in out[2]["error"] and not out[2]["label"]
    assert "not a bath temperature in °C" in out[3]["error"]
    assert "8000 Hz" in out[4]["error"] and not out[4]["label"]


def test_an_ideal_rig_gives_back_the_window_as_recorded_and_filters_and_cooling_act(spikes_dir):
    from rtclassify.formats.spike_folder import read_cells_table, stored_window, load_cell_trace
    from trainer.rigs import Rig, recorded_ap, window_through

    rng = np.random.default_rng(0)
    rows = [r for r in read_cells_table(spikes_dir)[:40]]
    for row in rows[:10]:
        x = load_cell_trace(spikes_dir, row, SPEC)
        as_recorded = stored_window(x, row.fs_hz, SPEC)
        ideal = window_through(x, row.fs_hz, Rig(fs_hz=row.fs_hz), SPEC, rng)
        # the only differences: the digitiser's random clock phase and the detector's peak sample
        assert np.max(np.abs(ideal - as_recorded)) < 0.1 * np.ptp(as_recorded)
        slow = window_through(x, row.fs_hz, Rig(fs_hz=20_000.0, filter_hz=1_000.0), SPEC, rng)
        assert np.max(np.diff(slow)) < 0.7 * np.max(np.diff(as_recorded))  # a 1 kHz filter slows the upstroke
        v, peak = recorded_ap(x, row.fs_hz, Rig(fs_hz=100_000.0, temperature_c=25.0, stored=True), rng, 1.6)
        assert len(v) == samples_at(3.0, 100_000.0)  # stored: 1 ms before to 2 ms after the peak
        v0, p0 = recorded_ap(x, row.fs_hz, Rig(fs_hz=100_000.0), rng)

        def half_width(y, p):
            half = y[p] - 0.5 * (y[p] - np.min(y[max(p - 100, 0):p]))
            return np.sum(y[max(p - 100, 0):p + 200] > half)
        assert 1.4 < half_width(v, peak) / half_width(v0, p0) < 1.8  # 1.6 times wider at 25 °C


def test_rig_pools_train_on_both_kinds_of_window():
    import torch

    from trainer.fit import pick_variants

    x = torch.arange(4 * 3 * 2, dtype=torch.float32).reshape(4, 3, 2)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(pick_variants(x[:, 0], 0.5, gen), x[:, 0])
    picks = torch.stack([pick_variants(x, 0.6, gen) for _ in range(500)])  # (500, 4, 2)
    variant = ((picks[..., 0] - x[:, 0, 0]) / 2).long()  # which of the 3 variants each row took
    share = (variant > 0).float().mean().item()
    assert 0.5 < share < 0.7 and set(variant.unique().tolist()) == {0, 1, 2}


def test_a_report_condition_is_the_folder_a_lab_would_hand_predict(spikes_dir, tmp_path):
    from rtclassify.formats.spike_folder import load_cell_trace, read_cells_table
    from rtclassify.model.file_format import load_model
    from trainer.rig_report import predict_rows, score_condition
    from trainer.rigs import REPORT_CONDITIONS

    rows = read_cells_table(spikes_dir)[:6]
    traces = [load_cell_trace(spikes_dir, r, SPEC) for r in rows]
    ids = np.array([r.specimen_id for r in rows])
    fs = np.array([r.fs_hz for r in rows])
    by_name = {c.name: c for c in REPORT_CONDITIONS}
    from trainer.rigs import write_condition_folder

    for name, rate, temp in (("20 kHz, 5 kHz", "20000", ""), ("25 °C told, 20 kHz, 5 kHz", "20000", "25.0"),
                             ("25 °C not told, 50 kHz, 10 kHz", "50000", ""), ("8 kHz, 2 kHz", "8000", "")):
        folder = tmp_path / name.replace(" ", "_")
        write_condition_folder(folder, by_name[name], traces, fs, ids, np.full(6, 1.6), seed=1)
        table = list(csv.DictReader(open(folder / "cells.csv")))
        assert [t["fs_hz"] for t in table] == [rate] * 6 and [t["temperature_c"] for t in table] == [temp] * 6
        assert all(len(np.load(folder / "traces" / f"{i}.npy")) == samples_at(3.0, float(rate)) for i in ids)
        run = predict_rows(load_model("genetic5"), folder)
        assert run["refused"].all() == (name == "8 kHz, 2 kHz")
        y = np.array([0, 0, 2, 2, -1, 0])
        native = np.array([50_000.0, 200_000.0, 50_000.0, 200_000.0, 50_000.0, 50_000.0])  # each rate's cells
        scores = score_condition([run, run], y, ["Exc", "Ndnf", "Pvalb", "Sst", "Vip"], 50, 0, "genetic5", native)
        assert scores["n"] == 5 and (("balanced_accuracy" in scores) != (name == "8 kHz, 2 kHz"))
        if "balanced_accuracy" in scores:  # within a rate: its cells, its classes present, by hand
            pred = run["probs"].argmax(axis=1)
            for stratum, rate in (("50 kHz, 5 classes", 50_000.0), ("200 kHz, Exc/Pvalb/Sst", 200_000.0)):
                cells = (native == rate) & (y >= 0)
                expected = np.mean([(pred[cells & (y == k)] == k).mean() for k in np.unique(y[cells])])
                got = scores["rate_strata"][stratum]
                assert got["n"] == cells.sum() and got["balanced_accuracy"] == pytest.approx(expected, abs=1e-4)
        if "balanced_accuracy" in scores:  # the confident answers of both seeds, and the wrong ones among them
            ok = (y >= 0) & ~run["refused"]
            p, truth = run["probs"][ok], y[ok]
            sure = p.max(axis=1) >= 0.9
            cw = scores["confident_wrong"]
            assert cw["answers"] == 2 * sure.sum() and cw["wrong"] == 2 * (sure & (p.argmax(axis=1) != truth)).sum()
            assert scores["risk_coverage"]["coverage"][0] == 1.0  # threshold 0 keeps every answer


def test_the_pooled_confident_wrong_rate_counts_answers_not_conditions():
    from trainer.rig_report import pooled_confident_wrong

    rows = {"as recorded": {"confident_wrong": {"answers": 100, "wrong": 1, "rate": 0.01}},
            "25 °C not told, 50 kHz, 10 kHz": {"confident_wrong": {"answers": 20, "wrong": 4, "rate": 0.2}},
            "+10 mV offset": {"confident_wrong": {"answers": 50, "wrong": 25, "rate": 0.5}},  # not one of them
            "10 kHz, 2 kHz": {"balanced_accuracy": None}}
    pooled = pooled_confident_wrong(rows)
    assert pooled["answers"] == 120 and pooled["wrong"] == 5 and pooled["rate"] == round(5 / 120, 4)
    assert pooled["worst"] == {"condition": "25 °C not told, 50 kHz, 10 kHz", "rate": 0.2}


def test_an_nwb2_electrode_filter_reaches_sweeps_and_the_envelope(tmp_path):
    from helpers import write_nwb2_file
    from rtclassify.formats.nwb.nwb2 import filter_from_text
    from rtclassify.formats.recordings import read_recording

    assert filter_from_text("Bessel 10 kHz") == 10_000.0 and filter_from_text("low-pass 2000Hz, 4-pole") == 2_000.0
    assert filter_from_text("none") is None and filter_from_text(None) is None
    v, i = spike_sweep(n=4000, onset=1500)
    i[100:300] = -20.0  # the test pulse that opens every MIES sweep
    write_nwb2_file(tmp_path / "f.nwb", [(v, i)], 50_000.0, filtering="Bessel 1 kHz low-pass")
    sweeps = read_recording(tmp_path / "f.nwb")
    assert sweeps[0].filter_hz == 1_000.0
    from rtclassify.model.file_format import load_model
    from rtclassify.offline.sweep_labels import label_sweep

    r = label_sweep(sweeps[0], load_model("genetic5"), "any")
    assert "filter 1000 Hz is below the validated 2000 Hz" in r["envelope"]


def test_the_pooled_calibration_is_the_ece_of_every_declared_rows_together():
    from trainer.calibration import expected_calibration_error
    from trainer.rig_report import pooled_ece

    rng = np.random.default_rng(3)

    def run(n, refused_at=()):
        p = rng.dirichlet(np.ones(3), n)
        refused = np.zeros(n, bool)
        refused[list(refused_at)] = True
        p[refused] = np.nan
        return {"probs": p, "refused": refused}

    y1, y2 = np.array([0, 1, 2, -1, 0]), np.array([2, 2, 1, 0])
    a = [run(5, [1]), run(5)]  # condition 1, seeds 0 and 1; seed 0 refused row 1: left out for both seeds
    b = [run(4), run(4, [3])]
    refused_whole = [run(4, range(4)), run(4, range(4))]  # an 8 kHz rig: no row to pool, not a condition pooled
    out = pooled_ece([(a, y1), (refused_whole, y2), (b, y2)])
    keep1, keep2 = np.array([1, 0, 1, 0, 1], bool), np.array([1, 1, 1, 0], bool)
    expect = [expected_calibration_error(np.concatenate([a[s]["probs"][keep1], b[s]["probs"][keep2]]),
                                         np.concatenate([y1[keep1], y2[keep2]])) for s in (0, 1)]
    assert out == {"ece": round(float(np.mean(expect)), 4), "ece_max_seed": round(float(max(expect)), 4),
                   "rows_per_seed": 6, "conditions": 2}


def test_a_rate_specialists_rigs_keep_to_its_rates_and_the_default_draws_are_unchanged():
    from trainer.rigs import draw_rig

    rng = np.random.default_rng(0)
    rigs = [draw_rig(rng, (10_000.0, 15_000.0)) for _ in range(300)]
    assert all(10_000.0 <= r.fs_hz <= 15_000.0 for r in rigs)
    assert all(r.filter_hz is None or r.filter_hz <= 0.45 * r.fs_hz for r in rigs)
    assert [draw_rig(np.random.default_rng(5)) for _ in range(3)] == \
           [draw_rig(np.random.default_rng(5), None) for _ in range(3)]
