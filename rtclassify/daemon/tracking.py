"""Per-headstage stimulus tracking: the samples held, the step scan on the command channel, the
stimuli still open, the onsets already answered, and which cell was on the headstage when.

Sample indices here are the stream's own (the sender's `first_sample` over ZMQ, samples received
over LSL). A backward jump of that index means the source restarted: a new index origin, where
onsets answered before can no longer be told apart from new ones and are forgotten.
"""
import bisect
from dataclasses import dataclass

import numpy as np

from rtclassify.dsp import _kernels
from rtclassify.daemon.ring_buffer import RingBuffer
from rtclassify.dsp.detector import DetectorConfig, detect_steps
from rtclassify.daemon.messages import PROB_DIGITS
from rtclassify.dsp.windows import samples_at

SAME_STIMULUS_MS = 1.0  # two onsets closer than this on one headstage are one stimulus (event vs I channel)
JOIN_SETTLE_MS = 10.0  # after a start or a gap, the holding current is the median of this much data
# (a short square of up to 5 ms is then a minority of it, wherever the data began)
MAX_CELLS_KEPT = 64  # cell-timeline entries kept per headstage (a window waits far less than 64 cells)


@dataclass
class Stimulus:
    onset: int  # stream sample of the step onset
    source: str = "channel"  # "channel" (found on I) or "event" (a `stimulus` event)
    peak: int | None = None  # stream sample of its evoked AP's peak, once detected; final, as a
    # peak is only reported once V falls again, and later samples cannot move it
    threshold: int | None = None  # stream sample of that AP's threshold
    detect_ms: float = 0.0  # time the detection took, ms
    decided: bool = False  # answered, or its window handed to the model: a second report of it is a duplicate
    kind: str | None = None  # "short" (a short square, or no step on the command) or "long", once known
    holding_pa: float | None = None  # the holding current at the onset (a long step's end is the return to it)
    step_pa: float = 0.0  # a long step: its amplitude, pA from the holding current
    scanned: int | None = None  # a long step: stream sample up to which its end was looked for
    offset: int | None = None  # a long step: its end (first sample at another level), once seen
    needed_end: int | None = None  # a long step: one past the last sample its features need

    def shift(self, delta: int) -> None:
        """Renumber its samples by +delta (Headstage.rebase)."""
        self.onset += delta
        if self.peak is not None:
            self.peak += delta
            self.threshold += delta
        for name in ("scanned", "offset", "needed_end"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name) + delta)


class CellEntry:
    """One cell on a headstage from stream sample `start` on, and its accumulated verdict.

    evidence: its rtclassify.verdict.cell.CellEvidence (short squares' probabilities, long steps'
    features), made by the headstage's factory; without one (no model classes known) the verdict is
    the mean of the windows' probabilities."""

    def __init__(self, start: int, cell_id: str | None, evidence=None):
        self.start = start
        self.cell_id = cell_id
        self.evidence = evidence
        self.prob_sum: np.ndarray | None = None
        self.n_windows = 0

    def add(self, probs: np.ndarray) -> None:
        """Accumulate one short square's class probabilities (K,)."""
        self.prob_sum = probs.copy() if self.prob_sum is None else self.prob_sum + probs
        self.n_windows += 1
        if self.evidence is not None:
            self.evidence.add_ap(probs)

    def add_step(self, step, bandwidth: float, reading: tuple | None = None) -> None:
        """Accumulate one long step's features (features.step.StepFeatures); reading: (probabilities,
        features read, family features) already made by the step worker from this cell's steps."""
        self.n_windows += 1
        if self.evidence is not None:
            if reading is None:
                self.evidence.add_step(step, bandwidth)
            else:
                self.evidence.add_measured_step(step, bandwidth, *reading)

    def verdict(self, classes) -> dict | None:
        """The cell's verdict over all its evidence (None before its first): label (null when
        uncertain), probs, n_windows, evidence, uncertain, reason."""
        if not self.n_windows:
            return None
        if self.evidence is not None:
            out = self.evidence.cell_fields()
            out["n_windows"] = self.n_windows
            return out
        p = (self.prob_sum / self.n_windows).tolist()  # Python floats: cheaper to round and encode
        return {"label": classes[p.index(max(p))], "probs": {c: round(x, PROB_DIGITS) for c, x in zip(classes, p)},
                "n_windows": self.n_windows}


