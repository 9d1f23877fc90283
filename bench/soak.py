"""Soak run: a busy LSL host pushing for a long time into a real daemon; no phantom gap, one answer
per stimulus. Not part of the test suite (an hour by default):

    python -m bench.soak --minutes 60 --headstages 2 --fs 50000 --json soak.json

Prints one JSON line: stimuli, answered once, wrong kind, wrong cell, gaps, malformed, stalls.
"""
import argparse
import json
import subprocess
import sys
import tempfile
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
    p.add_argument("--json")
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
    try:
        if not host.wait_for_consumers(60):
            sys.exit("the daemon never connected")
        cells = analytic_cells(a.fs)
        streams = [HeadstageStream(h, cells, a.fs, 3, 3, np.random.default_rng(h)) for h in range(a.headstages)]
        run = play(host, streams, a.minutes * 60, HostBehaviour(stall_p=a.stall_p, stim_lag_ms=5.0, seed=1))
        time.sleep(2.0)
    finally:
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
           "stalls": run.stalls, "pushes": run.pushes, "log": str(log)}
    print(json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if once == len(run.truth) and not (wrong_kind or wrong_cell or res["gaps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
