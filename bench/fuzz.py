"""Fuzz run: hostile ZeroMQ messages interleaved with a real stream, into a real daemon.

    python -m bench.fuzz --hostile 3000 --seconds 40 --json fuzz.json --markdown fuzz.md

A busy host (bench.hosts: stalls, bursts, duplicate and late stimulus events) streams two
headstages of real APs (../shared/data/allen-ctdb-spikes when present, else analytic APs) to
`rtclassify serve --source zmq`; on the same PUB socket, between its pushes, go ~--hostile messages
drawn from `hostile_messages` (random bytes, truncated and mistyped JSON, absurd sizes, rates,
sample indices and headstage numbers, unknown topics and event types, wrong dtypes, units and
channels, NaN payloads, oversized strings). Prints one JSON line: every real stimulus answered
exactly once, the hostile messages counted as malformed or ignored in the final heartbeat (by
reason), the headstages the daemon allocated, and whether it was still running at the end.
"""
import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL_CELLS = Path("../shared/data/allen-ctdb-spikes")
REAL_HEADSTAGES = (0, 1)


def valid_header(rng, headstage: int = 0, n: int = 50) -> dict:
    """A well-formed data header (for mutation into a hostile one)."""
    return {"v": 1, "device": "fuzz", "headstage": headstage, "seq": int(rng.integers(0, 1000)),
            "first_sample": int(rng.integers(0, 10**6)), "n_samples": n, "fs": 50_000.0,
            "channels": ["V", "I"], "units": ["mV", "pA"], "dtype": "<f4"}


def payload(n: int) -> bytes:
    return np.zeros((n, 2), dtype="<f4").tobytes()


