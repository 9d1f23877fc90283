"""Every lab's recordings: real Axon ABF files of other labs (../shared/data/abf-recordings) read
with their clamp mode, channels and command, listed and labelled by `rtclassify sweeps`, replayed
through the daemon, answered from a watched folder while being written, and annotated in a CSV."""
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rtclassify.cli import main
from rtclassify.formats import RecordingError
from rtclassify.formats.nwb import Sweep, summarise_sweep
from rtclassify.formats.recordings import read_recording

ABF_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "abf-recordings"
needs_abf = pytest.mark.skipif(not ABF_DIR.is_dir(), reason=f"{ABF_DIR} (real ABF files) not present")
# the shared folder's README: protocol and clamp mode of each file. 18425108_abf1 is listed there as
# voltage clamp, but its channel 10_Vm holds APs peaking at +19 mV, ~100 mV above threshold, under a
# "15 pulse AHP" protocol, beside an Imemb current monitor: current clamp, read from the content.
VOLTAGE_CLAMP = {"05210017_vc_abf1.abf", "171116sh_0011.abf"}
NOT_VM = {("2019_05_02_DIC2_0011.abf", 1), ("2020_07_29_0062.abf", 1), ("18425108_abf1.abf", 0)}  # recorded currents
RATES = {"18425108_abf1.abf": 25_000.0, "2020_07_29_0062.abf": 10_000.0}


@pytest.fixture(scope="module")
def model():
    from rtclassify.model.file_format import load_model

    return load_model("genetic5")


@needs_abf
@pytest.mark.parametrize("name", sorted(p.name for p in ABF_DIR.glob("*.abf")) if ABF_DIR.is_dir() else [])
def test_each_real_abf_file_reads_with_its_clamp_mode_channels_and_rate(name):
    sweeps = read_recording(ABF_DIR / name)
    assert sweeps and {s.fs for s in sweeps} == {RATES.get(name, 20_000.0)}
    for s in sweeps:
        assert s.clamp_mode == ("voltage" if name in VOLTAGE_CLAMP else "current"), (name, s.sweep, s.channel)
        if name in VOLTAGE_CLAMP:
            assert s.refusal.startswith("voltage clamp")
        elif (name, s.channel) in NOT_VM:
            assert "not a membrane potential" in s.refusal
        else:
            assert s.refusal is None and s.command is not None and len(s.command) == len(s.response)
            assert -120 < np.median(s.response) < 0  # mV, whatever units the file used


CURRENT_CLAMP_FILES = ["17o05028_ic_steps.abf", "171116sh_0018.abf", "171116sh_0019.abf", "File_axon_5.abf",
                       "2019_05_02_DIC2_0011.abf", "2020_07_29_0062.abf", "17o05027_ic_ramp.abf"]


@needs_abf
@pytest.mark.parametrize("name", CURRENT_CLAMP_FILES)
def test_sweep_ap_counts_agree_with_two_independent_detectors(name):
    """n_spikes against eFEL's Spikecount and scipy's find_peaks (prominence 30 mV), on the sweeps where
    those two agree: exact for at least 90% of each file's sweeps (late, slow APs of room-temperature
    trains included)."""
    efel = pytest.importorskip("efel")
    from scipy.signal import find_peaks

    agree = total = 0
    for s in read_recording(ABF_DIR / name):
        if s.refusal or s.clamp_mode != "current":
            continue
        t = np.arange(len(s.response)) / s.fs * 1000
        e = efel.get_feature_values([{"T": t, "V": s.response, "stim_start": [t[0]], "stim_end": [t[-1]]}],
                                    ["Spikecount"])[0]["Spikecount"]
        peaks, _ = find_peaks(s.response, prominence=30, distance=int(0.001 * s.fs))
        if (int(e[0]) if e is not None and len(e) else 0) != len(peaks):
            continue
        total += 1
        agree += summarise_sweep(s)["n_spikes"] == len(peaks)
    assert total and agree >= 0.9 * total, (agree, total)


@needs_abf
def test_the_epoch_table_gives_the_steps_onsets_even_when_steps_fill_half_the_sweep():
    """171116sh_0018: two steps per sweep (0.5 s and 1 s of 3 s); the first at 146.85 ms (the
    epoch table's first holding of 1/64 of the sweep), at -100 pA in sweep 0."""
    lines = [summarise_sweep(s) for s in read_recording(ABF_DIR / "171116sh_0018.abf")]
    assert lines[0]["stim_onset_s"] == pytest.approx(0.14685, abs=1e-4)
    assert all(line["stim_onset_s"] is not None for line in lines)


