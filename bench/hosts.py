"""Senders that behave like busy acquisition hosts, for the tests and the soak run.

What real hosts do that a tidy simulator does not: push chunks of varying size, stall for 3-20 ms
and then burst to catch up, push LSL chunks without explicit timestamps (liblsl stamps them at
push time), send `new_cell` ahead of its sample and `stimulus` events late, early or twice, and
run several headstages at once. The signal itself comes from rtclassify.simulator.amplifier (HeadstageStream:
sweeps with a 3 ms step, an AP or a passive response, new_cell events, ground truth).
"""
import json
import time
from dataclasses import dataclass, field

import numpy as np

from rtclassify.simulator.amplifier import HeadstageStream, SimCell


def analytic_cells(fs: float, n: int = 4) -> list[SimCell]:
    """n cells with analytic APs (1 ms before to 2 ms after the peak at fs) of varied widths:
    instant to make at any rate, unlike the conductance-based neurons."""
    t = (np.arange(int(round(0.003 * fs))) - int(round(0.001 * fs))) / fs * 1e3  # ms from the peak
    cells = []
    for k in range(n):
        rise, fall = 0.15 + 0.05 * k, 0.4 + 0.2 * k
        ap = -65.0 + 100.0 * np.where(t < 0, np.exp(-(t / rise) ** 2), np.exp(-(t / fall) ** 2))
        cells.append(SimCell(f"analytic{k}", ap, 0.0032, {"line_name": "", "dendrite_type": ""}))
    return cells


@dataclass
class HostBehaviour:
    """How the host pushes (times in ms)."""

    chunk_ms: tuple = (0.2, 3.0)  # each push holds a random duration in this range
    stall_p: float = 0.05  # probability per pass of a stall ...
    stall_ms: tuple = (3.0, 20.0)  # ... of this long, after which the host bursts to catch up
    new_cell_early_ms: float = 40.0  # new_cell sent this long before its sample
    stim_events: bool = True  # send a `stimulus` event per onset ...
    stim_event_headstages: tuple | None = None  # ... on these headstages (None: all)
    stim_lag_ms: float = 5.0  # ... this long after the onset (negative: ahead of it)
    duplicate_p: float = 0.2  # probability that a stimulus event is sent twice
    marker_sample: bool = True  # markers carry `sample`; False: they carry an explicit stamp instead
    command_on_wire: bool = True  # False: the I channel is sent flat, so only the events tell the onsets
    seed: int = 0


@dataclass
class HostRun:
    truth: list = field(default_factory=list)  # one dict per stimulus (rtclassify.simulator.amplifier's truth)
    pushes: int = 0
    stalls: int = 0
    seconds: float = 0.0
    clock0: float | None = None  # LSL clock at the host's sample 0 (its acquisition clock)


class LslHost:
    """One `EPhys` outlet (+ `<name>-events`) per headstage, pushing like a busy host."""

    def __init__(self, names: list[str], fs: float, events: bool = True):
        import pylsl

        self.pylsl = pylsl
        self.names, self.fs = names, fs
        self.data = [self.open_data(name) for name in names]
        self.events = [pylsl.StreamOutlet(pylsl.StreamInfo(f"{n}-events", "Markers", 1, pylsl.IRREGULAR_RATE,
                                                            pylsl.cf_string, f"{n}-events-src"))
                       for n in names] if events else None

    def open_data(self, name: str):
        info = self.pylsl.StreamInfo(name, "EPhys", 2, self.fs, self.pylsl.cf_float32, f"{name}-src")
        return self.pylsl.StreamOutlet(info, chunk_size=0)

    def restart(self, h: int) -> None:
        """The host restarts headstage h's stream: same name and source id, a new uid."""
        self.data[h] = None
        time.sleep(0.3)
        self.data[h] = self.open_data(self.names[h])

    def wait_for_consumers(self, timeout_s: float = 30.0) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if all(o.have_consumers() for o in self.data) and (
                    self.events is None or all(o.have_consumers() for o in self.events)):
                return True
            time.sleep(0.02)
        return False

    def push_data(self, h: int, v: np.ndarray, i: np.ndarray) -> None:
        self.data[h].push_chunk(np.column_stack([v, i]).astype(np.float32))  # no timestamp: liblsl stamps it

    def push_event(self, h: int, event: dict, stamp: float | None = None) -> None:
        if self.events is None:  # a host without marker streams
            return
        text = json.dumps({"v": 1, **event})
        if stamp is None:
            self.events[h].push_sample([text])
        else:
            self.events[h].push_sample([text], stamp)


class ZmqHost:
    """The contract's data and event messages on a PUB socket (rtclassify's own ZmqSink), pushed
    like a busy host: the pushing is play()'s; each headstage's rate may differ."""

    def __init__(self, endpoint: str, fs_by_headstage: list[float]):
        from rtclassify.simulator.sinks import ZmqSink

        self.sink = ZmqSink(endpoint, device="busy-host")
        self.fs = fs_by_headstage
        self.first = [0] * len(fs_by_headstage)

    def wait_for_consumers(self, timeout_s: float = 30.0) -> bool:
        return self.sink.wait_for_subscriber(timeout_s)

    def push_data(self, h: int, v: np.ndarray, i: np.ndarray) -> None:
        self.sink.send_data(h, self.first[h], self.fs[h], v, i)
        self.first[h] += len(v)

    def push_event(self, h: int, event: dict, stamp: float | None = None) -> None:
        self.sink.send_event(event)

    def close(self) -> None:
        self.sink.close()


