"""The daemon: one transport's calls into the engine, labels out, heartbeats, clean shutdown.

The transports (rtclassify/transport/: zmq_source.py, lsl_source.py, file_replay.py) turn their wire into
`Daemon.on_data` / `Daemon.on_event` calls. One thread does everything, in order, as soon as data
arrive: receive -> engine -> batch inference -> publish. Nothing blocks for longer than the
transport's poll timeout, so heartbeats keep coming while the source is silent, and a signal stops
the loop within that timeout.
"""
import gc
import time

from rtclassify.daemon.engine import Engine
from rtclassify.daemon.publish import Publisher

HEARTBEAT_S = 2.0  # the contract asks for at least one per 5 s; the overlay turns red after 5 s without
BATCH_WAIT_MS = 0.3  # a ready window waits at most this long for others to share its inference batch


def freeze_startup_objects() -> None:
    """Exempt everything allocated so far (torch, numba, scipy, the model: ~280 000 objects) from
    Python's cyclic garbage collector. Why: a full collection over them takes ~100-130 ms here
    (`rtclassify bench` measures it each run) and a middle-generation one ~0.3 ms, stalls that
    would land in some labels' latency; the live loop's own garbage is still collected, now in
    microseconds."""
    gc.collect()
    gc.freeze()


class Daemon:
    """Engine + publisher + the bookkeeping the transports share."""

    def __init__(self, engine: Engine, publisher: Publisher):
        self.engine = engine
        self.publisher = publisher
        self.last_heartbeat = 0.0

    def on_data(self, headstage: int, first_sample: int, seq: int | None, fs: float, samples, received_at: float,
                rig=None):
        """(n, 2) samples [V mV, I pA] of one headstage from stream sample `first_sample`; rig: what
        the source declares of its rig (model.envelope.RigInfo; None: nothing)."""
        self.engine.on_data(headstage, first_sample, seq, fs, samples, received_at, rig)

    def on_event(self, event: dict) -> None:
        """A validated `new_cell` or `stimulus` event."""
        self.engine.on_event(event)

    def malformed(self, reason: str, code: str = "format") -> None:
        """Count and log a malformed message (by reason `code`, in the heartbeat's `refused`); the
        operator hears of the first of each reason. Never raises."""
        self.engine.refuse("malformed", code, reason)

    def tick(self) -> None:
        """Classify what is ready and send a heartbeat when due."""
        self.engine.classify_ready()
        now = time.monotonic()
        if now - self.last_heartbeat >= HEARTBEAT_S:
            self.publisher.emit("heartbeat", self.engine.heartbeat())
            self.last_heartbeat = now

    def classify_if_due(self) -> None:
        """Classify the ready windows once the oldest has waited BATCH_WAIT_MS for batch-mates (windows
        of other headstages completed by messages already queued): a full drain of the socket would
        otherwise hold a finished window behind dozens of other headstages' messages."""
        ready = self.engine.batch.ready
        if ready and (time.perf_counter() - ready[0].t_ready) * 1e3 >= BATCH_WAIT_MS:
            self.engine.classify_ready()

    def pending(self) -> bool:
        return self.engine.has_pending()

    def close(self) -> None:
        self.engine.flush()
        self.engine.close()
        self.publisher.emit("heartbeat", self.engine.heartbeat())
        self.publisher.close()
