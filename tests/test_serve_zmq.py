"""The daemon as users run it: `rtclassify serve` in its own process, real ZMQ sockets on loopback."""
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import Subscriber, acquisition_pub, free_endpoint, spike_sweep
from rtclassify.transport.wire import encode_data, encode_event

pytestmark = pytest.mark.slow


def start_daemon(connect, publish, log, model="genetic5", extra=()):
    cmd = [sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect", connect, "--publish",
           publish, "--model", model, "--log", str(log), *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def daemon(tmp_path):
    connect, publish = free_endpoint(), free_endpoint()
    log = tmp_path / "serve.jsonl"
    proc = start_daemon(connect, publish, log)
    sub = Subscriber(publish)
    assert sub.wait_for(lambda s: s.of("heartbeat"), 60), "daemon sent no heartbeat"
    yield connect, sub, log, proc
    sub.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


def send_sweep(sock, v, i, fs=50_000.0, start=0, seq0=0, chunk=50, headstage=0):
    for k, a in enumerate(range(0, len(v), chunk)):
        sock.send_multipart(encode_data("test", headstage, seq0 + k, start + a, fs, v[a:a + chunk], i[a:a + chunk]))
    return seq0 + (len(v) + chunk - 1) // chunk


def answers(sub):
    return [m for t, m, _ in sub.messages if t in ("label", "skip")]


def test_simulated_real_cells_get_one_answer_each_matching_offline_predict(daemon, spikes_dir, tmp_path):
    connect, sub, log, proc = daemon
    truth = tmp_path / "truth.jsonl"
    sim = subprocess.run([sys.executable, "-m", "rtclassify", "simulate", "--sink", "zmq", "--bind", connect,
                          "--data", str(spikes_dir), "--cells", "6", "--headstages", "2", "--truth", str(truth),
                          "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    stimuli = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(stimuli) >= 20
    assert sub.wait_for(lambda s: len(answers(s)) >= len(stimuli), 30)
    got = {(m["headstage"], m["stim_onset_sample"]): m for m in answers(sub)}
    assert len(answers(sub)) == len(stimuli) == len(got)  # exactly one answer per stimulus

    from rtclassify.formats.spike_folder import CellRow, load_cell_window
    from rtclassify.model.envelope import RigInfo, judge
    from rtclassify.model.file_format import load_model

    model = load_model("genetic5")
    for t in stimuli:
        m = got[(t["headstage"], t["stim_onset_sample"])]
        if not t["spike"]:
            assert m["schema"] == "rtclassify.skip/1" and m["reason"] == "no_spike"
            continue
        assert m["schema"] == "rtclassify.label/1", m
        assert abs(m["peak_sample"] - t["peak_sample"]) <= 1
        assert m["cell_id"] == t["cell_id"]
        window = load_cell_window(spikes_dir, CellRow(t["specimen_id"], t["fs_hz_native"], {}), model.spec)
        import torch

        def module(w):
            with torch.inference_mode():
                return model.module(torch.from_numpy(w)).numpy()

        # the stream declares no temperature: read as 34 and 25 °C (model.trust), as predict reads a row
        offline = model.trust.read(module, window[None], [True], model.spec.n_before)[0]
        envelope = judge(model.envelope, m["rig"]["fs"], RigInfo(), window)
        assert m["envelope"].startswith(envelope)
        offline = model.trust.settle(offline, envelope != "inside")
        assert m["label"] == model.classes[int(np.argmax(offline))]
        assert max(abs(m["probs"][c] - float(p)) for c, p in zip(model.classes, offline)) < 1e-3
        assert m["latency_ms"]["process"] > 0 and m["model"]["name"] == "genetic5"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len([x for x in logged if x["topic"] in ("label", "skip")]) == len(stimuli)


def test_malformed_messages_are_counted_and_survived(daemon):
    connect, sub, log, proc = daemon
    pub = acquisition_pub(connect)
    good = encode_data("test", 0, 0, 0, 50_000.0, np.zeros(10), np.zeros(10))
    pub.send_multipart([b"data", good[1]])  # missing payload frame
    pub.send_multipart([b"data", b"{not json", good[2]])
    pub.send_multipart([b"data", good[1], good[2][:-4]])  # payload one sample short
    nan = encode_data("test", 0, 0, 0, 50_000.0, np.full(10, np.nan), np.zeros(10))
    pub.send_multipart(nan)
    pub.send_multipart([b"bogus", b"x"])
    pub.send_multipart(encode_event({"type": "teleport", "headstage": 0}))
    v, i = spike_sweep()
    send_sweep(pub, v, i)
    assert sub.wait_for(lambda s: s.of("label"), 20)
    assert sub.wait_for(lambda s: s.of("heartbeat") and s.of("heartbeat")[-1]["malformed"] == 6, 5)
    assert proc.poll() is None
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    reasons = [x["reason"] for x in logged if x["topic"] == "malformed"]
    assert any("frames" in r for r in reasons) and any("NaN" in r for r in reasons)
    assert any("bytes" in r for r in reasons) and any("unknown topic" in r for r in reasons)
    pub.close()


def test_publisher_restart_is_survived(daemon):
    connect, sub, log, proc = daemon
    pub = acquisition_pub(connect)
    v, i = spike_sweep()
    send_sweep(pub, v, i)
    assert sub.wait_for(lambda s: len(s.of("label")) == 1, 20)
    pub.close()
    time.sleep(0.3)
    pub = acquisition_pub(connect)  # the acquisition restarts: counters start again at 0
    send_sweep(pub, v, i)
    assert sub.wait_for(lambda s: len(s.of("label")) == 2, 20)
    assert sub.wait_for(lambda s: s.of("heartbeat")[-1]["headstages"].get("0", {}).get("gaps") == 1, 5)
    pub.close()


def test_sigterm_answers_open_stimuli_and_flushes_the_log(daemon):
    connect, sub, log, proc = daemon
    pub = acquisition_pub(connect)
    v, i = spike_sweep()
    send_sweep(pub, v[:600], i[:600])  # a stimulus is open: onset seen, no peak yet
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    skips = [x for x in logged if x["topic"] == "skip"]
    assert len(skips) == 1 and skips[0]["reason"] == "shutdown" and skips[0]["stim_onset_sample"] == 500
    pub.close()


def test_serve_refuses_bad_arguments_in_one_line():
    r = subprocess.run([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--model", "genetic5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--connect" in r.stderr
    r = subprocess.run([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect",
                        free_endpoint(), "--publish", free_endpoint(), "--model", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "neither a built-in model" in r.stderr


def test_demo_runs_end_to_end_without_data():
    from click.testing import CliRunner

    from rtclassify.cli import main

    result = CliRunner().invoke(main, ["demo", "--cells", "3", "--headstages", "1"])
    assert result.exit_code == 0, result.output
    assert "12 stimuli: 9 labels, 3 skips, 0 unanswered" in result.output
    assert "columns: headstage, cell id, onset sample" in result.output
    hits, total = map(int, re.search(r"agreement with the simulated cell's class: (\d+)/(\d+)", result.output).groups())
    assert total == 9 and hits / total >= 0.8, result.output  # RS, FS, LTS: recognised as Exc, Pvalb, Sst
    assert re.search(r"latency \(process: window complete in the daemon -> label sent\): p50 .* of 9 LATE",
                     result.output)


def test_demo_agreement_comes_from_the_cre_line_for_real_cells():
    from rtclassify.cli.cmd_demo import expected_class

    genetic5, broad2 = ("Exc", "Ndnf", "Pvalb", "Sst", "Vip"), ("Exc", "Inh")
    real = {"line_name": "Vip-IRES-Cre", "dendrite_type": "aspiny"}
    assert expected_class(real, genetic5) == "Vip" and expected_class(real, broad2) == "Inh"
    assert expected_class({"line_name": "Chat-IRES-Cre-neo", "dendrite_type": "aspiny"}, genetic5) is None
    assert expected_class({"class": "Sst"}, genetic5) == "Sst" and expected_class({"class": "Sst"}, broad2) == "Inh"


def test_file_replay_of_real_evoked_spikes_answers_each_pulse(evoked_dir, tmp_path):
    """Replay real multipatch recordings through the daemon; each pulse gets one answer."""
    import csv

    with open(evoked_dir / "cases.csv", newline="") as f:
        cases = [c for c in csv.DictReader(f) if float(c["fs"]) < 60_000][:6]
    log = tmp_path / "replay.jsonl"
    files = [str(evoked_dir / f"{c['name']}.npz") for c in cases]
    r = subprocess.run([sys.executable, "-m", "rtclassify", "serve", "--source", "file", "--fs", "50000", "--speed", "0",
                        "--model", "genetic5", "--log", str(log), *sum((["--replay", f] for f in files), [])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    answers = [x for x in logged if x["topic"] in ("label", "skip")]
    assert len(answers) >= len(cases)  # one per pulse; a file cut inside its pulse is answered at shutdown
    assert len({(a["headstage"], a["stim_onset_sample"]) for a in answers}) == len(answers)


def test_file_replay_of_an_nwb_file_answers_each_short_square(tmp_path):
    """An Allen-layout NWB file (two spiking short squares, one subthreshold) replayed through the daemon."""
    from helpers import write_allen_file
    from rtclassify.simulator.neurons import model_ap

    ap, delay, _ = model_ap("FS", 200_000.0)
    write_allen_file(tmp_path / "cell.nwb", ap, 200_000.0, stim_to_peak_s=delay, n_sweeps=3)
    log = tmp_path / "replay.jsonl"
    r = subprocess.run([sys.executable, "-m", "rtclassify", "serve", "--source", "file", "--speed", "0",
                        "--model", "genetic5", "--log", str(log), "--replay", str(tmp_path / "cell.nwb")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    answers = [x for x in map(json.loads, log.read_text().splitlines()) if x["topic"] in ("label", "skip")]
    assert [x["topic"] for x in answers] == ["label", "label", "skip"]
    assert answers[2]["reason"] == "no_spike"
    onsets = [x["stim_onset_sample"] for x in answers]
    n = int(1.2 * 200_000)
    assert onsets == [int(1.02 * 200_000) + k * n for k in range(3)]  # continuous samples across sweeps


def test_startup_objects_leave_the_garbage_collector():
    import gc

    from rtclassify.daemon.service import freeze_startup_objects

    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000  # this test process's imports: torch, numpy, ...
        assert gc.isenabled()  # the live loop's own garbage is still collected
    finally:
        gc.unfreeze()


def test_busy_host_six_rates_late_duplicated_events_early_new_cell(tmp_path):
    """One publisher, six headstages at 20, 25, 33.333, 50, 100 and 200 kHz, pushing like a busy
    host (stalls and bursts, chunks of 0.2-3 ms), stimulus events 3 ms late and a fifth of them
    twice, new_cell 40 ms ahead of its sample: exactly one answer per onset, each at its own
    sample, of the right kind, with its own cell; no gap."""
    from bench.hosts import HostBehaviour, ZmqHost, analytic_cells, play
    from rtclassify.simulator.amplifier import HeadstageStream

    rates = [20_000.0, 25_000.0, 100_000.0 / 3, 50_000.0, 100_000.0, 200_000.0]
    connect, publish = free_endpoint(), free_endpoint()
    log = tmp_path / "serve.jsonl"
    host = ZmqHost(connect, rates)
    proc = start_daemon(connect, publish, log)
    try:
        assert host.wait_for_consumers(60), "daemon never subscribed"
        streams = [HeadstageStream(h, analytic_cells(fs), fs, 3, 3, np.random.default_rng(h)) for h, fs in enumerate(rates)]
        run = play(host, streams, 1.2, HostBehaviour(stall_p=0.08, stim_lag_ms=3.0, duplicate_p=0.2, seed=9))
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        host.close()
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    got = {}
    for a in (x for x in logged if x["topic"] in ("label", "skip")):
        key = (a["headstage"], a["stim_onset_sample"])
        assert key not in got, f"two answers for {key}"
        got[key] = a
    assert len(got) == len(run.truth) >= 6 * 6
    for t in run.truth:
        a = got[(t["headstage"], t["stim_onset_sample"])]
        assert (a["topic"] == "label") == t["spike"] and a["cell_id"] == t["cell_id"], (t, a)
    assert not [x for x in logged if x["topic"] in ("gap", "malformed")]
    beat = [x for x in logged if x["topic"] == "heartbeat"][-1]
    assert sum(h["events"]["duplicate"] for h in beat["headstages"].values()) > len(run.truth)  # late + twice
