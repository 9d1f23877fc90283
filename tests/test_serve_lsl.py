"""The daemon on Lab Streaming Layer against senders that behave like busy acquisition hosts
(real liblsl outlets and inlets on loopback; bench/hosts.py): chunks pushed without timestamps,
stalls and bursts, two headstages, markers early, late, twice or without `sample`, a restarted
source, a marker stream that appears late or carries numbers."""
import json
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from bench.hosts import HostBehaviour, LslHost, analytic_cells, play
from helpers import Subscriber, free_endpoint
from rtclassify.simulator.amplifier import HeadstageStream

pytestmark = pytest.mark.slow
pylsl = pytest.importorskip("pylsl")
FS = 50_000.0


def unique(prefix="rtc"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Daemon:
    """`rtclassify serve --source lsl` on the named streams, labels on ZMQ and in a log."""

    def __init__(self, tmp_path, names, extra=()):
        self.log = tmp_path / f"serve-{uuid.uuid4().hex[:6]}.jsonl"
        publish = free_endpoint()
        self.sub = Subscriber(publish)
        cmd = [sys.executable, "-m", "rtclassify", "serve", "--source", "lsl", "--publish", publish,
               "--lsl-out", unique("labels"), "--log", str(self.log), *sum((["--stream", n] for n in names), []),
               *extra]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        if not self.sub.wait_for(lambda s: s.of("heartbeat"), 60):
            self.stop()
            raise AssertionError(f"daemon sent no heartbeat: {self.stderr}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.stderr = self.proc.stderr.read()
        self.sub.close()
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def answers(logged, headstage=None):
    return [x for x in logged if x["topic"] in ("label", "skip") and headstage in (None, x["headstage"])]


def streams(fs, n_headstages, seed=0, sweeps=3):
    cells = analytic_cells(fs)
    return [HeadstageStream(h, cells[h::n_headstages] or cells, fs, sweeps, 3, np.random.default_rng(seed + h))
            for h in range(n_headstages)]


def check_one_answer_each(logged, truth):
    """Exactly one answer per true onset, at its own sample, of the right kind, with its own cell."""
    got = {}
    for a in answers(logged):
        key = (a["headstage"], a["stim_onset_sample"])
        assert key not in got, f"two answers for onset {key}: {got[key]} and {a}"
        got[key] = a
    for t in truth:
        a = got.get((t["headstage"], t["stim_onset_sample"]))
        assert a is not None, f"no answer at onset {t['stim_onset_sample']} on headstage {t['headstage']}"
        assert (a["topic"] == "label") == t["spike"], (t, a)
        assert a["cell_id"] == t["cell_id"], (t, a)
    assert len(got) == len(truth), sorted(set(got) - {(t["headstage"], t["stim_onset_sample"]) for t in truth})


def test_busy_host_two_headstages_no_phantom_gaps_one_answer_each(tmp_path):
    """Stalls of 3-20 ms then bursts, chunks of 0.2-3 ms, no timestamps; headstage 0 sends stimulus
    markers with `sample` 5 ms late (a fifth of them twice), headstage 1 none; new_cell 40 ms early."""
    names = [unique("busy"), unique("busy")]
    host = LslHost(names, FS)
    daemon = Daemon(tmp_path, names)
    try:
        assert host.wait_for_consumers(), "the daemon never connected its inlets"
        hs = streams(FS, 2)
        # headstage 1's host knows no stimulus times: its onsets come from the I channel only
        how = HostBehaviour(stall_p=0.08, new_cell_early_ms=40.0, stim_lag_ms=5.0, stim_event_headstages=(0,), seed=1)
        run = play(host, hs, 1.5, how)
        assert run.stalls >= 5
        time.sleep(1.0)
    finally:
        logged = daemon.stop()
    check_one_answer_each(logged, run.truth)
    assert not [x for x in logged if x["topic"] == "gap"], "push jitter was taken for lost samples"
    beat = [x for x in logged if x["topic"] == "heartbeat"][-1]
    assert beat["headstages"]["0"]["events"]["stimulus"] >= len([t for t in run.truth if t["headstage"] == 0])
    assert beat["headstages"]["0"]["gaps"] == beat["headstages"]["1"]["gaps"] == 0
    assert "ready:" in daemon.stderr and "INFO" not in daemon.stderr  # liblsl's own log stays off


def test_restarted_source_starts_a_new_origin_reported_once(tmp_path):
    name = unique("restart")
    host = LslHost([name], FS)
    daemon = Daemon(tmp_path, [name])
    try:
        assert host.wait_for_consumers()
        how = HostBehaviour(stall_p=0.05, stim_events=True, duplicate_p=0.0, seed=2)
        first = streams(FS, 1, seed=3)
        # sweeps are 2760 samples, onsets 1000 in: stop 50 samples after the 6th onset (stimulus open)
        run1 = play(host, first, (5 * 2760 + 1050) / FS, how)
        time.sleep(0.3)
        host.restart(0)
        assert host.wait_for_consumers(), "the daemon did not find the restarted stream"
        second = streams(FS, 1, seed=4)
        run2 = play(host, second, 0.5, how)
        time.sleep(1.0)
    finally:
        logged = daemon.stop()
    got = [(a["stim_onset_sample"], a["topic"], a.get("reason")) for a in answers(logged)]
    n1 = len(run1.truth)
    assert got[:n1] == [(t["stim_onset_sample"], *(("label", None) if t["spike"] else ("skip", "no_spike")))
                        for t in run1.truth]
    assert got[n1] == (5 * 2760 + 1000, "skip", "gap")  # the stimulus open when the source went away
    assert [(o, k == "label") for o, k, _ in got[n1 + 1:]] == [(t["stim_onset_sample"], t["spike"]) for t in run2.truth]
    gaps = [x for x in logged if x["topic"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["restart"] is True
    beat = [x for x in logged if x["topic"] == "heartbeat"][-1]
    assert beat["sources"]["streams"][name]["restarts"] == 1 and beat["headstages"]["0"]["restarts"] == 1


def test_marker_stream_found_late_and_markers_without_sample_placed_by_stamp(tmp_path):
    """The I channel is flat: only markers tell the onsets. The marker stream is created after
    the daemon is ready, and its stimulus markers carry a stamp instead of `sample`."""
    name = unique("late-markers")
    host = LslHost([name], FS, events=False)
    daemon = Daemon(tmp_path, [name])
    try:
        host.events = [pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-events", "Markers", 1, pylsl.IRREGULAR_RATE,
                                                           pylsl.cf_string, f"{name}-ev"))]
        assert host.wait_for_consumers(), "the daemon never picked up the marker stream"
        how = HostBehaviour(stall_p=0.05, command_on_wire=False, marker_sample=False, stim_lag_ms=2.0,
                            duplicate_p=0.0, seed=5)
        run = play(host, streams(FS, 1, seed=6), 1.0, how)
        time.sleep(1.0)
    finally:
        logged = daemon.stop()
    got = answers(logged)
    assert len(got) == len(run.truth)
    for k, (a, t) in enumerate(zip(got, run.truth)):
        # placed by stamps: within the on-time pushes' own delay (the host pushes within 0.5 ms
        # of time); the first, 20 ms into the stream, rests on the first few pushes only
        assert abs(a["stim_onset_sample"] - t["stim_onset_sample"]) <= (150 if k == 0 else 25)
        assert (a["topic"] == "label") == t["spike"] and a["cell_id"] == t["cell_id"]


def test_a_marker_stream_of_numbers_is_refused_with_a_clear_message(tmp_path):
    name = unique("numeric-markers")
    host = LslHost([name], FS, events=False)
    numeric = pylsl.StreamOutlet(pylsl.StreamInfo(f"{name}-events", "Markers", 1, pylsl.IRREGULAR_RATE,
                                                  pylsl.cf_float32, f"{name}-ev"))
    daemon = Daemon(tmp_path, [name])
    try:
        assert host.wait_for_consumers()
        run = play(host, streams(FS, 1, seed=7), 0.5, HostBehaviour(stim_events=False, seed=8))
        time.sleep(1.0)
    finally:
        logged = daemon.stop()
        del numeric
    assert "not strings" in daemon.stderr and daemon.proc.returncode == 0
    assert [a["stim_onset_sample"] for a in answers(logged)] == [t["stim_onset_sample"] for t in run.truth]
    beat = [x for x in logged if x["topic"] == "heartbeat"][-1]
    assert beat["sources"]["streams"][name]["markers"].startswith("refused")


def test_a_missing_stream_fails_within_its_timeout_in_one_line():
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "rtclassify", "serve", "--source", "lsl", "--stream", unique("absent"),
                        "--timeout-s", "2"], capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no LSL stream named 'absent-") and "within 2 s" in lines[0]
    assert "ready" not in r.stderr and "INFO" not in r.stderr
    assert took < 30  # the timeout, interpreter start and imports; not the model load


def test_simulator_to_daemon_over_lsl_one_marker_per_stimulus(tmp_path):
    """The project's own simulator (stamped pushes, markers with `sample`) into the daemon, with
    the labels read back from the daemon's LSL `Markers` outlet as LabRecorder would."""
    name = unique("sim")
    out_name = unique("labels")
    truth = tmp_path / "truth.jsonl"
    sim = subprocess.Popen([sys.executable, "-m", "rtclassify", "simulate", "--sink", "lsl", "--stream", name,
                            "--cells", "3", "--sweeps", "4", "--truth", str(truth), "--wait-s", "60"],
                           stderr=subprocess.PIPE, text=True)  # in real time: the label outlet exists before
    # the daemon resolves its source, so this inlet is connected before the first label
    daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "lsl", "--stream", name,
                               "--lsl-out", out_name], stderr=subprocess.PIPE, text=True)
    try:
        found = pylsl.resolve_byprop("name", out_name, 1, 60)
        assert found, "the daemon's label outlet never appeared"
        assert found[0].type() == "Markers" and found[0].channel_format() == pylsl.cf_string
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(10)
        assert sim.wait(120) == 0, sim.stderr.read()
        stimuli = [json.loads(line) for line in truth.read_text().splitlines()]
        markers = []
        deadline = time.time() + 20
        while time.time() < deadline:
            sample, _ = inlet.pull_sample(timeout=0.5)
            if sample:
                markers.append(json.loads(sample[0]))
            elif markers and markers[-1].get("stim_onset_sample") == stimuli[-1]["stim_onset_sample"]:
                break
        answered = [m for m in markers if m.get("schema") in ("rtclassify.label/1", "rtclassify.skip/1")]
        onsets = [t["stim_onset_sample"] for t in stimuli]
        assert len(stimuli) == 12
        assert [m["stim_onset_sample"] for m in answered] == onsets  # every one, the first included
        spikes = {t["stim_onset_sample"] for t in stimuli if t["spike"]}
        assert {m["stim_onset_sample"] for m in answered if m["schema"] == "rtclassify.label/1"} == spikes
    finally:
        for p in (sim, daemon):
            if p.poll() is None:
                p.terminate()
                p.wait(20)


