"""`rtclassify simulate`: a simulated amplifier speaking the contract's input formats."""
import click


@click.command()
@click.option("--sink", type=click.Choice(["zmq", "lsl"]), required=True, help="Output transport.")
@click.option("--bind", "endpoint", default="tcp://127.0.0.1:5555", show_default=True,
              help="ZMQ endpoint to bind the PUB socket (with --sink zmq).")
@click.option("--stream", "streams", multiple=True, default=["rtclassify-sim"], show_default=True,
              help="LSL data stream name, one per headstage (repeat); missing names get '-hsN' suffixes.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder in the allen-ctdb-spikes layout whose real APs are played. "
                   "Default: APs of the built-in conductance-based neuron models.")
@click.option("--headstages", default=1, show_default=True, help="Number of headstages.")
@click.option("--fs", "fs_hz", default=50_000.0, show_default=True, help="Sampling rate of the streams, Hz.")
@click.option("--chunk-ms", default=1.0, show_default=True, help="Samples per message, in ms.")
@click.option("--sweeps", default=4, show_default=True, help="Sweeps per cell.")
@click.option("--subthreshold-every", default=4, show_default=True,
              help="Every Nth sweep is subthreshold (no AP); 0 for none.")
@click.option("--cells", "max_cells", type=int, default=None, help="Stop after this many cells (all headstages).")
@click.option("--seconds", type=float, default=None, help="Stop after this much stream time, s.")
@click.option("--speed", default=1.0, show_default=True, help="Multiple of real time; 0 = as fast as possible.")
@click.option("--stim-events", is_flag=True, help="Also send `stimulus` events at each step onset.")
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False), default=None,
              help="Write the ground truth, one JSON line per stimulus.")
@click.option("--seed", default=0, show_default=True)
@click.option("--wait-s", default=10.0, show_default=True, help="Wait up to this long for a subscriber, s.")
def simulate(sink, endpoint, streams, data_dir, headstages, fs_hz, chunk_ms, sweeps, subthreshold_every, max_cells,
             seconds, speed, stim_events, truth_path, seed, wait_s):
    """Stream simulated current-clamp sweeps with short-square stimuli and evoked APs.

    The APs are real Allen recordings with --data, else those of the built-in conductance-based
    neuron models. Runs until interrupted unless --cells or --seconds is given.
    """
    import signal
    import threading

    import numpy as np

    from rtclassify.simulator.amplifier import HeadstageStream, load_cells, prepare_streams, run_simulation

    rng = np.random.default_rng(seed)
    if data_dir:
        cells = load_cells(data_dir, fs_hz, rng=rng)
        if not cells:
            raise click.ClickException(f"no playable cells in {data_dir} (need cells.csv and traces/*.npy)")
    else:
        from rtclassify.simulator.neurons import builtin_cells

        cells = builtin_cells(fs_hz)
    per_hs = [cells[h::headstages] or cells for h in range(headstages)]
    hs_streams = [HeadstageStream(h, per_hs[h], fs_hz, sweeps, subthreshold_every, np.random.default_rng(seed + h))
                  for h in range(headstages)]
    chunk_n = max(1, int(round(chunk_ms * fs_hz / 1000)))
    if sink == "zmq":
        from rtclassify.simulator.sinks import ZmqSink

        out = ZmqSink(endpoint)
    else:
        from rtclassify.simulator.sinks import LslSink

        names = list(streams) + [f"{streams[0]}-hs{h}" for h in range(len(streams), headstages)]
        out = LslSink(names[:headstages], fs_hz, chunk_n)
    prepare_streams(hs_streams, max_cells, seconds)  # while the daemon starts up
    if not out.wait_for_subscriber(wait_s):
        click.echo(f"simulate: no subscriber after {wait_s:g} s; streaming anyway", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    truth = open(truth_path, "w", buffering=1) if truth_path else None
    try:
        counts = run_simulation(out, hs_streams, chunk_n, speed, max_cells, seconds, truth, stim_events, stop)
    except KeyboardInterrupt:
        counts = {"interrupted": True}
    finally:
        if truth:
            truth.close()
        out.close()
    click.echo(f"simulate: {counts}", err=True)
