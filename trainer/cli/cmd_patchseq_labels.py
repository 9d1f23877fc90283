"""`python -m trainer patchseq-labels`: labels for DANDI 000020's NWB files."""
from pathlib import Path

import click



@click.command("patchseq-labels")
@click.option("--metadata", "metadata_csv", default="../shared/data/patchseq-metadata/20200625_patchseq_metadata_mouse.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--manifest", "manifest_csv", default="../shared/data/patchseq-metadata/2020-06-26_mouse_file_manifest.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_csv", required=True, type=click.Path(dir_okay=False))
def patchseq_labels(metadata_csv, manifest_csv, out_csv):
    """Label table (file, line_name, dendrite_type) for the NWB files of DANDI 000020."""
    from trainer.build import patchseq_label_table

    n = patchseq_label_table(Path(metadata_csv), Path(manifest_csv), Path(out_csv))
    click.echo(f"{out_csv}: {n} NWB files labelled")
