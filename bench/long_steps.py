"""Long current steps live: a real step family (171116sh_0018.abf, another lab's pCLAMP file) streamed
to a real daemon over ZeroMQ in 1 ms chunks paced in real time, as a host sends it (V and the
command current, no stimulus events); per long step, the time from sending its features' last sample
(`window_end_sample`) to receiving its label; the answers per step; the daemon's CPU share. Then the
same family resampled to 50 kHz on 16 headstages at once.

    python -m bench.long_steps [--sweeps N] [--headstages 1,16] [--out docs/bench-long-steps.json]
"""
import json
import threading
import time
from pathlib import Path

import click
import numpy as np

from bench.suite import cpu_seconds, machine_info, percentiles, start_daemon, stop
from rtclassify.transport.ports import free_tcp_endpoint

FILE = "abf-recordings/171116sh_0018.abf"


def family(data_dir: str, fs_out: float | None, sweeps: int):
    """(fs, v, i, onsets) of the file's first `sweeps` sweeps back to back, resampled to fs_out when given."""
    from scipy.signal import resample_poly

    from rtclassify.formats.recordings import read_recording
    from rtclassify.formats.stimuli import steps_after_test_pulse

    found = [s for s in read_recording(Path(data_dir) / FILE) if s.refusal is None][:sweeps]
    fs = found[0].fs
    vs, is_, onsets, at = [], [], [], 0
    for s in found:
        v, i = s.response, s.command
        onsets += [at + a for a, _ in steps_after_test_pulse(i, fs, s.layout)]
        vs.append(v)
        is_.append(i)
        at += len(v)
    v, i = np.concatenate(vs), np.concatenate(is_)
    if fs_out and fs_out != fs:
        up, down = int(fs_out // 1000), int(fs // 1000)
        v = resample_poly(v, up, down)
        i = np.repeat(i, up)[::down][:len(v)]  # the command as levels: no ringing at its edges
        fs = fs_out
        onsets = [a for a, _ in steps_after_test_pulse(i, fs, "abf")]
    return fs, v.astype(np.float32), i.astype(np.float32), onsets


class Receiver:
    """Labels and skips from the daemon's PUB socket, with their arrival times (a thread)."""

    def __init__(self, endpoint: str):
        import zmq

        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.got, self.beat = [], threading.Event()
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.halt.is_set():
            if self.sock.poll(20):
                topic, body = self.sock.recv_multipart()
                t = time.perf_counter()
                if topic == b"heartbeat":
                    self.beat.set()
                elif topic in (b"label", b"skip"):
                    self.got.append((t, json.loads(body)))

    def close(self):
        self.halt.set()
        self.thread.join(2)
        self.sock.close(0)
        return self.got


def short_squares(fs: float, n: int, seed: int = 0):
    """(v mV, i pA, onsets) of n samples of back-to-back 60 ms sweeps, each a 3 ms 500 pA step 10 ms in
    and an AP peaking 3.2 ms after its onset (the short-square protocol)."""
    rng = np.random.default_rng(seed)
    sweep = int(0.06 * fs)
    t = np.arange(sweep) / fs * 1e3
    onset = int(0.01 * fs)
    tp = t[onset] + 3.2
    one_v = -70 + np.where(t < tp, 95 * np.exp(-((t - tp) / 0.3) ** 2), 95 * np.exp(-((t - tp) / 0.7) ** 2))
    one_i = np.zeros(sweep)
    one_i[onset:onset + int(0.003 * fs)] = 500.0
    reps = n // sweep + 1
    v = (np.tile(one_v, reps)[:n] + rng.normal(0, 0.05, n)).astype(np.float32)
    i = (np.tile(one_i, reps)[:n] + rng.normal(0, 1.0, n)).astype(np.float32)
    return v, i, [k * sweep + onset for k in range(reps) if k * sweep + onset + int(0.02 * fs) < n]


def run(headstages: int, fs_out: float | None, sweeps: int, data_dir: str, tmp: Path,
        short_square_headstage: bool = False, daemon_args: tuple = ()) -> dict:
    """headstages running the step family; short_square_headstage: one more headstage streams short
    squares meanwhile, and their labels' latency is reported (does a step's measurement delay them?)."""
    import zmq

    from rtclassify.transport.wire import encode_data

    fs, v, i, onsets = family(data_dir, fs_out, sweeps)
    sq = short_squares(fs, len(v)) if short_square_headstage else None
    shift = 1 if sq is not None else 0
    data_ep, label_ep = free_tcp_endpoint(), free_tcp_endpoint()
    pub = zmq.Context.instance().socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 1000)
    pub.bind(data_ep)
    log = tmp / f"bench-long-{headstages}-{int(fs)}.jsonl"
    daemon = start_daemon(["--source", "zmq", "--connect", data_ep, "--publish", label_ep, *daemon_args], log)
    rx = Receiver(label_ep)
    try:
        if not pub.poll(60_000):
            raise RuntimeError("daemon did not subscribe")
        pub.recv()
        rx.beat.wait(30)
        chunk = int(fs / 1000)
        sent_at = {}  # chunk end sample -> perf_counter
        cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
        for k, a in enumerate(range(0, len(v), chunk)):
            due = t0 + a / fs
            while time.perf_counter() < due:  # short sleeps: a busy loop would starve the receiver thread
                time.sleep(0.0002)
            for h in range(headstages):  # the steps (on headstages 1.. when short squares are on 0), the short
                pub.send_multipart(encode_data("bench", h + shift, k, a, fs, v[a:a + chunk], i[a:a + chunk]))
            if sq is not None:  # squares after them: the worst case for them is to queue behind the rest
                pub.send_multipart(encode_data("bench", 0, k, a, fs, sq[0][a:a + chunk], sq[1][a:a + chunk]))
            sent_at[min(a + chunk, len(v)) - 1] = time.perf_counter()
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(daemon.pid) - cpu0
        deadline = time.time() + 5
        want = headstages * len(onsets) + (len(sq[2]) if sq is not None else 0)
        while len(rx.got) < want and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        got = rx.close()
        stop(daemon)
        pub.close(0)
    ends = np.array(sorted(sent_at))
    latencies, short, per_step = [], [], {}
    for t, m in got:
        key = (m["headstage"], m["stim_onset_sample"])
        per_step[key] = per_step.get(key, 0) + 1
        k = int(np.searchsorted(ends, m.get("window_end_sample", -1)))
        if k >= len(ends) or m.get("window_end_sample") is None:
            continue
        late = (t - sent_at[int(ends[k])]) * 1e3
        (latencies if m.get("protocol") == "long_step" else short).append(late)
    expected = {(h + shift, o) for h in range(headstages) for o in onsets}
    if sq is not None:
        expected |= {(0, o) for o in sq[2]}
    return {"headstages": headstages, "fs_hz": fs, "seconds": round(wall, 2), "steps": len(expected),
            "answered_once": sum(per_step.get(key) == 1 for key in expected),
            "answered_twice_or_more": sum(n > 1 for n in per_step.values()),
            "unexpected": len(set(per_step) - expected),
            "long_step_labels": len(latencies), "latency_ms": percentiles(latencies),
            "short_square_latency_ms": percentiles(short) if sq is not None else None,
            "daemon_cpu_share": round(cpu / wall, 3) if wall else None}


