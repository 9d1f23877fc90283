"""The daemon's main loops: ZMQ or LSL in, the engine, labels out; heartbeats; clean shutdown.

One thread does everything, in order, as soon as data arrive: receive -> engine -> batch
inference -> publish. Nothing blocks for longer than the poll timeout, so heartbeats keep coming
while the source is silent, and a signal stops the loop within that timeout.
"""
import gc
import time

import numpy as np

from rtclassify.engine import Engine
from rtclassify.io.wire import MalformedMessage, parse_data, parse_event
from rtclassify.publish import Publisher, warn

HEARTBEAT_S = 1.0
POLL_MS = 50
DRAIN = 64  # messages taken per wake-up before the loop classifies and checks heartbeats
BATCH_WAIT_MS = 0.3  # a ready window waits at most this long for others to share its inference batch
LSL_POLL_IDLE_S = 0.0005  # LSL inlets are polled this often when nothing is pending ...
LSL_POLL_PENDING_S = 0.0001  # ... and this often while a stimulus awaits its label (p99 -0.6 ms, measured)


def freeze_startup_objects() -> None:
    """Exempt everything allocated so far (torch, numba, scipy, the model: ~280 000 objects) from
    Python's cyclic garbage collector. Why: a full collection over them takes ~100-130 ms here
    (`rtclassify bench` measures it each run) and a middle-generation one ~0.3 ms, stalls that
    would land in some labels' latency; the live loop's own garbage is still collected, now in
    microseconds."""
    gc.collect()
    gc.freeze()


class Daemon:
    """Engine + publisher + bookkeeping shared by the transports."""

    def __init__(self, engine: Engine, publisher: Publisher):
        self.engine = engine
        self.publisher = publisher
        self.last_heartbeat = 0.0
        self.malformed_reported = 0

    def malformed(self, reason: str) -> None:
        """Count, log and (rate-limited) print a malformed message; never raise."""
        self.engine.malformed += 1
        self.publisher.emit("malformed", {"schema": "rtclassify.malformed/1", "reason": reason})
        if self.malformed_reported < 20:
            warn(f"malformed input skipped: {reason}")
            self.malformed_reported += 1

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
        ready = self.engine.ready
        if ready and (time.perf_counter() - ready[0].t_ready) * 1e3 >= BATCH_WAIT_MS:
            self.engine.classify_ready()

    def handle_zmq(self, frames: list[bytes], received_at: float) -> None:
        """One multipart message from the acquisition's PUB socket."""
        try:
            topic = frames[0]
            if topic == b"data":
                if len(frames) != 3:
                    raise MalformedMessage(f"data message with {len(frames)} frames, expected 3")
                c = parse_data(frames[1], frames[2])
                self.engine.on_data(c.headstage, c.first_sample, c.seq, c.fs, c.samples, received_at)
            elif topic == b"event":
                if len(frames) != 2:
                    raise MalformedMessage(f"event message with {len(frames)} frames, expected 2")
                self.engine.on_event(parse_event(frames[1]))
            else:
                raise MalformedMessage(f"unknown topic {topic[:32]!r}; expected b'data' or b'event'")
        except (MalformedMessage, ValueError) as exc:
            self.malformed(str(exc))
        except Exception as exc:  # the daemon outlives any single bad message
            self.malformed(f"{type(exc).__name__} while handling a message: {exc}")

    def close(self) -> None:
        self.engine.flush()
        self.publisher.emit("heartbeat", self.engine.heartbeat())
        self.publisher.close()


def run_zmq(daemon: Daemon, connect: str, stop) -> None:
    """Subscribe to the acquisition's PUB socket at `connect` until `stop` is set."""
    import zmq

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)  # queue everything: overload shows as lateness, never as loss
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(connect)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    try:
        while not stop.is_set():
            if poller.poll(POLL_MS):
                for _ in range(DRAIN):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    daemon.handle_zmq(frames, time.perf_counter())
                    daemon.classify_if_due()
            daemon.tick()
    finally:
        sub.close()


