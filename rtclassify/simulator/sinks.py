"""Outputs of the simulated amplifier: a ZMQ PUB socket or LSL outlets, in the contract's input format."""
import json
import time

from rtclassify.transport.wire import encode_data, encode_event


class ZmqSink:
    """Binds an XPUB socket (a PUB that also sees subscriptions, so the simulator can wait for one)."""

    def __init__(self, endpoint: str, device: str = "rtclassify-sim"):
        import zmq

        self.zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # never drop: a slow daemon must show up as latency
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.bind(endpoint)
        self.device = device
        self.seq = {}

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        if self.sock.poll(int(timeout_s * 1000)):
            self.sock.recv()
            time.sleep(0.05)
            return True
        return False

    def send_data(self, headstage: int, first_sample: int, fs: float, v, i) -> None:
        seq = self.seq.get(headstage, 0)
        self.sock.send_multipart(encode_data(self.device, headstage, seq, first_sample, fs, v, i))
        self.seq[headstage] = seq + 1

    def send_event(self, event: dict, fs: float | None = None) -> None:
        self.sock.send_multipart(encode_event(event))

    def close(self) -> None:
        self.sock.close()


class LslSink:
    """One `EPhys` outlet per headstage (2 float32 channels: mV, pA) and one `<name>-events` marker outlet."""

    def __init__(self, names: list[str], fs: float, chunk: int):
        import pylsl

        self.pylsl = pylsl
        self.data = []
        self.events = []
        self.t0 = pylsl.local_clock()
        for name in names:
            info = pylsl.StreamInfo(name, "EPhys", 2, fs, pylsl.cf_float32, f"rtclassify-sim-{name}")
            chans = info.desc().append_child("channels")
            for label, unit in (("V", "mV"), ("I", "pA")):
                ch = chans.append_child("channel")
                ch.append_child_value("label", label)
                ch.append_child_value("unit", unit)
            self.data.append(pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=60))
            ev = pylsl.StreamInfo(f"{name}-events", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                  f"rtclassify-sim-{name}-events")
            self.events.append(pylsl.StreamOutlet(ev))
        self.fs = fs

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if all(o.have_consumers() for o in self.data):
                return True
            time.sleep(0.02)
        return False

    def send_data(self, headstage: int, first_sample: int, fs: float, v, i) -> None:
        import numpy as np

        chunk = np.column_stack([v, i]).astype(np.float32)
        stamp = self.t0 + (first_sample + len(chunk) - 1) / fs
        self.data[headstage].push_chunk(chunk, stamp)

    def send_event(self, event: dict, fs: float | None = None) -> None:
        stamp = self.t0 + event["sample"] / (fs or self.fs)
        self.events[event["headstage"]].push_sample([json.dumps({"v": 1, **event})], stamp)

    def close(self) -> None:
        # linger, as a ZMQ socket does: an inlet cannot read what is still queued for it once
        # the outlet is gone (liblsl raises LostError instead), so give the consumers time to drain
        if any(o.have_consumers() for o in self.data):
            time.sleep(0.25)
        self.data, self.events = [], []
