"""`rtclassify sweeps`: list (and with --model, label) the sweeps of a recording of any format."""
import click

from rtclassify.cli.options import check_files, rig_options


@click.command()
@click.argument("path", callback=check_files, metavar="FILE")
@click.option("--model", "model_name", default=None, metavar="MODEL",
              help="Also classify each sweep with this model (genetic5, broad2 or a model file): fields label, "
                   "p_<class>, envelope; or skip, with the reason.")
@click.option("--steps", type=click.Choice(["short", "any"]), default="short", show_default=True,
              help="short: classify short squares (one 1-5 ms step, the training protocol); any: also the first "
                   "AP of a longer step, marked outside the training protocol in `envelope`.")
@rig_options
def sweeps(path, model_name, steps, filter_hz, temperature_c):
    """List the sweeps of FILE, one JSON object per sweep and recorded channel.

    Fields: sweep and channel (0-based, as in the file), stimulus, clamp_mode (current|voltage),
    fs (Hz), n_samples, stim_onset_s (s from the sweep's first sample; null in voltage clamp or
    without a step), n_spikes (null in voltage clamp or on a channel that is not a membrane
    potential), units, filter_hz (the amplifier's low-pass when the file says). Reads NWB (MIES NWB 1,
    Allen Cell Types NWB 1, NWB 2), Axon ABF 1 and 2, and through neo Axograph, WinWCP, Igor, Spike2.
    """
    import json

    from rtclassify.cli.options import check_model
    from rtclassify.formats import RecordingError
    from rtclassify.formats.nwb import summarise_sweep
    from rtclassify.formats.recordings import read_recording

    if model_name is not None:
        check_model(None, None, model_name)
    try:
        found = read_recording(path)
    except RecordingError as exc:
        raise click.ClickException(str(exc)) from None
    model = None
    if model_name is not None:
        from rtclassify.model.file_format import ModelFileError, load_model
        from rtclassify.model.envelope import RigInfo
        from rtclassify.offline.sweep_labels import label_sweep

        try:
            model = load_model(model_name)
        except ModelFileError as exc:
            raise click.ClickException(str(exc)) from None
    for s in found:
        line = {**summarise_sweep(s), "units": s.units or None, "filter_hz": s.filter_hz}
        if model is not None:
            fields = label_sweep(s, model, steps, RigInfo.from_values(filter_hz, temperature_c))
            fields.pop("probs", None)
            fields.pop("skip_reason", None)
            line.update(fields)
        click.echo(json.dumps(line))
