"""The sweep forwarder against the real daemon: real evoked-spike recordings in, labels out."""
import csv

import numpy as np
import pytest

from helpers import ForwarderAndDaemon

pytestmark = pytest.mark.slow


def test_forwarded_sweeps_each_get_one_answer(evoked_dir):
    with open(evoked_dir / "cases.csv", newline="") as f:
        cases = [c for c in csv.DictReader(f) if float(c["fs"]) < 60_000 and float(c["pulse_start"]) > float(c["t0"])][:5]
    with ForwarderAndDaemon() as (fwd, sub):
        fwd.new_cell(0, "cell-A")
        starts = []
        for c in cases:
            z = np.load(evoked_dir / f"{c['name']}.npz")
            # these sweeps come from different cells with different holding currents; an amplifier
            # streams one cell's sweeps at one holding level, so the command is sent relative to it
            v, i = z["v"] * 1e3, z["i"] * 1e12
            i = i - np.median(i)
            v = np.r_[np.full(2000, v[0]), v, np.full(2000, v[-1])]
            i = np.r_[np.full(2000, i[0]), i, np.full(2000, i[-1])]
            starts.append(fwd.send_sweep(0, v, i, 50_000.0))
        pulses = len(cases)
        assert sub.wait_for(lambda s: len([m for t, m, _ in s.messages if t in ("label", "skip")]) >= pulses, 20)
        answers = [m for t, m, _ in sub.messages if t in ("label", "skip")]
        assert all(m["cell_id"] == "cell-A" for m in answers)
        assert len({m["stim_onset_sample"] for m in answers}) == len(answers)
        with pytest.raises(ValueError, match="200000"):
            fwd.send_sweep(0, np.zeros(10), np.zeros(10), 200_000.0)


def test_a_reloaded_forwarder_binds_the_endpoint_its_predecessor_just_closed(monkeypatch):
    import zmq

    from helpers import free_endpoint
    from plugins import forwarder as fw

    endpoint = free_endpoint()
    for _ in range(20):  # quit + load, as ACQ4 does it, many times in a row
        f = fw.SweepForwarder(endpoint)
        f.close()
    f = fw.SweepForwarder(endpoint)
    monkeypatch.setattr(fw, "REBIND_WAIT_S", 0.3)
    with pytest.raises(zmq.ZMQError):  # still held by a live socket: refused after the wait, not hung
        fw.SweepForwarder(endpoint)
    f.close()