class CellTimeline:
    """Which cell was on the headstage at each stream sample, from the `new_cell` events.

    A `new_cell` applies from its `sample` on, whenever it arrives: announced ahead, it leaves the
    windows before its sample with the previous cell; announced late, it takes only the windows
    not yet answered. Before the first announcement the cell is unknown (cell_id None).
    """

    def __init__(self, make_evidence=None):
        self.make_evidence = make_evidence or (lambda: None)  # a fresh CellEvidence per cell
        self.entries = [CellEntry(-1, None, self.make_evidence())]  # sorted by start; the first covers everything before

    def announce(self, sample: int, cell_id: str) -> None:
        """A new cell from `sample` on (a fresh accumulation, even if the id was seen before)."""
        starts = [e.start for e in self.entries]
        k = bisect.bisect_left(starts, sample)
        if k < len(starts) and starts[k] == sample:  # announced twice at one sample: the later wins
            self.entries[k] = CellEntry(sample, cell_id, self.make_evidence())
        else:
            self.entries.insert(k, CellEntry(sample, cell_id, self.make_evidence()))
        if len(self.entries) > MAX_CELLS_KEPT:
            del self.entries[0]

    def at(self, sample: int) -> CellEntry:
        """The cell on the headstage at stream sample `sample`."""
        for entry in reversed(self.entries):
            if entry.start <= sample:
                return entry
        return self.entries[0]

    def restart(self, last_sample: int) -> None:
        """A new index origin: the cell on at `last_sample` of the old one stays on from sample 0
        (its accumulation kept); announcements ahead in the old origin's indices are dropped."""
        current = self.at(last_sample)
        current.start = -1
        self.entries = [current]


