"""`python -m trainer ship`: the built-in models rebuilt from the shared data."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, window_options
from trainer.recipe import SHIPPED
from trainer.cli.cmd_train import train_and_export


@click.command()
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--report", "report_json", default="docs/report/report.json", show_default=True)
@click.option("--out", "out_dir", default="rtclassify/model/shipped", show_default=True)
@click.option("--task", "tasks", multiple=True, type=click.Choice(list(SHIPPED)),
              help="Build only this model (repeatable; default: all).")
@window_options
def ship(data_dir, report_json, out_dir, tasks, fs_hz, seed, epochs, channels):
    """Build the built-in models (genetic5, broad2) from the shared data."""
    report = report_json if Path(report_json).is_file() else None
    for task, members in SHIPPED.items():
        if tasks and task not in tasks:
            continue
        out = Path(out_dir) / f"{task}.pt"
        card = train_and_export(task, data_dir, out, members, task, report, fs_hz, seed, epochs, channels)
        click.echo(f"{out}: {card['classes']} sha256 {card['weights_sha256'][:12]}")
