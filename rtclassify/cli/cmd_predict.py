"""`rtclassify predict`: classify a folder of single action potentials into a CSV."""
import click

from rtclassify.cli.options import device_option, model_option


@click.command()
@model_option
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=str), metavar="DIR",
              help="Folder with cells.csv (specimen_id, fs_hz) and traces/<specimen_id>.npy (mV, 1 ms before to 2 ms after the AP peak).")
@click.option("--out", "out_csv", required=True, type=click.Path(dir_okay=False), metavar="FILE.csv",
              help="Output CSV: specimen_id,label,p_<class>...,error, one row per cells.csv row.")
@device_option
def predict(model_name, data_dir, out_csv, device):
    """Classify every cell of DIR with MODEL and write FILE.csv.

    Exit status 0 once the file is written, even when some rows carry an error;
    non-zero with a one-line reason when DIR or MODEL is unusable.
    """
    from rtclassify.model.device import choose_device
    from rtclassify.model.file_format import ModelFileError, load_model
    from rtclassify.offline.predict import predict_folder

    try:
        model = load_model(model_name, device=choose_device(device))
    except ModelFileError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        counts = predict_folder(model, data_dir, out_csv)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{counts['classified']}/{counts['rows']} cells classified with {model.name} "
        f"({counts['errors']} with errors) -> {out_csv}",
        err=True,
    )