class Headstage:
    """State of one headstage: its samples, step scan, open stimuli, answered onsets and cells."""

    def __init__(self, number: int, fs: float, buffer_s: float, unusable: str | None = None, make_evidence=None):
        self.number = number
        self.fs = float(fs)
        self.unusable = unusable  # why this rate cannot be classified (None: it can)
        self.cutter = None  # its windows.WindowCutter, set by the engine for a usable rate
        self.rig = None  # model.envelope.RigInfo: what its source or the command line declares (engine.set_rig)
        self.warp = 1.0  # the temperature warp of the declared temperature (dsp.temperature.warp_factor)
        self.buf = RingBuffer(max(int(buffer_s * fs), 1024))
        self.next_sample: int | None = None
        self.next_seq: int | None = None
        self.edges = np.empty(4096, np.int64)  # step edges of one scanned chunk (grown for big chunks)
        self.pending: list[Stimulus] = []
        self.answered: list[int] = []  # sorted onsets decided in this index origin
        self.cells = CellTimeline(make_evidence)
        self.out_seq = 0
        self.counts = {"samples": 0, "gaps": 0, "restarts": 0, "labels": 0, "skips": 0, "late": 0,
                       "joined_in_step": 0}
        self.events = {"stimulus": 0, "new_cell": 0, "late": 0, "duplicate": 0, "out_of_order": 0, "ignored": 0}
        self.last_event_sample: int | None = None
        self.reset_scan(0)

    @property
    def same_stimulus(self) -> int:
        """Tolerance, in samples, within which two onsets are one stimulus."""
        return max(1, samples_at(SAME_STIMULUS_MS, self.fs))

    def reset_scan(self, at_sample: int) -> None:
        """Forget the samples and the step-scan state; the next sample is `at_sample`."""
        self.buf.reset(at_sample)
        self.scan = at_sample  # stream sample up to which the command current was scanned
        self.in_step = False
        self.step_since = at_sample  # stream sample of the last step edge
        self.holding_pa: float | None = None

    def restart_origin(self, at_sample: int) -> None:
        """The source restarted its count: onsets answered before mean nothing in the new one."""
        self.cells.restart(self.buf.end - 1)
        self.answered = []
        self.last_event_sample = None
        self.counts["restarts"] += 1
        self.reset_scan(at_sample)

    def rebase(self, delta: int) -> None:
        """Renumber everything by +delta: the daemon's count of this stream was `delta` behind the
        sender's (it joined a stream already running; the markers' `sample` says by how much)."""
        self.buf.rebase(delta)
        self.scan += delta
        self.step_since += delta
        if self.next_sample is not None:
            self.next_sample += delta
        for stim in self.pending:
            stim.shift(delta)
        self.answered = [a + delta for a in self.answered]
        for entry in self.cells.entries:
            if entry.start >= 0:
                entry.start += delta
        if self.last_event_sample is not None:
            self.last_event_sample += delta

    def step_onset_near(self, sample: int, radius: int, det: DetectorConfig) -> int | None:
        """The command-channel step onset held in the buffer nearest to `sample` (within radius
        samples), or None; "not yet" is None too (the caller checks the buffer's end)."""
        a, b = max(self.buf.start, sample - radius), min(self.buf.end, sample + radius)
        if b - a < 2:
            return None
        onsets, _ = detect_steps(self.buf.read(a, b)[:, 1], det, self.holding_pa)
        onsets = [a + int(k) for k in onsets if k > 0]  # a step already on at `a` has no onset here
        return min(onsets, key=lambda o: abs(o - sample)) if onsets else None

    def step_offset_after(self, onset: int, until: int, det: DetectorConfig) -> int | None:
        """The end (first sample after) of the command step that starts within the same-stimulus
        tolerance of `onset`, from the buffered command channel up to sample `until`; None when
        there is no such step (a stimulus known from an event only) or it has not ended by then."""
        tol = self.same_stimulus
        a, b = max(self.buf.start, onset - tol), min(self.buf.end, until)
        if b - a < 2:
            return None
        onsets, offsets = detect_steps(self.buf.read(a, b)[:, 1], det, self.holding_pa)
        for on, off in zip(onsets, offsets):
            if abs(a + int(on) - onset) <= tol and off < b - a:
                return a + int(off)
        return None

    # ---- onsets ----

    def known(self, onset: int) -> Stimulus | int | None:
        """The open stimulus, or the decided onset, that `onset` is the same stimulus as."""
        tol = self.same_stimulus
        for stim in self.pending:
            if abs(stim.onset - onset) <= tol:
                return stim
        k = bisect.bisect_left(self.answered, onset - tol)
        if k < len(self.answered) and self.answered[k] <= onset + tol:
            return self.answered[k]
        return None

    def adopt_pending(self, stimuli: list[Stimulus]) -> None:
        """Take over stimuli announced before the rate was known, in arrival order: one that is the
        same stimulus as an earlier one (within SAME_STIMULUS_MS at this rate) is a duplicate."""
        for stim in stimuli:
            if self.known(stim.onset) is None:
                self.pending.append(stim)
            else:
                self.events["duplicate"] += 1

    def mark_decided(self, stim: Stimulus) -> None:
        """`stim` is answered (or will be, by the model): later reports of its onset are duplicates."""
        if not stim.decided:
            stim.decided = True
            bisect.insort(self.answered, stim.onset)

    def scan_steps(self, det: DetectorConfig, rebaseline_ms: float) -> list[int]:
        """Onsets of the current steps on the command channel since the last scan (stream samples)."""
        a, b = self.scan, self.buf.end
        if b <= a:
            return []
        joining = self.holding_pa is None
        if joining and b - a < samples_at(JOIN_SETTLE_MS, self.fs):
            # joined a running stream (or after a gap): one short chunk may lie inside a step, and
            # its level taken for the holding current would make the step's end look like an onset
            return []
        i = self.buf.read(a, b)[:, 1]
        if joining:  # a short step is a minority of these samples: their median is the holding level
            self.holding_pa = float(np.median(i))
        if len(self.edges) < len(i):
            self.edges = np.empty(2 * len(i), np.int64)
        n_edges, quiet_sum, quiet_n = _kernels.scan_step_edges(i, self.holding_pa, det.i_threshold_pa, self.in_step,
                                                               self.edges)
        onsets = []
        for k in self.edges[:n_edges]:
            if joining and k == 0:  # the data begin inside a step: its onset was before them
                self.counts["joined_in_step"] += 1
            elif not self.in_step:
                onsets.append(a + int(k))
            self.in_step = not self.in_step
            self.step_since = a + int(k)
        if self.in_step and b - self.step_since > samples_at(rebaseline_ms, self.fs):
            # a level held this long is a new holding current (or a long step, already answered
            # through its onset): adopt it, so that the next short step is seen again
            self.holding_pa = float(np.median(i[-max(1, samples_at(5.0, self.fs)):]))
            self.in_step = False
        if not self.in_step and len(i) > 16 and quiet_n:
            # track slow changes of the holding current between steps (mean of the chunk's quiet
            # samples: steps are already excluded, and a median per chunk cost ~25 us)
            self.holding_pa = 0.9 * self.holding_pa + 0.1 * quiet_sum / quiet_n
        self.scan = b
        return onsets

    def status(self, classes) -> dict:
        """This headstage's part of the heartbeat."""
        cell = self.cells.at(max(self.buf.end - 1, 0))
        verdict = cell.verdict(classes)
        out = {**self.counts, "fs": self.fs, "pending": len(self.pending), "cell_id": cell.cell_id,
               "cell": verdict and {"label": verdict["label"], "n_windows": verdict["n_windows"],
                                    "uncertain": verdict.get("uncertain", False)},
               "events": dict(self.events)}
        if self.unusable:
            out["unusable"] = self.unusable
        return out
