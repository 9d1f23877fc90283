"""What several trainer commands share: default folders, options, loading data, the
report's configured methods and reading a report's saved predictions."""
import json
from dataclasses import replace
from pathlib import Path

import click

from trainer.recipe import SHIPPED, make_config

DEFAULT_DATA = "../shared/data/allen-ctdb-spikes"
DEFAULT_METADATA = "../shared/data/allen-ctdb-metadata"
REPORT_DIRS = {"final": "docs/report", "dev": "docs/report-dev", "all": "docs/report-all"}  # evaluate --stage -> --out


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


def load(data_dir, fs_hz):
    """An allen-ctdb-spikes folder (spike-aligned 3 ms windows at fs_hz) or a built dataset (.npz,
    windows as built: see `build`)."""
    from rtclassify.dsp.windows import WindowSpec
    from trainer.build import load_built
    from trainer.data import load_spike_set

    if Path(data_dir).suffix == ".npz" and Path(data_dir).is_file():
        return load_built(Path(data_dir))
    if not Path(data_dir).is_dir():
        raise click.ClickException(f"data {data_dir} not found: give an allen-ctdb-spikes folder "
                                   "(see ../shared/data/README.md) or a dataset built with `build`")
    return load_spike_set(Path(data_dir), WindowSpec(anchor="peak", before_ms=1.0, after_ms=2.0, fs_hz=fs_hz))


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


def refuse_final(report: dict, report_dir) -> None:
    """Choices (an output shift, a temperature) are made on the dev stage only: a final-stage report
    is refused, so that its cells stay unseen by every choice."""
    if report["meta"].get("stage") == "final":
        raise click.ClickException(f"{report_dir} is the final stage's report: choose on the dev stage's "
                                   f"({REPORT_DIRS['dev']}, `python -m trainer evaluate --stage dev`)")


def read_predictions(report_dir, method: str, data_dir) -> tuple[dict, dict, "np.ndarray", object]:
    """A report folder's report.json, its saved out-of-fold predictions ({name: (R, N, K)}, which hold
    `method`), the true classes y (N,; -1 outside the task or not tested in the report's stage) of
    the same cells and the data folder they were read from (trainer.data.SpikeSet); a clear error when
    the method, its predictions or the cells do not match."""
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
    return report, saved, np.where(tested, data.labels(get_task(report["methods"][method]["task"])), -1), data
