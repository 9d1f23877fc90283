"""The ACQ4 module inside real ACQ4 (the vendored 0.10.39 snapshot), headless, with ACQ4's simulated
patch clamp (MockClamp) and the daemon running: every sweep forwarded once with its samples and
rate intact, answered once (a label where it fired, a skip where it did not), shown in the module.

ACQ4 runs in an environment of its own (PyQt5; rtclassify's overlay here uses PySide6), built on
first use into ~/.cache/rtclassify/ (about 2 minutes from the package index), or taken from
RTCLASSIFY_ACQ4_PYTHON and RTCLASSIFY_ACQ4_DIR when set. Skipped only when the snapshot is absent.
"""
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO.parent / "shared" / "vendor" / "acq4-0.10.39.tar.gz"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rtclassify" / "acq4-host-0.10.39"
# ACQ4's dependencies as ../shared/vendor/README.md lists them (six is used but not declared), and pyzmq
ACQ4_DEPS = ["coorx", "docstring_parser", "guppy3", "h5py", "matplotlib", "MetaArray", "neuroanalysis", "numba",
             "numpy", "pandas", "pillow", "psutil", "pyopengl", "pyqt5", "pyqtgraph", "python-json-logger", "pyyaml",
             "scikit-image", "scipy", "teleprox", "tifffile", "trimesh", "vispy", "six", "pyzmq"]
AMPLITUDES_PA = [100, 800, 200, 1000, 800, 100, 1000, 200, 800, 100, 1000, 800]  # >= 0.4 nA fires here
DOCS_PNG = REPO / "docs" / "acq4-module.png"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SNAPSHOT.is_file(), reason=f"{SNAPSHOT} (the vendored ACQ4) not present")]


def acq4_environment() -> tuple[Path, Path]:
    """(python of ACQ4's environment, extracted ACQ4 folder), built once into CACHE."""
    if os.environ.get("RTCLASSIFY_ACQ4_PYTHON") and os.environ.get("RTCLASSIFY_ACQ4_DIR"):
        return Path(os.environ["RTCLASSIFY_ACQ4_PYTHON"]), Path(os.environ["RTCLASSIFY_ACQ4_DIR"])
    src, python, done = CACHE / "acq4-0.10.39", CACHE / "venv" / "bin" / "python", CACHE / "ready"
    if not done.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        if not src.is_dir():
            with tarfile.open(SNAPSHOT) as tar:
                tar.extractall(CACHE, filter="data")
        subprocess.run([sys.executable, "-m", "venv", str(CACHE / "venv")], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ACQ4_DEPS, check=True, timeout=1500)
        subprocess.run(pip + ["--no-deps", "-e", str(src)], check=True)  # editable: ACQ4 finds config/
        done.write_text("ok")
    # rtclassify itself without its dependencies (the module needs numpy, pyzmq, pyqtgraph: ACQ4's)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)], check=True)
    return python, src


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class DataTap:
    """A second subscriber on the module's PUB socket: what the daemon receives, as it receives it."""

    def __init__(self, endpoint: str):
        import zmq

        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            if self.sock.poll(50):
                self.messages.append(self.sock.recv_multipart())

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)


def test_real_acq4_forwards_every_sweep_once_and_shows_each_answer(tmp_path):
    from rtclassify.transport.wire import parse_data, parse_event

    python, acq4_dir = acq4_environment()
    module_pub, labels = free_endpoint(), free_endpoint()
    log = tmp_path / "serve.jsonl"
    daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect", module_pub,
                               "--publish", labels, "--log", str(log), "--lsl-out", f"acq4-{time.time_ns()}",
                               "--label-window"],
                              stderr=subprocess.PIPE, text=True)
    tap = DataTap(module_pub)
    sweeps = [{"amplitude_pa": a} for a in AMPLITUDES_PA]
    sweeps[6]["new_cell"] = "cell-B"  # a new cell announced between runs
    plan = {"publish": module_pub, "labels": labels, "sweeps": sweeps, "pulse_start_s": 0.01, "pulse_ms": 3.0}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    screenshot = tmp_path / "module.png"
    try:
        for _ in range(200):  # the daemon ready (its model loaded) before ACQ4 records anything
            if log.is_file() and '"heartbeat"' in log.read_text():
                break
            time.sleep(0.1)
        host = subprocess.run([str(python), str(REPO / "tests" / "acq4_host" / "drive_acq4.py"), "--acq4",
                               str(acq4_dir), "--plan", str(tmp_path / "plan.json"), "--out", str(tmp_path / "out.json"),
                               "--screenshot", str(screenshot)],
                              env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=600)
        assert host.returncode == 0, host.stdout[-3000:] + host.stderr[-3000:]
        time.sleep(1.0)
    finally:
        tap.close()
        daemon.terminate()
        daemon.wait(30)
    out = json.loads((tmp_path / "out.json").read_text())
    recorded = out["sweeps"]
    assert len(recorded) == len(AMPLITUDES_PA) and out["forwarded"] == len(AMPLITUDES_PA) and not out["refused"]
    assert all(s["mode"] == "IC" for s in recorded)

    # what reached the daemon: each sweep once, in order, its samples and rate as ACQ4 recorded them
    chunks = [parse_data(m[1], m[2]) for m in tap.messages if m[0] == b"data"]
    events = [parse_event(m[1]) for m in tap.messages if m[0] == b"event"]
    assert len(chunks) == len(recorded)
    first = 0
    for c, s in zip(chunks, recorded):
        assert c.first_sample == first and c.fs == s["rate"] == 40_000.0
        np.testing.assert_allclose(c.samples[:, 0], s["v_mv"], rtol=1e-6, atol=1e-4)  # float32 on the wire
        np.testing.assert_allclose(c.samples[:, 1], s["i_pa"], rtol=1e-6, atol=1e-3)
        first += len(s["v_mv"])
    assert [e["cell_id"] for e in events if e["type"] == "new_cell"] == ["cell-B"]

    # each answered exactly once: a label where the neuron fired, a skip where it did not
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    answers = [m for m in logged if m["topic"] in ("label", "skip")]
    assert len(answers) == len(recorded)
    starts = np.cumsum([0] + [len(s["v_mv"]) for s in recorded])[:-1]
    for m, start, s in zip(sorted(answers, key=lambda m: m["stim_onset_sample"]), starts, recorded):
        assert start <= m["stim_onset_sample"] < start + len(s["v_mv"])
        fired = max(s["v_mv"]) > 0.0
        assert (m["topic"] == "label") == fired, (s["amplitude_pa"], m)
        if m["topic"] == "skip":
            assert m["reason"] == "no_spike"
    assert [m["cell_id"] for m in sorted(answers, key=lambda m: m["stim_onset_sample"])][6:] == ["cell-B"] * 6

    # the module showed them, closed and loaded again
    overlay = out["overlay"]
    assert overlay["answers"] == len(recorded) and overlay["labels"] == sum(m["topic"] == "label" for m in answers)
    assert overlay["cell_id"] == "cell-B" and overlay["label"] is not None and out["reloaded"]
    assert screenshot.is_file() and screenshot.stat().st_size > 5_000
    if os.environ.get("RTCLASSIFY_UPDATE_DOCS"):  # the screenshot docs/plugins.md shows, from such a run
        DOCS_PNG.write_bytes(screenshot.read_bytes())
