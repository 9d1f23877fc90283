"""`rtclassify demo`: simulator -> daemon -> live label printout, all on loopback, no data needed."""
import click

from rtclassify.cli.options import model_option


@click.command()
@model_option
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Play real APs from a folder in the allen-ctdb-spikes layout (default: built-in neuron models).")
@click.option("--cells", default=6, show_default=True, help="Cells to play.")
@click.option("--headstages", default=2, show_default=True)
@click.option("--fs", "fs_hz", default=50_000.0, show_default=True, help="Stream sampling rate, Hz.")
@click.option("--source", type=click.Choice(["zmq", "lsl"]), default="zmq", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the run's files (the daemon's log, the simulator's truth); "
                                          "default: removed at the end.")
def demo(model_name, data_dir, cells, headstages, fs_hz, source, seed, keep):
    """Run a simulated rig end to end and print every label as it arrives.

    Starts `rtclassify serve` and `rtclassify simulate` as separate processes on loopback,
    subscribes to the daemon's labels, prints one line per stimulus and a summary (labels vs the
    simulator's ground truth, latency percentiles).
    """
    import json
    import subprocess
    import sys
    import tempfile
    import time
    import uuid
    from pathlib import Path

    import zmq

    from rtclassify.transport.ports import free_tcp_endpoint

    tmp = Path(tempfile.mkdtemp(prefix="rtclassify-demo-"))
    data_ep, label_ep = free_tcp_endpoint(), free_tcp_endpoint()
    stream = f"rtclassify-demo-{uuid.uuid4().hex[:6]}"
    me = [sys.executable, "-m", "rtclassify"]
    serve_cmd = me + ["serve", "--source", source, "--model", model_name, "--publish", label_ep,
                      "--log", str(tmp / "labels.jsonl")]
    serve_cmd += ["--connect", data_ep] if source == "zmq" else ["--stream", stream]
    sim_cmd = me + ["simulate", "--sink", source, "--cells", str(cells), "--headstages", str(headstages),
                    "--fs", str(fs_hz), "--truth", str(tmp / "truth.jsonl"), "--seed", str(seed), "--wait-s", "60"]
    sim_cmd += ["--bind", data_ep] if source == "zmq" else ["--stream", stream]
    if data_dir:
        sim_cmd += ["--data", data_dir]
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(label_ep)
    click.echo(f"demo: starting the daemon ({model_name}, {source}) and the simulator "
               f"({cells} cells, {headstages} headstages, {fs_hz / 1000:g} kHz, "
               f"{'real APs from ' + data_dir if data_dir else 'built-in neuron models'})")
    click.echo(LEGEND)
    # over ZMQ the simulator binds and waits for the daemon's subscription; over LSL the daemon
    # needs the simulator's stream to exist, and the simulator waits for the daemon's inlet
    sim = subprocess.Popen(sim_cmd, stderr=subprocess.DEVNULL) if source == "lsl" else None
    daemon = subprocess.Popen(serve_cmd, stderr=subprocess.DEVNULL)
    answers, latencies = [], []
    try:
        if not sub.poll(60_000):
            raise click.ClickException("the daemon did not start within 60 s")
        if sim is None:
            sim = subprocess.Popen(sim_cmd, stderr=subprocess.DEVNULL)
        quiet_since = None
        while True:
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                msg = json.loads(body)
                if topic == b"label":
                    answers.append(msg)
                    latencies.append(msg["latency_ms"]["process"])
                    cell = msg["cell"]
                    click.echo(f"hs{msg['headstage']} {str(msg['cell_id']):>16} onset sample {msg['stim_onset_sample']:>8}  "
                               f"{msg['label']:>5} p={max(msg['probs'].values()):.2f}   cell: {cell['label']:>5} "
                               f"p={max(cell['probs'].values()):.2f} n={cell['n_windows']}   "
                               f"{msg['latency_ms']['process']:.2f} ms{'  LATE' if msg['late'] else ''}")
                elif topic == b"skip":
                    answers.append(msg)
                    click.echo(f"hs{msg['headstage']} {str(msg['cell_id']):>16} onset sample {msg['stim_onset_sample']:>8}  "
                               f"skip: {msg['reason']}")
                continue
            if sim.poll() is not None:
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since > 1.5:
                    break
    finally:
        for p in (sim, daemon):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(20)
        sub.close()
    truth = [json.loads(x) for x in (tmp / "truth.jsonl").read_text().splitlines()] if (tmp / "truth.jsonl").exists() else []
    summarise(truth, answers, latencies)
    if keep:
        click.echo(f"files kept in {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


LEGEND = ("columns: headstage, cell id, onset sample (stream sample index of the step onset), this "
          "window's label and its probability, the cell's verdict so far (mean of its windows' "
          "probabilities) with its probability and window count, and `process` latency in ms (window "
          "complete in the daemon -> label sent; LATE when over the budget)")


def expected_class(truth: dict, classes) -> str | None:
    """The class a simulated stimulus's cell stands for, in the model's classes: a built-in neuron's
    own; a real cell's from its Cre line (genetic5) or dendrite type (broad2); None when unknown."""
    from trainer.labels import DENDRITE_TO_BROAD, assign_labels, get_task

    if truth.get("class"):  # a built-in neuron: its genetic class, or excitatory vs inhibitory
        if "Inh" in classes:
            return "Exc" if truth["class"] == "Exc" else "Inh"
        return truth["class"]
    if "Inh" in classes:
        return DENDRITE_TO_BROAD.get(truth.get("dendrite_type") or "")
    return assign_labels([truth.get("line_name") or ""], [truth.get("dendrite_type") or ""], get_task("genetic5"))[0]


def summarise(truth, answers, latencies):
    import numpy as np

    by_key = {(a["headstage"], a["stim_onset_sample"]): a for a in answers}
    labels = [a for a in answers if a["schema"].startswith("rtclassify.label")]
    unanswered = sum((t["headstage"], t["stim_onset_sample"]) not in by_key for t in truth)
    click.echo(f"\n{len(truth)} stimuli: {len(labels)} labels, {len(answers) - len(labels)} skips, "
               f"{unanswered} unanswered")
    if latencies:
        q = np.percentile(latencies, [50, 95, 99])
        late = sum(bool(a.get("late")) for a in labels)
        click.echo(f"latency (process: window complete in the daemon -> label sent): p50 {q[0]:.2f} ms, "
                   f"p95 {q[1]:.2f} ms, p99 {q[2]:.2f} ms, max {max(latencies):.2f} ms; {late} of {len(labels)} LATE")
    classes = labels[0]["probs"].keys() if labels else ()
    scored = []
    for t in truth:
        a = by_key.get((t["headstage"], t["stim_onset_sample"]))
        want = expected_class(t, classes) if a is not None and "label" in a else None
        if want:
            scored.append((want, a["label"]))
    if scored:
        hits = sum(a == b for a, b in scored)
        click.echo(f"agreement with the simulated cell's class: {hits}/{len(scored)}")
