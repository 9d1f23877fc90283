"""Host-independent sweep forwarder: acquisition software -> the daemon's ZMQ input format.

An acquisition program that records whole sweeps (ACQ4, a MIES bridge, a script) hands each
finished current-clamp sweep to `SweepForwarder.send_sweep`; the forwarder keeps each headstage's
sample counter and message counter continuous, as ../shared/CONTRACT.md requires, and announces
new cells. Host-specific glue (an ACQ4 module, an Igor procedure) stays a thin layer over this.
"""
import time

import numpy as np

from rtclassify.transport.wire import encode_data, encode_event

REBIND_WAIT_S = 3.0  # how long a bind waits for the endpoint a just-closed forwarder held


def bind_when_free(sock, endpoint: str) -> None:
    """Bind `sock` at `endpoint`, waiting up to REBIND_WAIT_S while it is still in use. Why: a host
    that reloads its module (ACQ4: quit, then load) binds the endpoint the old forwarder closed a
    moment ago, and ZeroMQ releases a closed socket's port in its I/O thread, after close() returns;
    the bind then failed with "Address already in use" now and then. Any other error, or an endpoint
    still taken after the wait (another program), is raised."""
    import zmq

    deadline = time.monotonic() + REBIND_WAIT_S
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SweepForwarder:
    """Publishes sweeps on a bound ZMQ PUB socket (the daemon connects to it with --connect).

    chunk_samples: samples per data message (a whole sweep may be one message; the daemon accepts
    both). Sweeps of one headstage follow each other without gaps in `first_sample`.
    """

    def __init__(self, endpoint: str, device: str = "forwarder", chunk_samples: int | None = None, context=None):
        import zmq

        self.sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 2000)
        bind_when_free(self.sock, endpoint)
        self.device = device
        self.chunk = chunk_samples
        self.next_sample: dict[int, int] = {}
        self.next_seq: dict[int, int] = {}
        self.rates: dict[int, float] = {}

    def new_cell(self, headstage: int, cell_id: str) -> None:
        """Tell the daemon that a new cell is patched on this headstage (resets its verdict)."""
        self.sock.send_multipart(encode_event({"type": "new_cell", "headstage": int(headstage), "cell_id": str(cell_id),
                                               "sample": self.next_sample.get(headstage, 0)}))

    def send_sweep(self, headstage: int, v_mv: np.ndarray, i_pa: np.ndarray, fs: float) -> int:
        """Send one sweep (membrane potential mV, command pA, equal length, rate Hz); returns its first sample."""
        v_mv, i_pa = np.asarray(v_mv, dtype=np.float64), np.asarray(i_pa, dtype=np.float64)
        if v_mv.shape != i_pa.shape or v_mv.ndim != 1:
            raise ValueError(f"v {v_mv.shape} and i {i_pa.shape} must be 1-D and of equal length")
        if not fs > 0:
            raise ValueError(f"fs={fs}: must be a positive rate in Hz")
        if self.rates.setdefault(headstage, fs) != fs:
            raise ValueError(f"headstage {headstage} runs at {self.rates[headstage]} Hz, this sweep at {fs} Hz; "
                             "use another headstage number for another rate")
        first = self.next_sample.get(headstage, 0)
        step = self.chunk or len(v_mv)
        seq = self.next_seq.get(headstage, 0)
        for a in range(0, len(v_mv), step):
            self.sock.send_multipart(encode_data(self.device, headstage, seq, first + a, fs, v_mv[a:a + step],
                                                 i_pa[a:a + step]))
            seq += 1
        self.next_seq[headstage] = seq
        self.next_sample[headstage] = first + len(v_mv)
        return first

    def close(self) -> None:
        self.sock.close()
