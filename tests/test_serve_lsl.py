"""The daemon on Lab Streaming Layer: simulated amplifier outlets in, label markers out (real liblsl)."""
import json
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.slow
pylsl = pytest.importorskip("pylsl")


def test_lsl_stimuli_each_get_one_marker(tmp_path):
    name = f"rtc-test-{uuid.uuid4().hex[:8]}"
    out_name = f"{name}-labels"
    log = tmp_path / "serve.jsonl"
    truth = tmp_path / "truth.jsonl"
    daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "lsl", "--stream", name,
                               "--model", "genetic5", "--lsl-out", out_name, "--log", str(log)],
                              stderr=subprocess.PIPE, text=True)
    sim = None
    try:
        found = pylsl.resolve_byprop("name", out_name, 1, 60)
        assert found, "the daemon's label outlet never appeared"
        assert found[0].type() == "Markers" and found[0].channel_format() == pylsl.cf_string
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(10)  # subscribe now: markers sent before the subscription are not replayed
        # the simulator waits until the daemon's inlet has connected before it streams
        sim = subprocess.Popen([sys.executable, "-m", "rtclassify", "simulate", "--sink", "lsl", "--stream", name,
                                "--cells", "3", "--sweeps", "4", "--truth", str(truth), "--wait-s", "60"],
                               stderr=subprocess.PIPE, text=True)
        assert sim.wait(120) == 0, sim.stderr.read()
        stimuli = [json.loads(line) for line in truth.read_text().splitlines()]
        markers = []
        deadline = time.time() + 20
        while time.time() < deadline and len([m for m in markers if "stim_onset_sample" in m]) < len(stimuli):
            sample, _ = inlet.pull_sample(timeout=0.5)
            if sample:
                markers.append(json.loads(sample[0]))
        answered = [m for m in markers if m.get("schema") in ("rtclassify.label/1", "rtclassify.skip/1")]
        assert len(answered) == len(stimuli) == 12
        assert sorted(m["stim_onset_sample"] for m in answered) == sorted(t["stim_onset_sample"] for t in stimuli)
        spikes = {t["stim_onset_sample"] for t in stimuli if t["spike"]}
        labelled = {m["stim_onset_sample"] for m in answered if m["schema"] == "rtclassify.label/1"}
        assert labelled == spikes
    finally:
        for p in (sim, daemon):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(20)
