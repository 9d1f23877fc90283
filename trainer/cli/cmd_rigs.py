"""`python -m trainer rigs`: the rig-stratified report: held-out cells through simulated acquisition
chains, scored through `rtclassify predict` itself (docs/rigs.md)."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA


@click.command()
@click.option("--model", "models", multiple=True, required=True, metavar="TASK=FILE",
              help="A model to score, e.g. genetic5=rtclassify/model/shipped/genetic5.pt (repeatable; several "
                   "files of one task are seeds of one recipe: their spread is reported).")
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--cells", type=click.Choice(["final", "calibration"]), default="final", show_default=True,
              help="final: the frozen final split (score once); calibration: the shipped models' calibration "
                   "split (for choices).")
@click.option("--out", "out_dir", default="docs/rigs", show_default=True, help="Folder for rigs.json and rigs.md.")
@click.option("--seed", default=7, show_default=True, help="Seed of the chains' clock phases and noise.")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap draws over cells for the intervals.")
@click.option("--card", is_flag=True, help="Also write each model's figures into its card's envelope.")
@click.option("--card-to", "card_to", multiple=True, metavar="TASK=FILE",
              help="With --card: a file of the same recipe trained on every cell (the shipped one) that carries "
                   "these figures too, marked as its held-out siblings' (repeatable).")
def rigs(models, data_dir, metadata_dir, cells, out_dir, seed, bootstrap, card, card_to):
    """Score models on held-out cells recorded through the rigs of trainer.rigs.REPORT_CONDITIONS."""
    from trainer.rig_report import run_rig_report

    run_rig_report(parse_models(models, "--model"), data_dir, metadata_dir, cells, Path(out_dir), seed, bootstrap,
                   card, card_to=parse_models(card_to, "--card-to"))


def parse_models(items, option: str) -> dict:
    """("TASK=FILE", ...) -> {task: [file, ...]}; a missing file is a usage error naming the option."""
    by_task = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not Path(path).is_file() and path not in ("genetic5", "broad2"):
            raise click.BadParameter(f"{item!r}: write TASK=FILE with an existing model file", param_hint=option)
        by_task.setdefault(task, []).append(path)
    return by_task
