"""The streaming engine: a chunk's way from the transport to a label.

    transport (rtclassify/transport: zmq_source, lsl_source, file_replay) -> Engine.on_data / Engine.on_event
    -> tracking.Headstage (ring buffer, step scan, open stimuli, answered onsets, cells)
    -> detection.detect_spikes (the evoked AP) -> windows.WindowCutter (cut, resample)
    -> inference.InferenceBatch (the model) -> messages (label / skip JSON) -> emit (publish.py)

Transport-free: sources call `on_data` / `on_event`, then `classify_ready`; every decision leaves
through the `emit(topic, message)` callback. Every stimulus onset gets exactly one `label` or
one `skip`, whatever order its data and events arrive in, including at gaps, source restarts,
rate changes and shutdown.

Long steps: a stimulus whose step is still on 5 ms after its onset is a long step. Its AP is not
classified; once the step has ended (the first change of level: a "dual" step's first part) and
the samples its features need are in (a hyperpolarising step's rebound window, up to 0.5 s, stopped
by the next step), the step is measured (rtclassify.features, the code `sweeps` uses) and the cell
read from all its steps in a worker process (daemon/step_worker.py), so that the short squares of
other headstages do not wait for the fit, and answered with a `label` of protocol "long_step": its
features and the cell's verdict (rtclassify.verdict).

Onsets (ServeConfig.onsets): "auto" takes them from the command channel (I steps) and from
`stimulus` events alike; the same stimulus seen by both, or announced twice, is one stimulus
when the onsets lie within tracking.SAME_STIMULUS_MS (1 ms), and an event's sample replaces the
channel's onset while the stimulus is still open. "channel" ignores stimulus events (counted);
"events" does not scan the command channel.
"""
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from rtclassify.dsp import _kernels
from rtclassify.dsp.ap_check import clipped_top
from rtclassify.dsp.detector import EVOKED_SEARCH_MS, DetectorConfig, detect_spikes
from rtclassify.daemon.batch import InferenceBatch, ReadyWindow
from rtclassify.daemon.messages import build_heartbeat, build_label, build_long_label, build_skip
from rtclassify.daemon.step_worker import measure_for_cell
from rtclassify.model.file_format import LoadedModel
from rtclassify.daemon.tracking import JOIN_SETTLE_MS, Headstage, Stimulus
from rtclassify.features.family import bandwidth_hz
from rtclassify.features.step import BASELINE_S, REBOUND_S
from rtclassify.features.sweeps import LEVEL_CHANGE_PA, MIN_LONG_STEP_MS
from rtclassify.dsp.temperature import warp_factor
from rtclassify.dsp.windows import WindowCutter, check_stream_rate, samples_at
from rtclassify.model.envelope import RigInfo, judge
from rtclassify.model.trust import is_uncertain
from rtclassify.transport.wire import MAX_HEADSTAGE_NUMBER

ONSET_MODES = ("auto", "channel", "events")
LONG_STEP_MIN_PA = 5.0  # a stimulus whose command is still this far from holding after 5 ms is a long step
RETURN_RUN = 5  # samples the command must stay off a long step's level: its end
STEP_PA = 20.0  # a command this far from holding is a step: the 25 pA steps of current-step families are
# seen, 10 s.d. of the simulator's and the contract client's 2 pA command noise are not
PLACEHOLDER_FS = 1.0  # rate of a headstage known only from events so far
SPIN_MAX_S = 0.02  # the longest the sources poll without sleeping for one imminent label


