"""Test helpers: free loopback ports, a label subscriber, a tiny model, a synthetic sweep."""
import json
import threading
import time

import numpy as np


from rtclassify.io.ports import free_tcp_endpoint as free_endpoint  # noqa: F401  (re-exported for the tests)


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
