"""Markdown and PNG output of a benchmark result."""
from pathlib import Path


def latency_row(label: str, e: dict) -> str:
    """A table row of an end-to-end run's latency percentiles (ms) and its unanswered stimuli."""
    return (f"| {label} | p50 {e['p50']}, p95 {e['p95']}, p99 {e['p99']}, max {e['max']} "
            f"(n={e['n']}, unanswered {e['unanswered']}) |")


def long_step_rows(r: dict) -> list[str]:
    """The long-step rows: a step family's labels after their last needed sample was sent."""
    ls = r.get("long_steps")
    if not ls or "rows" not in ls:
        return [f"| long steps | {ls['skipped']} |"] if ls else []
    out = []
    for row in ls["rows"]:
        q = row["latency_ms"]
        out.append(f"| long step over ZMQ, {row['headstages']} headstage(s) at {row['fs_hz'] / 1000:g} kHz ({ls['file']}), "
                   f"last needed sample sent → label received (ms) | p50 {q['p50']}, p99 {q['p99']}, max {q['max']} "
                   f"(n={q['n']}; {row['answered_once']} of {row['steps']} steps answered once; daemon CPU "
                   f"{row['daemon_cpu_share']:.0%} of a core) |")
    return out


def render_markdown(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    k = r["kernels"]
    lines = [
        f"# Benchmark ({'quick' if r['quick'] else 'full'} run, {r['created']})", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; {m['os']}; python {m['python']}, "
        f"torch {v['torch']}, numba {v['numba']}, libzmq {v['libzmq']}, liblsl {v['liblsl']}."
        + (f" Model: {r['inference']['model']} (weights sha256 {r['inference']['weights_sha256'][:12]})."
           if "weights_sha256" in r["inference"] else ""),
        "",
        "| figure | value |", "|---|---|",
        latency_row("end to end over ZMQ at 50 kHz, last window sample sent → label received (ms)", r["e2e_zmq_ms"]),
        *([latency_row("end to end over ZMQ at 200 kHz (ms)", r["e2e_zmq_200khz_ms"])] if "e2e_zmq_200khz_ms" in r else []),
        latency_row("end to end over LSL at 50 kHz (ms)", r["e2e_lsl_ms"]),
        *([latency_row("floor: the same ZMQ sender and receiver through a trivial relay (bench/relay.py), per "
                       "1 ms chunk (ms)", r["relay_floor_ms"]),
           f"| the daemon's excess over the floor at 50 kHz, same run (ms) | p50 {r['excess_over_floor_ms']['p50']}, "
           f"p99 {r['excess_over_floor_ms']['p99']} |"] if "relay_floor_ms" in r else []),
        *long_step_rows(r),
        f"| in the daemon, window complete → label handed to the sockets (ms) | 50 kHz p50 {r['process_ms']['p50']}, "
        f"p99 {r['process_ms']['p99']}"
        + (f"; 200 kHz p50 {r['process_ms_200khz']['p50']}, p99 {r['process_ms_200khz']['p99']}"
           if "process_ms_200khz" in r else "") + " |",
        *inference_row(r),
        *declared_row(r),
        f"| detector (numba), M samples/s on one core | {k['detector_msamples_per_s']} "
        f"(numpy reference {k['detector_numpy_reference_msamples_per_s']}, ×{k['detector_speedup_vs_numpy']}) |",
        f"| ring-buffer writes, M samples/s | {k['ring_buffer_msamples_per_s']} |",
        f"| FFT per window (µs) | {k['fft_us_per_window']} |",
        f"| headstages sustained at 200 kHz (zero dropped samples, zero unanswered, nothing shed, e2e p99 ≤ 40 ms, latency drift ≤ 5 ms)"
        f"{' (the quick run tries 8 only)' if r['quick'] else ''} | {r['max_headstages_200khz']} |",
        "", "## Inference per call (CPU)", "", "| runtime | threads | batch | p50 ms | p99 ms | per window p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["inference"]["cpu"]:
        lines.append(f"| {row['runtime']} | {row['threads']} | {row['batch']} | {row['p50']} | {row['p99']} | "
                     f"{row['per_window_p50_ms']} |")
    gc_ms = r["inference"].get("gc_full_collection_ms")
    if gc_ms:
        lines += ["", f"A full garbage collection in a process like the daemon: {gc_ms['all_tracked']} ms, "
                      f"{gc_ms['startup_frozen']} ms once the start-up objects are frozen (as `serve` does)."]
    lines += ["", f"CUDA: {r['inference']['cuda']}", "", "## Scaling", "",
              "| rate | headstages | stimuli | unanswered | e2e p50 / p99 ms | drift ms | process p99 ms | gaps | skips "
              "| daemon CPU | sustained |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fs, rows in r["scaling"].items():
        for row in rows:
            lines.append(f"| {int(fs) // 1000} kHz | {row['headstages']} | {row['stimuli']} | {row['unanswered']} | "
                         f"{row['latency_ms']['p50']} / {row['latency_ms']['p99']} | {row.get('latency_drift_ms')} | "
                         f"{row['process_ms']['p99']} | {row['gaps']} | {row['skips']} | {row['daemon_cpu_share']} | "
                         f"{'yes' if row['sustained'] else 'no'} |")
    lines += ["", r["physical_limit"]["note"] + "."]
    if "alternatives" in r:
        lines += render_alternatives(r["alternatives"])
    return "\n".join(lines) + "\n"


def render_alternatives(a: dict) -> list[str]:
    """The routes a user would otherwise take, on the same sweeps (see bench/alternatives.py)."""
    lines = ["", "## Against the alternatives", "",
             f"{a['sweeps']} simulated sweeps at {a['fs_hz'] / 1000:g} kHz, {a['threads']} thread, in process (no "
             f"transport). Physical limit of a spike-aligned label: {a['physical_limit_after_onset_ms']} ms after the "
             "stimulus onset (median; the AP window's last sample).", "",
             "| route | needs | compute p50 / p99 ms | label after onset p50 / p99 ms | margin over the limit (p50, ms) |",
             "|---|---|---|---|---|"]
    for name, row in a["routes"].items():
        if "absent" in row:
            lines.append(f"| {name} | {row['absent']} | | | |")
            continue
        lines.append(f"| {name} | {row['needs']} | {row['compute_ms']['p50']} / {row['compute_ms']['p99']} | "
                     f"{row['label_after_onset_ms']['p50']} / {row['label_after_onset_ms']['p99']} | "
                     f"{row['margin_over_limit_ms_p50']} |")
    return lines


def plot_latency(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    for fs, rows in r["scaling"].items():
        h = [x["headstages"] for x in rows]
        axes[0].plot(h, [x["latency_ms"]["p99"] or 0 for x in rows], "o-", label=f"{int(fs) // 1000} kHz p99")
        axes[0].plot(h, [x["latency_ms"]["p50"] or 0 for x in rows], "o--", label=f"{int(fs) // 1000} kHz p50")
        axes[1].plot(h, [x["daemon_cpu_share"] or 0 for x in rows], "o-", label=f"{int(fs) // 1000} kHz")
    axes[0].set_xlabel("headstages")
    axes[0].set_ylabel("label latency (ms)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("headstages")
    axes[1].set_ylabel("daemon CPU (cores)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def update_readme(r: dict, readme: Path, command: str) -> None:
    """Replace the README's bench section (between its markers) with this result's main table."""
    text = Path(readme).read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{readme}: no {start} ... {end} markers")
    md = render_markdown(r)
    table = md.split("\n## Inference")[0].split("\n", 2)[2].strip()
    body = f"Made by `{command}` ({r['created']}); full tables: [docs/bench.md](docs/bench.md).\n\n{table}"
    head, rest = text.split(start, 1)
    Path(readme).write_text(head + start + "\n" + body + "\n" + rest[rest.index(end):])


def declared_row(r: dict) -> list[str]:
    """In the daemon at 50 kHz, the rig's temperature declared (one reading per window) beside not declared
    (two: rtclassify.model.trust), same run (older JSON files lack it)."""
    d = r.get("declared_temperature")
    if not d:
        return []
    one, two = d["process_ms"], d["undeclared_process_ms"]
    return [f"| in the daemon at 50 kHz, window complete → label (ms): temperature declared, one reading / not "
            f"declared, two readings | p50 {one['p50']} / {two['p50']}, p99 {one['p99']} / {two['p99']} (model p50 "
            f"{d['inference_ms']['p50']} / {d['undeclared_inference_ms']['p50']}) |"]


def inference_row(r: dict) -> list[str]:
    """The model's share of the in-daemon time, from the ZMQ run's labels (older JSON files lack it)."""
    runs = [run for run in r.get("e2e_runs", []) if run["transport"] == "zmq" and "inference_ms" in run]
    if not runs:
        return []
    inf = runs[0]["inference_ms"]
    return [f"| of which the model, in the daemon (ms) | p50 {inf['p50']}, p99 {inf['p99']} |"]