@dataclass
class ServeConfig:
    """Daemon settings (units in the names)."""

    budget_ms: float = 2.0  # a label later than this after its last sample is marked late
    shed_factor: float = 20.0  # a window already budget_ms * shed_factor old is skipped (reason late)
    search_ms: float = EVOKED_SEARCH_MS  # an AP peak must come within this long after the stimulus onset
    buffer_s: float = 2.0  # ring-buffer length per headstage (at least a long step and its margins)
    max_step_s: float = 2.0  # the longest long step answered with its features; a level held longer is
    # a new holding current (its stimulus skipped, qc)
    long_budget_ms: float = 20.0  # a long step's label later than this after its last needed sample is late
    rebaseline_ms: float = 2600.0  # a current level held this long becomes the new holding current
    # (longer than a long step with its rebound window, whose end must still be seen as the step's end)
    min_confidence: float | None = None  # --min-confidence: a label or verdict whose top probability is
    # below it says uncertain (None: the card's for labels, the cell model's for verdicts)
    include_window: bool = False  # put the classified window (mV, ~1.5 kB) into each label, for the overlay
    onsets: str = "auto"  # where stimulus onsets come from: auto (channel and events), channel, events
    max_headstages: int = 16  # headstage numbers 0 .. max_headstages-1 are served; others ignored, counted
    max_pending: int = 256  # open stimuli per headstage; more (events no data ever reaches) are ignored
    max_ahead_s: float = 60.0  # an event this far ahead of its headstage's data is ignored (counted)
    rig: RigInfo = field(default_factory=RigInfo)  # the rig declared on the command line (--filter-hz,
    # --temperature-c); a source's own declaration (ZMQ header, LSL metadata) takes precedence per field
    detector: DetectorConfig = field(default_factory=lambda: replace(DetectorConfig(), i_threshold_pa=STEP_PA))

    @property
    def headstage_buffer_s(self) -> float:
        """Ring-buffer length: buffer_s, and at least a whole long step with its baseline and rebound
        window (max_step_s 0: long steps are not measured, each skipped with the reason)."""
        if self.max_step_s <= 0:
            return self.buffer_s
        return max(self.buffer_s, self.max_step_s + BASELINE_S + REBOUND_S + 0.2)

    def __post_init__(self):
        if self.onsets not in ONSET_MODES:
            raise ValueError(f"ServeConfig.onsets={self.onsets!r}: expected one of {ONSET_MODES}")
        if not 1 <= self.max_headstages <= MAX_HEADSTAGE_NUMBER:
            raise ValueError(f"ServeConfig.max_headstages={self.max_headstages}: expected 1-{MAX_HEADSTAGE_NUMBER}")

    def to_dict(self) -> dict:
        return asdict(self)


def warm_up_steps(cell_model_path: str | None = None, classes=()) -> None:
    """In the step worker: measure a synthetic hyperpolarising step and read it with the cell model
    once (imports, compiled kernels, the model file loaded), under a key no real cell has."""
    fs = 20_000.0
    t = np.arange(int(0.6 * fs)) / fs
    v = np.where(t >= 0.1, -70.0 - 8.0 * (1 - np.exp(-(t - 0.1) / 0.02)), -70.0)
    i = np.where(t >= 0.1, -50.0, 0.0)
    measure_for_cell("warm-up", cell_model_path, tuple(classes), None, 9000.0, v, i, fs, int(0.1 * fs),
                     int(0.5 * fs), int(0.6 * fs))


