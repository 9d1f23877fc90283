"""`rtclassify detect`: offline stimulus and spike detection on .npz files (the detector `serve` uses)."""
import json

import click


@click.command()
@click.option("--fs", "fs_hz", required=True, type=float, metavar="HZ", help="Sampling rate of the files, Hz.")
@click.option("--v-units", type=click.Choice(["V", "mV"]), default=None,
              help="Units of array v (default: V if max |v| < 1, else mV).")
@click.option("--i-units", type=click.Choice(["A", "pA"]), default=None,
              help="Units of array i (default: A if max |i| < 1e-6, else pA).")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def detect(fs_hz, v_units, i_units, files):
    """Find stimulus steps (on i) and action potentials (on v) in each .npz FILE.

    Each FILE holds arrays v (membrane potential) and i (command current) of equal length.
    Prints one JSON object per file: {"file", "stimuli": [{"onset_s", "offset_s"}],
    "spikes": [{"peak_s", "threshold_s", "peak_mv", "obscured"}]}, times in s from the first
    sample. obscured: a stimulus edge hides the AP's peak (e.g. V still rising when the step
    ends); peak_s is then the last sample before that edge.
    A file that cannot be read gets {"file", "error"} and the exit status is 1 at the end.
    """
    from rtclassify.dsp.detector import detect_trace, summarise_detection
    from rtclassify.formats.npz import read_npz_recording

    if fs_hz <= 0:
        raise click.BadParameter(f"{fs_hz}: must be a positive rate in Hz", param_hint="--fs")
    failed = 0
    for path in files:
        try:
            v, i = read_npz_recording(path, v_units, i_units)
            out = {"file": path, **summarise_detection(detect_trace(v, i, fs_hz), v, fs_hz)}
        except Exception as exc:  # one bad file must not stop the others
            failed += 1
            out = {"file": path, "error": str(exc) if isinstance(exc, (ValueError, OSError)) else
                   f"{type(exc).__name__}: {exc}"}
        click.echo(json.dumps(out))
    if failed:
        raise SystemExit(1)
