"""The streaming engine: per-headstage buffers -> stimulus and spike detection -> windows -> model.

Transport-free: sources call `on_data` / `on_event`, then `classify_ready`; every decision leaves
through the `emit(topic, message)` callback. Every stimulus onset gets exactly one `label` or
one `skip`, including at gaps, rate changes and shutdown.
"""
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from rtclassify import _kernels
from rtclassify.buffers import RingBuffer
from rtclassify.detection import EVOKED_SEARCH_MS, DetectorConfig, artifact_mask, detect_spikes
from rtclassify.modelfile import LoadedModel
from rtclassify.windows import samples_at, window_from_segment

LABEL_SCHEMA = "rtclassify.label/1"
SKIP_SCHEMA = "rtclassify.skip/1"
HEARTBEAT_SCHEMA = "rtclassify.heartbeat/1"
PLACEHOLDER_FS = 1.0  # rate of a headstage known only from an event so far
PRIME_IDLE_S = 0.0005  # a model idle this long is primed while a window's last samples are due


@dataclass
class ServeConfig:
    """Daemon settings (units in the names)."""

    budget_ms: float = 2.0  # a label later than this after its last sample is marked late
    shed_factor: float = 20.0  # a window already budget_ms * shed_factor old is skipped (reason late)
    search_ms: float = EVOKED_SEARCH_MS  # an AP peak must come within this long after the stimulus onset
    buffer_s: float = 2.0  # ring-buffer length per headstage
    rebaseline_ms: float = 100.0  # a current level held this long becomes the new holding current
    include_window: bool = True  # put the classified window (mV) into each label, for the overlay
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Stimulus:
    onset: int  # absolute sample of the step onset
    peak: int | None = None  # absolute sample of its evoked AP's peak, once detected; final, as a
    # peak is only reported once V falls again, and later samples cannot move it
    threshold: int | None = None  # absolute sample of that AP's threshold
    detect_ms: float = 0.0  # time the detection took, ms


@dataclass
class ReadyWindow:
    headstage: int
    stim: Stimulus
    window: np.ndarray  # (L,) mV at the model rate
    peak: int
    threshold: int
    window_end: int  # last input sample the decision needed (absolute)
    t_ready: float  # perf_counter when the last needed sample was in the buffer
    lat: dict


class Headstage:
    """State of one headstage: buffer, stimulus scan, pending stimuli, current cell."""

    def __init__(self, number: int, fs: float, cfg: ServeConfig):
        self.number = number
        self.fs = float(fs)
        self.buf = RingBuffer(max(int(cfg.buffer_s * fs), 1024))
        self.next_sample: int | None = None
        self.next_seq: int | None = None
        self.scan = 0  # absolute sample up to which the command current was scanned for steps
        self.in_step = False
        self.step_since = 0  # absolute sample of the last step edge
        self.holding_pa: float | None = None
        self.use_events = False  # the acquisition sends stimulus events: do not detect steps
        self.pending: list[Stimulus] = []
        self.edges = np.empty(4096, np.int64)  # step edges of one scanned chunk (grown for big chunks)
        self.out_seq = 0
        self.cell_id: str | None = None
        self.cell_sum: np.ndarray | None = None
        self.cell_n = 0
        self.counts = {"samples": 0, "gaps": 0, "labels": 0, "skips": 0, "late": 0}

    def status(self, classes) -> dict:
        return {**self.counts, "fs": self.fs, "pending": len(self.pending), "cell_id": self.cell_id,
                "cell": self.cell_verdict(classes)}

    def cell_verdict(self, classes) -> dict | None:
        if not self.cell_n:
            return None
        p = (self.cell_sum / self.cell_n).tolist()  # Python floats: cheaper to round and encode
        return {"label": classes[p.index(max(p))], "probs": {c: round(x, 5) for c, x in zip(classes, p)},
                "n_windows": self.cell_n}


