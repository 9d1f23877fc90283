"""`python -m trainer`: evaluate (the report), ship (the built-in models), train (your own model)."""
import datetime
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

DEFAULT_DATA = "../shared/data/allen-ctdb-spikes"
DEFAULT_METADATA = "../shared/data/allen-ctdb-metadata"
SHIPPED = {"genetic5": 5, "broad2": 3}
REPORT_DIRS = {"final": "docs/report", "dev": "docs/report-dev", "all": "docs/report-all"}  # evaluate --stage -> --out
# what the final stage scores unless --methods says otherwise: the shipped models and the feature baselines
FINAL_METHODS = ("cnn_genetic5", "cnn_broad2", "gbm_ap_genetic5", "gbm_allen_genetic5", "gbm_ap_broad2",
                 "gbm_allen_broad2")  # task -> teacher networks the shipped network is distilled from
# Per-task training options of the shipped models, chosen by cross-validation (docs/report):
# for genetic5, early stopping on a 15% validation split cost 0.025 balanced accuracy against a
# fixed 100 epochs on all training cells (same folds), and softened class weights (power 0.5)
# cut the Exc -> Vip errors. broad2 likewise trains all epochs on all training cells, with mixup 0.2
# and distillation weight 0.9: 0.956 against 0.952 for early stopping on the development stage's
# donor-grouped folds (docs/models.md, "Session 12"; docs/report-dev).
# Both shipped models are single networks distilled from their ensemble: one network per window keeps
# inference inside the daemon's latency budget (an ensemble of M costs M times as much).
# genetic5's student also imitates the teachers on other Cre lines' cells, and its output bias is
# adjusted for the class frequencies; its teachers also learn every training cell's Cre line, other lines'
# cells included, on extra outputs dropped after training (docs/models.md has the variants on identical folds).
TASK_OPTIONS = {
    "genetic5": {"val_fraction": 0.0, "balance_power": 0.5, "distil": True, "student_channels": 16, "mixup": 0.2,
                 "distil_weight": 0.9, "distil_unlabelled": True, "logit_adjust": 0.125, "aux_weight": 1.0,
                 "aux_target": "line"},
    "broad2": {"distil": True, "val_fraction": 0.0, "mixup": 0.2, "distil_weight": 0.9},
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Training and evaluation of rtclassify models."""


def window_options(f):
    f = click.option("--fs-hz", default=50_000.0, show_default=True, help="Model sampling rate, Hz.")(f)
    f = click.option("--seed", default=0, show_default=True, help="Seed of folds and networks.")(f)
    f = click.option("--epochs", default=None, type=int, help="Max epochs (default: TrainConfig).")(f)
    f = click.option("--channels", default=None, type=int, help="Conv channels per branch (default: TrainConfig).")(f)
    return f


def stage_option(f):
    """The --stage option of the commands that draw the evaluation's folds (trainer.evaluate.stage_folds)."""
    return click.option("--stage", type=click.Choice(["dev", "final", "all"]), default="dev", show_default=True,
                        help="dev: cross-validation on the development cells, where every choice is made; final: "
                             "networks trained on all development cells score the frozen final split (one donor "
                             "in 5) once, each repeat a new seed, no choice made; all: cross-validation on every "
                             "cell.")(f)


def make_config(epochs, channels, task: str | None = None):
    from trainer.fit import TrainConfig

    cfg = TrainConfig(**TASK_OPTIONS.get(task, {}))
    if epochs:
        cfg = replace(cfg, max_epochs=epochs, patience=min(cfg.patience, epochs))
    if channels:
        cfg = replace(cfg, channels=channels)
    return cfg


def load(data_dir, fs_hz):
    """An allen-ctdb-spikes folder (spike-aligned 3 ms windows at fs_hz) or a built dataset (.npz,
    windows as built: see `build`)."""
    from rtclassify.windows import WindowSpec
    from trainer.build import load_built
    from trainer.data import load_spike_set

    if Path(data_dir).suffix == ".npz" and Path(data_dir).is_file():
        return load_built(Path(data_dir))
    if not Path(data_dir).is_dir():
        raise click.ClickException(f"data {data_dir} not found: give an allen-ctdb-spikes folder "
                                   "(see ../shared/data/README.md) or a dataset built with `build`")
    return load_spike_set(Path(data_dir), WindowSpec(anchor="peak", before_ms=1.0, after_ms=2.0, fs_hz=fs_hz))


@main.command()
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, help="allen-ctdb-spikes folder.")
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True,
              help="allen-ctdb-metadata folder (for the Allen-feature baseline).")
