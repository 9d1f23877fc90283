"""`python -m trainer cards`: a report's figures written into the built-in models' cards."""
from pathlib import Path

import click

from trainer.recipe import SHIPPED
from trainer.cli.cmd_train import evaluation_for


@click.command()
@click.option("--report", "report_json", default="docs/report/report.json", show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--models", "models_dir", default="rtclassify/model/shipped", show_default=True,
              type=click.Path(exists=True, file_okay=False))
def cards(report_json, models_dir):
    """Write a report's cross-validated figures into the built-in models' cards (weights untouched)."""
    from rtclassify.model.file_format import update_card

    for task in SHIPPED:
        path = Path(models_dir) / f"{task}.pt"
        card = update_card(str(path), {"evaluation": evaluation_for(report_json, task)})
        pooled = card["evaluation"].get("pooled", {})
        click.echo(f"{path}: balanced accuracy {pooled.get('balanced_accuracy')}, sha256 {card['weights_sha256'][:12]}")