class Engine:
    """Stimulus-locked classification of streamed current-clamp data."""

    def __init__(self, model: LoadedModel, cfg: ServeConfig, emit, clock=time.perf_counter):
        self.model = model
        self.cfg = cfg
        self.emit = emit
        self.clock = clock
        self.headstages: dict[int, Headstage] = {}
        self.ready: list[ReadyWindow] = []
        self.malformed = 0
        self.primes = 0
        self.last_inference = -1.0  # perf_counter of the model's last run
        self.dummy = torch.full((1, model.spec.n_samples), -60.0, device=model.device)
        self.infer = model.module.forward  # the scripted forward itself: skips nn.Module's call hooks
        self.started = time.time()
        _kernels.warm_up()  # compile (or load from cache) before the first live chunk

    # ---- input ----

    def on_data(self, headstage: int, first_sample: int, seq: int | None, fs: float, samples: np.ndarray,
                received_at: float | None = None) -> None:
        """Take (n, 2) samples [V mV, I pA] of one headstage starting at absolute `first_sample`."""
        t0 = self.clock()
        received_at = t0 if received_at is None else received_at
        hs = self.headstages.get(headstage)
        if hs is None or hs.fs != fs:
            hs = self.start_headstage(headstage, fs, first_sample)
        elif first_sample != hs.next_sample or (seq is not None and hs.next_seq is not None and seq != hs.next_seq):
            self.report_gap(hs, first_sample, seq)
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
        if not hs.use_events:
            new = self.scan_steps(hs)
            if new:
                hs.pending = hs.pending + self.resolve(hs, new, in_buffer, queue_ms)

    def on_event(self, event: dict) -> None:
        """A `new_cell` or `stimulus` event (already validated by the source)."""
        hs = self.headstages.get(event["headstage"])
        if event["type"] == "new_cell":
            if hs is None:  # the cell may be announced before its first data
                hs = self.headstages[event["headstage"]] = Headstage(event["headstage"], PLACEHOLDER_FS, self.cfg)
            hs.cell_id = str(event["cell_id"])
            hs.cell_sum, hs.cell_n = None, 0
        elif event["type"] == "stimulus":
            if hs is None or hs.fs == PLACEHOLDER_FS:
                raise ValueError(f"stimulus event for headstage {event['headstage']} before any of its data")
            hs.use_events = True
            onset = int(event["sample"])
            if not any(abs(p.onset - onset) <= 2 for p in hs.pending):  # already found on the I channel
                hs.pending.append(Stimulus(onset=onset))

    def start_headstage(self, number: int, fs: float, first_sample: int) -> Headstage:
        """A new headstage, or a known one whose rate changed (its open stimuli are skipped; its cell kept)."""
        old = self.headstages.get(number)
        hs = Headstage(number, fs, self.cfg)
        if old is not None:
            if old.fs != PLACEHOLDER_FS:
                self.skip_pending(old, "gap", f"sampling rate changed from {old.fs:g} to {fs:g} Hz")
            hs.cell_id, hs.cell_sum, hs.cell_n, hs.out_seq = old.cell_id, old.cell_sum, old.cell_n, old.out_seq
            hs.counts = old.counts
        hs.buf.reset(first_sample)
        hs.scan = first_sample
        self.headstages[number] = hs
        return hs

    def report_gap(self, hs: Headstage, first_sample: int, seq) -> None:
        """A jump in first_sample or seq: pending stimuli cannot be finished; start afresh."""
        hs.counts["gaps"] += 1
        detail = f"expected sample {hs.next_sample} (seq {hs.next_seq}), got {first_sample} (seq {seq})"
        self.skip_pending(hs, "gap", detail)
        hs.buf.reset(first_sample)
        hs.scan = first_sample
        hs.in_step = False
        self.emit("gap", {"schema": "rtclassify.gap/1", "headstage": hs.number, "detail": detail,
                          "expected_sample": hs.next_sample, "got_sample": first_sample})

    def has_pending(self) -> bool:
        """Whether any stimulus still awaits its label or skip (the sources poll faster then)."""
        return bool(self.ready) or any(hs.pending for hs in self.headstages.values())

    # ---- detection ----

    def scan_steps(self, hs: Headstage) -> list[Stimulus]:
        """The step onsets on the command current since the last scan (offsets end the step)."""
        det = self.cfg.detector
        a, b = hs.scan, hs.buf.end
        if b <= a:
            return []
        i = hs.buf.read(a, b)[:, 1]
        if hs.holding_pa is None:
            hs.holding_pa = float(np.median(i))
        if len(hs.edges) < len(i):
            hs.edges = np.empty(2 * len(i), np.int64)
        n_edges, quiet_sum, quiet_n = _kernels.scan_step_edges(i, hs.holding_pa, det.i_threshold_pa, hs.in_step,
                                                               hs.edges)
        found = []
        for k in hs.edges[:n_edges]:
            if not hs.in_step:
                found.append(Stimulus(onset=a + int(k)))
            hs.in_step = not hs.in_step
            hs.step_since = a + int(k)
        if hs.in_step and b - hs.step_since > samples_at(self.cfg.rebaseline_ms, hs.fs):
            # a level held this long is a new holding current (or a long step, already answered
            # through its onset): adopt it, so that the next short step is seen again
            hs.holding_pa = float(np.median(i[-max(1, samples_at(5.0, hs.fs)):]))
            hs.in_step = False
        if not hs.in_step and len(i) > 16 and quiet_n:
            # track slow changes of the holding current between steps (mean of the chunk's quiet
            # samples: steps are already excluded, and a median per chunk cost ~25 us)
            hs.holding_pa = 0.9 * hs.holding_pa + 0.1 * quiet_sum / quiet_n
        hs.scan = b
        return found

    def resolve(self, hs: Headstage, stimuli: list[Stimulus], in_buffer: float, queue_ms: float) -> list[Stimulus]:
        """Decide every one of `stimuli` whose outcome the buffered data now determine; returns
        those still open. in_buffer: perf_counter when the newest samples were written."""
        n_before = samples_at(self.model.spec.before_ms, hs.fs)
        n_after = samples_at(self.model.spec.after_ms, hs.fs)
        still = []
        for stim in stimuli:
            if stim.onset < hs.buf.start:
                self.skip(hs, stim, "gap", "stimulus onset is older than the buffer")
                continue
            if stim.peak is None:
                if stim.onset >= hs.buf.end:  # announced by an event ahead of its data
                    still.append(stim)
                    continue
                outcome = self.find_evoked_spike(hs, stim, n_before, n_after)
                if outcome != "found":
                    if outcome == "open":
                        still.append(stim)
                    continue
            if hs.buf.end < stim.peak + n_after:
                still.append(stim)  # wait for the rest of the window
                self.prime_model()
                continue
            if stim.peak - n_before < hs.buf.start:
                self.skip(hs, stim, "gap", "window start is older than the buffer")
                continue
            t1 = self.clock()
            seg = hs.buf.read(stim.peak - n_before, stim.peak + n_after)[:, 0]
            window = window_from_segment(seg, hs.fs, n_before, self.model.spec)
            lat = {"queue": queue_ms, "detect": stim.detect_ms, "features": (self.clock() - t1) * 1e3}
            self.ready.append(ReadyWindow(hs.number, stim, window, stim.peak, stim.threshold,
                                          stim.peak + n_after - 1, in_buffer, lat))
        return still

    def find_evoked_spike(self, hs: Headstage, stim: Stimulus, n_before: int, n_after: int) -> str:
        """Look for the AP that `stim` evoked in the buffered data. Returns "found" (stim.peak and
        stim.threshold set), "skipped" (answered: no AP in time, or its peak hidden by the edge
        artifact) or "open" (not decidable yet)."""
        t0 = self.clock()
        fs = hs.fs
        search = samples_at(self.cfg.search_ms, fs)
        seg_a = max(hs.buf.start, stim.onset - n_before)
        seg_b = min(hs.buf.end, stim.onset + search + n_after)
        v = hs.buf.read(seg_a, seg_b)[:, 0]
        edges = [stim.onset - seg_a]  # onsets only, as in detection.detect_trace
        thr, peaks, _ = detect_spikes(v, fs, edges, self.cfg.detector)
        evoked = [(t, p) for t, p in zip(thr, peaks) if p + seg_a >= stim.onset]
        stim.detect_ms = (self.clock() - t0) * 1e3
        if not evoked:
            if hs.buf.end >= stim.onset + search + n_after:
                self.skip(hs, stim, "no_spike", f"no AP within {self.cfg.search_ms:g} ms of the onset")
                return "skipped"
            return "open"
        t, p = evoked[0]
        peak = int(p + seg_a)
        if peak >= stim.onset + search:
            self.skip(hs, stim, "no_spike", f"first AP {1e3 * (peak - stim.onset) / fs:.2f} ms after onset")
            return "skipped"
        if artifact_mask(len(v), edges, fs, self.cfg.detector)[min(p + 1, len(v) - 1)]:
            self.skip(hs, stim, "qc", "AP peak hidden by a stimulus-edge artifact")
            return "skipped"
        stim.peak, stim.threshold = peak, int(t + seg_a)
        return "found"

    # ---- model and output ----

    def prime_model(self) -> None:
        """Run the model on a dummy window while a detected AP's window still waits for its last
        samples (the ~2 ms after the peak): at most once per PRIME_IDLE_S, i.e. a few times per AP.

        Why: between stimuli the daemon's other work and other processes evict PyTorch's code and
        the weights from the CPU caches; a cold call measured 2-3x a warm one on this machine (1.05
        vs 0.36 ms for the 16-channel network). The primed calls pay that before the label is due.
        Skipped when the model ran recently or windows are already waiting for it.
        """
        if self.ready or self.clock() - self.last_inference < PRIME_IDLE_S:
            return
        with torch.inference_mode():
            self.infer(self.dummy)
        self.last_inference = self.clock()
        self.primes += 1

    def classify_ready(self) -> int:
        """Run the model on every ready window (one batch) and emit their labels; returns the count."""
        if not self.ready:
            return 0
        batch, self.ready = self.ready, []
        now = self.clock()
        shed_s = self.cfg.budget_ms * self.cfg.shed_factor / 1e3
        keep = []
        for r in batch:
            if now - r.t_ready > shed_s:
                hs = self.headstages[r.headstage]
                self.skip(hs, r.stim, "late", f"window waited {1e3 * (now - r.t_ready):.1f} ms; shed to catch up")
            else:
                keep.append(r)
        if not keep:
            return 0
        t0 = self.clock()
        windows = keep[0].window[None] if len(keep) == 1 else np.stack([r.window for r in keep])
        x = torch.from_numpy(windows).to(self.model.device)
        with torch.inference_mode():
            probs = self.infer(x).cpu().numpy().astype(np.float64)
        self.last_inference = self.clock()
        infer_ms = (self.last_inference - t0) * 1e3
        for r, p in zip(keep, probs):
            self.publish_label(r, p, infer_ms)
        return len(keep)

    def publish_label(self, r: ReadyWindow, p: np.ndarray, infer_ms: float) -> None:
        hs = self.headstages[r.headstage]
        classes = self.model.classes
        hs.cell_sum = p.copy() if hs.cell_sum is None else hs.cell_sum + p
        hs.cell_n += 1
        msg = {
            "schema": LABEL_SCHEMA, "headstage": hs.number, "seq": hs.out_seq, "cell_id": hs.cell_id,
            "stim_onset_sample": r.stim.onset, "window_end_sample": r.window_end,
            "label": classes[int(np.argmax(p))], "probs": {c: round(x, 5) for c, x in zip(classes, p.tolist())},
            "cell": hs.cell_verdict(classes),
            "model": {"name": self.model.name, "sha256": self.model.sha256},
            "peak_sample": r.peak, "threshold_sample": r.threshold, "fs": hs.fs,
            "budget_ms": self.cfg.budget_ms,
        }
        if self.cfg.include_window:
            msg["window"] = {"fs_hz": self.model.spec.fs_hz, "anchor_index": self.model.spec.n_before,
                             "v_mv": np.round(r.window.astype(np.float64), 2).tolist()}
        process_ms = (self.clock() - r.t_ready) * 1e3
        msg["latency_ms"] = {"process": round(process_ms, 4), **{k: round(v, 4) for k, v in r.lat.items()},
                             "inference": round(infer_ms, 4)}
        msg["late"] = process_ms > self.cfg.budget_ms
        hs.out_seq += 1
        hs.counts["labels"] += 1
        hs.counts["late"] += int(msg["late"])
        self.emit("label", msg)

    def skip(self, hs: Headstage, stim: Stimulus, reason: str, detail: str) -> None:
        msg = {"schema": SKIP_SCHEMA, "headstage": hs.number, "seq": hs.out_seq, "cell_id": hs.cell_id,
               "stim_onset_sample": stim.onset, "reason": reason, "detail": detail}
        hs.out_seq += 1
        hs.counts["skips"] += 1
        self.emit("skip", msg)

    def skip_pending(self, hs: Headstage, reason: str, detail: str) -> None:
        for stim in hs.pending:
            self.skip(hs, stim, reason, detail)
        hs.pending = []
        for r in [r for r in self.ready if r.headstage == hs.number]:
            self.ready.remove(r)
            self.skip(hs, r.stim, reason, detail)

    def flush(self, reason: str = "shutdown") -> None:
        """Answer every open stimulus (at shutdown): ready windows are classified, the rest skipped."""
        self.classify_ready()
        for hs in self.headstages.values():
            self.skip_pending(hs, reason, "daemon stopping before the stimulus was decided")

    def heartbeat(self) -> dict:
        classes = self.model.classes
        return {"schema": HEARTBEAT_SCHEMA, "time": time.time(), "uptime_s": round(time.time() - self.started, 3),
                "model": {"name": self.model.name, "sha256": self.model.sha256, "classes": classes},
                "malformed": self.malformed, "primes": self.primes,
                "headstages": {str(k): hs.status(classes) for k, hs in self.headstages.items()}}
