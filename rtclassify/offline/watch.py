"""A watched folder: acquisition software that writes a file per protocol run (Clampex, PatchMaster,
MIES saving NWB) while the experiment goes on, answered sweep by sweep as files appear and grow.

The rules (`rtclassify watch DIR`):
- A file is read once its size and modification time have not changed for `stable_s` (its data
  are on disk); when it grows again, it is read again and only its new sweeps are answered.
- A file that cannot be read yet (half-written, truncated, corrupt) waits and is retried at its
  next change, or every `retry_s`; it never stops the watch. Its reason is in the heartbeat.
- Each (file, sweep, channel) is answered exactly once, with `serve`'s label or skip message plus
  `source_file`, `sweep` and `channel`: `stim_onset_sample` and `window_end_sample` are samples
  from the sweep's start, `headstage` is the channel. A restart with the same `--log` reads the
  answers already logged and never answers them again.
- A cell is a file: its `cell_id` is the file's name without its extension, and the cell verdict
  accumulates over that file's sweeps of one channel: short squares labelled by the AP network and
  long steps measured (rtclassify.verdict.cell.CellEvidence). A sweep of long steps is answered with
  a label of `protocol` "long_step": its steps' `features`, and as `label`/`probs` the cell's
  reading so far.
"""
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtclassify.daemon.messages import HEARTBEAT_SCHEMA, LABEL_SCHEMA, PROB_DIGITS, SKIP_SCHEMA
from rtclassify.formats import RecordingError
from rtclassify.formats.recordings import RECORDING_SUFFIXES, read_recording
from rtclassify.model.envelope import RigInfo
from rtclassify.offline.sweep_labels import label_sweep, rig_fields
from rtclassify.offline.verdicts import FileVerdicts

HEARTBEAT_S = 2.0


@dataclass
class WatchedFile:
    """What the watch knows of one file: its last (size, mtime), since when unchanged, and why it
    could not be read (None once read)."""

    stat: tuple = (-1, -1.0)
    stable_since: float = 0.0
    read_stat: tuple | None = None  # the (size, mtime) last read successfully or tried
    tried_at: float = 0.0
    waiting: str | None = None