@click.option("--out", "out_dir", default=None,
              help="Report folder (default by --stage: " + ", ".join(f"{k} {v}" for k, v in REPORT_DIRS.items()) + ").")
@click.option("--folds", default=5, show_default=True)
@click.option("--repeats", default=2, show_default=True)
@click.option("--group-by", type=click.Choice(["donor", "cell"]), default="donor", show_default=True,
              help="What the folds keep together: donor (no test cell shares a mouse with a training cell; needs "
                   "--metadata) or cell.")
@stage_option
@click.option("--ablation-repeats", default=1, show_default=True)
@click.option("--ensemble", default=None, type=int, help="Members of the main CNNs (default: as shipped, "
              + ", ".join(f"{k} {v}" for k, v in SHIPPED.items()) + ").")
@click.option("--methods", default=None, help="Comma-separated subset of method names.")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for the intervals.")
@click.option("--readme", default="README.md", show_default=True, help="README whose figures section is refreshed.")
@click.option("--update", is_flag=True, help="Keep the other methods of an existing report.json; replace only these.")
@click.option("--teacher-cache", default=None, type=click.Path(file_okay=False),
              help="Keep the teachers of distilled methods here, one file per fold and member; later runs reuse them "
                   "(a larger --ensemble trains only the members not yet there).")
@click.option("--set", "settings", multiple=True, metavar="TASK.OPTION=VALUE",
              help="Override one training option of a shipped task's configuration for this run, e.g. "
                   "--set genetic5.student_channels=32 (repeatable; options: trainer/fit.py:TrainConfig; "
                   "VALUE as JSON). For trying variants into a scratch --out.")