def test_a_daemon_joining_a_running_stream_aligns_its_count_with_the_markers(tmp_path):
    """The host streams for seconds before the daemon connects: the daemon's count starts late,
    and the first stimulus marker's `sample` (with the command step near it) fixes it, so every
    answer carries the sender's own onset sample."""
    import threading

    name = unique("join")
    host = LslHost([name], FS)
    hs = streams(FS, 1, seed=11)
    result = {}
    how = HostBehaviour(stall_p=0.05, stim_lag_ms=3.0, duplicate_p=0.0, seed=12)
    pusher = threading.Thread(target=lambda: result.setdefault("run", play(host, hs, 12.0, how)))
    pusher.start()
    time.sleep(2.0)  # the stream runs before the daemon exists
    daemon = Daemon(tmp_path, [name])
    try:
        pusher.join(60)
        time.sleep(1.0)
    finally:
        logged = daemon.stop()
    truth = {t["stim_onset_sample"]: t for t in result["run"].truth}
    got = [a for a in answers(logged) if a.get("reason") != "shutdown"]  # the sweep cut off at the end
    assert len(got) >= 40  # ~8 s of sweeps after the join
    assert len({a["stim_onset_sample"] for a in got}) == len(got)
    # before the first stimulus marker after the join the daemon can only count from its first
    # sample (the heartbeat says so): at most those first answers carry that count
    # (how many depends on where in a sweep it joined): they come first, and within the first
    # half second of the daemon's own count
    misnumbered = [k for k, a in enumerate(got) if a["stim_onset_sample"] not in truth]
    assert misnumbered == list(range(len(misnumbered))), misnumbered
    assert all(got[k]["stim_onset_sample"] < 0.5 * FS for k in misnumbered), [got[k] for k in misnumbered]
    after = got[len(misnumbered):]
    # a stimulus whose data began before the daemon's first sample is answered, as `late`
    assert len([a for a in after if a.get("reason") in ("late", "gap")]) <= 2
    for a in after:
        if a.get("reason") not in ("late", "gap"):
            assert (a["topic"] == "label") == truth[a["stim_onset_sample"]]["spike"]
    beat = [x for x in logged if x["topic"] == "heartbeat"][-1]
    assert beat["sources"]["streams"][name]["index_origin"].startswith("aligned with the markers' sample")


