"""`python -m trainer cells`: the cell models (per-cell features -> type) and the verdict's rule.

1. dev: donor-grouped 5-fold cross-validation over the development cells (the final split untouched):
   out-of-fold probabilities from all features and from the long-step features only; the
   temperature fitted on them; the rule joining them with the AP network's out-of-fold
   probabilities (docs/report-dev/predictions.npz) chosen by log-loss; the confidence below which a
   verdict is `uncertain` chosen so that the kept verdicts from long steps alone are right at least
   `--target` of the time.
2. final: trees fitted on every development cell score the frozen final split once, alone and joined
   with the AP network's final-split probabilities (docs/report/predictions.npz, one per seed).
3. ship: trees fitted on every labelled cell, with the dev stage's temperature and rule, written to
   rtclassify/model/shipped/cells_<task>.json with the final figures in the card.
"""
import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA

FEATURES_CSV = "../shared/data/allen-ctdb-metadata/cell_features.csv"
SEEDS = (0, 1, 2)


@click.command("cells")
@click.option("--task", "tasks", multiple=True, default=("genetic5", "broad2"), show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--features", "features_csv", default=FEATURES_CSV, show_default=True)
@click.option("--target", default=0.95, show_default=True,
              help="Accuracy the kept (not uncertain) development verdicts from long steps alone must reach; sets "
                   "min_confidence.")
@click.option("--out", "out_dir", default="docs/cells", show_default=True, help="Report folder.")
@click.option("--ship/--no-ship", default=True, show_default=True, help="Write the shipped cell model files.")
def cells(tasks, data_dir, metadata_dir, features_csv, target, out_dir, ship):
    """Train, choose, score once and ship the cell models (see the module docstring)."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    from trainer.cli.common import fold_groups, load
    from trainer.cell_model import shape_distortions
    from trainer.cell_report import run_task, write_report

    data = load(data_dir, 50_000.0)
    groups = fold_groups("donor", metadata_dir, data)
    with tqdm(total=2 * len(data.traces), desc="rig draws of each AP", unit="cell") as bar:
        distortions = shape_distortions(data.traces, data.fs_hz, 0, progress=bar.update)
        held_out = shape_distortions(data.traces, data.fs_hz, 99, draws=1, progress=bar.update)[:, 0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in tasks:
        results[task] = run_task(task, data, groups, Path(features_csv), target, SEEDS, ship, distortions, held_out)
        click.echo(json.dumps({task: results[task]["summary"]}))
    write_report(results, out)
