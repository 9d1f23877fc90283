"""Soak run: a busy LSL host pushing for a long time into a real daemon; no phantom gap, one answer
per stimulus. Not part of the test suite (an hour by default):

    python -m bench.soak --minutes 60 --headstages 2 --fs 50000 --json soak.json

Prints one JSON line: stimuli, answered once, wrong kind, wrong cell, gaps, malformed, stalls; and,
per time bin (--bin-min), the daemon's resident memory (read from /proc every 10 s) and the labels'
in-daemon `process` latency (p50, p99, max) and `late` count, so a leak or a slow drift shows.
With --markdown, a table of those bins.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--headstages", type=int, default=2)
    p.add_argument("--fs", type=float, default=50_000.0)
    p.add_argument("--stall-p", type=float, default=0.05, help="probability per pass of a 3-20 ms push stall")
    p.add_argument("--bin-min", type=float, default=5.0, help="width of the over-time bins, minutes")
    p.add_argument("--json")
    p.add_argument("--markdown")
    a = p.parse_args(argv)

    from rtclassify.transport.lsl_log import quiet_liblsl

    quiet_liblsl()  # before pylsl loads: liblsl's INFO lines off, as in the daemon
    from bench.hosts import HostBehaviour, LslHost, analytic_cells, play
    from rtclassify.simulator.amplifier import HeadstageStream

    names = [f"soak-{uuid.uuid4().hex[:6]}-hs{h}" for h in range(a.headstages)]
    log = Path(tempfile.mkdtemp(prefix="rtclassify-soak-")) / "serve.jsonl"
    host = LslHost(names, a.fs)
    daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "lsl", "--log", str(log),
                               "--lsl-out", f"{names[0]}-labels", *sum((["--stream", n] for n in names), [])])
    memory, done = [], threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(daemon.pid, memory, done, 10.0), daemon=True)
    sampler.start()
    try:
        if not host.wait_for_consumers(60):
            sys.exit("the daemon never connected")
        cells = analytic_cells(a.fs)
        streams = [HeadstageStream(h, cells, a.fs, 3, 3, np.random.default_rng(h)) for h in range(a.headstages)]
        run = play(host, streams, a.minutes * 60, HostBehaviour(stall_p=a.stall_p, stim_lag_ms=5.0, seed=1))
        time.sleep(2.0)
    finally:
        done.set()
        daemon.terminate()
        daemon.wait(30)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    answers = {}
    for m in logged:
        if m["topic"] in ("label", "skip"):
            answers.setdefault((m["headstage"], m["stim_onset_sample"]), []).append(m)
    once = sum(len(answers.get((t["headstage"], t["stim_onset_sample"]), [])) == 1 for t in run.truth)
    wrong_kind = wrong_cell = 0
    for t in run.truth:
        got = answers.get((t["headstage"], t["stim_onset_sample"]))
        if got:
            wrong_kind += (got[0]["topic"] == "label") != t["spike"]
            wrong_cell += got[0]["cell_id"] != t["cell_id"]
    res = {"minutes": a.minutes, "headstages": a.headstages, "fs": a.fs, "stimuli": len(run.truth),
           "answered_once": once, "wrong_kind": wrong_kind, "wrong_cell": wrong_cell,
           "gaps": sum(m["topic"] == "gap" for m in logged), "malformed": sum(m["topic"] == "malformed" for m in logged),
           "stalls": run.stalls, "pushes": run.pushes, "log": str(log),
           "machine": machine(), "over_time": over_time(logged, memory, a.bin_min * 60)}
    print(json.dumps({k: v for k, v in res.items() if k != "over_time"}))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.markdown:
        Path(a.markdown).write_text(render_markdown(res))
    return 0 if once == len(run.truth) and not (wrong_kind or wrong_cell or res["gaps"]) else 1


def sample_memory(pid: int, out: list, done: threading.Event, every_s: float) -> None:
    """Append (wall time s, resident MB) of process `pid` every `every_s` until `done`."""
    while not done.wait(every_s):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if kb is not None:
            out.append((time.time(), kb / 1024))


def over_time(logged: list, memory: list, bin_s: float) -> list:
    """Per bin of `bin_s` seconds from the first label: labels, late labels, `process` latency p50 /
    p99 / max (ms), resident memory at the bin's end (MB)."""
    labels = [(m["t"], m["latency_ms"]["process"], m.get("late", False)) for m in logged if m["topic"] == "label"]
    if not labels:
        return []
    t0 = labels[0][0]
    rows = []
    for k in range(int((labels[-1][0] - t0) // bin_s) + 1):
        lo, hi = t0 + k * bin_s, t0 + (k + 1) * bin_s
        ms = np.array([x for t, x, _ in labels if lo <= t < hi])
        mem = [mb for t, mb in memory if t < hi]
        rows.append({"minute": round(k * bin_s / 60, 1), "labels": int(ms.size),
                     "late": sum(late for t, _, late in labels if lo <= t < hi),
                     "process_p50_ms": round(float(np.percentile(ms, 50)), 3) if ms.size else None,
                     "process_p99_ms": round(float(np.percentile(ms, 99)), 3) if ms.size else None,
                     "process_max_ms": round(float(ms.max()), 3) if ms.size else None,
                     "rss_mb": round(mem[-1], 1) if mem else None})
    return rows


def machine() -> str:
    import os
    import platform

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {len(os.sched_getaffinity(0))} CPU threads, {platform.system()}"


def render_markdown(res: dict) -> str:
    lines = [f"Soak: {res['minutes']:g} min, {res['headstages']} LSL headstages at {res['fs']:g} Hz, "
             f"{res['pushes']} pushes with {res['stalls']} stalls; {res['machine']}.", "",
             f"Stimuli {res['stimuli']}, answered exactly once {res['answered_once']}, wrong kind "
             f"{res['wrong_kind']}, wrong cell {res['wrong_cell']}, gaps {res['gaps']}, malformed {res['malformed']}.",
             "", "| minute | labels | late | process p50 ms | p99 ms | max ms | daemon RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in res["over_time"]:
        lines.append(f"| {r['minute']:g} | {r['labels']} | {r['late']} | {r['process_p50_ms']} | "
                     f"{r['process_p99_ms']} | {r['process_max_ms']} | {r['rss_mb']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