def hostile_messages(rng) -> tuple[str, list[bytes]]:
    """One hostile multipart message: (its kind, frames). Every kind breaks the contract or a bound
    documented in docs/streaming.md, so the daemon must count it, as malformed or as ignored."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    return kind, MAKERS[kind](rng)


def _random_bytes(rng):
    return [bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)) for _ in range(int(rng.integers(1, 4)))]


def _truncated_json(rng):
    text = json.dumps(valid_header(rng)).encode()
    return [b"data", text[:int(rng.integers(1, len(text) - 1))], payload(50)]


def _mistyped_field(rng):
    h = valid_header(rng)
    key = ["headstage", "seq", "first_sample", "n_samples", "fs"][int(rng.integers(5))]
    h[key] = [None, "12", [1], {"a": 1}, True, 1.5][int(rng.integers(6))] if key != "fs" else "fast"
    return [b"data", json.dumps(h).encode(), payload(50)]


def _absurd_n_samples(rng):
    h = valid_header(rng)
    h["n_samples"] = int([0, -5, 10**12, 2**62, 1 << 23][int(rng.integers(5))])
    return [b"data", json.dumps(h).encode(), payload(50)]


def _bad_rate(rng):
    h = valid_header(rng)
    h["fs"] = [-50_000.0, 0.0, 1e-3, 5.0, 1e12][int(rng.integers(5))]
    return [b"data", json.dumps(h).encode(), payload(50)]


def _huge_headstage(rng):
    h = valid_header(rng, headstage=int(rng.choice([10**6, 2**40, 16 + int(rng.integers(1000)), -3])))
    return [b"data", json.dumps(h).encode(), payload(50)]


def _huge_headstage_event(rng):
    e = {"v": 1, "type": ["new_cell", "stimulus"][int(rng.integers(2))], "headstage": int(rng.integers(17, 10**9)),
         "sample": int(rng.integers(0, 10**6)), "cell_id": "x"}
    return [b"event", json.dumps(e).encode()]


def _huge_sample(rng):
    if rng.random() < 0.5:
        h = valid_header(rng)
        h["first_sample"] = int([2**60, -1, 10**30][int(rng.integers(3))])
        return [b"data", json.dumps(h).encode(), payload(50)]
    e = {"v": 1, "type": "stimulus", "headstage": 0, "sample": int([2**60, -7, 10**30][int(rng.integers(3))])}
    return [b"event", json.dumps(e).encode()]


def _unknown_event(rng):
    e = {"v": 1, "type": ["reset", "", "STIMULUS", "new-cell"][int(rng.integers(4))], "headstage": 0, "sample": 5}
    return [b"event", json.dumps(e).encode()]


def _unknown_topic(rng):
    return [[b"datum", b"", b"EVENT", b"\xff\xfe"][int(rng.integers(4))], b"{}"]


def _wrong_dtype(rng):
    h = valid_header(rng)
    h["dtype"] = ["<f8", ">f4", "int16", ""][int(rng.integers(4))]
    return [b"data", json.dumps(h).encode(), payload(50)]


def _wrong_units_or_channels(rng):
    h = valid_header(rng)
    if rng.random() < 0.5:
        h["units"] = [["uV", "pA"], ["mV"], "mV", ["mV", "mA"]][int(rng.integers(4))]
    else:
        h["channels"] = [["I", "V"], ["V"], ["V", "I", "X"]][int(rng.integers(3))]
    return [b"data", json.dumps(h).encode(), payload(50)]


def _payload_mismatch(rng):
    return [b"data", json.dumps(valid_header(rng)).encode(), payload(int(rng.integers(0, 49)))]


def _nan_payload(rng):
    p = np.zeros((50, 2), dtype="<f4")
    p[int(rng.integers(50)), int(rng.integers(2))] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
    return [b"data", json.dumps(valid_header(rng, headstage=int(rng.integers(2, 8)))).encode(), p.tobytes()]


def _wrong_version_or_frames(rng):
    if rng.random() < 0.5:
        h = valid_header(rng)
        h["v"] = [2, 0, "1", None][int(rng.integers(4))]
        return [b"data", json.dumps(h).encode(), payload(50)]
    return [b"data", json.dumps(valid_header(rng)).encode()] if rng.random() < 0.5 else [b"event"]


def _oversized_string(rng):
    e = {"v": 1, "type": "new_cell", "headstage": 0, "sample": 10, "cell_id": "c" * int(rng.integers(257, 100_000))}
    return [b"event", json.dumps(e).encode()]


def _not_an_object(rng):
    return [[b"data", b"event"][int(rng.integers(2))], [b"[1, 2]", b"42", b"null", b'"text"'][int(rng.integers(4))],
            payload(1)]


MAKERS = {"random_bytes": _random_bytes, "truncated_json": _truncated_json, "mistyped_field": _mistyped_field,
          "absurd_n_samples": _absurd_n_samples, "bad_rate": _bad_rate, "huge_headstage": _huge_headstage,
          "huge_headstage_event": _huge_headstage_event, "huge_sample": _huge_sample, "unknown_event": _unknown_event,
          "unknown_topic": _unknown_topic, "wrong_dtype": _wrong_dtype, "wrong_units_or_channels": _wrong_units_or_channels,
          "payload_mismatch": _payload_mismatch, "nan_payload": _nan_payload,
          "wrong_version_or_frames": _wrong_version_or_frames, "oversized_string": _oversized_string,
          "not_an_object": _not_an_object}
KINDS = sorted(MAKERS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hostile", type=int, default=3000, help="hostile messages to send (about)")
    p.add_argument("--seconds", type=float, default=40.0, help="length of the real stream")
    p.add_argument("--fs", type=float, default=50_000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    p.add_argument("--markdown")
    a = p.parse_args(argv)

    import zmq

    from bench.hosts import HostBehaviour, ZmqHost, analytic_cells, play
    from rtclassify.simulator.amplifier import HeadstageStream, load_cells

    rng = np.random.default_rng(a.seed)
    data_port, label_port = free_port(), free_port()
    log = Path(tempfile.mkdtemp(prefix="rtclassify-fuzz-")) / "serve.jsonl"
    host = ZmqHost(f"tcp://127.0.0.1:{data_port}", [a.fs] * len(REAL_HEADSTAGES))
    daemon = subprocess.Popen([sys.executable, "-m", "rtclassify", "serve", "--source", "zmq",
                               "--connect", f"tcp://127.0.0.1:{data_port}", "--publish", f"tcp://127.0.0.1:{label_port}",
                               "--log", str(log)], stderr=subprocess.PIPE, text=True)
    sent = {k: 0 for k in KINDS}
    try:
        if not host.wait_for_consumers(60):
            sys.exit("the daemon never connected")
        time.sleep(6.0)  # the model loads after the SUB connects: the first messages must not wait in a queue
        real = REAL_CELLS.is_dir()
        cells = load_cells(REAL_CELLS, a.fs, limit=12, rng=rng) if real else analytic_cells(a.fs)
        streams = [HeadstageStream(h, cells, a.fs, 3, 3, np.random.default_rng(h)) for h in REAL_HEADSTAGES]
        per_push = a.hostile / (a.seconds * 2 / 1.6e-3)  # play() pushes ~every 1.6 ms per headstage
        owed = [0.0]

        def inject(*_):
            owed[0] += per_push
            while owed[0] >= 1 and sum(sent.values()) < a.hostile:
                kind, frames = hostile_messages(rng)
                host.sink.sock.send_multipart(frames)
                sent[kind] += 1
                owed[0] -= 1

        run = play(host, streams, a.seconds, HostBehaviour(stall_p=0.05, seed=a.seed), on_push=inject)
        while sum(sent.values()) < a.hostile:  # the rest after the stream: still counted, never answered
            kind, frames = hostile_messages(rng)
            host.sink.sock.send_multipart(frames)
            sent[kind] += 1
        time.sleep(4.0)  # a heartbeat (every 2 s) after the last hostile message
        alive = daemon.poll() is None
    finally:
        daemon.terminate()
        _, stderr = daemon.communicate(timeout=30)
        host.close()
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    heartbeat = [m for m in logged if m["topic"] == "heartbeat"][-1]
    refused = heartbeat.get("refused", {"malformed": {}, "ignored": {}})
    answers = {}
    for m in logged:
        if m["topic"] in ("label", "skip"):
            answers.setdefault((m["headstage"], m["stim_onset_sample"]), []).append(m)
    once = sum(len(answers.get((t["headstage"], t["stim_onset_sample"]), [])) == 1 for t in run.truth)
    real_keys = {(t["headstage"], t["stim_onset_sample"]) for t in run.truth}
    # answers of no completely streamed stimulus: the sweep cut by the stream's end (skip, shutdown)
    extra = [m.get("reason", "label") for k, v in answers.items() if k not in real_keys for m in v]
    # duplicate stimulus events of the busy host are the real stream's own, ignored by design: not hostile
    hostile_counted = (sum(refused["malformed"].values())
                       + sum(n for code, n in refused["ignored"].items() if code != "duplicate_stimulus"))
    res = {"hostile_sent": sum(sent.values()), "hostile_by_kind": sent,
           "hostile_counted": hostile_counted, "counted_fraction": round(hostile_counted / max(1, sum(sent.values())), 4),
           "refused": refused, "stimuli": len(run.truth), "answered_once": once, "answers_not_of_a_real_stimulus": len(extra),
           "their_reasons": {r: extra.count(r) for r in set(extra)}, "log": str(log),
           "headstages_allocated": sorted(int(k) for k in heartbeat["headstages"]), "daemon_alive_at_end": alive,
           "real_cells": str(REAL_CELLS) if real else "analytic", "seconds": a.seconds, "fs": a.fs,
           "machine": machine(), "stderr_lines": len(stderr.splitlines())}
    print(json.dumps({k: v for k, v in res.items() if k not in ("hostile_by_kind", "refused", "their_reasons")}))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.markdown:
        Path(a.markdown).write_text(render_markdown(res))
    ok = (alive and once == len(run.truth) and res["counted_fraction"] >= 0.95
          and res["headstages_allocated"] == list(REAL_HEADSTAGES))
    return 0 if ok else 1


def machine() -> str:
    from bench.soak import machine as soak_machine

    return soak_machine()


def render_markdown(res: dict) -> str:
    lines = [f"Fuzz: {res['hostile_sent']} hostile ZeroMQ messages interleaved with {res['seconds']:g} s of a real "
             f"stream ({res['real_cells']}, 2 headstages at {res['fs']:g} Hz, busy-host pushes); {res['machine']}.", "",
             f"- daemon running at the end: {res['daemon_alive_at_end']}",
             f"- real stimuli {res['stimuli']}, answered exactly once {res['answered_once']}; answers for no real "
             f"stimulus {res['answers_not_of_a_real_stimulus']} ({res['their_reasons']}: the sweeps the stream's end cut)",
             f"- hostile messages counted in the heartbeat: {res['hostile_counted']} of {res['hostile_sent']} "
             f"({res['counted_fraction']:.1%})",
             f"- headstages allocated: {res['headstages_allocated']}", "",
             "| kind sent | n |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in res["hostile_by_kind"].items()]
    lines += ["", "| counted as | reason | n |", "|---|---|---|"]
    for kind in ("malformed", "ignored"):
        lines += [f"| {kind} | {code} | {n} |" for code, n in sorted(res["refused"][kind].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