@window_options
def evaluate(data_dir, metadata_dir, out_dir, folds, repeats, group_by, stage, ablation_repeats, ensemble, methods,
             bootstrap, readme, update, teacher_cache, settings, fs_hz, seed, epochs, channels):
    """Evaluate the methods in one stage and write the report (Markdown, JSON, PNGs): dev cross-validates
    on the development cells (folds grouped by donor), where every choice is made; final scores the
    shipped recipes and the feature baselines once on the frozen final split (docs/report)."""
    from tqdm import tqdm

    from trainer.evaluate import UNUSED, evaluate_method, stage_folds
    from trainer.report import update_readme, write_predictions, write_report

    import numpy as np

    t0 = time.time()
    data = load(data_dir, fs_hz)
    chosen = configured_methods(epochs, channels, ensemble, settings, ablation_repeats)
    out_dir = out_dir or REPORT_DIRS[stage]
    if methods or stage == "final":
        wanted = methods.split(",") if methods else FINAL_METHODS
        unknown = set(wanted) - {m.name for m in chosen}
        if unknown:
            raise click.ClickException(f"unknown methods {sorted(unknown)}; valid: {[m.name for m in chosen]}")
        chosen = [m for m in chosen if m.name in wanted]
    groups = fold_groups(group_by, metadata_dir, data)
    fold_ids = stage_folds(stage, data, folds, repeats, seed, groups)
    folds = len(np.unique(fold_ids[fold_ids >= 0]))  # the final stage has one
    n_fits = sum((m.repeats or repeats) * folds * fits_per_fold(m) for m in chosen)
    results = {"methods": {}, "skipped": data.skipped}
    previous = Path(out_dir) / "report.json"
    if update and previous.is_file():
        old = json.loads(previous.read_text())
        made = (old["meta"]["folds"], old["meta"]["repeats"], old["meta"]["seed"], old["meta"].get("group_by", "cell"),
                old["meta"].get("stage", "all"))
        if made != (folds, repeats, seed, group_by, stage):
            raise click.ClickException(f"{previous} was made with other folds; --update needs the same "
                                       "--folds, --repeats, --seed, --group-by and --stage")
        results["methods"] = old["methods"]
        results["meta_history"] = old.get("meta_history", []) + [old["meta"]]
    fold_models, oof = {}, {}
    with tqdm(total=n_fits, desc="fits", unit="fit") as bar:
        for m in chosen:
            bar.set_postfix_str(m.name)
            members = fits_per_fold(m)
            rows = evaluate_method(m, data, fold_ids, seed, fold_models, Path(metadata_dir), lambda: bar.update(members),
                                   Path(teacher_cache) if teacher_cache else None, bootstrap)
            for name, (scores, probs) in rows.items():
                results["methods"][name], oof[name] = scores, probs
    results["meta"] = {
        "command": "python -m trainer " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py")
        else " ".join(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_min": (time.time() - t0) / 60, "machine": f"{platform.machine()}, {cpu_count()} CPU threads",
        "data": data_dir, "n_cells": len(data.specimen_ids), "n_skipped": len(data.skipped),
        "window": data.spec.to_dict(), "folds": folds, "repeats": repeats, "seed": seed,
        "group_by": group_by, "donors": None if groups is None else len(set(groups[fold_ids[0] != UNUSED])),
        "stage": stage, "tested_cells": int((fold_ids[0] >= 0).sum()),
    }
    path = write_report(results, Path(out_dir))
    write_predictions(oof, data.specimen_ids, Path(out_dir), update)
    click.echo(f"report: {path}")
    if readme and Path(readme).is_file():
        update_readme(results, Path(readme))
        click.echo(f"figures written into {readme}")


def fold_groups(group_by: str, metadata_dir, data):
    """(N,) donor of each cell for folds grouped by donor, None for folds by cell."""
    from trainer.data import read_donors

    if group_by == "cell":
        return None
    try:
        return read_donors(Path(metadata_dir), data.specimen_ids)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def configured_methods(epochs, channels, ensemble, settings, ablation_repeats: int = 1) -> list:
    """The report's methods with the shipped tasks' configurations, --ensemble members where given,
    and each --set override applied (as `evaluate` runs them, and `teacher-spread` reads their cache)."""
    from trainer.evaluate import default_methods

    configs = {task: replace(make_config(epochs, channels, task), members=ensemble or n) for task, n in SHIPPED.items()}
    return default_methods(make_config(epochs, channels), apply_settings(configs, settings), ablation_repeats)


def apply_settings(configs: dict, settings) -> dict:
    """configs ({task: TrainConfig}) with each "TASK.OPTION=VALUE" of settings applied (VALUE as JSON,
    else as text); a clear error names an unknown task or option or a malformed setting."""
    from dataclasses import fields

    names = {f.name for f in fields(next(iter(configs.values())))}
    configs = dict(configs)
    for item in settings:
        target, sep, text = item.partition("=")
        task, dot, option = target.partition(".")
        if not (sep and dot):
            raise click.BadParameter(f"{item!r}: write TASK.OPTION=VALUE, e.g. genetic5.student_channels=32",
                                     param_hint="--set")
        if task not in configs:
            raise click.BadParameter(f"{item!r}: unknown task {task!r}; valid: {sorted(configs)}", param_hint="--set")
        if option not in names:
            raise click.BadParameter(f"{item!r}: unknown option {option!r}; see trainer/fit.py:TrainConfig",
                                     param_hint="--set")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        configs[task] = replace(configs[task], **{option: tuple(value) if isinstance(value, list) else value})
    return configs


def fits_per_fold(method) -> int:
    """Networks (or boosted classifiers) trained per fold: members, plus the student when distilling."""
    if method.kind != "cnn":
        return 1
    return method.cfg.members + int(method.cfg.distilled)


def cpu_count():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@main.command()
@click.option("--report", "report_json", default="docs/report/report.json", show_default=True)
@click.option("--readme", default="README.md", show_default=True)
def figures(report_json, readme):
    """Refresh the README's figures section from a report.json."""
    from trainer.report import update_readme

    update_readme(json.loads(Path(report_json).read_text()), Path(readme))
    click.echo(f"figures from {report_json} written into {readme}")


@main.command()
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


@main.command("bias-sweep")
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


def refuse_final(report: dict, report_dir) -> None:
    """Choices (an output shift, a temperature) are made on the dev stage only: a final-stage report
    is refused, so that its cells stay unseen by every choice."""
    if report["meta"].get("stage") == "final":
        raise click.ClickException(f"{report_dir} is the final stage's report: choose on the dev stage's "
                                   f"({REPORT_DIRS['dev']}, `python -m trainer evaluate --stage dev`)")


def read_predictions(report_dir, method: str, data_dir) -> tuple[dict, dict, "np.ndarray"]:
    """A report folder's report.json, its saved out-of-fold predictions ({name: (R, N, K)}, which hold
    `method`) and the true classes y (N,; -1 outside the task or not tested in the report's stage) of
    the same cells, read from data_dir; a clear error when the method, its predictions or the cells do
    not match."""
    import numpy as np

    from trainer.labels import get_task
    from trainer.report import load_predictions

    report = json.loads((Path(report_dir) / "report.json").read_text())
    if method not in report["methods"]:
        raise click.ClickException(f"{method} not in {report_dir}/report.json; there: {sorted(report['methods'])}")
    saved = load_predictions(Path(report_dir))
    if saved.get(method) is None:
        raise click.ClickException(f"{report_dir}/predictions.npz has no {method}: rerun "
                                   f"`python -m trainer evaluate --update --methods {method}`")
    data = load(data_dir, report["meta"]["window"]["fs_hz"])
    if not np.array_equal(data.specimen_ids, saved.get("specimen_id")):
        raise click.ClickException(f"{data_dir} holds other cells than {report_dir}/predictions.npz")
    tested = np.isfinite(saved[method]).all(axis=(0, 2))
    return report, saved, np.where(tested, data.labels(get_task(report["methods"][method]["task"])), -1)


def collect_learning_curves(report_dirs, method: str, data_dir) -> tuple[dict, float]:
    """({name: (n (P,) labelled training cells per fold, scores (P, R, 2) balanced accuracy and macro-F1
    per repeat)} for `method` and, if distilled, its teachers, over the P report folders sorted by
    size; and the task's number of cells). The folders must share folds, repeats and seed."""
    import numpy as np

    from trainer.metrics import sweep_output_bias

    points, folds_seen = {}, set()
    for d in report_dirs:
        report, saved, y = read_predictions(d, method, data_dir)
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


@main.command("learning-curve")
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


@main.command("teacher-spread")
@click.option("--teacher-cache", required=True, type=click.Path(file_okay=False),
              help="The teacher cache of earlier `evaluate --teacher-cache` runs.")
@click.option("--members", default=8, show_default=True, help="Cached teachers per fold to read.")
@click.option("--size", default=5, show_default=True, help="Ensemble size whose spread is measured.")
@click.option("--method", default="cnn_genetic5", show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--folds", default=5, show_default=True)
@click.option("--repeats", default=2, show_default=True)
@click.option("--group-by", type=click.Choice(["donor", "cell"]), default="donor", show_default=True,
              help="The --group-by of the evaluate run whose teachers to read.")
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--set", "settings", multiple=True, metavar="TASK.OPTION=VALUE",
              help="The --set options of the evaluate run whose teachers to read.")
@stage_option
@click.option("--seed", default=0, show_default=True)
def teacher_spread(teacher_cache, members, size, method, data_dir, folds, repeats, group_by, metadata_dir, settings,
                   stage, seed):
    """How much a teacher ensemble's score is the luck of its seeds: every cached teacher's out-of-fold
    predictions (inference only, seconds), then the scores of every ensemble of SIZE of the MEMBERS,
    per repeat. Judge a variant's ensemble against this spread, not against one draw."""
    import numpy as np

    from trainer.evaluate import cached_member_probs, stage_folds
    from trainer.labels import get_task
    from trainer.metrics import score_member_subsets

    if not 1 <= size <= members:
        raise click.BadParameter(f"--size {size} must be between 1 and --members {members}", param_hint="--size")
    data = load(data_dir, 50_000.0)
    chosen = {m.name: m for m in configured_methods(None, None, None, settings) if m.kind == "cnn" and m.cfg.distilled}
    if method not in chosen:
        raise click.BadParameter(f"{method!r} has no teachers; distilled methods: {sorted(chosen)}", param_hint="--method")
    m = chosen[method]
    try:
        fold_ids = stage_folds(stage, data, folds, repeats, seed, fold_groups(group_by, metadata_dir, data))
        probs = cached_member_probs(m, data, fold_ids, seed, Path(teacher_cache), members)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    y = data.labels(get_task(m.task))
    cells = (y >= 0) & (fold_ids[0] >= 0)
    click.echo(f"{method} teachers: balanced accuracy / macro-F1, unshifted")
    for r, p in enumerate(probs[:, :, cells]):
        single = score_member_subsets(p, y[cells], 1)
        subsets = score_member_subsets(p, y[cells], size)
        line = (f"  repeat {r}: single networks {single[:, 0].mean():.3f} / {single[:, 1].mean():.3f} "
                f"(s.d. {single[:, 0].std():.3f} / {single[:, 1].std():.3f}); ")
        if len(subsets) == 1:
            line += f"the ensemble of all {size}: {subsets[0, 0]:.3f} / {subsets[0, 1]:.3f}"
        else:
            below = (subsets.mean(axis=1) < subsets[0].mean()).mean()
            line += (f"{len(subsets)} ensembles of {size}: {subsets[:, 0].mean():.3f} / {subsets[:, 1].mean():.3f} "
                     f"(s.d. {subsets[:, 0].std():.3f} / {subsets[:, 1].std():.3f}, range "
                     f"{subsets[:, 0].min():.3f}-{subsets[:, 0].max():.3f} / {subsets[:, 1].min():.3f}-"
                     f"{subsets[:, 1].max():.3f}); members 0-{size - 1}: {subsets[0, 0]:.3f} / {subsets[0, 1]:.3f}, "
                     f"above {below:.0%} of the ensembles")
        click.echo(line)


@main.command()
@click.option("--task", required=True, type=click.Choice(["genetic5", "broad2", "exc_pvalb_sst"]))
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--out", "out_path", required=True, help="Model file to write (.pt).")
@click.option("--members", default=1, show_default=True, help="Networks in the ensemble.")
@click.option("--name", default=None, help="Model name in its card (default: the task).")
@click.option("--report", "report_json", default=None, help="report.json whose figures go into the card.")
@click.option("--threads", default=None, type=int,
              help="torch CPU threads (default: TrainConfig's; 1 when another training shares a 2-core machine).")
@window_options
def train(task, data_dir, out_path, members, name, report_json, threads, fs_hz, seed, epochs, channels):
    """Train on every labelled cell of DATA and export a model file."""
    card = train_and_export(task, data_dir, out_path, members, name or task, report_json, fs_hz, seed, epochs,
                            channels, threads)
    if card:  # rank 0 (the only process without torchrun) writes the file
        click.echo(f"{out_path}: {card['name']} {card['classes']} sha256 {card['weights_sha256'][:12]}")


def train_and_export(task_name, data_dir, out_path, members, name, report_json, fs_hz, seed, epochs, channels,
                     threads=None):
    from tqdm import tqdm

    from trainer import distributed
    from trainer.export import export_model
    from trainer.fit import fit_ensemble
    from trainer.labels import get_task

    rank, size = distributed.start()  # several processes when launched by torchrun
    task = get_task(task_name)
    data = load(data_dir, fs_hz)
    cfg = replace(make_config(epochs, channels, task_name), members=members)
    if threads:
        cfg = replace(cfg, threads=threads)
    y = data.training_labels(task, cfg.related_lines)
    used = y >= 0
    student_epochs = cfg.student().max_epochs if cfg.distilled else 0
    epochs_total = sum(cfg.member(m).max_epochs for m in range(members)) + student_epochs
    bar = tqdm(total=epochs_total, desc=f"{name} epochs", unit="ep", disable=rank != 0)
    aux = {}
    if cfg.aux_weight > 0:  # labels of the members' auxiliary output
        labels = data.auxiliary_labels(cfg.aux_target)
        aux = {"aux": labels[used], "unlabelled_aux": labels[~used]}
    fits = fit_ensemble(data.windows[used], y[used], len(task.classes), data.spec.fs_hz, cfg, seed,
                        progress=lambda *a: bar.update(1), unlabelled=data.windows[~used], **aux)
    bar.close()
    evaluation = evaluation_for(report_json, task_name)
    card = None
    if rank == 0:
        card = export_model([f.model for f in fits], name, task, data, y, cfg, Path(out_path), source=str(data_dir),
                            evaluation=evaluation, seed=seed, processes=size)
    distributed.stop()
    return card


def evaluation_for(report_json, task_name) -> dict:
    """The report's figures for the CV method matching a shipped task (empty without a report)."""
    if not report_json:
        return {}
    results = json.loads(Path(report_json).read_text())
    method = results["methods"].get(f"cnn_{task_name}")
    if not method:
        return {}
    keep = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_precision", "recall", "ci95", "n")
    from trainer.report import protocol

    return {"protocol": protocol(results["meta"]).replace("**", ""),
            "pooled": {k: method["pooled"][k] for k in keep},
            "rate_strata": {s: {k: v[k] for k in keep} for s, v in method["rate_strata"].items()},
            "report": "docs/report/report.md"}


@main.command()
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--report", "report_json", default="docs/report/report.json", show_default=True)
@click.option("--out", "out_dir", default="rtclassify/models", show_default=True)
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


@main.command()
@click.option("--report", "report_json", default="docs/report/report.json", show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--models", "models_dir", default="rtclassify/models", show_default=True,
              type=click.Path(exists=True, file_okay=False))
def cards(report_json, models_dir):
    """Write a report's cross-validated figures into the built-in models' cards (weights untouched)."""
    from rtclassify.modelfile import update_card

    for task in SHIPPED:
        path = Path(models_dir) / f"{task}.pt"
        card = update_card(str(path), {"evaluation": evaluation_for(report_json, task)})
        pooled = card["evaluation"].get("pooled", {})
        click.echo(f"{path}: balanced accuracy {pooled.get('balanced_accuracy')}, sha256 {card['weights_sha256'][:12]}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "labels_csv", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with a cell_id (file name without .nwb) or file column, and line_name, dendrite_type.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Dataset file (.npz).")
@click.option("--anchor", type=click.Choice(["stimulus", "peak"]), default="stimulus", show_default=True,
              help="Align windows on the step onset (published) or on the AP peak.")
@click.option("--before-ms", default=None, type=float, help="ms before the anchor [stimulus: 25, peak: 1].")
@click.option("--after-ms", default=None, type=float, help="ms after the anchor [stimulus: 25, peak: 2].")
@click.option("--fs-hz", default=50_000.0, show_default=True, help="Rate of the windows, Hz (anti-aliased resampling).")
@click.option("--workers", default=2, show_default=True, help="Local worker processes.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler to run the build on instead.")
def build(folder, labels_csv, out_path, anchor, before_ms, after_ms, fs_hz, workers, scheduler):
    """Window every short-square sweep of the NWB files under FOLDER into one dataset file (resumable)."""
    from tqdm import tqdm

    from rtclassify.windows import WindowSpec
    from trainer.build import build_dataset

    defaults = {"stimulus": (25.0, 25.0), "peak": (1.0, 2.0)}[anchor]
    spec = WindowSpec(anchor=anchor, before_ms=defaults[0] if before_ms is None else before_ms,
                      after_ms=defaults[1] if after_ms is None else after_ms, fs_hz=fs_hz)
    bar = tqdm(desc="files", unit="file")

    def progress(done, total, name):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name)
        bar.refresh()

    try:
        summary = build_dataset(Path(folder), Path(labels_csv), Path(out_path), spec, workers, scheduler, progress)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    click.echo(f"{out_path}: {summary['windows']} windows from {summary['cells']} cells; "
               f"{len(summary['failed'])} files failed, {len(summary['without_label'])} without a label")
    for reason, count in summary["skip_reasons"].items():
        click.echo(f"  sweeps left out: {count} x {reason}")
    for name, reason in summary["failed"].items():
        click.echo(f"  failed {name}: {reason}", err=True)


