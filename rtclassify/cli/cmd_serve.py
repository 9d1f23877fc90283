"""`rtclassify serve`: the streaming daemon."""
import click

from rtclassify.cli.options import check_files, device_option, min_confidence_option, model_option, rig_options


@click.command()
@click.option("--source", type=click.Choice(["zmq", "lsl", "file"]), required=True,
              help="Input transport; `file` replays recordings given with --replay (.npz arrays v, i at --fs; or any recording `sweeps` reads: .nwb, .abf, ...).")
@click.option("--connect", default=None, metavar="ENDPOINT",
              help="ZMQ endpoint of the acquisition's PUB socket (with --source zmq), e.g. tcp://127.0.0.1:5555.")
@click.option("--stream", "streams", multiple=True, metavar="NAME",
              help="LSL data stream name (with --source lsl); repeat for several headstages (headstage = position).")
@click.option("--replay", "replay_files", multiple=True, callback=check_files, metavar="FILE",
              help="With --source file: recordings to play (repeat); each file is a new cell. Recordings (.nwb, "
                   ".abf, ...) play their current-clamp sweeps one after the other at their own rate, recorded "
                   "channel k on headstage k, the command's steps sent as stimulus events.")
@click.option("--fs", "replay_fs", type=float, default=None, metavar="HZ",
              help="With --source file: sampling rate of the .npz recordings, Hz (other files carry theirs).")
@click.option("--speed", default=1.0, show_default=True, help="With --source file: multiple of real time, 0 = as fast as possible.")
@model_option
@click.option("--publish", default=None, metavar="ENDPOINT",
              help="Bind a ZMQ PUB socket here for labels, skips and heartbeats (required with --source zmq).")
@click.option("--lsl-out", default="rtclassify-labels", show_default=True, metavar="NAME",
              help="Name of the LSL marker outlet that carries every label, skip and heartbeat (for LabRecorder).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.jsonl",
              help="Append every label, skip and heartbeat to this JSONL file.")
@click.option("--budget-ms", default=2.0, show_default=True, help="Latency budget per label, ms; later labels are marked late.")
@click.option("--long-budget-ms", default=20.0, show_default=True,
              help="Latency budget of a long step's label (after its features' last sample), ms.")
@click.option("--max-step-s", default=2.0, show_default=True, type=click.FloatRange(0.0, 10.0),
              help="The longest current step measured as a long step, s (the buffer holds it whole; 0: long steps "
                   "are skipped). A level held longer is taken as a new holding current.")
@device_option
@click.option("--runtime", type=click.Choice(["auto", "kernels", "onnx", "torchscript"]), default="auto",
              show_default=True,
              help="Model runtime on the CPU, each checked against TorchScript at load: kernels (the network "
                   "compiled with numba, the least per-call cost), onnx (ONNX Runtime on the file's serving graph), "
                   "torchscript (also the CUDA path). auto: kernels, else onnx, else torchscript on the CPU; "
                   "torchscript on CUDA. `rtclassify bench` compares them.")
@click.option("--threads", default=1, show_default=True, help="torch CPU threads for inference.")
@click.option("--onsets", type=click.Choice(["auto", "channel", "events"]), default="auto", show_default=True,
              help="Where stimulus onsets come from: auto = steps on the I channel and `stimulus` events alike "
                   "(one stimulus when both report it within 1 ms); channel = I steps only (events counted, "
                   "ignored); events = `stimulus` events only.")
@click.option("--max-headstages", default=16, show_default=True, type=click.IntRange(1, 65536),
              help="Serve headstage numbers 0 to N-1; data and events for others are ignored and counted in the "
                   "heartbeat (a sender's numbers never allocate memory).")
@click.option("--timeout-s", "timeout_s", type=float, default=10.0, show_default=True,
              help="With --source lsl: how long to wait for the named streams before giving up.")
@click.option("--label-window", is_flag=True,
              help="Put the classified window (mV at the model rate) into each label, for the overlay's trace "
                   "(~1.5 kB more per label).")