@click.command()
@click.option("--sweeps", default=4, show_default=True, help="Sweeps of the family to stream (3 s each).")
@click.option("--headstages", "counts", default="1,16", show_default=True, help="Headstage counts to run.")
@click.option("--data", "data_dir", default="../shared/data", show_default=True)
@click.option("--out", "out_path", default="docs/bench-long-steps.json", show_default=True)
def main(sweeps, counts, data_dir, out_path):
    """Long-step latency and scaling (see the module docstring); writes JSON and a Markdown table."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="rtclassify-bench-"))
    rows = []
    for n in [int(x) for x in counts.split(",")]:
        rows.append(run(n, None if n == 1 else 50_000.0, sweeps, data_dir, tmp))
        click.echo(json.dumps(rows[-1]))
    # short squares on headstage 0 at 50 kHz: alone, and beside 7 headstages of step families with their
    # long steps skipped (--max-step-s 0: the streams' own load) and measured (what measuring costs them)
    for n, args in ((0, ()), (7, ("--max-step-s", "0")), (7, ())):
        rows.append({**run(n, 50_000.0, sweeps, data_dir, tmp, short_square_headstage=True, daemon_args=args),
                     "long_steps_measured": not args})
        click.echo(json.dumps(rows[-1]))
    result = {"machine": machine_info(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "file": FILE, "rows": rows}
    Path(out_path).write_text(json.dumps(result, indent=1))
    lines = [f"Made by `python -m bench.long_steps --sweeps {sweeps} --headstages {counts}` ({result['created']}); "
             f"{result['machine'].get('cpu', '')}.", "",
             "| headstages | rate | steps | answered once | long-step label after its last needed sample was sent (ms) | daemon CPU share |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        q = r["latency_ms"]
        if r["short_square_latency_ms"] is None:
            lines.append(f"| {r['headstages']} | {r['fs_hz'] / 1000:g} kHz | {r['steps']} | {r['answered_once']} | "
                         f"p50 {q.get('p50')}, p99 {q.get('p99')}, max {q.get('max')} | {r['daemon_cpu_share']} |")
    lines += ["", "Short squares on headstage 0 at 50 kHz (3 ms steps with APs, every 60 ms), alone and beside 7 "
              "headstages of the step family at 50 kHz whose long steps are skipped (serve --max-step-s 0) or "
              "measured: their labels after the window's last sample was sent (ms).", "",
              "| beside them | short-square labels | p50 | p99 | max | answered once | daemon CPU share |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        q = r["short_square_latency_ms"]
        if q is not None:
            beside = ("nothing" if not r["headstages"] else f"{r['headstages']} step families, long steps "
                      + ("measured" if r["long_steps_measured"] else "skipped"))
            lines.append(f"| {beside} | {q['n']} | {q['p50']} | {q['p99']} | {q['max']} | "
                         f"{r['answered_once']} of {r['steps']} | {r['daemon_cpu_share']} |")
    Path(out_path).with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