@main.command()
@click.option("--report", "report_dir", default=REPORT_DIRS["dev"], show_default=True,
              type=click.Path(exists=True, file_okay=False),
              help="Report folder whose out-of-fold probabilities to calibrate (the dev stage's: never the final's).")
@click.option("--method", default="cnn_genetic5", show_default=True)
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True)
@click.option("--splits", default=5, show_default=True, help="Donor halvings (dev half fits, other half scores).")
@click.option("--apply", "apply_to", default=None, metavar="MODEL",
              help="Also fit the temperature on all out-of-fold cells and build it into MODEL (a model file "
                   "or built-in name, rewritten in place) of the method's recipe.")
@click.option("--replace", is_flag=True,
              help="With --apply: MODEL is calibrated already; its temperature is replaced by the one fitted "
                   "here (the out-of-fold probabilities are uncalibrated, so the new T is the total).")
def calibration(report_dir, method, data_dir, metadata_dir, splits, apply_to, replace):
    """Calibration of a method's saved out-of-fold probabilities: ECE of the top probability (10
    bins) before and after a temperature fitted on half of the donors, scored on the other half."""
    import numpy as np

    from trainer.calibration import donor_split_calibration
    from trainer.data import read_donors

    report, saved, y = read_predictions(report_dir, method, data_dir)
    refuse_final(report, report_dir)
    try:
        donors = read_donors(Path(metadata_dir), saved["specimen_id"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    rows = donor_split_calibration(saved[method], y, donors, splits)
    click.echo(f"{method}: {len(np.unique(donors[y >= 0]))} donors; temperature fitted on half of them, "
               "scored on the other half")
    for r in rows:
        click.echo(f"  split {r['split']} repeat {r['repeat']}: T {r['temperature']:.3f}, ECE {r['ece_before']:.3f} -> "
                   f"{r['ece_after']:.3f} on {r['held_out_cells']} cells (accuracy {r['accuracy']:.3f})")
    t = np.array([r["temperature"] for r in rows])
    after = np.array([r["ece_after"] for r in rows])
    click.echo(f"temperature median {np.median(t):.3f} [{t.min():.3f}, {t.max():.3f}]; held-out ECE after "
               f"median {np.median(after):.3f} [{after.min():.3f}, {after.max():.3f}]")
    if apply_to:
        from rtclassify.modelfile import apply_temperature_to_file, load_model
        from trainer.calibration import expected_calibration_error, fit_temperature

        previous = (load_model(apply_to, runtime="torchscript").card.get("calibration") or {}).get("temperature")
        if previous and not replace:
            raise click.ClickException(f"{apply_to} is calibrated already (T {previous:g}); apply to an uncalibrated "
                                       "export, or pass --replace to replace its temperature")
        scored = y >= 0
        pooled = np.concatenate([p[scored] for p in saved[method]])
        labels = np.concatenate([y[scored]] * len(saved[method]))
        temperature = fit_temperature(pooled, labels)
        evidence = {"fitted_on": f"out-of-fold probabilities of {method} ({report_dir}), {int(scored.sum())} cells x "
                                 f"{len(saved[method])} repeats",
                    "ece_out_of_fold_before": round(expected_calibration_error(pooled, labels), 4),
                    "ece_held_out_donors_after": {"median": round(float(np.median(after)), 4),
                                                  "min": round(float(after.min()), 4), "max": round(float(after.max()), 4),
                                                  "splits": len(rows)}}
        if previous:
            evidence["replaces_temperature"] = previous
        # temperatures compose inside the module: dividing by T / previous leaves T in all
        card = apply_temperature_to_file(apply_to, temperature / (previous or 1.0), evidence)
        click.echo(f"{apply_to}: temperature {card['calibration']['temperature']:.3f} built in"
                   + (f" (was {previous:g})" if previous else "") + f"; weights sha256 {card['weights_sha256'][:12]}")


@main.command("fit-neurons")
@click.option("--data", "spikes_dir", default=DEFAULT_DATA, show_default=True,
              type=click.Path(exists=True, file_okay=False), help="Folder in the allen-ctdb-spikes layout.")
@click.option("--evaluations", default=1000, show_default=True, help="Objective evaluations per neuron (~60 ms each).")
@click.option("--restart", is_flag=True, help="Start from the package's current table, not the published models.")
@click.option("--workers", default=2, show_default=True, help="Neurons fitted in parallel.")
@click.option("--out", "out_csv", default=None, type=click.Path(dir_okay=False),
              help="Table to write [rtclassify/neuron_params.csv].")
@click.option("--plot", "plot_path", default="docs/neurons.png", show_default=True, type=click.Path(dir_okay=False))
def fit_neurons(spikes_dir, evaluations, restart, workers, out_csv, plot_path):
    """Fit the built-in model neurons to the class-median APs of the Allen recordings at 50 kHz;
    write their parameter table into the package and a plot of fitted vs target APs."""
    from concurrent.futures import ProcessPoolExecutor

    from rtclassify.neurons import NEURONS, PARAMS_TABLE, read_params
    from trainer.neuron_fit import class_median_aps, plot_fits, write_table

    targets = class_median_aps(Path(spikes_dir))
    missing = [cls for cls, _ in NEURONS.values() if cls not in targets]
    if missing:
        raise click.ClickException(f"{spikes_dir}: no 50 kHz cells of class {', '.join(missing)}")
    current = read_params() if restart else {}
    jobs = [(name, targets[cls][0], targets[cls][1], evaluations, current.get(name, (None, None))[1])
            for name, (cls, _) in NEURONS.items()]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        fits = list(pool.map(fit_one_neuron, jobs))
    for fit in fits:
        click.echo(f"{fit.name} -> {fit.cls}: rms {fit.rms_mv:.2f} mV, dV/dt rms {fit.rms_dvdt:.1f} mV/ms, "
                   f"genetic5 p({fit.cls}) {fit.p_class:.2f}, {fit.evaluations} evaluations")
    out = Path(out_csv) if out_csv else PARAMS_TABLE
    write_table(fits, out, spikes_dir)
    Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
    plot_fits(fits, Path(plot_path))
    click.echo(f"wrote {out} and {plot_path}")


def fit_one_neuron(job):
    """One neuron's fit, in a worker process (loads the shipped genetic5 itself)."""
    from rtclassify.modelfile import load_model
    from trainer.neuron_fit import fit_neuron

    name, target, n_cells, evaluations, start = job
    return fit_neuron(name, target, n_cells, load_model("genetic5"), evaluations, start)


@main.command("patchseq-labels")
@click.option("--metadata", "metadata_csv", default="../shared/data/patchseq-metadata/20200625_patchseq_metadata_mouse.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--manifest", "manifest_csv", default="../shared/data/patchseq-metadata/2020-06-26_mouse_file_manifest.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_csv", required=True, type=click.Path(dir_okay=False))
def patchseq_labels(metadata_csv, manifest_csv, out_csv):
    """Label table (file, line_name, dendrite_type) for the NWB files of DANDI 000020."""
    from trainer.build import patchseq_label_table

    n = patchseq_label_table(Path(metadata_csv), Path(manifest_csv), Path(out_csv))
    click.echo(f"{out_csv}: {n} NWB files labelled")


@main.command()
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, help="allen-ctdb-spikes folder or built dataset.")
@click.option("--task", default="broad2", show_default=True, type=click.Choice(["broad2", "exc_pvalb_sst", "genetic5"]))
@click.option("--source-rate", default=200_000.0, show_default=True, help="Native rate of the training cells, Hz.")
@click.option("--target-rate", default=50_000.0, show_default=True, help="Native rate of the cells adapted to, Hz.")
@click.option("--fractions", default="0.05,0.1,0.25,0.5,1", show_default=True,
              help="Fractions of the target training half used for fine-tuning / scratch training.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--finetune-epochs", default=40, show_default=True)
@click.option("--out", "out_dir", default="docs/transfer", show_default=True, help="Folder for JSON, Markdown, PNG.")
@window_options
def transfer(data_dir, task, source_rate, target_rate, fractions, repeats, finetune_epochs, out_dir, fs_hz, seed,
             epochs, channels):
    """The published rate transfer: train at one rate, fine-tune on a fraction of another's, vs scratch."""
    from tqdm import tqdm

    from trainer.labels import get_task
    from trainer.transfer import plot, render_markdown, run_transfer

    data = load(data_dir, fs_hz)
    fr = [float(x) for x in fractions.split(",")]
    bar = tqdm(total=repeats * len(fr), desc="transfer", unit="fraction")
    try:
        res = run_transfer(data, get_task(task), source_rate, target_rate, fr, repeats, make_config(epochs, channels),
                           finetune_epochs, seed, progress=lambda *a: bar.update(1))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res["command"] = "python -m trainer " + " ".join(sys.argv[1:])
    (out / "transfer.json").write_text(json.dumps(res, indent=1))
    (out / "transfer.md").write_text(render_markdown(res))
    plot(res, out / "transfer.png")
    click.echo(render_markdown(res))


@main.group()
def fetch():
    """Download NWB files and labels (Allen Cell Types Database, DANDI 000020); resumable."""


def fetch_options(f):
    f = click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Download folder.")(f)
    f = click.option("--limit", default=None, type=int, help="Only the first N files.")(f)
    f = click.option("--retries", default=4, show_default=True, help="Retries per request (exponential back-off).")(f)
    return f


def report_fetch(summary: dict, out_dir) -> None:
    click.echo(f"{out_dir}: {summary['downloaded']} downloaded, {summary['already_complete']} already complete, "
               f"{len(summary['failed'])} failed")
    for name, reason in summary["failed"].items():
        click.echo(f"  failed {name}: {reason}", err=True)
    if summary["failed"]:
        raise SystemExit(1)


def byte_bar(tqdm):
    bar = tqdm(unit="B", unit_scale=True, desc="download")
    return bar, bar.update


@fetch.command("allen")
@fetch_options
@click.option("--base", default="http://api.brain-map.org", show_default=True, help="Allen Brain Map API base URL.")
@click.option("--species", default="Mus musculus", show_default=True, help="Donor species ('' for all).")
def fetch_allen_cmd(out_dir, limit, retries, base, species):
    """Cell list with Cre lines (cells.csv) and one NWB file per cell."""
    from tqdm import tqdm

    from trainer.fetch import FetchError, fetch_allen

    bar, update = byte_bar(tqdm)
    try:
        summary = fetch_allen(Path(out_dir), base, species, limit, progress=update, retries=retries)
    except FetchError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    report_fetch(summary, out_dir)


@fetch.command("dandi")
@fetch_options
@click.option("--manifest", "manifest_csv", default="../shared/data/patchseq-metadata/2020-06-26_mouse_file_manifest.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--metadata", "metadata_csv", default="../shared/data/patchseq-metadata/20200625_patchseq_metadata_mouse.csv",
              show_default=True, type=click.Path(exists=True, dir_okay=False))
def fetch_dandi_cmd(out_dir, limit, retries, manifest_csv, metadata_csv):
    """DANDI 000020 NWB files (size and sha256 checked) and their labels (labels.csv)."""
    from tqdm import tqdm

    from trainer.fetch import fetch_dandi

    bar, update = byte_bar(tqdm)
    try:
        summary = fetch_dandi(Path(manifest_csv), Path(metadata_csv), Path(out_dir), limit, progress=update,
                              retries=retries)
    finally:
        bar.close()
    report_fetch(summary, out_dir)


if __name__ == "__main__":
    main()