class Counting:
    """The daemon side of LslDataInput.pull, counting the samples handed over."""

    def __init__(self):
        self.samples, self.refused = 0, []

    def on_data(self, headstage, index, stamp, fs, x, t_recv, rig):
        self.samples += len(x)

    def malformed(self, reason, code="format"):
        self.refused.append((code, reason))


def test_a_source_faster_than_real_time_is_said_before_its_samples_go_unseen(capsys):
    """A replay pushes 35 s of a 1 kHz stream at once: more than the inlet's 30 s queue. liblsl drops the
    oldest samples without a trace a stamp could show; the daemon says so when the queue is 80% full."""
    from rtclassify.transport.lsl_source import LSL_BUFFER_S, LslDataInput

    fs, seconds = 1000.0, 35
    name = unique("replay")
    info = pylsl.StreamInfo(name, "EPhys", 2, fs, pylsl.cf_float32, name)
    outlet = pylsl.StreamOutlet(info, chunk_size=100, max_buffered=120)
    found = pylsl.resolve_byprop("name", name, 1, 5.0)
    source = LslDataInput(0, found[0])
    daemon = Counting()
    source.pull(daemon)  # nothing yet: no backlog
    assert source.status["backlog_s_max"] == 0.0 and "queued unread" not in capsys.readouterr().err
    x = np.zeros((int(fs * seconds), 2), np.float32)
    for a in range(0, len(x), 1000):
        outlet.push_chunk(x[a:a + 1000])
    deadline = time.time() + 10
    while source.inlet.samples_available() < LSL_BUFFER_S * fs * 0.9 and time.time() < deadline:
        time.sleep(0.05)
    while source.pull(daemon):
        pass
    err = capsys.readouterr().err
    assert err.count("queued unread") == 1, err  # said once for the episode, with the stream's name
    assert repr(name) in err and "faster than real time" in err
    assert source.status["backlog_s_max"] >= 0.8 * LSL_BUFFER_S
    assert daemon.samples < fs * seconds  # liblsl kept about its queue's worth: the rest went unseen
    del outlet
