"""`rtclassify annotate`: write per-sweep labels into NWB files, or into a CSV sidecar beside other recordings."""
import click

from rtclassify.cli.options import check_files, min_confidence_option, model_option


@click.command()
@click.argument("paths", nargs=-1, required=True, callback=check_files, metavar="FILE…")
@model_option
@click.option("--out-dir", default=None, type=click.Path(file_okay=False),
              help="Write annotated copies here (default: add the labels to the files themselves).")
@click.option("--steps", type=click.Choice(["short", "any"]), default="short", show_default=True,
              help="For sidecars: short squares only (the training protocol), or also the first AP of longer steps.")
@min_confidence_option
def annotate(paths, model_name, out_dir, steps, min_confidence):
    """Classify each short-square sweep of FILE and store the labels.

    NWB 2: in the file, processing module `rtclassify`, table `labels` (pynwb). NWB 1: the same
    columns under /processing/rtclassify/labels. Other recordings (ABF, neo's formats): a CSV
    sidecar `FILE.rtclassify.csv` beside the file (or in --out-dir), one row per sweep and channel
    with the label or the reason there is none. The recorded data are not changed. One JSON line per file.
    """
    import json
    from pathlib import Path

    from rtclassify.formats import RecordingError
    from rtclassify.offline.annotate import AnnotateError, annotate_file, annotate_sidecar
    from rtclassify.model.file_format import ModelFileError, load_model

    try:
        model = load_model(model_name)
    except ModelFileError as exc:
        raise click.ClickException(str(exc)) from None
    failed = 0
    for p in paths:
        out = Path(out_dir) / Path(p).name if out_dir else None
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
        try:
            if Path(p).suffix.lower() == ".nwb":
                click.echo(json.dumps(annotate_file(Path(p), model, out, min_confidence)))
            else:
                click.echo(json.dumps(annotate_sidecar(Path(p), model, Path(out_dir) if out_dir else None, steps,
                                                       min_confidence)))
        except (RecordingError, AnnotateError) as exc:
            failed += 1
            click.echo(json.dumps({"file": p, "error": str(exc)}))
    if failed:
        raise SystemExit(1)