@dataclass
class FolderWatch:
    folder: Path
    model: object
    emit: object  # emit(topic, msg), e.g. Publisher.emit
    steps: str = "short"
    rig: RigInfo = field(default_factory=RigInfo)  # declared on the command line (--filter-hz, --temperature-c)
    stable_s: float = 0.5
    min_confidence: float | None = None  # --min-confidence (None: the card's, the cell model's)
    retry_s: float = 2.0
    answered: set = field(default_factory=set)  # (source_file, sweep, channel)
    files: dict = field(default_factory=dict)  # path -> WatchedFile
    cells: dict = field(default_factory=dict)  # source_file -> FileVerdicts
    seq: dict = field(default_factory=dict)  # channel -> next output seq
    started: float = field(default_factory=time.time)

    def poll(self, now: float | None = None) -> int:
        """Look at the folder once; answer the new sweeps of every file whose data are stable.
        Returns the number of answers sent."""
        now = time.monotonic() if now is None else now
        sent = 0
        for path in self.candidates():
            try:
                st = path.stat()
            except OSError:
                continue
            stat = (st.st_size, st.st_mtime)
            f = self.files.setdefault(str(path), WatchedFile())
            if stat != f.stat:
                f.stat, f.stable_since = stat, now
                continue
            if now - f.stable_since < self.stable_s or stat[0] == 0:
                continue
            if f.read_stat == stat and (f.waiting is None or now - f.tried_at < self.retry_s):
                continue
            f.read_stat, f.tried_at = stat, now
            sent += self.answer_file(path, f)
        return sent

    def candidates(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        return [self.folder / n for n in names
                if Path(n).suffix.lower() in RECORDING_SUFFIXES and not n.startswith(".")]

    def answer_file(self, path: Path, f: WatchedFile) -> int:
        """Read `path` and answer each of its sweeps not answered yet; a read failure waits."""
        try:
            sweeps = read_recording(path)
        except RecordingError as exc:
            f.waiting = str(exc)
            return 0
        except Exception as exc:  # a reader's own failure on a half-written file: wait, never crash
            f.waiting = f"{path}: {type(exc).__name__}: {exc}"
            return 0
        f.waiting = None
        sent = 0
        for s in sweeps:
            key = (str(path), s.sweep, s.channel)
            if key in self.answered:
                continue
            t0 = time.perf_counter()
            cells = self.cells.setdefault(str(path), FileVerdicts(self.model, self.rig.temperature_c,
                                                                    self.min_confidence))
            evidence = cells.evidence_for(s)
            result = label_sweep(s, self.model, self.steps, self.rig, evidence, self.min_confidence)
            self.publish(path, s, result, evidence, (time.perf_counter() - t0) * 1e3)
            self.answered.add(key)
            sent += 1
        return sent

    def publish(self, path: Path, s, result: dict, evidence, ms: float) -> None:
        """One label or skip message for sweep `s` of `path`, in serve's schema plus the file fields."""
        seq = self.seq.get(s.channel, 0)
        self.seq[s.channel] = seq + 1
        common = {"headstage": s.channel, "seq": seq, "cell_id": path.stem, "source_file": str(path),
                  "sweep": s.sweep, "channel": s.channel, "rig": rig_fields(s, self.rig)}
        if "skip" in result:
            self.emit("skip", {"schema": SKIP_SCHEMA, **common, "stim_onset_sample": result.get("stim_onset_sample"),
                               "reason": result["skip_reason"], "detail": result["skip"]})
            return
        classes = self.model.classes
        cell = evidence.cell_fields()
        message = {"schema": LABEL_SCHEMA, **common, "stim_onset_sample": result["stim_onset_sample"]}
        if "label" in result:  # a short square (or, with --steps any, a long step's first AP)
            probs = np.array(result["probs"])
            n_after = int(round(self.model.spec.after_ms * s.fs / 1000))
            message.update({"window_end_sample": result["peak_sample"] + n_after - 1, "label": result["label"],
                            "probs": {c: round(float(p), PROB_DIGITS) for c, p in zip(classes, probs)},
                            "peak_sample": result["peak_sample"], "envelope": result["envelope"],
                            "uncertain": result["uncertain"]})
        else:  # long steps: the cell's reading so far
            top = max(cell["probs"], key=cell["probs"].get)
            message.update({"window_end_sample": result["window_end_sample"], "label": top, "probs": cell["probs"],
                            "envelope": "inside", "uncertain": cell["uncertain"]})
        message.update({"protocol": result["protocol"], "cell": cell,
                        "model": {"name": self.model.name, "sha256": self.model.sha256},
                        "latency_ms": {"process": round(ms, 3)}, "late": False})
        if "features" in result:
            message["features"] = {"steps": result["features"], "cell": evidence.reported_features()}
        self.emit("label", message)

    def heartbeat(self) -> dict:
        now = time.time()
        latest = {}
        for source, cells in self.cells.items():
            for channel in cells.cells:
                latest[str(channel)] = {"cell_id": Path(source).stem}
        return {"schema": HEARTBEAT_SCHEMA, "time": round(now, 3), "uptime_s": round(now - self.started, 3),
                "model": {"name": self.model.name, "sha256": self.model.sha256, "classes": self.model.classes},
                "watch": {"folder": str(self.folder), "files": len(self.files), "answered": len(self.answered),
                          "waiting": {p: f.waiting for p, f in self.files.items() if f.waiting}},
                "headstages": latest}


def describe(topic: str, msg: dict) -> str | None:
    """One line for a person at the rig about a label or skip message (None for other topics):
    file, sweep, channel, the answer (label and p, the long step's APs, or the skip's reason), and the
    cell's verdict so far."""
    if topic not in ("label", "skip"):
        return None
    where = f"{Path(msg['source_file']).name} sweep {msg['sweep']} ch {msg['channel']}"
    if topic == "skip":
        return f"{where}: skip ({msg['reason']}): {msg.get('detail', '')}"
    if msg.get("protocol") == "long_step":
        steps = msg.get("features", {}).get("steps", [])
        what = "long step" + ("s" if len(steps) > 1 else "") + ": " + ", ".join(
            f"{s['stim_amp']:+.0f} pA {s['n_spikes']} AP{'s' if s['n_spikes'] != 1 else ''}" for s in steps)
    else:
        what = f"{msg['label']} p {msg['probs'][msg['label']]:.2f} (short square{', uncertain' if msg.get('uncertain') else ''})"
    cell = msg.get("cell", {})
    ev = cell.get("evidence", {})
    told = f"{ev.get('short_square', 0)} short squares, {ev.get('long_step', 0)} long steps"
    if cell.get("label"):
        verdict = f"{cell['label']} p {cell['probs'][cell['label']]:.2f}"
    else:
        verdict = f"uncertain ({cell.get('reason') or 'thin'})"
    return f"{where}: {what} | cell: {verdict} ({told})"


def answered_in_log(log_path) -> set:
    """(source_file, sweep, channel) of every label or skip already in a watch's JSONL log; a line
    that is not JSON (a log cut by a crash) is passed over."""
    done = set()
    if not log_path or not Path(log_path).is_file():
        return done
    with open(log_path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            if m.get("topic") in ("label", "skip") and "source_file" in m:
                done.add((m["source_file"], m["sweep"], m["channel"]))
    return done


def run_watch(watch: FolderWatch, emit, stop, poll_s: float = 0.25) -> None:
    """Poll until `stop` is set, with a heartbeat every HEARTBEAT_S."""
    last_beat = 0.0
    while not stop.is_set():
        watch.poll()
        if time.monotonic() - last_beat >= HEARTBEAT_S:
            emit("heartbeat", watch.heartbeat())
            last_beat = time.monotonic()
        stop.wait(poll_s)
    emit("heartbeat", watch.heartbeat())
