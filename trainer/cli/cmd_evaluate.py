"""`python -m trainer evaluate`: the report of one stage (dev, final, all)."""
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, REPORT_DIRS, window_options, stage_option, load, fold_groups, configured_methods, fits_per_fold, cpu_count
from trainer.recipe import SHIPPED, FINAL_METHODS


@click.command()
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
@click.option("--readme", default="docs/figures.md", show_default=True, help="The page whose figures section is refreshed.")
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
