"""`python -m trainer bias-sweep`: output-bias shifts scored on saved predictions."""

import click

from trainer.cli.common import DEFAULT_DATA, REPORT_DIRS, refuse_final, read_predictions


@click.command("bias-sweep")
@click.option("--report-dir", default=REPORT_DIRS["dev"], show_default=True, type=click.Path(file_okay=False),
              help="Report folder with report.json and predictions.npz (choices are made on the dev stage's).")
@click.option("--method", default="cnn_genetic5", show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, help="allen-ctdb-spikes folder (labels).")
@click.option("--shifts", default="-0.25,-0.125,0,0.125,0.25,0.375", show_default=True,
              help="Further logit-adjustment strengths to score, comma-separated.")
def bias_sweep(report_dir, method, data_dir, shifts):
    """Score a method's out-of-fold predictions under further output-bias shifts (logit adjustment):
    how balanced accuracy and macro-F1 trade against each other, per repeat, and the shift chosen on
    one repeat scored on the other. Needs no training. (The class frequencies are those of all the
    task's cells; training used each fold's own, nearly the same.)"""
    from trainer.fit import log_class_frequencies
    from trainer.metrics import agreement_with_teachers, choose_across_repeats, sweep_output_bias

    report, saved, y = read_predictions(report_dir, method, data_dir)
    refuse_final(report, report_dir)
    cells = y >= 0
    probs = saved[method]
    log_freq = log_class_frequencies(y[cells], probs.shape[2])
    applied = report["methods"][method].get("config", {}).get("logit_adjust", 0.0)
    values = [float(v) for v in shifts.split(",")]
    scores = sweep_output_bias(probs[:, cells], y[cells], log_freq, values)
    click.echo(f"{method}: output bias already lowered by {applied:g} x log(class frequency) in training; "
               "further shift -> balanced accuracy / macro-F1 (mean; per repeat)")
    for v, s in zip(values, scores):
        per = ", ".join(f"{b:.3f}/{f1:.3f}" for b, f1 in s)
        click.echo(f"  {v:+.3f} (total {applied + v:.3f}): {s[:, 0].mean():.3f} / {s[:, 1].mean():.3f}  ({per})")
    teachers = saved.get(method + "_teachers")
    if teachers is not None:
        agree = agreement_with_teachers(probs[:, cells], teachers[:, cells], log_freq, applied)
        click.echo("decisions equal to its teachers' (given the same shift): "
                   + ", ".join(f"{a:.3f}" for a in agree) + " per repeat")
    if scores.shape[1] > 1:
        held = choose_across_repeats(scores)
        click.echo(f"shift chosen on the other repeat(s), scored on each: {held[:, 0].mean():.3f} / "
                   f"{held[:, 1].mean():.3f}")
