"""Test helpers: free loopback ports, a label subscriber, a tiny model, a synthetic sweep."""
import json
import threading
import time

import numpy as np


from rtclassify.transport.ports import free_tcp_endpoint as free_endpoint  # noqa: F401  (re-exported for the tests)


def acquisition_pub(endpoint):
    """The acquisition side: an XPUB bound at endpoint, returned once the daemon has subscribed (its
    queued messages still sent for up to 1 s after close)."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.bind(endpoint)
    assert sock.poll(20_000), "daemon never subscribed"
    sock.recv()
    time.sleep(0.05)
    return sock


class Subscriber:
    """Collects [topic, json] messages from a ZMQ PUB endpoint in a background thread."""

    def __init__(self, endpoint: str):
        import zmq

        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            if self.sock.poll(50):
                topic, body = self.sock.recv_multipart()
                self.messages.append((topic.decode(), json.loads(body), time.perf_counter()))

    def of(self, topic):
        return [m for t, m, _ in self.messages if t == topic]

    def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def spike_sweep(fs=50_000.0, n=3000, onset=500, peak_delay_ms=3.2, spike=True, seed=0):
    """(v mV, i pA) of one sweep: a 3 ms step at `onset` and an AP peaking peak_delay_ms later."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs * 1000
    v = np.full(n, -70.0) + rng.normal(0, 0.05, n)
    i = np.zeros(n)
    step = int(3e-3 * fs)
    i[onset:onset + step] = 500.0
    if spike:
        tp = t[onset] + peak_delay_ms
        v += np.where(t < tp, 95 * np.exp(-((t - tp) / 0.3) ** 2), 95 * np.exp(-((t - tp) / 0.7) ** 2))
    return v, i


def write_allen_file(path, ap_mv, fs, onset_s=1.02, stim_to_peak_s=0.0032, n_sweeps=2, seed=0):
    """A small file in the Allen Cell Types NWB 1 layout: test pulse, then a 3 ms short square.

    Sweep 0 (and every sweep but the last when n_sweeps > 2) carries the AP `ap_mv` (1 ms before
    to 2 ms after its peak, at fs) at stim_to_peak_s after the onset; the last sweep is subthreshold.
    """
    import h5py

    n = int(1.2 * fs)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h:
        h.attrs["nwb_version"] = "NWB-1.0.5"
        for k in range(n_sweeps):
            i = np.zeros(n)
            i[int(0.01 * fs):int(0.02 * fs)] = -20.0  # test pulse, pA
            on = int(onset_s * fs)
            i[on:on + int(0.003 * fs)] = 700.0
            v = np.full(n, -70.0) + rng.normal(0, 0.05, n)
            if k < max(1, n_sweeps - 1):
                peak = on + int(stim_to_peak_s * fs)
                a = peak - int(0.001 * fs)
                v[a:a + len(ap_mv)] = ap_mv
            g = h.create_group(f"acquisition/timeseries/Sweep_{k}")
            d = g.create_dataset("data", data=(v / 1e3).astype(np.float32))
            d.attrs["unit"], d.attrs["conversion"] = "Volts", 1.0
            g.create_dataset("starting_time", data=0.0).attrs["rate"] = fs
            s = h.create_group(f"stimulus/presentation/Sweep_{k}")
            s.attrs["aibs_stimulus_name"] = "Short Square"
            d = s.create_dataset("data", data=(i / 1e12).astype(np.float32))
            d.attrs["unit"], d.attrs["conversion"] = "Amps", 1.0
            s.create_dataset("starting_time", data=0.0).attrs["rate"] = fs


def write_nwb2_file(path, sweeps, fs, stimulus="C1SSFINEST150112", filtering=None):
    """A DANDI-like NWB 2 file (pynwb): one CurrentClampSeries + stimulus series per (v mV, i pA) sweep;
    filtering: the electrode's free-text filter description."""
    import datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    nwb = NWBFile(session_description="DANDI-like test file", identifier=str(path),
                  session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    dev = nwb.create_device(name="amplifier")
    el = nwb.create_icephys_electrode(name="electrode_0", description="headstage 0", device=dev,
                                      **({"filtering": filtering} if filtering else {}))
    for k, (v_mv, i_pa) in enumerate(sweeps):
        common = dict(electrode=el, gain=1.0, rate=fs, starting_time=0.0, sweep_number=np.uint32(k),
                      stimulus_description=stimulus)
        nwb.add_acquisition(CurrentClampSeries(name=f"data_{k:05d}_AD0", data=(v_mv / 1e3).astype(np.float32), **common))
        nwb.add_stimulus(CurrentClampStimulusSeries(name=f"data_{k:05d}_DA0", data=(i_pa / 1e12).astype(np.float32),
                                                    **common))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def write_spike_folder(root, n_per_model=8, fs=50_000.0, rates=None):
    """A small folder in the allen-ctdb-spikes layout from the built-in RS / FS / LTS models.

    RS cells are labelled Rorb (spiny), FS cells Pvalb (aspiny), LTS cells Sst (aspiny), with a
    little amplitude and noise jitter per cell. Returns the folder.
    """
    import csv
    from pathlib import Path

    from rtclassify.simulator.neurons import model_ap

    root = Path(root)
    (root / "traces").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = {"RS": ("Rorb-IRES2-Cre", "spiny"), "FS": ("Pvalb-IRES-Cre", "aspiny"), "LTS": ("Sst-IRES-Cre", "aspiny")}
    rows = []
    rates = rates or (fs,)
    for name, (line, dendrite) in lines.items():
        aps = {r: model_ap(name, r) for r in rates}
        for k in range(n_per_model):
            fs = rates[k % len(rates)]  # alternate the recording rates within each model
            ap, delay, _ = aps[fs]
            sid = f"{name}{k}"
            trace = ap * (1 + 0.03 * rng.normal()) + rng.normal(0, 0.2, len(ap))
            np.save(root / "traces" / f"{sid}.npy", trace.astype(np.float32))
            rows.append([sid, "Mus musculus", fs, len(ap), line, dendrite, "5", "VISp", "positive", delay])
    with open(root / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["specimen_id", "species", "fs_hz", "n_samples", "line_name", "dendrite_type", "layer",
                    "structure", "reporter", "stimulus_to_peak_s"])
        w.writerows(rows)
    return root


class ForwarderAndDaemon:
    """A SweepForwarder, a real `rtclassify serve` connected to it, and a Subscriber on its labels.

    with ForwarderAndDaemon(device="acq4") as (fwd, sub): ... — entered once the daemon is up and
    subscribed, so that the first sweep sent is not lost to the PUB/SUB join.
    """

    def __init__(self, device: str = "forwarder", model: str = "genetic5"):
        import subprocess
        import sys

        from plugins.forwarder import SweepForwarder

        data_ep, label_ep = free_endpoint(), free_endpoint()
        self.fwd = SweepForwarder(data_ep, device=device)
        self.daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq", "--connect",
                                        data_ep, "--publish", label_ep, "--model", model],
                                       stderr=subprocess.DEVNULL)
        self.sub = Subscriber(label_ep)

    def __enter__(self):
        if not self.sub.wait_for(lambda s: s.of("heartbeat"), 60):
            self.__exit__()
            raise RuntimeError("the daemon sent no heartbeat within 60 s")
        time.sleep(0.3)  # let the daemon's subscription reach the forwarder's PUB socket
        return self.fwd, self.sub

    def __exit__(self, *exc):
        self.sub.close()
        self.daemon.terminate()
        self.daemon.wait(20)
        self.fwd.close()
