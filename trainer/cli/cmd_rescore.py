"""`python -m trainer rescore`: a report's saved predictions scored again."""
import json
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, load, fold_groups


@click.command()
@click.option("--report-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Report folder with report.json and predictions.npz.")
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, help="allen-ctdb-spikes folder (labels).")
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for the intervals.")
def rescore(report_dir, data_dir, metadata_dir, bootstrap):
    """Score a report's saved out-of-fold probabilities again with this version's scoring (seconds, no
    training): the folds are drawn again from its meta; methods without saved probabilities are kept."""
    import numpy as np

    from trainer.evaluate import Method, evaluate_scores, stage_folds
    from trainer.report import load_predictions, write_report

    results = json.loads((Path(report_dir) / "report.json").read_text())
    meta, saved = results["meta"], load_predictions(Path(report_dir))
    data = load(data_dir, meta["window"]["fs_hz"])
    if not np.array_equal(data.specimen_ids, saved.get("specimen_id")):
        raise click.ClickException(f"{data_dir} holds other cells than {report_dir}/predictions.npz")
    groups = fold_groups(meta.get("group_by", "cell"), metadata_dir, data)
    fold_ids = stage_folds(meta.get("stage", "all"), data, meta["folds"], meta["repeats"], meta["seed"], groups)
    for name, old in results["methods"].items():
        if name in saved:
            m = Method(name, old["task"], old["kind"], description=old["description"])
            results["methods"][name] = {**old, **evaluate_scores(m, data, saved[name], fold_ids, bootstrap)}
            click.echo(f"{name}: rescored")
    click.echo(f"report: {write_report(results, Path(report_dir))}")
