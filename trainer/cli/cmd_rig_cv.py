"""`python -m trainer rig-cv`: a training-distribution choice made on the development cells: donor-grouped
(or, with --group cell, cell-grouped) folds over them (the final split untouched), each fold's held-out
cells scored through the rig report."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA


@click.command("rig-cv")
@click.option("--task", default="genetic5", show_default=True, type=click.Choice(["genetic5", "broad2"]))
@click.option("--folds", default=3, show_default=True)
@click.option("--group", type=click.Choice(["donor", "cell"]), default="donor", show_default=True,
              help="Fold by donor (a lab's cells come from other mice) or by cell (other cells of the training "
                   "cells' mice: the easier case, like cells held out one by one).")
@click.option("--fold", "only", type=int, default=None, help="Run this fold only (0-based; to share the cores).")
@click.option("--set", "settings", multiple=True, metavar="OPTION=VALUE", help="A TrainConfig option (repeatable).")
@click.option("--threads", default=1, show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--out", "out_dir", required=True, help="Folder: one model file and one rig report per fold.")
def rig_cv(task, folds, group, only, settings, threads, data_dir, metadata_dir, out_dir):
    """Train the task's recipe on the development cells less one fold (donor- or cell-grouped) and score
    that fold through every rig of `python -m trainer rigs` (uncalibrated: balanced accuracy does not
    depend on T)."""
    import json
    from dataclasses import replace

    import numpy as np

    from trainer import recipe
    from trainer.cli.cmd_train import train_and_export
    from trainer.cli.common import apply_settings, fold_groups, load
    from trainer.evaluate import final_split, make_folds
    from trainer.rig_report import run_rig_report

    data = load(data_dir, 50_000.0)
    groups = fold_groups("donor", metadata_dir, data)
    dev = ~final_split(data, groups)
    fold_of = make_folds(data, folds, 1, 0, groups if group == "donor" else None, cells=dev)[0]
    base = recipe.make_config(None, None, task)
    changed = apply_settings({task: base}, settings)[task]
    overrides = {k: getattr(changed, k) for k in base.to_dict() if getattr(changed, k) != getattr(base, k)}
    out = Path(out_dir)
    for k in range(folds) if only is None else [only]:
        held = fold_of == k
        path = out / f"fold{k}" / f"{task}.pt"
        train_and_export(task, data_dir, path, recipe.SHIPPED[task], task, None, 50_000.0, 0, None, None, threads,
                         data=data, train_cells=dev & ~held, overrides=overrides)
        res = run_rig_report({task: [str(path)]}, data_dir, metadata_dir, f"development fold {k} ({group}-grouped)",
                             out / f"fold{k}", 7, 200, False, held=held, data=data)
        rows = res["tasks"][task]
        click.echo(json.dumps({"fold": k, "as_recorded": rows["as recorded"]["balanced_accuracy"],
                               "rigs_mean": round(float(np.mean([r["balanced_accuracy"] for c, r in rows.items()
                                                                 if "balanced_accuracy" in r and "not told" not in c])), 4)}))