def play(host, streams: list[HeadstageStream], seconds: float, how: HostBehaviour, stop=None,
         on_push=None) -> HostRun:
    """Stream `seconds` of every headstage in real time through `host`, behaving as `how` says.

    Returns the ground truth of the stimuli whose sweeps were streamed completely. on_push(h,
    first_sample, n, t_sent) is called after each data push (latency measurement).
    """
    rng = np.random.default_rng(how.seed)
    run = HostRun()
    n_total = [int(seconds * s.fs) for s in streams]
    sent = [0] * len(streams)

    def chunk_size(fs):
        return max(1, int(rng.uniform(*how.chunk_ms) * fs / 1e3))

    next_n = [chunk_size(hs.fs) for hs in streams]
    queued = [[] for _ in streams]  # (send once this many samples are pushed, event, LSL stamp or None)
    t0 = time.perf_counter()
    run.clock0 = host.pylsl.local_clock() if hasattr(host, "pylsl") else None  # LSL time of sample 0
    while any(s < n for s, n in zip(sent, n_total)) and not (stop is not None and stop.is_set()):
        if rng.random() < how.stall_p:
            run.stalls += 1
            time.sleep(rng.uniform(*how.stall_ms) / 1e3)
        elapsed = time.perf_counter() - t0
        for h, hs in enumerate(streams):
            due = int(elapsed * hs.fs)  # samples acquired by now: a host cannot push any later one
            while sent[h] + next_n[h] <= due and sent[h] < n_total[h]:
                push_chunk(host, h, hs, min(next_n[h], n_total[h] - sent[h]), sent, queued, how, rng, run, on_push)
                next_n[h] = chunk_size(hs.fs)
        time.sleep(0.0005)
    run.seconds = time.perf_counter() - t0
    end = [hs.base for hs in streams]
    search = [int(0.02 * hs.fs) for hs in streams]
    run.truth.sort(key=lambda t: (t["headstage"], t["stim_onset_sample"]))
    run.truth = [t for t in run.truth if t["stim_onset_sample"] + search[t["headstage"]] < end[t["headstage"]]]
    return run


def push_chunk(host, h, hs, n, sent, queued, how, rng, run, on_push) -> None:
    """Push the next n samples of headstage h, with the events due by then."""
    early = int(how.new_cell_early_ms * hs.fs / 1e3)
    while len(hs.v) < n + early:  # plan the next cell in time to announce it `early` ahead
        hs.extend()
    first, v, i = hs.take(n)
    for event in hs.due_events(first + n + early):
        queued[h].append((event["sample"] - early, event, None))
    lag = int(how.stim_lag_ms * hs.fs / 1e3)
    if lag < 0 and how.marker_sample:  # events ahead of their data: queued before the onset is pushed
        for t in hs.truth:
            if t["stim_onset_sample"] + lag < first + n and not t.get("_queued"):
                t["_queued"] = True
                queue_stimulus(queued[h], h, t["stim_onset_sample"], lag, None, how, rng)
    onsets_here = [t for t in hs.truth if first <= t["stim_onset_sample"] < first + n]
    hs.truth = [t for t in hs.truth if t["stim_onset_sample"] >= first + n]
    if not how.command_on_wire:
        i = np.zeros_like(i)
    send_events(host, h, [q for q in queued[h] if q[0] < first])
    queued[h] = [q for q in queued[h] if q[0] >= first]
    host.push_data(h, v, i)
    t_sent = time.perf_counter()
    run.pushes += 1
    sent[h] = first + n
    if on_push is not None:
        on_push(h, first, n, t_sent)
    for t in onsets_here:
        run.truth.append(t)
        if not t.pop("_queued", False):
            stamp = None
            if not how.marker_sample and run.clock0 is not None:  # the stimulus's own time, not its push's
                stamp = run.clock0 + t["stim_onset_sample"] / hs.fs
            queue_stimulus(queued[h], h, t["stim_onset_sample"], max(lag, 0), stamp, how, rng)
    send_events(host, h, [q for q in queued[h] if q[0] < first + n])
    queued[h] = [q for q in queued[h] if q[0] >= first + n]


def queue_stimulus(queue, h, onset, lag, stamp, how, rng) -> None:
    """Queue the stimulus event(s) of one onset: sent once onset + lag samples are pushed, twice
    with probability how.duplicate_p; with `stamp`, without `sample`."""
    if not how.stim_events or (how.stim_event_headstages is not None and h not in how.stim_event_headstages):
        return
    event = {"type": "stimulus", "headstage": h} if stamp is not None else {"type": "stimulus", "headstage": h,
                                                                            "sample": onset}
    for _ in range(2 if rng.random() < how.duplicate_p else 1):
        queue.append((onset + lag, event, stamp))


def send_events(host, h, due) -> None:
    """Send the due events (a stimulus marker without `sample` with the stamp its onset had)."""
    for _, event, stamp in due:
        host.push_event(h, event, stamp)
