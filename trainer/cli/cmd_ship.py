"""`python -m trainer ship`: the built-in models rebuilt from the shared data.

Each model trains on the development cells less a calibration split (trainer.evaluate.shipping_split),
its windows as recorded and drawn through random acquisition chains (trainer/rigs.py); its temperature
is fitted on the calibration cells through the same chains; the frozen final split stays unseen, for
`python -m trainer rigs` to score the file once.
"""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, window_options
from trainer.recipe import SHIPPED


@click.command()
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True,
              help="Allen metadata folder: donors for the final and calibration splits.")
@click.option("--out", "out_dir", default="rtclassify/model/shipped", show_default=True)
@click.option("--task", "tasks", multiple=True, type=click.Choice(list(SHIPPED)),
              help="Build only this model (repeatable; default: all).")
@click.option("--rig-draws", default=None, type=int,
              help="Acquisition chains drawn per cell (default: the recipe's; 0: windows as recorded only).")
@click.option("--threads", default=None, type=int,
              help="torch CPU threads (default: TrainConfig's; 1 when another training shares a 2-core machine).")
@window_options
def ship(data_dir, metadata_dir, out_dir, tasks, rig_draws, threads, fs_hz, seed, epochs, channels):
    """Build the built-in models (genetic5, broad2) from the shared data."""
    from trainer.cli.cmd_train import train_and_export
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split

    data = load(data_dir, fs_hz)
    final, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
    for task, members in SHIPPED.items():
        if tasks and task not in tasks:
            continue
        out = Path(out_dir) / f"{task}.pt"
        card = train_and_export(task, data_dir, out, members, task, None, fs_hz, seed, epochs, channels, threads,
                                data=data, train_cells=~final & ~calibration, calibration_cells=calibration,
                                overrides=None if rig_draws is None else {"rig_draws": rig_draws})
        click.echo(f"{out}: {card['classes']} sha256 {card['weights_sha256'][:12]}")
