"""`python -m trainer teacher-spread`: the seed luck of a teacher ensemble."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, stage_option, load, fold_groups, configured_methods


@click.command("teacher-spread")
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
