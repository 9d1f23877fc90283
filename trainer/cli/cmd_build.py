"""`python -m trainer build`: NWB files windowed into one dataset file."""
from pathlib import Path

import click



@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "labels_csv", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with a cell_id (file name without .nwb) or file column, and line_name, dendrite_type.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Dataset file (.npz).")
@click.option("--anchor", type=click.Choice(["stimulus", "peak"]), default="stimulus", show_default=True,
              help="Align windows on the step onset (published) or on the AP peak.")
@click.option("--before-ms", default=None, type=float, help="ms before the anchor [stimulus: 25, peak: 1].")
@click.option("--after-ms", default=None, type=float, help="ms after the anchor [stimulus: 25, peak: 2].")
@click.option("--fs-hz", default=50_000.0, show_default=True, help="Rate of the windows, Hz (anti-aliased resampling).")
@click.option("--workers", default=2, show_default=True, help="Local worker processes.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler to run the build on instead.")
def build(folder, labels_csv, out_path, anchor, before_ms, after_ms, fs_hz, workers, scheduler):
    """Window every short-square sweep of the NWB files under FOLDER into one dataset file (resumable)."""
    from tqdm import tqdm

    from rtclassify.dsp.windows import WindowSpec
    from trainer.build import build_dataset

    defaults = {"stimulus": (25.0, 25.0), "peak": (1.0, 2.0)}[anchor]
    spec = WindowSpec(anchor=anchor, before_ms=defaults[0] if before_ms is None else before_ms,
                      after_ms=defaults[1] if after_ms is None else after_ms, fs_hz=fs_hz)
    bar = tqdm(desc="files", unit="file")

    def progress(done, total, name):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name)
        bar.refresh()

    try:
        summary = build_dataset(Path(folder), Path(labels_csv), Path(out_path), spec, workers, scheduler, progress)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    click.echo(f"{out_path}: {summary['windows']} windows from {summary['cells']} cells; "
               f"{len(summary['failed'])} files failed, {len(summary['without_label'])} without a label")
    for reason, count in summary["skip_reasons"].items():
        click.echo(f"  sweeps left out: {count} x {reason}")
    for name, reason in summary["failed"].items():
        click.echo(f"  failed {name}: {reason}", err=True)
