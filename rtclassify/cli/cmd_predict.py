"""`rtclassify predict`: classify a folder of single action potentials into a CSV."""
import click

from rtclassify.cli.options import OptionError, check_folder, device_option, min_confidence_option, model_option


@click.command()
@model_option
@click.option("--data", "data_dir", required=True, callback=check_folder, metavar="DIR",
              help="Folder with cells.csv (specimen_id, fs_hz; optional filter_hz in Hz, temperature_c in °C and per-cell "
                   "feature columns named as in Allen's cell_features.csv) and traces/<specimen_id>.npy (mV, 1 ms "
                   "before to 2 ms after the AP peak).")
@click.option("--out", "out_csv", required=True, type=click.Path(dir_okay=False), metavar="FILE.csv",
              help="Output CSV: specimen_id,label,p_<class>...,error, one row per cells.csv row.")
@device_option
@min_confidence_option
def predict(model_name, data_dir, out_csv, device, min_confidence):
    """Classify every cell of DIR with MODEL and write FILE.csv.

    Columns: specimen_id, label, p_<class>..., error, envelope (`inside`, or `outside: <why>` when
    the row's rate, declared filter or temperature, or its window lies outside what the model was
    validated on; its probabilities are then tempered toward the class prior), evidence (ap,
    features or ap+features), uncertain (the top probability below --min-confidence), trace_error. Per-cell feature
    columns (Allen's names: f_i_curve_slope, adaptation, tau, ...) join the AP in one verdict; a row
    without a usable trace is classified from its features alone. A row recorded below 34 °C
    (temperature_c) is read with the temperature warp, its time features alike.

    Exit status 0 once the file is written, even when some rows carry an error; 1 when DIR's table
    or MODEL cannot be used; 2 when DIR does not exist (`rtclassify --help` has the rule).
    """
    from pathlib import Path

    from rtclassify.formats.spike_folder import read_cells_table

    if not Path(out_csv).resolve().parent.is_dir():
        raise OptionError(f"--out {out_csv}: its folder {Path(out_csv).parent} does not exist")
    try:  # the table first: a wrong folder is told in a moment, not after the model has loaded
        rows = read_cells_table(Path(data_dir))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

    from rtclassify.model.device import choose_device
    from rtclassify.model.file_format import ModelFileError, load_model
    from rtclassify.offline.predict import predict_folder

    try:
        model = load_model(model_name, device=choose_device(device))
    except ModelFileError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        counts = predict_folder(model, data_dir, out_csv, rows=rows, min_confidence=min_confidence)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{counts['classified']}/{counts['rows']} cells classified with {model.name} "
        f"({counts['features_only']} from their features alone, {counts['errors']} with errors, "
        f"{counts['outside']} outside the model's envelope) -> {out_csv}",
        err=True,
    )
