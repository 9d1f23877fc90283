"""`rtclassify watch`: answer each new sweep of the recordings acquisition software writes into a folder."""
import click

from rtclassify.cli.options import check_folder, min_confidence_option, model_option, rig_options


@click.command()
@click.argument("folder", callback=check_folder, metavar="DIR")
@model_option
@click.option("--publish", default=None, metavar="ENDPOINT",
              help="Bind a ZMQ PUB socket here for labels, skips and heartbeats (as serve).")
@click.option("--lsl-out", default="rtclassify-labels", show_default=True, metavar="NAME",
              help="Name of the LSL marker outlet that carries every label, skip and heartbeat.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.jsonl",
              help="Append every message here; a restart with the same log answers no sweep twice.")
@click.option("--steps", type=click.Choice(["short", "any"]), default="short", show_default=True,
              help="short: classify short squares (one 1-5 ms step); any: also the first AP of a longer step "
                   "(marked outside the training protocol in `envelope`).")
@click.option("--stable-s", default=0.5, show_default=True, help="A file is read once unchanged for this long, s.")
@rig_options
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: until SIGINT/SIGTERM).")
@click.option("--quiet", is_flag=True, help="Print nothing per sweep (scripts: read --log or the sockets).")
@min_confidence_option
def watch(folder, model_name, publish, lsl_out, log_path, steps, stable_s, filter_hz, temperature_c, seconds, quiet,
          min_confidence):
    """Watch DIR for recordings (.abf, .nwb, ...) and answer each new sweep once.

    Files are read once their data are stable, again when they grow; each sweep and recorded
    channel gets one `label` or `skip` message as `serve` sends them, plus `source_file`, `sweep`
    and `channel`. A cell is a file: the cell's verdict joins its short squares and long steps.
    Half-written or corrupt files wait and are retried. Prints one line per answered sweep (file,
    sweep, channel, the answer and the cell's verdict so far) unless --quiet.
    """
    import signal
    import threading
    from pathlib import Path

    from rtclassify.daemon.publish import Publisher, warn
    from rtclassify.model.file_format import ModelFileError, load_model
    from rtclassify.offline.watch import FolderWatch, answered_in_log, describe, run_watch

    answered = answered_in_log(log_path)
    publisher = Publisher(publish, lsl_out, log_path)
    try:
        model = load_model(model_name)
    except ModelFileError as exc:
        publisher.close()
        raise click.ClickException(str(exc)) from None
    from rtclassify.model.envelope import RigInfo

    def emit(topic, msg):
        publisher.emit(topic, msg)
        line = None if quiet else describe(topic, msg)
        if line:
            click.echo(line)

    w = FolderWatch(Path(folder).resolve(), model, emit, steps=steps, stable_s=stable_s, answered=answered,
                    rig=RigInfo.from_values(filter_hz, temperature_c), min_confidence=min_confidence)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.set())
    if seconds:
        threading.Timer(seconds, stop.set).start()
    warn(f"ready: watching {w.folder} with {model.name}; {len(answered)} sweeps already answered in "
         f"{log_path or '(no log)'}", "watch")
    try:
        run_watch(w, publisher.emit, stop)
    finally:
        sent = dict(publisher.sent)
        publisher.close()
    warn(f"stopped: sent {sent.get('label', 0)} labels, {sent.get('skip', 0)} skips", "watch")
