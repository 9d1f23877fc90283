"""`rtclassify sweeps`: list (and with --model, label) the sweeps of a recording of any format."""
import click

from rtclassify.cli.options import check_recording, min_confidence_option, rig_options


@click.command()
@click.argument("path", callback=check_recording, metavar="FILE")
@click.option("--model", "model_name", default=None, metavar="MODEL",
              help="Also classify with this model (genetic5, broad2 or a model file): short squares get label, "
                   "p_<class>, envelope; long steps their features; each line the cell's verdict so far (`cell`), "
                   "and the output ends with one `verdict` line per recorded cell (channel).")
@click.option("--steps", type=click.Choice(["short", "any"]), default="short", show_default=True,
              help="Which APs the AP network labels: short: short squares (one 1-5 ms step, its training "
                   "protocol); any: also the first AP of a longer step, marked outside the training protocol in "
                   "`envelope` (such a label does not join the verdict). Long steps are measured either way.")
@rig_options
@min_confidence_option
def sweeps(path, model_name, steps, filter_hz, temperature_c, min_confidence):
    """List the sweeps of FILE, one JSON object per sweep and recorded channel.

    Fields: sweep and channel (0-based, as in the file), stimulus, clamp_mode (current|voltage),
    fs (Hz), n_samples, stim_onset_s (s from the sweep's first sample; null in voltage clamp or
    without a step), n_spikes (null in voltage clamp or on a channel that is not a membrane
    potential), units, filter_hz (the amplifier's low-pass when the file says), rig (fs, filter_hz,
    temperature_c: null when not told, warp), and `refusal` when a channel gets no label (a current
    monitor, voltage clamp). With --model, a last line per recorded cell: {"verdict": {label (null
    when uncertain), probs, evidence, uncertain, reason}, "channel", "source_file", "features"}.
    Reads NWB (MIES NWB 1, Allen Cell Types NWB 1, NWB 2), Axon ABF 1 and 2, and through neo Axograph,
    WinWCP, Igor, Spike2; FILE may be a folder of Igor waves (one cell: waves *_ch<C>_<N>.ibw sharing N
    are one sweep, the wave in volts its membrane potential, the one in amperes its current).
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
    from rtclassify.model.envelope import RigInfo
    from rtclassify.offline.sweep_labels import rig_fields

    rig = RigInfo.from_values(filter_hz, temperature_c)
    model = None
    if model_name is not None:
        from rtclassify.model.file_format import ModelFileError, load_model
        from rtclassify.offline.sweep_labels import label_sweep
        from rtclassify.offline.verdicts import FileVerdicts

        try:
            model = load_model(model_name)
        except ModelFileError as exc:
            raise click.ClickException(str(exc)) from None
        verdicts = FileVerdicts(model, temperature_c, min_confidence)
    for s in found:
        line = {**summarise_sweep(s), "units": s.units or None, "filter_hz": s.filter_hz, "rig": rig_fields(s, rig)}
        if s.refusal:
            line["refusal"] = s.refusal
        if model is not None:
            evidence = verdicts.evidence_for(s)
            fields = label_sweep(s, model, steps, rig, evidence, min_confidence)
            fields.pop("probs", None)
            fields.pop("skip_reason", None)
            line.update(fields)
            if evidence is not None:
                line["cell"] = evidence.verdict().to_dict()
        click.echo(json.dumps(line))
    if model is not None:
        for line in verdicts.lines(str(path)):
            click.echo(json.dumps(line))
