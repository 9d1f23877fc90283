"""ZeroMQ input: the acquisition's PUB socket (../shared/CONTRACT.md "ZeroMQ input") into the daemon.

Each multipart message becomes one `Daemon.on_data` or `Daemon.on_event` call; `first_sample` is
the sender's own index, so gaps and restarts are judged by the engine from it and from `seq`.
"""
import os
import time

from rtclassify.transport.wire import MalformedMessage, parse_data, parse_event

POLL_MS = 50  # the longest the loop sleeps: heartbeats and a stop signal wait no longer
STEP_POLL_MS = 1  # ... while a long step's features are being measured
DRAIN = 64  # messages taken per wake-up before the loop classifies and checks heartbeats


def handle_message(daemon, frames: list[bytes], received_at: float) -> None:
    """One multipart message; a malformed one is counted and reported, never raised."""
    try:
        topic = frames[0]
        if topic == b"data":
            if len(frames) != 3:
                raise MalformedMessage(f"data message with {len(frames)} frames, expected 3", "frames")
            c = parse_data(frames[1], frames[2])
            for code, detail in c.rig_errors:
                daemon.engine.refuse("ignored", code, detail)
            daemon.on_data(c.headstage, c.first_sample, c.seq, c.fs, c.samples, received_at, c.rig)
        elif topic == b"event":
            if len(frames) != 2:
                raise MalformedMessage(f"event message with {len(frames)} frames, expected 2", "frames")
            daemon.on_event(parse_event(frames[1]))
        else:
            raise MalformedMessage(f"unknown topic {topic[:32]!r}; expected b'data' or b'event'", "unknown_topic")
    except MalformedMessage as exc:
        daemon.malformed(str(exc), exc.code)
    except Exception as exc:  # the daemon outlives any single bad message
        daemon.malformed(f"{type(exc).__name__} while handling a message: {exc}", "internal_error")


def run_zmq(daemon, connect: str, stop, on_ready=None) -> None:
    """Subscribe to the acquisition's PUB socket at `connect` until `stop` is set."""
    import zmq

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)  # queue everything: overload shows as lateness, never as loss
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(connect)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    daemon.engine.source_status = {"transport": "zmq", "connect": connect}
    if on_ready:
        on_ready()
    try:
        while not stop.is_set():
            # while a label is imminent the loop polls without sleeping, yielding the core to any
            # other runnable process: on this VM a thread that slept runs the model ~4x slower
            # (`rtclassify bench`, rows "after 5 ms idle"), and the label would wait for that
            imminent = daemon.engine.label_imminent()
            # a long step being measured in the worker: look again within a millisecond for its result
            if poller.poll(0 if imminent else STEP_POLL_MS if daemon.engine.step_jobs else POLL_MS):
                for _ in range(DRAIN):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    handle_message(daemon, frames, time.perf_counter())
                    daemon.classify_if_due()
            elif imminent:
                os.sched_yield()
            daemon.tick()
    finally:
        sub.close()