class LslInput:
    """One LSL data inlet (a headstage) and its optional `-events` marker inlet."""

    def __init__(self, headstage: int, name: str, timeout_s: float):
        import pylsl

        self.pylsl = pylsl
        self.headstage = headstage
        self.name = name
        found = pylsl.resolve_byprop("name", name, 1, timeout_s)
        if not found:
            raise RuntimeError(f"no LSL stream named {name!r} found within {timeout_s:g} s; "
                               "check the name (--stream) and that the acquisition is streaming")
        info = found[0]
        if info.channel_count() < 2:
            raise RuntimeError(f"LSL stream {name!r} has {info.channel_count()} channel(s); need 2 (V mV, I pA)")
        self.fs = float(info.nominal_srate())
        if self.fs <= 0:
            raise RuntimeError(f"LSL stream {name!r} has an irregular rate; need a regular nominal rate")
        # no clock-sync post-processing: positions come from sample counts, and data and markers
        # are stamped by the same host's clock; clock sync can block when the source goes away
        self.inlet = pylsl.StreamInlet(info, max_buflen=30, recover=True)
        self.inlet.open_stream(timeout_s)
        self.buf = np.zeros((int(self.fs), info.channel_count()), dtype=np.float32)  # up to 1 s per pull
        self.next_sample = 0
        self.first_stamp = None
        self.last_stamp = None
        ev = pylsl.resolve_byprop("name", f"{name}-events", 1, 0.5)
        self.events = pylsl.StreamInlet(ev[0], recover=True) if ev else None
        if self.events is not None:
            self.events.open_stream(timeout_s)


def run_lsl(daemon: Daemon, names: list[str], stop, resolve_timeout_s: float = 10.0) -> None:
    """Read the named LSL streams (headstage = position in `names`) until `stop` is set."""
    import pylsl

    inputs = [LslInput(h, name, resolve_timeout_s) for h, name in enumerate(names)]
    lost_reported = set()
    while not stop.is_set():
        got = 0
        for inp in inputs:
            try:
                got += pull_lsl(daemon, inp, pylsl)
                lost_reported.discard(inp.name)
            except (pylsl.LostError, TimeoutError, RuntimeError) as exc:
                # the source went away; recover=True reconnects when it comes back
                if inp.name not in lost_reported:
                    warn(f"LSL stream {inp.name!r} unavailable ({type(exc).__name__}: {exc}); waiting for it")
                    lost_reported.add(inp.name)
        daemon.tick()
        if not got:  # liblsl has no wait-for-any-inlet: poll, fast while a stimulus awaits its answer
            time.sleep(LSL_POLL_PENDING_S if daemon.engine.has_pending() else LSL_POLL_IDLE_S)


def pull_lsl(daemon: Daemon, inp: LslInput, pylsl) -> int:
    """Pull one input's pending data and events into the engine; returns samples pulled."""
    t_recv = time.perf_counter()
    # liblsl writes straight into the preallocated buffer: no per-sample Python objects
    view, stamps = inp.inlet.pull_chunk(timeout=0.0, max_samples=len(inp.buf), dest_obj=inp.buf, as_numpy=True)
    n = len(stamps)
    if n:
        x = view[:, :2].astype(np.float64)
        if inp.first_stamp is None:
            inp.first_stamp = stamps[0]
        elif stamps[0] - inp.last_stamp > 1.5 / inp.fs + 0.002:
            # a jump in time: samples were lost (or the source restarted); tell the engine by a jump in index
            inp.next_sample += int(round((stamps[0] - inp.last_stamp) * inp.fs)) - 1
        inp.last_stamp = stamps[-1]
        if not np.isfinite(x).all():
            daemon.malformed(f"LSL stream {inp.name!r}: NaN/Inf in a chunk of {n} samples; chunk skipped")
            inp.next_sample += n
        else:
            daemon.engine.on_data(inp.headstage, inp.next_sample, None, inp.fs, x, t_recv)
            inp.next_sample += n
    if inp.events is not None:
        markers, mstamps = inp.events.pull_chunk(timeout=0.0, as_numpy=False)
        for m, ts in zip(markers, mstamps):
            try:
                event = parse_event(m[0].encode())
                if event["headstage"] != inp.headstage:
                    event["headstage"] = inp.headstage  # the stream defines the headstage
                if event["type"] == "stimulus" and inp.first_stamp is not None:
                    # map the marker's time onto our sample count (the sender's index may start elsewhere)
                    event["sample"] = int(round((ts - inp.first_stamp) * inp.fs))
                daemon.engine.on_event(event)
            except (MalformedMessage, ValueError) as exc:
                daemon.malformed(f"LSL marker on {inp.name}-events: {exc}")
    return n


