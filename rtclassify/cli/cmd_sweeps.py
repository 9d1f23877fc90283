"""`rtclassify sweeps`: list the sweeps of an NWB file."""
import click

from rtclassify.cli.options import check_files


@click.command()
@click.argument("path", callback=check_files, metavar="FILE.nwb")
def sweeps(path):
    """List the sweeps of FILE.nwb, one JSON object per line.

    Fields: sweep, stimulus, clamp_mode (current|voltage), fs (Hz), n_samples, stim_onset_s (s from
    the sweep's first sample; null in voltage clamp or without a step after the test pulse) and
    n_spikes (null in voltage clamp). Reads MIES NWB 1, Allen Cell Types NWB 1 and NWB 2 files.
    """
    import json

    from rtclassify.formats.nwb import NwbError, read_sweeps, summarise_sweep

    try:
        found = read_sweeps(path)
    except NwbError as exc:
        raise click.ClickException(str(exc)) from None
    for s in found:
        click.echo(json.dumps(summarise_sweep(s)))
