"""The streaming engine: a chunk's way from the transport to a label.

    transport (rtclassify/transport: zmq_source, lsl_source, file_replay) -> Engine.on_data / Engine.on_event
    -> tracking.Headstage (ring buffer, step scan, open stimuli, answered onsets, cells)
    -> detection.detect_spikes (the evoked AP) -> windows.WindowCutter (cut, resample)
    -> inference.InferenceBatch (the model) -> messages (label / skip JSON) -> emit (publish.py)

Transport-free: sources call `on_data` / `on_event`, then `classify_ready`; every decision leaves
through the `emit(topic, message)` callback. Every stimulus onset gets exactly one `label` or
one `skip`, whatever order its data and events arrive in, including at gaps, source restarts,
rate changes and shutdown.

Onsets (ServeConfig.onsets): "auto" takes them from the command channel (I steps) and from
`stimulus` events alike; the same stimulus seen by both, or announced twice, is one stimulus
when the onsets lie within tracking.SAME_STIMULUS_MS (1 ms), and an event's sample replaces the
channel's onset while the stimulus is still open. "channel" ignores stimulus events (counted);
"events" does not scan the command channel.
"""
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from rtclassify.dsp import _kernels
from rtclassify.dsp.detector import EVOKED_SEARCH_MS, DetectorConfig, detect_spikes
from rtclassify.daemon.batch import InferenceBatch, ReadyWindow
from rtclassify.daemon.messages import build_heartbeat, build_label, build_skip
from rtclassify.model.file_format import LoadedModel
from rtclassify.daemon.tracking import Headstage, Stimulus
from rtclassify.dsp.temperature import warp_factor
from rtclassify.dsp.windows import WindowCutter, check_stream_rate, samples_at
from rtclassify.model.envelope import RigInfo
from rtclassify.transport.wire import MAX_HEADSTAGE_NUMBER

ONSET_MODES = ("auto", "channel", "events")
PLACEHOLDER_FS = 1.0  # rate of a headstage known only from events so far
SPIN_MAX_S = 0.02  # the longest the sources poll without sleeping for one imminent label


@dataclass
class ServeConfig:
    """Daemon settings (units in the names)."""

    budget_ms: float = 2.0  # a label later than this after its last sample is marked late
    shed_factor: float = 20.0  # a window already budget_ms * shed_factor old is skipped (reason late)
    search_ms: float = EVOKED_SEARCH_MS  # an AP peak must come within this long after the stimulus onset
    buffer_s: float = 2.0  # ring-buffer length per headstage
    rebaseline_ms: float = 100.0  # a current level held this long becomes the new holding current
    include_window: bool = False  # put the classified window (mV, ~1.5 kB) into each label, for the overlay
    onsets: str = "auto"  # where stimulus onsets come from: auto (channel and events), channel, events
    max_headstages: int = 16  # headstage numbers 0 .. max_headstages-1 are served; others ignored, counted
    max_pending: int = 256  # open stimuli per headstage; more (events no data ever reaches) are ignored
    max_ahead_s: float = 60.0  # an event this far ahead of its headstage's data is ignored (counted)
    rig: RigInfo = field(default_factory=RigInfo)  # the rig declared on the command line (--filter-hz,
    # --temperature-c); a source's own declaration (ZMQ header, LSL metadata) takes precedence per field
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self):
        if self.onsets not in ONSET_MODES:
            raise ValueError(f"ServeConfig.onsets={self.onsets!r}: expected one of {ONSET_MODES}")
        if not 1 <= self.max_headstages <= MAX_HEADSTAGE_NUMBER:
            raise ValueError(f"ServeConfig.max_headstages={self.max_headstages}: expected 1-{MAX_HEADSTAGE_NUMBER}")

    def to_dict(self) -> dict:
        return asdict(self)


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
            hs = self.headstages[event["headstage"]] = Headstage(event["headstage"], PLACEHOLDER_FS, 0.0)
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
        hs = Headstage(number, fs, self.cfg.buffer_s, unusable)
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
        return bool(self.batch.ready) or any(hs.pending for hs in self.headstages.values())

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
        if stim.peak is None:
            if stim.onset >= hs.buf.end:  # announced by an event ahead of its data
                return True
            outcome = self.find_evoked_spike(hs, stim, n_before, n_after)
            if outcome != "found":
                return outcome == "open"
        if hs.buf.end < stim.peak + n_after:
            self.batch.prime()  # wait for the rest of the window, with the model kept warm
            return True
        if stim.peak - n_before < hs.buf.start:
            self.skip(hs, stim, "gap", "window start is older than the buffer")
            return False
        t1 = self.clock()
        window = hs.cutter.cut(hs.buf, stim.peak - n_before)
        lat = {"queue": queue_ms, "detect": stim.detect_ms, "features": (self.clock() - t1) * 1e3}
        hs.mark_decided(stim)
        self.batch.add(ReadyWindow(hs.number, stim, window, stim.peak + n_after - 1, in_buffer, lat))
        return False

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
        stim.peak, stim.threshold = peak, int(sp.thresholds[k] + seg_a)
        return "found"

    # ---- model and output ----

    def classify_ready(self) -> int:
        """Run the model on every ready window (one batch) and emit their labels; returns the count."""
        if not self.batch.ready:
            return 0
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
            return 0
        probs, infer_ms = self.batch.classify(keep)
        for r, p in zip(keep, probs):
            self.publish_label(r, p, infer_ms)
        return len(keep)

    def publish_label(self, r: ReadyWindow, p: np.ndarray, infer_ms: float) -> None:
        hs = self.headstages[r.headstage]
        cell = hs.cells.at(r.stim.onset)  # the cell on the headstage at the onset, however late its news
        cell.add(p)
        lat = {"process": (self.clock() - r.t_ready) * 1e3, **r.lat, "inference": infer_ms}
        msg = build_label(hs, r, p, self.model, cell, lat, self.cfg.budget_ms, self.cfg.include_window)
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
        """Answer every open stimulus of `hs` (and its windows waiting for the model) with a skip."""
        for stim in hs.pending:
            self.skip(hs, stim, reason, detail)
        hs.pending = []
        for r in self.batch.take(hs.number):
            self.skip(hs, r.stim, reason, detail)

    def flush(self, reason: str = "shutdown") -> None:
        """Answer every open stimulus (at shutdown): ready windows are classified, the rest skipped."""
        self.classify_ready()
        for hs in self.headstages.values():
            self.skip_pending(hs, reason, "daemon stopping before the stimulus was decided")

    def heartbeat(self) -> dict:
        return build_heartbeat(self)
