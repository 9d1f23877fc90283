"""Lab Streaming Layer input (../shared/CONTRACT.md "LSL input"): one `EPhys` stream per headstage
and its optional `<NAME>-events` marker stream, turned into `Daemon.on_data` / `Daemon.on_event`.

What this relies on from liblsl (its documentation of inlets, timestamps and recovery):
- Between a connected outlet and inlet no sample is lost; the inlet's queue holds `max_buflen`
  seconds and drops its oldest samples only when it overflows.
- A chunk pushed without a timestamp is stamped at push time and its samples back-dated at the
  nominal rate, so a sender's push jitter moves the stamps, never the samples. The index of a
  sample is therefore the count of samples received from the stream's first sample, never a stamp
  times the rate; stamps only estimate how many samples an overflow or a reconnection lost.
- A source faster than real time (a replay) can overflow the queue while it is read all along; its
  stamps then say nothing of the loss, so the backlog is watched instead (check_backlog).
- An inlet made with recover=False raises LostError once its source is gone (instead of silently
  splicing a restarted source onto the old count). The stream is then found again by name: the
  same `uid` is the same outlet (what was pushed while disconnected is lost: a gap of the size
  its stamps say); a new `uid` is a restarted source, whose count starts again (a new index
  origin, one gap). Reconnecting runs in a background thread: other headstages never wait.
- No clock post-processing: stamps stay in the sender's clock, and so do the markers' (same host),
  which is all that placing a marker without `sample` on the data stream needs.
"""
import os
import threading
import time

import numpy as np

from rtclassify.transport.wire import MalformedMessage, parse_event
from rtclassify.daemon.publish import warn

LSL_BUFFER_S = 30  # the inlet's queue, s: a loop stalled longer than this loses samples (reported)
BACKLOG_WARN = 0.8  # of that queue: a backlog this deep is said (beyond the queue, the oldest samples go unseen)
IDLE_POLL_S = 0.0005  # inlets are polled this often when nothing is pending ...
PENDING_POLL_S = 0.0001  # ... and this often while a stimulus awaits its label (p99 -0.6 ms, measured)
RECONNECT_EVERY_S = 0.2
AGREE_S = 0.25  # a marker placed within this of its `sample` by its stamp agrees with the count ...
ALIGN_RADIUS_S = 0.05  # ... otherwise the command step within this of where its stamp puts it fixes the count
ALIGN_WAIT_S = 1.0  # the longest the first stimulus marker waits for the data around it
STAMP_HISTORY = 4096  # chunks whose stamps are kept to place markers without `sample`
ORIGIN_WINDOW_S = 2.0  # ... of which those of the last this many seconds of samples count


class LslSourceError(RuntimeError):
    """A named LSL stream is missing or unusable; the text says which and what to do."""


def resolve_data_streams(names: list[str], timeout_s: float) -> list:
    """The StreamInfo of each named data stream, all found within one `timeout_s` deadline.

    Raises LslSourceError naming the missing or unusable streams.
    """
    import pylsl

    deadline = time.monotonic() + timeout_s
    infos = []
    for name in names:
        found = pylsl.resolve_byprop("name", name, 1, max(0.0, deadline - time.monotonic()))
        if not found:
            raise LslSourceError(f"no LSL stream named {name!r} found within {timeout_s:g} s; check the name "
                                 "(--stream) and that the acquisition is streaming")
        check_data_info(found[0])
        infos.append(found[0])
    return infos


def check_data_info(info) -> None:
    """Refuse a data stream the daemon cannot read, with the reason."""
    import pylsl

    name = info.name()
    if info.channel_count() < 2:
        raise LslSourceError(f"LSL stream {name!r} has {info.channel_count()} channel(s); need 2 (V mV, I pA)")
    if info.nominal_srate() <= 0:
        raise LslSourceError(f"LSL stream {name!r} has an irregular rate; need a regular nominal rate")
    if info.channel_format() not in (pylsl.cf_float32, pylsl.cf_double64):
        raise LslSourceError(f"LSL stream {name!r} has channel format {info.channel_format()}; need float32 "
                             "(or double64) samples in mV and pA")


