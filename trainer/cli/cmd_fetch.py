"""`python -m trainer fetch allen|dandi`: resumable downloads of NWB files and labels."""
from pathlib import Path

import click



@click.group()
def fetch():
    """Download NWB files and labels (Allen Cell Types Database, DANDI 000020); resumable."""


def fetch_options(f):
    f = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Download folder.")(f)
    f = click.option("--limit", default=None, type=int, help="Only the first N files.")(f)
    f = click.option("--retries", default=4, show_default=True, help="Retries per request (exponential back-off).")(f)
    return f


def report_fetch(summary: dict, out_dir) -> None:
    click.echo(f"{out_dir}: {summary['downloaded']} downloaded, {summary['already_complete']} already complete, "
               f"{len(summary['failed'])} failed")
    for name, reason in summary["failed"].items():
        click.echo(f"  failed {name}: {reason}", err=True)
    if summary["failed"]:
        raise SystemExit(1)


def byte_bar(tqdm):
    bar = tqdm(unit="B", unit_scale=True, desc="download")
    return bar, bar.update


@fetch.command("allen")
@fetch_options
@click.option("--base", default="http://api.brain-map.org", show_default=True, help="Allen Brain Map API base URL.")
@click.option("--species", default="Mus musculus", show_default=True, help="Donor species ('' for all).")
def fetch_allen_cmd(out_dir, limit, retries, base, species):
    """Cell list with Cre lines (cells.csv) and one NWB file per cell."""
    from tqdm import tqdm

    from trainer.fetch import FetchError, fetch_allen

    bar, update = byte_bar(tqdm)
    try:
        summary = fetch_allen(Path(out_dir), base, species, limit, progress=update, retries=retries)
    except FetchError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    report_fetch(summary, out_dir)


@fetch.command("dandi")
@fetch_options
@click.option("--manifest", "manifest_csv", default="../shared/data/patchseq-metadata/2020-06-26_mouse_file_manifest.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--metadata", "metadata_csv", default="../shared/data/patchseq-metadata/20200625_patchseq_metadata_mouse.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
def fetch_dandi_cmd(out_dir, limit, retries, manifest_csv, metadata_csv):
    """DANDI 000020 NWB files (size and sha256 checked) and their labels (labels.csv)."""
    from tqdm import tqdm

    from trainer.fetch import fetch_dandi

    bar, update = byte_bar(tqdm)
    try:
        summary = fetch_dandi(Path(manifest_csv), Path(metadata_csv), Path(out_dir), limit, progress=update,
                              retries=retries)
    finally:
        bar.close()
    report_fetch(summary, out_dir)