def replay_recordings(path: str, fs_hz: float | None, detector) -> list[tuple[str, np.ndarray, np.ndarray, float, list]]:
    """(name, v mV, i pA, fs Hz, stimulus onsets) of one replay file.

    .npz: one recording (arrays v, i) at fs_hz; its onsets are the steps on i, found as `detect`
    finds them. .nwb: every current-clamp sweep with a command (any layout rtclassify reads), at
    the file's own rates; onsets are the short-square steps (rtclassify.io.stimuli).
    """
    from rtclassify.detection import detect_steps

    if str(path).endswith(".nwb"):
        from rtclassify.io.nwb import read_sweeps
        from rtclassify.io.stimuli import find_short_square

        out = []
        for s in read_sweeps(path):
            if s.clamp_mode != "current" or s.command is None or len(s.command) != len(s.response):
                continue
            step = find_short_square(s.stimulus, s.command, s.fs)
            out.append((f"{path}#sweep{s.sweep}", s.response, s.command, s.fs, [step.onset] if step else []))
        return out
    from rtclassify.io.npz import read_npz_recording

    if not fs_hz:
        raise ValueError("an .npz recording needs its sampling rate (--fs)")
    v, i = read_npz_recording(path)
    return [(str(path), v, i, fs_hz, [int(x) for x in detect_steps(i, detector)[0]])]


def run_replay(daemon: Daemon, files: list[str], fs_hz: float | None, speed: float, stop, chunk_ms: float = 1.0) -> None:
    """Play recordings (.npz arrays v and i, or the current-clamp sweeps of NWB files) into the
    engine on headstage 0, each file a new cell; stimulus onsets are sent as `stimulus` events, as
    an acquisition program that knows its stimuli would.

    speed: multiple of real time; 0 plays as fast as possible. Samples run on continuously from
    one recording to the next, as they would from an amplifier (a rate change restarts the
    headstage's buffer, as it would on a rig).
    """
    position, played_s = 0, 0.0
    t_start = time.perf_counter()
    for path in files:
        try:
            recordings = replay_recordings(path, fs_hz, daemon.engine.cfg.detector)
        except Exception as exc:
            daemon.malformed(f"replay file {path}: {type(exc).__name__}: {exc}")
            continue
        daemon.engine.on_event({"type": "new_cell", "headstage": 0, "cell_id": str(path), "sample": position})
        for _, v, i, fs, onsets in recordings:
            chunk = max(1, int(round(chunk_ms * fs / 1000)))
            for a in range(0, len(v), chunk):
                if stop.is_set():
                    return
                if speed > 0:
                    delay = t_start + played_s + a / fs / speed - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                x = np.column_stack([v[a:a + chunk], i[a:a + chunk]])
                daemon.engine.on_data(0, position + a, None, fs, x, time.perf_counter())
                if a == 0:
                    for onset in onsets:
                        daemon.engine.on_event({"type": "stimulus", "headstage": 0, "sample": position + int(onset)})
                daemon.tick()
            position += len(v)
            played_s += len(v) / fs / (speed or 1)