def read_rig_metadata(inlet, name: str):
    """The rig a data stream declares in its metadata (optional): `<desc><acquisition><filter_hz>` (Hz)
    and `<temperature_c>` (°C), as text (docs/streaming.md). None when neither is there; an unusable
    value is left out and said once on stderr, the stream is read all the same."""
    from rtclassify.daemon.publish import warn
    from rtclassify.model.envelope import RIG_UNITS, RigInfo, parse_rig_fields

    try:
        acquisition = inlet.info(1.0).desc().child("acquisition")
    except Exception:  # the full info could not be fetched in time: nothing declared
        return None
    if acquisition.empty():
        return None
    rig, why = parse_rig_fields({key: acquisition.child_value(key) for key in RIG_UNITS}, text=True)
    for reason in why:
        warn(f"LSL stream {name!r}: metadata {reason}; ignored")
    return rig if rig != RigInfo() else None


class StampMap:
    """Stream index of an LSL timestamp (markers without `sample`), from the data's own stamps.

    A sample's stamp is its true time plus the sender's push delay (stamped at push, back-dated
    at the nominal rate), and a delay is never negative: so the stream's time origin is the least
    `stamp - index / fs` over the recent chunks (after a stall and burst the chunks' stamps even
    overlap, and only this lower envelope stays monotonic). A marker stamped at the moment of its
    stimulus then maps to within the on-time pushes' own delay. Recent: the last ORIGIN_WINDOW_S,
    so that a drift between the sender's sample clock and its LSL clock does not accumulate.
    """

    def __init__(self, fs: float, size: int = STAMP_HISTORY):
        self.fs = fs
        self.size = size
        self.index = np.zeros(2 * size, np.int64)
        self.origin = np.zeros(2 * size)  # stamp - index / fs of each chunk's first sample, s
        self.n = 0

    def add(self, first_index: int, stamps: np.ndarray) -> None:
        """Record the stamps (n,) of the samples from stream index first_index on."""
        if self.n == len(self.index):  # keep the newest `size` chunks, in place
            self.index[:self.size] = self.index[self.size:]
            self.origin[:self.size] = self.origin[self.size:]
            self.n = self.size
        self.index[self.n] = first_index
        # a pulled chunk may hold several pushed ones: its least origin is its on-time part
        self.origin[self.n] = float(np.min(stamps - np.arange(len(stamps)) / self.fs)) - first_index / self.fs
        self.n += 1

    def clear(self) -> None:
        self.n = 0

    def index_at(self, ts: float) -> int | None:
        """The stream index at LSL time `ts` (None before any data)."""
        if not self.n:
            return None
        recent = self.index[:self.n] >= self.index[self.n - 1] - ORIGIN_WINDOW_S * self.fs
        t0 = float(np.min(self.origin[:self.n][recent]))
        return max(0, int(round((ts - t0) * self.fs)))


