"""`python -m trainer bias-sweep`: output-bias shifts scored on saved predictions, and applied to model files."""

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, REPORT_DIRS, refuse_final, read_predictions


@click.command("bias-sweep")
@click.option("--report-dir", default=REPORT_DIRS["dev"], show_default=True, type=click.Path(file_okay=False),
              help="Report folder with report.json and predictions.npz (choices are made on the dev stage's).")
@click.option("--method", default="cnn_genetic5", show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, help="allen-ctdb-spikes folder (labels).")
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True,
              help="allen-ctdb-metadata folder (donors: the report's folds, for the nested choice).")
@click.option("--shifts", default="-0.25,-0.125,0,0.125,0.25,0.375,0.5,0.625,0.75,1.0", show_default=True,
              help="Further logit-adjustment strengths to score, comma-separated.")
@click.option("--apply", "siblings", multiple=True, type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="Instead of sweeping: shift this held-out sibling's logits by --strength x -log(training class "
                   "frequency), then fit its temperature again on the calibration split through rigs (repeatable).")
@click.option("--card-to", "shipped", multiple=True, type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="With --apply: a file of the same recipe trained on every cell, shifted alike, taking the first "
                   "sibling's new temperature (repeatable).")
@click.option("--strength", type=float, default=None, help="With --apply: the shift's strength (the recipe's "
                                                            "output_shift, chosen by the sweep).")
def bias_sweep(report_dir, method, data_dir, metadata_dir, shifts, siblings, shipped, strength):
    """Score a method's out-of-fold predictions under further output-bias shifts (logit adjustment):
    how balanced accuracy and macro-F1 trade against each other, per repeat; the shift chosen on the other
    repeats, and (one repeat) on the other folds, scored on each: estimates free of the selection. Needs
    no training. (The class frequencies are those of all the task's cells; training used each fold's own,
    nearly the same.) With --apply: write a chosen shift into model files (seconds)."""
    if siblings or shipped:
        apply_shift(siblings, shipped, strength, data_dir, metadata_dir)
        return
    from trainer.fit import log_class_frequencies
    from trainer.metrics import agreement_with_teachers, choose_across_repeats, sweep_output_bias

    report, saved, y, data = read_predictions(report_dir, method, data_dir)
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
    else:
        echo_nested_choice(report, probs[0], y, log_freq, values, data, metadata_dir)


def echo_nested_choice(report: dict, probs, y, log_freq, values, data, metadata_dir) -> None:
    """Print the shift chosen by balanced accuracy on the other folds of the report's one repeat (its cells:
    `data`), scored on each fold's cells (trainer.metrics.choose_across_folds), beside no further shift."""
    import numpy as np

    from trainer.cli.common import fold_groups
    from trainer.evaluate import stage_folds
    from trainer.metrics import choose_across_folds, confusion, scores_from_confusion, sweep_output_bias

    meta = report["meta"]
    missing = [key for key in ("folds", "seed") if key not in meta]
    if missing:
        click.echo(f"no choice across folds: report.json's meta does not record {missing} (a report written by "
                   "`python -m trainer evaluate` does)")
        return
    groups = fold_groups(meta.get("group_by", "cell"), metadata_dir, data)
    folds = stage_folds(meta.get("stage", "all"), data, meta["folds"], 1, meta["seed"], groups)[0]
    cells = (y >= 0) & (folds >= 0)
    k = probs.shape[1]
    decisions, chosen = choose_across_folds(probs[cells], y[cells], folds[cells], log_freq, values)
    for name, pred in (("no further shift", probs[cells].argmax(axis=1)), ("chosen on the other folds", decisions)):
        s = scores_from_confusion(confusion(y[cells], pred, k))
        recall = ", ".join(f"{r:.2f}" for r in s["recall"])
        click.echo(f"{name}: balanced accuracy {s['balanced_accuracy']:.3f}, macro-F1 {s['macro_f1']:.3f}, "
                   f"accuracy {s['accuracy']:.3f}, recall per class {recall}")
    on_all = sweep_output_bias(probs[cells][None], y[cells], log_freq, values)[:, 0, 0]
    click.echo(f"  shifts chosen per fold (by balanced accuracy on the others): {chosen}; "
               f"on all folds together: {values[int(np.argmax(on_all))]:g}")


def apply_shift(siblings, shipped, strength, data_dir, metadata_dir) -> None:
    """Shift the held-out siblings' logits and refit their temperature on the calibration split through
    rigs; shift the shipped files alike and hand them the first sibling's temperature."""
    from trainer.calibration import calibrate_file_on_rigs, shift_file_for_frequencies
    from trainer.cli.cmd_ship import take_temperature
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split
    from trainer.labels import get_task
    from trainer.recipe import make_config
    from rtclassify.model.file_format import load_model

    if strength is None:
        raise click.UsageError("--apply needs --strength (the shift chosen by the sweep)")
    if shipped and not siblings:
        raise click.UsageError("--card-to needs an --apply sibling to take the temperature from")
    data = load(data_dir, 50_000.0)
    _, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
    evidence = {"chosen_on": "the development folds' out-of-fold predictions (docs/report-dev), by balanced "
                             "accuracy, nested over the folds (python -m trainer bias-sweep)"}
    for path in siblings:
        task = load_model(path, runtime="torchscript").card["task"]
        shift_file_for_frequencies(path, strength, evidence)
        card = calibrate_file_on_rigs(path, data, get_task(task), calibration, make_config(None, None, task))
        click.echo(f"{path}: shifted by {card['output_shift']['logits']}, temperature {card['calibration']['temperature']:.3f}")
    for path in shipped:
        shift_file_for_frequencies(path, strength, evidence)
        card = take_temperature(path, siblings[0])
        click.echo(f"{path}: shifted by {card['output_shift']['logits']}, temperature {card['calibration']['temperature']:.3f}")
