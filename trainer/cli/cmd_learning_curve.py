"""`python -m trainer learning-curve`: scores against training cells over several reports."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, read_predictions


def collect_learning_curves(report_dirs, method: str, data_dir) -> tuple[dict, float]:
    """({name: (n (P,) labelled training cells per fold, scores (P, R, 2) balanced accuracy and macro-F1
    per repeat)} for `method` and, if distilled, its teachers, over the P report folders sorted by
    size; and the task's number of cells). The folders must share folds, repeats and seed."""
    import numpy as np

    from trainer.metrics import sweep_output_bias

    points, folds_seen = {}, set()
    for d in report_dirs:
        report, saved, y, _ = read_predictions(d, method, data_dir)
        meta, cells = report["meta"], y >= 0
        folds_seen.add((meta["folds"], meta["repeats"], meta["seed"], meta.get("group_by", "cell")))
        share = report["methods"][method]["config"].get("train_fraction", 1.0) * (meta["folds"] - 1) / meta["folds"]
        for name in (method, method + "_teachers"):
            if saved.get(name) is not None:  # scores as saved: no further output shift
                k = saved[name].shape[2]
                points.setdefault(name, []).append(
                    (share * cells.sum(), sweep_output_bias(saved[name][:, cells], y[cells], np.zeros(k), [0.0])[0]))
    if len(folds_seen) > 1:
        raise click.ClickException(f"the report folders were made on other folds (folds, repeats, seed, grouping): "
                                   f"{sorted(folds_seen)}; a learning curve needs identical test folds")
    curves = {}
    for name, rows in points.items():
        rows.sort(key=lambda row: row[0])
        curves[name] = (np.array([row[0] for row in rows]), np.stack([row[1] for row in rows]))
    return curves, float(cells.sum())


@click.command("learning-curve")
@click.option("--report-dir", "report_dirs", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Report folder of one training size (`evaluate --set TASK.train_fraction=F --out DIR`; the "
                   "full size: the report itself), all on the same folds; repeat the option for each size.")
@click.option("--method", default="cnn_genetic5", show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, help="allen-ctdb-spikes folder (labels).")
@click.option("--targets", default="0.85,0.83", show_default=True,
              help="Balanced accuracy and macro-F1 drawn as reference lines ('' for none).")
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="Write the curve as this PNG.")
def learning_curve(report_dirs, method, data_dir, targets, plot):
    """How a method's out-of-fold balanced accuracy and macro-F1 grow with its training cells (and its
    teachers', if distilled), and where a line in log(cells) puts a network trained on all the task's
    cells, as the shipped model is: an extrapolation, not a measurement. Needs no training."""
    from trainer.metrics import fit_log_curve
    from trainer.report import plot_learning_curve

    curves, n_all = collect_learning_curves(report_dirs, method, data_dir)
    for name, (n, scores) in curves.items():
        click.echo(f"{name}: balanced accuracy / macro-F1 by labelled training cells per fold (mean; per repeat)")
        for size, s in zip(n, scores):
            per = ", ".join(f"{b:.3f}/{f1:.3f}" for b, f1 in s)
            click.echo(f"  {size:6.0f} cells ({size / n_all:4.0%} of the task's): {s[:, 0].mean():.3f} / "
                       f"{s[:, 1].mean():.3f}  ({per})")
        if len(n) < 2:
            continue
        fits = [fit_log_curve(n, scores[:, :, j], n_all) for j in (0, 1)]
        per_repeat = [[fit_log_curve(n, scores[:, r, j], n_all)[1] for j in (0, 1)] for r in range(scores.shape[1])]
        click.echo(f"  line in log2(cells): {fits[0][0]:+.3f} / {fits[1][0]:+.3f} per doubling; at all "
                   f"{n_all:.0f} cells (extrapolated): {fits[0][1]:.3f} / {fits[1][1]:.3f} (per repeat: "
                   + ", ".join(f"{b:.3f}/{f1:.3f}" for b, f1 in per_repeat) + ")")
    if plot:
        lines = tuple(float(v) for v in targets.split(",")) if targets else ()
        click.echo(f"plot: {plot_learning_curve(curves, n_all, lines, Path(plot))}")