class Reconnector:
    """Finds a lost stream again by name in a background thread and opens a new inlet to it,
    preferring a new `uid` (a restarted source) over the one that was lost."""

    def __init__(self, name: str, lost_uid: str, make_inlet):
        self.name, self.lost_uid, self.make_inlet = name, lost_uid, make_inlet
        self.result = None  # (inlet, info) once connected
        self.stopped = False
        self.thread = threading.Thread(target=self.run, name=f"lsl-reconnect-{name}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        import pylsl

        while not self.stopped and self.result is None:
            found = pylsl.resolve_byprop("name", self.name, 0, RECONNECT_EVERY_S * 5)
            for info in sorted(found, key=lambda i: (i.uid() == self.lost_uid, -i.created_at())):
                try:
                    check_data_info(info)
                    self.result = (self.make_inlet(info, open_timeout_s=1.0), info)
                    break
                except Exception:  # gone again, or unusable: keep looking
                    continue
            time.sleep(RECONNECT_EVERY_S)


class LslDataInput:
    """One headstage's data stream: sample index = samples received from the stream's first."""

    def __init__(self, headstage: int, info, open_timeout_s: float = 10.0):
        import pylsl

        self.pylsl = pylsl
        self.headstage = headstage
        self.name = info.name()
        self.status = {"uid": None, "index_origin": "first received sample (not yet checked against markers)",
                       "restarts": 0, "reconnects": 0, "lost_samples": 0, "backlog_s_max": 0.0,
                       "markers": "looking for " + f"{self.name}-events"}
        self.backlog_said = False  # the current backlog episode has been said
        self.reconnector = None
        self.unread_at_loss = 0  # samples the inlet held but could not hand out when its source went away
        self.next_index = 0
        self.held = []  # (event, stamp, time held) of stimulus markers awaiting the count's check
        self.checked = False  # the count was checked against a marker's `sample`
        self.markers = LslMarkerInput(self)
        self.markers.look(wait_s=0.5)  # markers first: none is missed while the data inlet opens
        self.adopt(self.make_inlet(info, open_timeout_s), info)

    @staticmethod
    def make_inlet(info, open_timeout_s: float):
        import pylsl

        inlet = pylsl.StreamInlet(info, max_buflen=LSL_BUFFER_S, recover=False)
        inlet.open_stream(open_timeout_s)
        return inlet

    def adopt(self, inlet, info) -> None:
        """Read from `inlet` (of stream `info`) from now on."""
        self.inlet = inlet
        self.uid = info.uid()
        self.fs = float(info.nominal_srate())
        dtype = np.float32 if info.channel_format() == self.pylsl.cf_float32 else np.float64
        self.buf = np.zeros((max(int(self.fs), 1024), info.channel_count()), dtype=dtype)  # up to 1 s per pull
        self.rig = read_rig_metadata(inlet, self.name)
        self.stamps = StampMap(self.fs)
        self.last_stamp = None  # stamp of the newest sample received from this uid
        self.last_pull = time.perf_counter()  # when pull_chunk last ran (overflow needs a long pause)
        self.resumed = False  # reconnected to the same outlet: the next chunk's stamps tell what was lost
        self.status["uid"] = self.uid

    def pull(self, daemon) -> int:
        """Hand this stream's pending samples to the daemon; returns how many."""
        if self.inlet is None:
            self.take_reconnection(daemon)
            return 0
        t_recv = time.perf_counter()
        try:
            # liblsl writes straight into the preallocated buffer: no per-sample Python objects
            view, stamps = self.inlet.pull_chunk(timeout=0.0, max_samples=len(self.buf), dest_obj=self.buf,
                                                 as_numpy=True)
        except self.pylsl.util.LostError:
            self.lose(daemon)
            return 0
        n = len(stamps)
        unread_for = t_recv - self.last_pull  # the inlet can only overflow if nobody reads it this long
        self.last_pull = t_recv
        if n == len(self.buf):  # a full pull: more may be queued
            self.check_backlog()
        else:
            self.backlog_said = False
        if not n:
            return 0
        if self.resumed:
            self.resumed = False
            self.count_lost(stamps, "disconnected from the outlet", daemon)
        elif unread_for > 0.5 * LSL_BUFFER_S:
            self.count_lost(stamps, f"the daemon did not read the stream for {unread_for:.0f} s "
                                    f"(inlet buffer {LSL_BUFFER_S} s)", daemon)
        self.stamps.add(self.next_index, stamps)
        self.last_stamp = stamps[-1]
        x = view[:, :2].astype(np.float64)
        if np.isfinite(x).all():
            daemon.on_data(self.headstage, self.next_index, None, self.fs, x, t_recv, self.rig)
        else:  # unusable samples count as lost: the engine reports the gap at the next chunk
            daemon.malformed(f"LSL stream {self.name!r}: NaN/Inf in a chunk of {n} samples "
                             f"from sample {self.next_index}; chunk skipped", "non_finite")
        self.next_index += n
        return n

    def check_backlog(self) -> None:
        """Say, once per episode, when the inlet's queue is BACKLOG_WARN full: a source sending faster
        than real time (a replay) or a daemon that cannot keep up. Beyond LSL_BUFFER_S liblsl drops the
        oldest samples, and since a source's stamps then say nothing of it the count cannot see it:
        every later sample index would be off by the samples dropped."""
        try:
            queued_s = self.inlet.samples_available() / self.fs
        except Exception:  # an inlet that cannot say: nothing to report
            return
        self.status["backlog_s_max"] = max(self.status["backlog_s_max"], round(queued_s, 1))
        if queued_s >= BACKLOG_WARN * LSL_BUFFER_S and not self.backlog_said:
            self.backlog_said = True
            warn(f"LSL stream {self.name!r}: {queued_s:.0f} s of data queued unread (the inlet holds "
                 f"{LSL_BUFFER_S} s): the source sends faster than real time or this machine is overloaded; "
                 "beyond the queue the oldest samples are dropped unseen and later sample indices shift")

    def count_lost(self, stamps: np.ndarray, why: str, daemon) -> None:
        """Advance the index by the samples the stamps say were lost since the last one received."""
        if self.last_stamp is None:
            return
        lost = int(round((stamps[0] - self.last_stamp) * self.fs)) - 1
        if lost > 0:
            self.next_index += lost
            self.status["lost_samples"] += max(0, lost - self.unread_at_loss)  # those already counted by lose()
            daemon.malformed(f"LSL stream {self.name!r}: about {lost} samples lost ({why}); reported as a gap",
                             "samples_lost")

    def lose(self, daemon) -> None:
        """The source went away: what it had sent but the inlet still held is lost (liblsl
        raises LostError rather than hand it out), so the open stimuli are answered now (gap);
        look for the stream again in the background."""
        try:
            unread = int(self.inlet.samples_available())
        except Exception:
            unread = 0
        self.status["lost_samples"] += unread
        self.unread_at_loss = unread
        detail = f"the LSL source {self.name!r} went away ({unread} samples it sent could not be read)"
        warn(f"{detail}; looking for it again")
        daemon.engine.source_lost(self.headstage, detail)
        self.inlet = None
        self.reconnector = Reconnector(self.name, self.uid, self.make_inlet)

    def take_reconnection(self, daemon) -> None:
        """Switch to the inlet the reconnector opened: the same outlet continues the count after
        the samples lost meanwhile; a new one starts a new index origin at 0."""
        if self.reconnector is None or self.reconnector.result is None:
            return
        inlet, info = self.reconnector.result
        self.reconnector = None
        same = info.uid() == self.uid
        last_stamp = self.last_stamp
        self.adopt(inlet, info)
        if same:
            self.status["reconnects"] += 1
            self.last_stamp = last_stamp  # the first chunk's stamps then tell what was lost
            self.resumed = True
            warn(f"LSL stream {self.name!r} reconnected (same source)")
        else:
            self.status["restarts"] += 1
            self.next_index = 0
            self.checked = False
            self.status["index_origin"] = "first received sample (not yet checked against markers)"
            warn(f"LSL stream {self.name!r} restarted (new uid {self.uid}); sample count starts again at 0")

    def check_count(self, daemon) -> None:
        """Check the sample count against the first stimulus marker's `sample`, and fix it if the
        daemon joined the stream after its start (../shared/CONTRACT.md "LSL input").

        The count agrees when a command step lies within 1 ms of the marker's sample, or when the
        marker's stamp places it within AGREE_S of it. Otherwise the daemon missed the stream's
        beginning: the step nearest to where the stamp places the marker (within ALIGN_RADIUS_S)
        gives the exact offset (with a flat command channel, the stamp's estimate does), and the
        headstage is renumbered by it. The held markers then go to the engine.
        """
        hs = daemon.engine.headstages.get(self.headstage)
        if hs is None or hs.next_sample is None:
            return
        fs = self.fs
        offset = None
        for event, stamp, since in self.held:
            offset = self.offset_from(event["sample"], stamp, since, hs, daemon.engine.cfg.detector)
            if offset is not None:
                break
        if offset is None:
            return
        if offset:
            daemon.engine.rebase(self.headstage, offset)
            self.next_index += offset
            self.status["index_origin"] = (f"aligned with the markers' sample: the daemon joined {offset} samples "
                                           f"({offset / fs:.3f} s) after the stream's start")
            warn(f"LSL stream {self.name!r}: joined {offset / fs:.3f} s after its start; count aligned with its markers")
        else:
            self.status["index_origin"] = "first received sample, agreeing with the markers' sample"
        self.checked = True
        for e, _, _ in self.held:
            daemon.on_event(e)
        self.held = []

    def offset_from(self, sample: int, stamp: float, since: float, hs, det) -> int | None:
        """What to add to the count so that it agrees with one stimulus marker (None: this marker
        cannot tell yet, or at all: its stimulus came before the daemon's first sample)."""
        fs = self.fs
        if hs.known(sample) is not None or hs.step_onset_near(sample, max(1, int(0.001 * fs)), det) is not None:
            return 0
        placed = self.stamps.index_at(stamp)
        radius = int(ALIGN_RADIUS_S * fs)
        if placed is None or placed - radius < hs.buf.start:
            return None  # before (or too near) the first sample received: no step to check it by
        if placed + radius > hs.buf.end and time.monotonic() - since < ALIGN_WAIT_S:
            return None  # the data around it are not all here yet
        step = hs.step_onset_near(placed, radius, det)
        if step is not None:
            return sample - step
        return sample - placed if abs(sample - placed) > AGREE_S * fs else 0

    def close(self) -> None:
        if self.reconnector is not None:
            self.reconnector.stopped = True


class LslMarkerInput:
    """The optional `<NAME>-events` marker stream of one data stream, found whenever it appears."""

    def __init__(self, data: LslDataInput):
        import pylsl

        self.pylsl = pylsl
        self.data = data
        self.name = f"{data.name}-events"
        self.inlet = None
        self.refused = False
        self.resolver = pylsl.ContinuousResolver(prop="name", value=self.name)
        self.next_look = 0.0

    def look(self, wait_s: float = 0.0) -> None:
        """Open the marker stream if it exists now (or appears within wait_s)."""
        deadline = time.monotonic() + wait_s
        while True:
            found = self.resolver.results()
            if found or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not found:
            return
        info = found[0]
        if info.channel_format() != self.pylsl.cf_string:
            self.refused = True
            self.data.status["markers"] = (f"refused: {self.name!r} carries channel format {info.channel_format()}, "
                                           "not strings; send the event JSON as string samples")
            warn(f"LSL marker stream {self.name!r} ignored: {self.data.status['markers']}")
            return
        self.inlet = self.pylsl.StreamInlet(info, recover=True)
        self.inlet.open_stream(1.0)
        self.data.status["markers"] = "connected"

    def pull(self, daemon) -> None:
        """Hand pending markers to the daemon as events on this headstage."""
        if self.inlet is None:
            if not self.refused and time.monotonic() >= self.next_look:
                self.next_look = time.monotonic() + 1.0
                self.look()
            return
        markers, stamps = self.inlet.pull_chunk(timeout=0.0)
        for m, ts in zip(markers, stamps):
            try:
                event = parse_event(str(m[0]).encode(), sample_required=False)
                event["headstage"] = self.data.headstage  # the stream defines the headstage
                if event["sample"] is None:  # placed by its timestamp on the data stream's
                    event["sample"] = self.data.stamps.index_at(ts)
                    if event["sample"] is None:
                        raise MalformedMessage("marker without 'sample' before any data to place it by")
                elif event["type"] == "stimulus" and not self.data.checked:
                    self.data.held.append((event, ts, time.monotonic()))  # until the count is checked
                    continue
                daemon.on_event(event)
            except ValueError as exc:
                daemon.malformed(f"LSL marker on {self.name}: {exc}", getattr(exc, "code", "format"))
        if self.data.held:
            try:
                self.data.check_count(daemon)
            except Exception as exc:  # never lose the held markers, never stop the loop
                daemon.malformed(f"LSL stream {self.data.name!r}: checking its count failed ({type(exc).__name__}: "
                                 f"{exc}); count kept", "internal_error")
                self.data.checked = True
                for e, _, _ in self.data.held:
                    daemon.on_event(e)
                self.data.held = []


def run_lsl(daemon, infos: list, stop, on_ready=None) -> None:
    """Read the resolved data streams `infos` (headstage = position) and their marker streams
    until `stop` is set."""
    inputs = [LslDataInput(h, info) for h, info in enumerate(infos)]
    daemon.engine.source_status = {"transport": "lsl", "streams": {inp.name: inp.status for inp in inputs}}
    if on_ready:
        on_ready()
    try:
        while not stop.is_set():
            got = 0
            for inp in inputs:
                got += inp.pull(daemon)
                inp.markers.pull(daemon)
            daemon.tick()
            if got:
                continue
            # liblsl has no wait-for-any-inlet: poll; without sleeping while a label is imminent
            # (see transport/zmq_source.py), fast while a stimulus awaits its answer
            if daemon.engine.label_imminent():
                os.sched_yield()
            else:
                time.sleep(PENDING_POLL_S if daemon.pending() else IDLE_POLL_S)
    finally:
        for inp in inputs:
            inp.close()
