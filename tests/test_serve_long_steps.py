"""Long current steps live: real ABF step families of other labs streamed through real ZeroMQ and LSL
sockets as an acquisition host sends them (V and the command current, 1 ms chunks, no stimulus
events, no timestamps), each step answered once with its features, and the cell's final verdict the
one `rtclassify sweeps` gives for the same file."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import Subscriber, acquisition_pub, free_endpoint
from rtclassify.transport.wire import encode_data, encode_event

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["abf-recordings/171116sh_0018.abf", "lab-cells/ferguson2015_PYR5_rebound.abf"]


def host_sweeps(name):
    """(fs, [(v mV, i pA)], filter Hz or None) of a file's membrane-potential channel, as its host would
    send them: the command it played (the epoch table, or the recorded current), the sweeps back to
    back, and the amplifier's low-pass its telegraph reports."""
    from rtclassify.formats.recordings import read_recording

    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} absent: the shared recordings are needed")
    sweeps = [s for s in read_recording(path) if s.clamp_mode == "current" and s.refusal is None]
    return (sweeps[0].fs, [(s.response.astype(np.float32), s.command.astype(np.float32)) for s in sweeps],
            sweeps[0].filter_hz)


def steps_of(sweeps) -> list[int]:
    """The stream samples where the command leaves its holding current: the stimuli a host sends."""
    from rtclassify.formats.stimuli import steps_after_test_pulse

    out, at = [], 0
    for v, i in sweeps:
        out += [at + a for a, _ in steps_after_test_pulse(i.astype(np.float64), 1.0, "abf")]
        at += len(v)
    return out


def offline_verdict(name):
    from rtclassify.cli import main

    r = CliRunner().invoke(main, ["sweeps", str(SHARED / name), "--model", "genetic5"])
    return [json.loads(x) for x in r.output.splitlines()][-1]["verdict"]


def check(answers, onsets, name):
    keys = [a["stim_onset_sample"] for a in answers]
    assert len(keys) == len(set(keys)), "a stimulus answered twice"
    assert sorted(keys) == sorted(onsets), (sorted(set(keys) ^ set(onsets)))
    labels = [a for a in answers if a.get("protocol") == "long_step"]
    assert len(labels) == len(onsets)  # every step of the family is a long step, and answered as one
    for a in labels:
        assert a["window_end_sample"] >= a["stim_onset_sample"] and a["features"]["step"]["stim_amp"] is not None
        assert set(a["cell"]) >= {"label", "probs", "n_windows", "evidence", "uncertain"}
    last = max(labels, key=lambda a: a["stim_onset_sample"])["cell"]
    want = offline_verdict(name)
    assert last["label"] == want["label"] and last["uncertain"] == want["uncertain"]
    assert last["probs"] == pytest.approx(want["probs"], abs=1e-3)
    assert last["evidence"]["long_step"] == want["evidence"]["long_step"]


PUSH_SPEEDUP = 5  # the hosts below push their file 5x faster than it was recorded (a real host: 1x)


def keep_pace(start: float, data_s: float) -> None:
    """Sleep until `data_s` seconds of data pushed since `start` (time.monotonic()) are no more than
    PUSH_SPEEDUP times real time. Pushed 100x faster, a loaded machine (CI's) fell behind by more than
    the daemon's LSL inlet queue holds (30 s of data) and its oldest samples were dropped, which a host
    pushing in real time cannot cause: what is under test is the answers, not the machine's spare cores."""
    ahead = start + data_s / PUSH_SPEEDUP - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)


@pytest.mark.data
@pytest.mark.parametrize("name", FILES)
def test_a_step_family_over_zeromq_is_answered_once_per_step_with_the_files_verdict(tmp_path, name):
    from rtclassify.model.envelope import RigInfo

    fs, sweeps, filter_hz = host_sweeps(name)
    rig = RigInfo(filter_hz=filter_hz)  # the optional header field: the host knows its amplifier's filter
    connect, publish = free_endpoint(), free_endpoint()
    log = tmp_path / "serve.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect", connect,
                             "--publish", publish, "--model", "genetic5", "--log", str(log)],
                            stderr=subprocess.PIPE, text=True)
    sub = Subscriber(publish)
    try:
        assert sub.wait_for(lambda s: s.of("heartbeat"), 60), "daemon sent no heartbeat"
        pub = acquisition_pub(connect)
        pub.send_multipart(encode_event({"v": 1, "type": "new_cell", "headstage": 0, "cell_id": name, "sample": 0}))
        chunk, at, seq, start = int(fs / 1000), 0, 0, time.monotonic()
        for v, i in sweeps:  # 1 ms chunks, no stimulus events: the daemon finds every step on I
            for a in range(0, len(v), chunk):
                pub.send_multipart(encode_data("host", 0, seq, at + a, fs, v[a:a + chunk], i[a:a + chunk], rig))
                seq += 1
                if seq % 200 == 0:  # bursts of 0.2 s of data
                    keep_pace(start, (at + a + chunk) / fs)
            at += len(v)
        onsets = steps_of(sweeps)
        got = lambda s: [m for t, m, _ in s.messages if t in ("label", "skip")]  # noqa: E731
        assert sub.wait_for(lambda s: len(got(s)) >= len(onsets), 120), f"{len(got(sub))} of {len(onsets)} answered"
        time.sleep(0.5)  # nothing more may come
        check(got(sub), onsets, name)
        assert all(m["cell_id"] == name for m in got(sub))
    finally:
        sub.close()
        proc.terminate()
        proc.wait(20)


@pytest.mark.data
def test_a_step_family_over_lsl_is_answered_once_per_step_with_the_files_verdict(tmp_path):
    pylsl = pytest.importorskip("pylsl")
    name = FILES[0]  # its 10 kHz filter is above the 9 kHz its 20 kHz rate allows: nothing to declare
    fs, sweeps, _ = host_sweeps(name)
    stream = f"steps-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(stream, "EPhys", 2, fs, pylsl.cf_float32, stream)
    outlet = pylsl.StreamOutlet(info, chunk_size=int(fs / 1000), max_buffered=60)
    log = tmp_path / "serve.jsonl"
    publish = free_endpoint()
    sub = Subscriber(publish)
    proc = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "lsl", "--stream", stream,
                             "--publish", publish, "--lsl-out", f"labels-{stream}", "--model", "genetic5",
                             "--log", str(log)], stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait_for(lambda s: s.of("heartbeat"), 60), "daemon sent no heartbeat"
        deadline = time.time() + 20
        while not outlet.have_consumers() and time.time() < deadline:
            time.sleep(0.05)
        chunk, at, start = int(fs / 1000), 0, time.monotonic()
        for v, i in sweeps:  # chunks without timestamps, as hosts push them
            x = np.column_stack([v, i])
            for a in range(0, len(x), chunk):
                outlet.push_chunk(x[a:a + chunk].tolist())
                if (a // chunk) % 200 == 199:  # bursts of 0.2 s of data
                    keep_pace(start, (at + a + chunk) / fs)
            at += len(x)
        onsets = steps_of(sweeps)
        got = lambda s: [m for t, m, _ in s.messages if t in ("label", "skip")]  # noqa: E731
        assert sub.wait_for(lambda s: len(got(s)) >= len(onsets), 120), f"{len(got(sub))} of {len(onsets)} answered"
        time.sleep(0.5)
        check(got(sub), onsets, name)
    finally:
        sub.close()
        proc.terminate()
        proc.wait(20)