@rig_options
@min_confidence_option
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: until SIGINT/SIGTERM).")
def serve(source, connect, streams, replay_files, replay_fs, speed, model_name, publish, lsl_out, log_path, budget_ms,
          long_budget_ms, max_step_s, device, runtime, threads, onsets, max_headstages, timeout_s, label_window,
          filter_hz, temperature_c, min_confidence, seconds):
    """Classify cells live from amplifier data; send labels back to the acquisition software.

    Every stimulus onset seen gets exactly one `label` or `skip` message: a short square (a step of
    at most 5 ms) its AP's label within a millisecond, a long step (a step of a current-step family)
    its features once it has ended, with `protocol` saying which; every label carries the cell's
    verdict over both. SIGINT/SIGTERM answer the open stimuli, flush the log and exit 0.
    """
    import signal
    import threading

    if source == "zmq" and not connect:
        raise click.UsageError("--source zmq needs --connect ENDPOINT")
    if source == "zmq" and not publish:
        raise click.UsageError("--source zmq needs --publish ENDPOINT for the labels")
    if source == "lsl" and not streams:
        raise click.UsageError("--source lsl needs at least one --stream NAME")
    if source == "file" and not replay_files:
        raise click.UsageError("--source file needs --replay FILE (one or more: .npz, .nwb, .abf, ...)")
    if source == "file" and not replay_fs and any(f.endswith(".npz") for f in replay_files):
        raise click.UsageError("--replay FILE.npz needs --fs HZ (the recording's sampling rate)")

    from rtclassify.daemon.publish import Publisher, warn

    # the outputs first: a client resolving our label outlet finds it while we look for the sources
    publisher = Publisher(publish, lsl_out, log_path)
    lsl_infos = None
    if source == "lsl":  # then every named stream, before the model loads: a missing one fails in its timeout
        from rtclassify.transport.lsl_source import LslSourceError, resolve_data_streams

        try:
            lsl_infos = resolve_data_streams(list(streams), timeout_s)
        except LslSourceError as exc:
            publisher.close()
            raise click.ClickException(str(exc)) from None

    import torch

    from rtclassify.model.device import choose_device
    from rtclassify.daemon.engine import Engine, ServeConfig
    from rtclassify.model.file_format import ModelFileError, load_model
    from rtclassify.daemon.service import Daemon, freeze_startup_objects

    torch.set_num_threads(threads)
    try:
        model = load_model(model_name, device=choose_device(device), runtime=runtime)
    except (ModelFileError, ValueError) as exc:
        publisher.close()
        raise click.ClickException(str(exc)) from None
    if model.runtime_note:
        warn(f"runtime {model.runtime}: {model.runtime_note}")
    warm_up_model(model)
    from rtclassify.model.envelope import RigInfo, describe

    cfg = ServeConfig(budget_ms=budget_ms, onsets=onsets, include_window=label_window, max_headstages=max_headstages,
                      rig=RigInfo.from_values(filter_hz, temperature_c), max_step_s=max_step_s,
                      long_budget_ms=long_budget_ms, min_confidence=min_confidence)
    engine = Engine(model, cfg, publisher.emit, notify=warn)
    if max_step_s > 0:
        engine.warm_up_step_worker()  # the process that measures long steps, ready before the first one
    daemon = Daemon(engine, publisher)
    freeze_startup_objects()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.set())
    if seconds:
        threading.Timer(seconds, stop.set).start()
    outputs = [x for x in (publish, f"LSL {lsl_out}" if lsl_out else None, log_path) if x]

    def ready():
        warn(f"ready: model {model.name} ({', '.join(model.classes)}) on {model.device} ({model.runtime}), "
             f"source {source}"
             f"{' ' + ', '.join(streams) if streams else ''}, onsets {onsets}, labels to {', '.join(outputs)}; "
             f"validated on {describe(model.envelope)}")

    try:
        if source == "zmq":
            from rtclassify.transport.zmq_source import run_zmq

            run_zmq(daemon, connect, stop, on_ready=ready)
        elif source == "lsl":
            from rtclassify.transport.lsl_source import run_lsl

            run_lsl(daemon, lsl_infos, stop, on_ready=ready)
        else:
            from rtclassify.transport.file_replay import run_replay

            run_replay(daemon, list(replay_files), replay_fs, speed, stop, on_ready=ready)
    finally:
        daemon.close()
        sent = publisher.sent
        warn(f"stopped: sent {sent.get('label', 0)} labels, {sent.get('skip', 0)} skips, "
             f"{sent.get('heartbeat', 0)} heartbeats")


def warm_up_model(model, max_batch: int = 8, repeats: int = 6) -> None:
    """Run the model on dummy windows of every batch size up to max_batch, several times each.

    TorchScript's profiling executor specialises a graph on its first calls with a new shape, and
    ONNX Runtime allocates its buffers per shape; doing that here keeps it off the first live labels.
    """
    import numpy as np

    x = np.full((max_batch, model.spec.n_samples), -60.0, np.float32)
    for b in range(1, max_batch + 1):
        for _ in range(repeats):
            model.run(x[:b])
