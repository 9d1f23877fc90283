"""`rtclassify annotate`: write per-sweep labels into NWB files."""
import click

from rtclassify.cli.options import check_files, model_option


@click.command()
@click.argument("paths", nargs=-1, required=True, callback=check_files, metavar="FILE.nwb…")
@model_option
@click.option("--out-dir", default=None, type=click.Path(file_okay=False),
              help="Write annotated copies here (default: add the labels to the files themselves).")
def annotate(paths, model_name, out_dir):
    """Classify each short-square sweep of FILE.nwb and store the labels in the file.

    NWB 2: processing module `rtclassify`, table `labels` (pynwb). NWB 1: the same columns under
    /processing/rtclassify/labels. The recorded data are not changed. One JSON line per file.
    """
    import json
    from pathlib import Path

    from rtclassify.offline.annotate import AnnotateError, annotate_file
    from rtclassify.formats.nwb import NwbError
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
            click.echo(json.dumps(annotate_file(Path(p), model, out)))
        except (NwbError, AnnotateError) as exc:
            failed += 1
            click.echo(json.dumps({"file": p, "error": str(exc)}))
    if failed:
        raise SystemExit(1)