class Engine:
    """Stimulus-locked classification of streamed current-clamp data."""

    def __init__(self, model: LoadedModel, cfg: ServeConfig, emit, clock=time.perf_counter, notify=None):
        self.model = model
        self.cfg = cfg
        self.emit = emit
        self.notify = notify or (lambda text: None)  # one line for the operator
        self.clock = clock
        self.headstages: dict[int, Headstage] = {}
        self.batch = InferenceBatch(model, clock)
        self.malformed = 0
        self.refused: dict[str, dict[str, int]] = {"malformed": {}, "ignored": {}}  # kind -> reason -> count
        self.source_status: dict = {}  # what the transport reports of its sources (heartbeat)
        self.armed_since: float | None = None  # clock() since when a label has been imminent
        self.started = time.time()
        from rtclassify.verdict.cell_model import cell_model_for

        self.cell_model = cell_model_for(model)  # reads long steps (None: a model of other classes)
        self.cell_model_path = None if self.cell_model is None else self.cell_model.path
        self.step_pool: ProcessPoolExecutor | None = None  # made on first use, or by warm_up_step_worker
        self.step_jobs: list = []  # (headstage, Stimulus, future, t_ready, lat, bandwidth) of long steps being measured
        _kernels.warm_up()  # compile (or load from cache) before the first live chunk

    # ---- input ----

    def on_data(self, headstage: int, first_sample: int, seq: int | None, fs: float, samples: np.ndarray,
                received_at: float | None = None, rig: RigInfo | None = None) -> None:
        """Take (n, 2) samples [V mV, I pA] of one headstage starting at stream sample `first_sample`;
        rig: what the source declares of its rig with these samples (None: nothing)."""
        t0 = self.clock()
        received_at = t0 if received_at is None else received_at
        hs = self.headstages.get(headstage)
        if hs is None and not self.admits(headstage, "data"):
            return
        # a message that declares nothing leaves the headstage's rig as it was (a sender may declare it
        # once); one that declares a field overrides the command line's for that field
        declared = None if rig is None else rig.merged_over(self.cfg.rig)
        if hs is None or hs.fs != fs:
            kept = hs.rig if hs is not None and hs.rig is not None else self.cfg.rig
            hs = self.start_headstage(headstage, fs, first_sample, kept if declared is None else declared)
        else:
            if declared is not None and declared != hs.rig:
                self.set_rig(hs, declared)
            if first_sample != hs.next_sample:
                self.report_gap(hs, first_sample, seq)
            elif seq is not None and hs.next_seq is not None and seq != hs.next_seq:
                self.report_seq_jump(hs, seq)
        if 2 * len(samples) > hs.buf.capacity:  # whole sweeps in one message: make room, lose nothing
            hs.buf.grow(4 * len(samples))
        hs.buf.write(samples)
        in_buffer = self.clock()  # "process" latency counts from here: the samples are in the buffer
        hs.next_sample = first_sample + len(samples)
        hs.next_seq = None if seq is None else seq + 1
        hs.counts["samples"] += len(samples)
        queue_ms = (t0 - received_at) * 1e3
        # stimuli seen before first: a window these samples complete goes out without waiting
        # for the step scan; then the stimuli of this chunk (a whole sweep may hold all of one)
        hs.pending = self.resolve(hs, hs.pending, in_buffer, queue_ms)
        if self.cfg.onsets != "events":
            new = [Stimulus(onset) for onset in hs.scan_steps(self.cfg.detector, self.cfg.rebaseline_ms)
                   if hs.known(onset) is None]
            if new:
                hs.pending = hs.pending + self.resolve(hs, new, in_buffer, queue_ms)

    def on_event(self, event: dict) -> None:
        """A `new_cell` or `stimulus` event (already validated by the source), in stream samples."""
        hs = self.headstages.get(event["headstage"])
        if hs is None:  # a cell or stimulus may be announced before the headstage's first data
            if not self.admits(event["headstage"], f"{event['type']} event"):
                return
            hs = self.headstages[event["headstage"]] = Headstage(event["headstage"], PLACEHOLDER_FS, 0.0,
                                                                 make_evidence=self.evidence_maker(event["headstage"]))
        has_data = hs.fs != PLACEHOLDER_FS and hs.next_sample is not None
        sample = event.get("sample")
        if has_data and sample is not None and sample > hs.buf.end + self.cfg.max_ahead_s * hs.fs:
            self.refuse("ignored", "event_too_far_ahead", f"headstage {hs.number}: {event['type']} event for sample "
                        f"{sample}, more than {self.cfg.max_ahead_s:g} s after its data ({hs.buf.end})")
            return
        if event["type"] == "new_cell":
            hs.events["new_cell"] += 1
            if sample is None:  # no sample given: from the data received so far on
                sample = hs.buf.end if has_data else 0
            if has_data and sample < hs.buf.end:
                hs.events["late"] += 1
            hs.cells.announce(int(sample), str(event["cell_id"]))
            return
        hs.events["stimulus"] += 1
        if self.cfg.onsets == "channel":
            hs.events["ignored"] += 1
            self.refuse("ignored", "stimulus_event_in_channel_mode", "--onsets channel: stimulus events are not used",
                        quiet=True)
            return
        onset = int(sample)
        if hs.last_event_sample is not None and onset < hs.last_event_sample:
            hs.events["out_of_order"] += 1
        hs.last_event_sample = onset if hs.last_event_sample is None else max(onset, hs.last_event_sample)
        if has_data and onset < hs.buf.end:
            hs.events["late"] += 1
        known = hs.known(onset)
        if known is not None:
            hs.events["duplicate"] += 1
            if isinstance(known, Stimulus) and known.source == "channel" and known.peak is None:
                known.onset, known.source = onset, "event"  # the acquisition knows its own onset
            return
        stim = Stimulus(onset, source="event")
        if len(hs.pending) >= self.cfg.max_pending:
            self.refuse("ignored", "pending_limit", f"headstage {hs.number}: {len(hs.pending)} stimuli already open "
                        f"(--max-pending {self.cfg.max_pending}); stimulus event for sample {onset} not taken")
            return
        if not has_data:
            hs.pending.append(stim)
        elif onset < hs.buf.start:
            self.skip(hs, stim, "late", f"stimulus event for sample {onset} arrived when the samples held began at "
                                        f"{hs.buf.start} (the buffer keeps {self.cfg.buffer_s:g} s)")
        else:
            hs.pending = hs.pending + self.resolve(hs, [stim], self.clock(), 0.0)

    def admits(self, number: int, what: str) -> bool:
        """Whether headstage `number` may be allocated (below ServeConfig.max_headstages); a refusal is
        counted (ignored, headstage_out_of_range), so a sender's numbers never size our memory."""
        if 0 <= number < self.cfg.max_headstages:
            return True
        self.refuse("ignored", "headstage_out_of_range", f"{what} for headstage {number}: this daemon serves "
                    f"headstages 0-{self.cfg.max_headstages - 1} (serve --max-headstages)")
        return False

    def refuse(self, kind: str, code: str, detail: str, quiet: bool = False) -> None:
        """Count one refused input (kind "malformed" or "ignored", reason `code`) for the heartbeat,
        log it, and tell the operator the first time each reason occurs (unless quiet)."""
        counts = self.refused[kind]
        first = code not in counts
        counts[code] = counts.get(code, 0) + 1
        if kind == "malformed":
            self.malformed += 1
        self.emit(kind, {"schema": f"rtclassify.{kind}/1", "code": code, "reason": detail})
        if first and not quiet:
            self.notify(f"{kind} input ({code}): {detail} (further ones are counted in the heartbeat's 'refused')")

    def start_headstage(self, number: int, fs: float, first_sample: int, rig: RigInfo | None = None) -> Headstage:
        """A new headstage, or a known one whose rate changed (its open stimuli are skipped; its
        cells and counters kept). A rate the model cannot use is refused here, once."""
        old = self.headstages.get(number)
        unusable = check_stream_rate(fs, self.model.spec)
        hs = Headstage(number, fs, self.cfg.headstage_buffer_s, unusable, self.evidence_maker(number))
        if old is not None:
            if old.fs != PLACEHOLDER_FS:
                self.skip_pending(old, "gap", f"sampling rate changed from {old.fs:g} to {fs:g} Hz")
            hs.cells, hs.out_seq, hs.counts, hs.events = old.cells, old.out_seq, old.counts, old.events
            hs.answered, hs.last_event_sample = old.answered, old.last_event_sample
            if old.fs == PLACEHOLDER_FS:  # stimuli announced ahead of the first data, merged now that
                hs.adopt_pending(old.pending)  # the rate tells which of them are one stimulus
        hs.reset_scan(first_sample)
        hs.next_sample = first_sample
        self.headstages[number] = hs
        if unusable:
            self.notify(f"headstage {number}: {unusable}; its stimuli are answered with skip reason qc")
            self.emit("status", {"schema": "rtclassify.status/1", "headstage": number, "unusable": unusable})
        else:  # this rate's resampling plan, made now, not on the first live window
            self.set_rig(hs, self.cfg.rig if rig is None else rig)
        return hs

    def step_worker(self) -> ProcessPoolExecutor:
        """The process that measures long steps. A process, not a thread: a step's fit and spike loop
        would otherwise hold the interpreter lock while short squares on other headstages wait (a
        thread pool put 115 ms on their p99 beside 15 headstages of step families, bench.long_steps).
        Spawned, not forked: the daemon has threads (sockets, liblsl) that a fork would copy half-way."""
        if self.step_pool is None:
            import multiprocessing

            self.step_pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self.step_pool

    def warm_up_step_worker(self) -> None:
        """Start the step worker and measure a synthetic step in it (imports, compiled kernels) now,
        at start-up, not on the first live step (serve calls it)."""
        self.step_worker().submit(warm_up_steps, self.cell_model_path, self.model.classes).result()

    def close(self) -> None:
        """Stop the step worker (after flush)."""
        if self.step_pool is not None:
            self.step_pool.shutdown(wait=True)
            self.step_pool = None

    def evidence_maker(self, number: int):
        """A factory of fresh CellEvidence for headstage `number`'s cells (read at the headstage's
        declared temperature when the cell begins)."""
        from rtclassify.verdict.cell import CellEvidence

        def make():
            hs = self.headstages.get(number)
            rig = hs.rig if hs is not None and hs.rig is not None else self.cfg.rig
            return CellEvidence(self.model.classes, self.cell_model, rig.temperature_c, self.cfg.min_confidence,
                                self.model.trust.class_ceiling)

        return make

    def set_rig(self, hs: Headstage, rig: RigInfo) -> None:
        """What the headstage's rig is declared to be: its windows are read with the temperature warp of
        its declared temperature (rtclassify.dsp.temperature: a cooler rig's slower APs read faster, as
        if sampled at fs * warp), and its labels judged against the model's envelope with it."""
        hs.rig, hs.warp = rig, warp_factor(rig.temperature_c)
        if hs.unusable:
            return
        try:
            hs.cutter = WindowCutter(hs.fs * hs.warp, self.model.spec)
        except ValueError as exc:  # no rational resampling ratio for this warped rate: answer with qc skips
            hs.unusable = f"{exc} (temperature warp {hs.warp:g} at {rig.temperature_c:g} °C)"
            self.notify(f"headstage {hs.number}: {hs.unusable}; its stimuli are answered with skip reason qc")
            return

    def report_gap(self, hs: Headstage, first_sample: int, seq) -> None:
        """A jump in first_sample: open stimuli cannot be finished. Backwards, the source
        restarted its count (a new index origin); forwards, samples were lost."""
        hs.counts["gaps"] += 1
        restart = first_sample < hs.next_sample
        what = "the source restarted its sample count" if restart else f"{first_sample - hs.next_sample} samples lost"
        detail = f"expected sample {hs.next_sample} (seq {hs.next_seq}), got {first_sample} (seq {seq}): {what}"
        self.skip_pending(hs, "gap", detail)
        self.emit_gap(hs, detail, first_sample, restart)
        if restart:
            hs.restart_origin(first_sample)
        else:
            hs.reset_scan(first_sample)

    def report_seq_jump(self, hs: Headstage, seq: int) -> None:
        """Messages were numbered with a jump but the samples run on: reported, nothing lost."""
        hs.counts["gaps"] += 1
        detail = f"seq jumped from {hs.next_seq - 1} to {seq} while first_sample ran on at {hs.next_sample}"
        self.emit_gap(hs, detail, hs.next_sample, False)

    def emit_gap(self, hs: Headstage, detail: str, got_sample: int, restart: bool) -> None:
        self.emit("gap", {"schema": "rtclassify.gap/1", "headstage": hs.number, "detail": detail,
                          "expected_sample": hs.next_sample, "got_sample": got_sample, "restart": restart})

    def rebase(self, headstage: int, delta: int) -> None:
        """Renumber a headstage's samples by +delta (see Headstage.rebase), windows waiting included."""
        hs = self.headstages[headstage]
        hs.rebase(delta)
        for r in self.batch.ready:
            if r.headstage == headstage:
                r.window_end += delta
                r.stim.shift(delta)

    def source_lost(self, headstage: int, detail: str) -> None:
        """The headstage's source went away: its open stimuli cannot be finished (skip, gap)."""
        hs = self.headstages.get(headstage)
        if hs is not None:
            self.skip_pending(hs, "gap", detail)

    def has_pending(self) -> bool:
        """Whether any stimulus still awaits its label or skip (the sources poll faster then)."""
        return bool(self.batch.ready) or bool(self.step_jobs) or any(hs.pending for hs in self.headstages.values())

    def label_imminent(self) -> bool:
        """Whether a detected AP's window awaits its last samples (at most ~2 ms of data away), for
        no longer than SPIN_MAX_S: the sources then poll without sleeping (see transport/zmq_source.py)."""
        armed = any(stim.peak is not None for hs in self.headstages.values() for stim in hs.pending)
        if not armed:
            self.armed_since = None
            return bool(self.batch.ready)
        now = self.clock()
        if self.armed_since is None:
            self.armed_since = now
        return now - self.armed_since < SPIN_MAX_S

    # ---- detection and windows ----

    def resolve(self, hs: Headstage, stimuli: list[Stimulus], in_buffer: float, queue_ms: float) -> list[Stimulus]:
        """Decide every one of `stimuli` whose outcome the buffered data now determine; returns
        those still open. in_buffer: clock() when the newest samples were written."""
        if hs.unusable:
            for stim in stimuli:
                self.skip(hs, stim, "qc", hs.unusable)
            return []
        n_before = hs.cutter.n_before  # stream samples around the peak (more of them at a cooler rig:
        n_after = hs.cutter.n_in - n_before  # the temperature warp reads them faster)
        still = []
        for stim in stimuli:
            try:
                if self.advance(hs, stim, n_before, n_after, in_buffer, queue_ms):
                    still.append(stim)
            except Exception as exc:  # one bad window never leaves its stimulus unanswered
                self.skip(hs, stim, "qc", f"{type(exc).__name__} while cutting the window: {exc}")
        return still

    def advance(self, hs: Headstage, stim: Stimulus, n_before: int, n_after: int, in_buffer: float,
                queue_ms: float) -> bool:
        """Take `stim` as far as the buffered data allow; True while it stays open."""
        if stim.onset < hs.buf.start:
            self.skip(hs, stim, "gap", "stimulus onset is older than the buffer")
            return False
        if stim.kind is None and stim.onset < hs.buf.end:
            stim.kind = self.step_kind(hs, stim)  # None until 5 ms of the step are in
        if stim.kind == "long":
            return self.advance_long(hs, stim, in_buffer, queue_ms)
        if stim.peak is None:
            if stim.onset >= hs.buf.end:  # announced by an event ahead of its data
                return True
            outcome = self.find_evoked_spike(hs, stim, n_before, n_after)
            if outcome != "found":
                return outcome == "open"
        if hs.buf.end < stim.peak + n_after or stim.kind is None:
            self.batch.prime()  # wait for the rest of the window (and for the step's length to say it
            return True  # is a short square), with the model kept warm
        if stim.peak - n_before < hs.buf.start:
            self.skip(hs, stim, "gap", "window start is older than the buffer")
            return False
        t1 = self.clock()
        window = hs.cutter.cut(hs.buf, stim.peak - n_before)
        lat = {"queue": queue_ms, "detect": stim.detect_ms, "features": (self.clock() - t1) * 1e3}
        hs.mark_decided(stim)
        self.batch.add(ReadyWindow(hs.number, stim, window, stim.peak + n_after - 1, in_buffer, lat))
        return False

    # ---- long steps ----

    def step_kind(self, hs: Headstage, stim: Stimulus) -> str | None:
        """"long" when the command's median over the 1 ms before MIN_LONG_STEP_MS after the onset is
        still LONG_STEP_MIN_PA or more away from the holding current (a step of a family, however
        small), else "short" (a short square, or a stimulus with no step on the command); None until
        those samples are in."""
        decide_at = stim.onset + samples_at(MIN_LONG_STEP_MS, hs.fs) + 1
        a = max(hs.buf.start, stim.onset - samples_at(JOIN_SETTLE_MS, hs.fs))
        if stim.onset - a >= 2:  # the command just before the onset is the holding current (the scan's own
            holding = float(np.median(hs.buf.read(a, stim.onset)[:, 1]))  # estimate drifts inside small steps)
        elif hs.holding_pa is not None:
            holding = hs.holding_pa
        else:
            return "short"
        if hs.buf.end < decide_at:
            # a short square says so as soon as its command is back: its label need not wait for 5 ms
            if hs.buf.end - stim.onset > hs.same_stimulus + RETURN_RUN:
                tail = hs.buf.read(hs.buf.end - RETURN_RUN, hs.buf.end)[:, 1]
                if bool(np.all(np.abs(tail - holding) <= self.cfg.detector.i_threshold_pa)):
                    return "short"
            return None
        last_ms = hs.buf.read(max(stim.onset + 1, decide_at - samples_at(1.0, hs.fs)), decide_at)[:, 1]
        amp = float(np.median(last_ms)) - holding
        if abs(amp) >= LONG_STEP_MIN_PA:
            stim.holding_pa, stim.step_pa, stim.scanned = holding, amp, decide_at
            return "long"
        return "short"

    def advance_long(self, hs: Headstage, stim: Stimulus, in_buffer: float, queue_ms: float) -> bool:
        """Take a long step as far as the buffered data allow: its end (where the command leaves the
        step's level), then the samples its features need, then its measurement (in the worker); True
        while it stays open."""
        half = abs(stim.step_pa) / 2
        if stim.offset is None:
            # the step ends where the command leaves its level (back to holding, or on to another level,
            # as a "dual" protocol's -100 pA part does) for RETURN_RUN samples: one sample of noise is not an end
            i = hs.buf.read(stim.scanned, hs.buf.end)[:, 1]
            away = np.abs(i - (stim.holding_pa + stim.step_pa)) > max(LEVEL_CHANGE_PA, 0.1 * abs(stim.step_pa))
            run = np.convolve(away, np.ones(RETURN_RUN), "valid") == RETURN_RUN
            left = np.flatnonzero(run)
            if not len(left):
                stim.scanned = max(stim.scanned, hs.buf.end - RETURN_RUN + 1)
                if hs.buf.end - stim.onset > samples_at(1e3 * self.cfg.max_step_s, hs.fs):
                    self.skip(hs, stim, "qc", f"the command held its level for more than {self.cfg.max_step_s:g} s: a new "
                                              "holding current, or a step longer than serve --max-step-s")
                    return False
                return True
            stim.offset = stim.scanned + int(left[0])
            stim.needed_end = stim.offset
            after = hs.buf.read(stim.offset, stim.offset + RETURN_RUN)[:, 1]
            if stim.step_pa < 0 and abs(float(np.median(after)) - stim.holding_pa) <= half:
                stim.needed_end = stim.offset + samples_at(1e3 * REBOUND_S, hs.fs)  # back at holding: rebound window
        if hs.buf.end < stim.needed_end:
            return True
        rebound_end = stim.offset
        if stim.needed_end > stim.offset:
            i = hs.buf.read(stim.offset, stim.needed_end)[:, 1]
            away = np.flatnonzero(np.abs(i - stim.holding_pa) > LONG_STEP_MIN_PA)
            rebound_end = stim.offset + (int(away[0]) if len(away) else len(i))
        a = max(hs.buf.start, stim.onset - samples_at(1e3 * BASELINE_S, hs.fs))
        seg = hs.buf.read(a, stim.needed_end).copy()  # the worker's own copy: the buffer moves on
        hs.mark_decided(stim)
        bandwidth = bandwidth_hz(hs.fs, hs.rig.filter_hz if hs.rig is not None else None)
        cell = hs.cells.at(stim.onset)
        key = f"{hs.number}:{cell.start}:{id(cell)}"  # the worker keeps this cell's steps under it
        temperature = cell.evidence.temperature_c if cell.evidence is not None else None
        job = self.step_worker().submit(measure_for_cell, key, self.cell_model_path, self.model.classes, temperature,
                                        bandwidth, seg[:, 0], seg[:, 1], hs.fs, stim.onset - a, stim.offset - a,
                                        rebound_end - a)
        self.step_jobs.append((hs.number, stim, job, in_buffer, {"queue": queue_ms}, bandwidth))
        return False

    def collect_steps(self, wait: bool = False) -> int:
        """Publish one long step whose measurement is done (all of them, waiting, with wait); returns the
        count. One per call: steps that end together (a family on many headstages) are published one
        loop turn apart, so that short squares are served between them rather than behind them all."""
        done, still = [], []
        for item in self.step_jobs:
            (done if wait or (not done and item[2].done()) else still).append(item)
        self.step_jobs = still
        for number, stim, job, t_ready, lat, bandwidth in done:
            hs = self.headstages[number]
            try:
                step, probs, n_features, family = job.result()
            except Exception as exc:  # one bad step never leaves its stimulus unanswered
                self.skip(hs, stim, "qc", f"{type(exc).__name__} while measuring the long step: {exc}")
                continue
            cell = hs.cells.at(stim.onset)
            cell.add_step(step, bandwidth, (probs, n_features, family))
            lat = {"process": (self.clock() - t_ready) * 1e3, **lat}
            msg = build_long_label(hs, stim, step, self.model, cell, lat, self.cfg.long_budget_ms)
            hs.out_seq += 1
            hs.counts["labels"] += 1
            hs.counts["late"] += int(msg["late"])
            self.emit("label", msg)
        return len(done)

    def find_evoked_spike(self, hs: Headstage, stim: Stimulus, n_before: int, n_after: int) -> str:
        """Look for the AP that `stim` evoked in the buffered data. Returns "found" (stim.peak and
        stim.threshold set), "skipped" (answered: no AP in time, or its peak hidden by a stimulus
        edge) or "open" (not decidable yet)."""
        t0 = self.clock()
        fs = hs.fs
        search = samples_at(self.cfg.search_ms, fs)
        seg_a = max(hs.buf.start, stim.onset - n_before)
        seg_b = min(hs.buf.end, stim.onset + search + n_after)
        v = hs.buf.read(seg_a, seg_b)[:, 0]
        offset = hs.step_offset_after(stim.onset, seg_b, self.cfg.detector)
        steps = ([stim.onset - seg_a], [offset - seg_a if offset is not None else -1])  # -1: no known end
        sp = detect_spikes(v, fs, steps, self.cfg.detector)
        evoked = [k for k, p in enumerate(sp.peaks) if p + seg_a >= stim.onset]
        stim.detect_ms = (self.clock() - t0) * 1e3
        if not evoked:
            if hs.buf.end >= stim.onset + search + n_after:
                self.skip(hs, stim, "no_spike", f"no AP within {self.cfg.search_ms:g} ms of the onset")
                return "skipped"
            return "open"
        k = evoked[0]
        peak = int(sp.peaks[k] + seg_a)
        if peak >= stim.onset + search:
            self.skip(hs, stim, "no_spike", f"first AP {1e3 * (peak - stim.onset) / fs:.2f} ms after onset")
            return "skipped"
        if sp.obscured[k]:
            self.skip(hs, stim, "qc", f"AP peak hidden by a stimulus edge {1e3 * (peak - stim.onset) / fs:.2f} ms "
                      "after onset (obscured; its window is not classified)")
            return "skipped"
        clipped = clipped_top(v, int(sp.peaks[k]), fs)
        if clipped:
            self.skip(hs, stim, "qc", clipped)
            return "skipped"
        stim.peak, stim.threshold = peak, int(sp.thresholds[k] + seg_a)
        return "found"

    # ---- model and output ----

    def classify_ready(self) -> int:
        """Run the model on every ready window (one batch) and emit their labels, and publish the long
        steps measured meanwhile; returns the count of labels."""
        if not self.batch.ready:  # short squares first; a measured long step after them
            return self.collect_steps() if self.step_jobs else 0
        now = self.clock()
        shed_s = self.cfg.budget_ms * self.cfg.shed_factor / 1e3
        keep = []
        for r in self.batch.take():
            if now - r.t_ready > shed_s:
                self.skip(self.headstages[r.headstage], r.stim, "late",
                          f"window waited {1e3 * (now - r.t_ready):.1f} ms; shed to catch up")
            else:
                keep.append(r)
        if not keep:
            return self.collect_steps() if self.step_jobs else 0
        undeclared = [(self.headstages[r.headstage].rig or self.cfg.rig).temperature_c is None for r in keep]
        probs, infer_ms = self.batch.classify(keep, undeclared)
        for r, p in zip(keep, probs):
            self.publish_label(r, p, infer_ms)
        return len(keep) + (self.collect_steps() if self.step_jobs else 0)

    def publish_label(self, r: ReadyWindow, p: np.ndarray, infer_ms: float) -> None:
        hs = self.headstages[r.headstage]
        p, envelope = self.model.trust.answer(p, judge(self.model.envelope, hs.fs, hs.rig, r.window))
        cell = hs.cells.at(r.stim.onset)  # the cell on the headstage at the onset, however late its news
        cell.add(p)
        lat = {"process": (self.clock() - r.t_ready) * 1e3, **r.lat, "inference": infer_ms}
        uncertain = is_uncertain(p, self.model.trust.asked(self.cfg.min_confidence))
        msg = build_label(hs, r, p, self.model, cell, lat, self.cfg.budget_ms, self.cfg.include_window, envelope,
                          uncertain)
        hs.out_seq += 1
        hs.counts["labels"] += 1
        hs.counts["late"] += int(msg["late"])
        self.emit("label", msg)

    def skip(self, hs: Headstage, stim: Stimulus, reason: str, detail: str) -> None:
        msg = build_skip(hs, stim, hs.cells.at(stim.onset).cell_id, reason, detail)
        hs.mark_decided(stim)
        hs.out_seq += 1
        hs.counts["skips"] += 1
        self.emit("skip", msg)

    def skip_pending(self, hs: Headstage, reason: str, detail: str) -> None:
        """Answer every open stimulus of `hs` (and its windows waiting for the model) with a skip; its
        long steps already being measured have all their samples and are published as they finish."""
        for stim in hs.pending:
            self.skip(hs, stim, reason, detail)
        hs.pending = []
        for r in self.batch.take(hs.number):
            self.skip(hs, r.stim, reason, detail)

    def flush(self, reason: str = "shutdown") -> None:
        """Answer every open stimulus (at shutdown): ready windows are classified, long steps being
        measured published, the rest skipped."""
        self.classify_ready()
        self.collect_steps(wait=True)
        for hs in self.headstages.values():
            self.skip_pending(hs, reason, "daemon stopping before the stimulus was decided")

    def heartbeat(self) -> dict:
        return build_heartbeat(self)