def test_a_2_ms_step_on_an_epoch_command_is_found_within_a_sample_and_labelled(model):
    """An ABF-like sweep (layout abf2: the command is an epoch waveform) with a 2 ms step at 20 kHz
    evoking one AP: the onset to the sample, a label, `inside` the envelope."""
    from rtclassify.offline.sweep_labels import label_sweep
    from rtclassify.simulator.neurons import builtin_cells

    fs, n, onset = 20_000.0, 20_000, 3_000
    cell = builtin_cells(fs)[0]
    v = np.full(n, cell.ap_mv[0])
    peak = onset + int(0.0015 * fs)
    k = int(round(0.001 * fs))
    v[peak - k:peak - k + len(cell.ap_mv)] = cell.ap_mv
    command = np.zeros(n)
    command[onset:onset + int(0.002 * fs)] = 800.0
    s = Sweep(0, "2 ms step", "current", fs, v, command, "abf2", units="mV")
    line = summarise_sweep(s)
    assert line["stim_onset_s"] == pytest.approx(onset / fs, abs=0.2e-3) and line["n_spikes"] == 1
    r = label_sweep(s, model)
    assert r["label"] in model.classes and r["envelope"] == "inside" and r["stim_onset_sample"] == onset


@needs_abf
def test_sweeps_lists_every_sweep_and_channel_with_labels_or_the_reason(model):
    r = CliRunner().invoke(main, ["sweeps", str(ABF_DIR / "2019_05_02_DIC2_0011.abf"), "--model", "genetic5"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.splitlines()]
    verdicts = [x for x in lines if "verdict" in x]
    assert [v["channel"] for v in verdicts] == [0]  # channel 1 records a current: not a cell
    lines = [x for x in lines if "verdict" not in x]
    assert [(x["sweep"], x["channel"]) for x in lines] == [(k, c) for k in range(3) for c in range(2)]
    for x in lines:
        assert {"sweep", "channel", "clamp_mode", "fs", "n_samples", "stim_onset_s", "n_spikes"} <= set(x)
        assert "label" in x or x.get("skip") or x.get("protocol") == "long_step"
    assert all("not a membrane potential" in x["skip"] for x in lines if x["channel"] == 1)
    vc = CliRunner().invoke(main, ["sweeps", str(ABF_DIR / "171116sh_0011.abf"), "--model", "genetic5"])
    vc_lines = [json.loads(x) for x in vc.output.splitlines()]
    assert all(x["skip"].startswith("voltage clamp") for x in vc_lines if "sweep" in x)
    assert [x["verdict"]["reason"] for x in vc_lines if "verdict" in x] == ["no evidence"]


@needs_abf
def test_steps_any_labels_long_steps_and_marks_them_outside_the_training_protocol():
    r = CliRunner().invoke(main, ["sweeps", str(ABF_DIR / "171116sh_0019.abf"), "--model", "broad2",
                                  "--steps", "any"])
    lines = [json.loads(x) for x in r.output.splitlines()]
    labelled = [x for x in lines if "label" in x]
    assert len(labelled) >= 15 and all(x["envelope"].startswith("outside: the first AP of a 500 ms step")
                                       for x in labelled)
    short = CliRunner().invoke(main, ["sweeps", str(ABF_DIR / "171116sh_0019.abf"), "--model", "broad2"])
    assert not any("label" in json.loads(x) for x in short.output.splitlines())  # no short squares in it


def test_unreadable_files_are_refused_with_the_file_and_the_reason(tmp_path):
    bad = tmp_path / "x.abf"
    bad.write_bytes(b"ABF2" + b"\0" * 100)
    with pytest.raises(RecordingError, match="x.abf: truncated ABF file"):
        read_recording(bad)
    heka = tmp_path / "run.dat"
    heka.write_bytes(b"DAT2" + b"\0" * 60)  # a bundle cut short
    with pytest.raises(RecordingError, match="run.dat: not a readable PatchMaster bundle"):
        read_recording(heka)
    r = CliRunner().invoke(main, ["sweeps", str(bad)])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and len(r.output.splitlines()) == 1


@needs_abf
def test_replaying_an_abf_file_answers_each_stimulus_once(tmp_path):
    log = tmp_path / "serve.jsonl"
    name = "171116sh_0018.abf"
    r = subprocess.run([sys.executable, "-m", "rtclassify", "serve", "--source", "file", "--replay",
                        str(ABF_DIR / name), "--speed", "0", "--log", str(log), "--lsl-out",
                        f"replay-{time.time_ns()}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    answers = [json.loads(x) for x in log.read_text().splitlines() if '"topic":"label"' in x or '"topic":"skip"' in x]
    keys = [(m["headstage"], m["stim_onset_sample"]) for m in answers]
    assert len(keys) == len(set(keys)) == 33  # 17 sweeps of two steps, but one whose first step is 0 pA
    sweeps = read_recording(ABF_DIR / name)
    starts = np.cumsum([0] + [len(s.response) for s in sweeps])[:-1]
    from rtclassify.formats.stimuli import steps_after_test_pulse

    onsets = {int(a + o) for a, s in zip(starts, sweeps) for o, _ in steps_after_test_pulse(s.command, s.fs, s.layout)}
    assert onsets == {k[1] for k in keys}  # every step of the epoch table answered, and nothing else
    assert all(m["topic"] == "label" and m["protocol"] == "long_step" for m in answers)
    from rtclassify.dsp.detector import DetectorConfig
    from rtclassify.model.envelope import RigInfo
    from rtclassify.transport.file_replay import replay_recordings

    played = replay_recordings(str(ABF_DIR / name), None, DetectorConfig())
    assert {c[3] for _, channels, _, _ in played for c in channels} == {RigInfo(filter_hz=10_000.0)}  # telegraphed


def write_in_pieces(src: Path, dst: Path, pieces: int, pause_s: float) -> None:
    data = src.read_bytes()
    with open(dst, "wb") as f:
        for k in range(pieces):
            f.write(data[k * len(data) // pieces:(k + 1) * len(data) // pieces])
            f.flush()
            time.sleep(pause_s)


@needs_abf
def test_a_watched_folder_answers_every_sweep_once_and_a_restart_answers_none_again(model, tmp_path):
    from rtclassify.offline.watch import FolderWatch, answered_in_log, run_watch

    folder = tmp_path / "rig"
    folder.mkdir()
    log = tmp_path / "watch.jsonl"
    out = []

    def emit(topic, msg):
        out.append((topic, msg))
        with open(log, "a") as f:
            f.write(json.dumps({"topic": topic, **msg}) + "\n")

    w = FolderWatch(folder.resolve(), model, emit, stable_s=0.3, retry_s=0.5)
    stop = threading.Event()
    runner = threading.Thread(target=run_watch, args=(w, emit, stop, 0.1))
    runner.start()
    t0 = time.time()
    try:
        write_in_pieces(ABF_DIR / "17o05028_ic_steps.abf", folder / "cell1.abf", 4, 0.7)  # stalls > stable_s
        shutil.copy(ABF_DIR / "2019_05_02_DIC2_0011.abf", folder / "cell2.abf")
        (folder / "broken.abf").write_bytes(b"ABF2" + b"\x01" * 5000)
        (folder / "notes.txt").write_text("not a recording")
        expected = {("cell1.abf", k, 0) for k in range(16)} | {("cell2.abf", k, c) for k in range(3) for c in (0, 1)}
        while time.time() - t0 < 20:
            got = [(Path(m["source_file"]).name, m["sweep"], m["channel"]) for t, m in out if t in ("label", "skip")]
            if set(got) >= expected:
                break
            time.sleep(0.2)
        took = time.time() - t0
    finally:
        stop.set()
        runner.join(10)
    got = [(Path(m["source_file"]).name, m["sweep"], m["channel"]) for t, m in out if t in ("label", "skip")]
    assert sorted(got) == sorted(expected) and took < 20  # each once, none of the broken file
    assert all(m["cell_id"] == Path(m["source_file"]).stem for t, m in out if t in ("label", "skip"))
    assert "broken.abf" in json.dumps(w.heartbeat()["watch"]["waiting"])  # waiting, not crashed
    again = FolderWatch(folder.resolve(), model, lambda *a: out.append(a), stable_s=0.0, answered=answered_in_log(log))
    again.poll(0.0)
    assert again.poll(10.0) == 0  # a restart with the same log answers none of them again


@needs_abf
def test_the_watch_command_runs_and_the_overlay_can_read_its_messages(tmp_path):
    from plugins.feed import FeedState

    folder = tmp_path / "rig"
    folder.mkdir()
    shutil.copy(ABF_DIR / "171116sh_0019.abf", folder / "a.abf")
    log = tmp_path / "w.jsonl"
    r = subprocess.run([sys.executable, "-m", "rtclassify", "watch", str(folder), "--log", str(log), "--steps", "any",
                        "--seconds", "6", "--lsl-out", f"watch-{time.time_ns()}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    state = FeedState()
    for line in log.read_text().splitlines():
        m = json.loads(line)
        state.apply(m.pop("topic"), m)
    assert state.labels >= 15 and state.view(0).label["cell_id"] == "a"


@needs_abf
def test_annotate_writes_a_csv_sidecar_for_an_abf_file(tmp_path):
    import csv

    r = CliRunner().invoke(main, ["annotate", str(ABF_DIR / "2019_05_02_DIC2_0011.abf"), "--out-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "2019_05_02_DIC2_0011.abf.rtclassify.csv")))
    assert [(r["sweep"], r["channel"]) for r in rows] == [(str(k), str(c)) for k in range(3) for c in (0, 1)]
    assert all(r["label"] or r["skip"] for r in rows) and rows[0]["model"] == "genetic5"
    assert all(r["uncertain"] in ("true", "false") for r in rows if r["label"])


@needs_abf
def test_sweeps_reads_a_declared_room_temperature_and_refuses_an_impossible_one():
    import json

    from click.testing import CliRunner

    from rtclassify.cli import main

    path = str(ABF_DIR / "171116sh_0019.abf")  # a fast-spiking cell recorded by another lab
    runs = {}
    for told in ((), ("--temperature-c", "24")):
        result = CliRunner().invoke(main, ["sweeps", path, "--model", "genetic5", "--steps", "any", *told])
        assert result.exit_code == 0, result.output
        runs[told] = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    plain, warm = runs[()], runs[("--temperature-c", "24")]
    labelled = [(a, b) for a, b in zip(plain, warm) if "label" in a and "label" in b]
    assert labelled and any(a["p_Pvalb"] != b["p_Pvalb"] for a, b in labelled)  # the window is read faster
    assert all(b["envelope"].startswith("outside: the first AP of a") for _, b in labelled)  # long steps
    bad = CliRunner().invoke(main, ["sweeps", path, "--model", "genetic5", "--temperature-c", "297"])
    assert bad.exit_code == 2 and "not a bath temperature in °C" in bad.output


HEKA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "heka-recordings"
needs_heka = pytest.mark.skipif(not HEKA_DIR.is_dir(), reason=f"{HEKA_DIR} (real PatchMaster files) not present")


@needs_heka
@pytest.mark.parametrize("name", sorted(p.name for p in HEKA_DIR.glob("*.dat")) if HEKA_DIR.is_dir() else [])
def test_each_patchmaster_bundle_lists_its_series_sweeps_and_clamp_modes(name):
    pytest.importorskip("pyheka", reason="the heka extra (pyheka) is not installed")
    r = CliRunner().invoke(main, ["sweeps", str(HEKA_DIR / name), "--model", "broad2"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.splitlines()]
    sweeps = [x for x in lines if "sweep" in x]
    assert [x["sweep"] for x in sweeps] == list(range(len(sweeps))) and len(sweeps) > 20
    for x in sweeps:
        assert x["location"].startswith("group 1, series ") and x["fs"] == 20_000.0 and x["n_samples"] > 1000
        if x["clamp_mode"] == "voltage":
            assert x["skip"].startswith("voltage clamp") and x["n_spikes"] is None
    modes = {x["stimulus"]: x["clamp_mode"] for x in sweeps}
    assert all(m == ("current" if series == "CClamp" else "voltage") for series, m in modes.items())  # per series
    if name == "220316_03.dat":  # its CClamp series: 60 s at holding, spontaneous APs, no step to answer
        cc = [x for x in sweeps if x["stimulus"] == "CClamp"]
        assert len(cc) == 1 and cc[0]["clamp_mode"] == "current" and cc[0]["units"] == "V"
        assert cc[0]["n_spikes"] > 10 and "no current step" in cc[0]["skip"]
    assert all(v["verdict"]["label"] is None for v in lines if "verdict" in v)  # nothing to judge a cell by


@needs_abf
@pytest.mark.parametrize("name,keep", [("171116sh_0018.abf", 5000), ("18425108_abf1.abf", 300_000)])
def test_a_truncated_abf_file_is_refused_in_one_line_that_says_so(tmp_path, name, keep):
    cut = tmp_path / name
    cut.write_bytes((ABF_DIR / name).read_bytes()[:keep])
    r = CliRunner().invoke(main, ["sweeps", str(cut)])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1 and "Traceback" not in r.output
    assert r.output.startswith(f"Error: {cut}: truncated ABF file") and f"{keep}" in r.output
