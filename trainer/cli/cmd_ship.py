"""`python -m trainer ship`: the built-in models rebuilt from the shared data.

Two files per model, same recipe and seed (trainer/recipe.py; windows as recorded and drawn through random
acquisition chains, trainer/rigs.py):

- the held-out sibling (`--train-on development` builds only it, into OUT; else into --siblings,
  .cache/held-out/ by default): trained on the development cells less a calibration split
  (trainer.evaluate.shipping_split); its temperature is fitted on the calibration cells through the same
  chains, and `python -m trainer rigs` scores it once on the frozen final split: every published figure
  is a sibling's;
- the shipped file (`--train-on all`, the default): the same recipe trained on every labelled cell, final
  and calibration splits included, so that a user's cells meet a network that learned from every donor
  we have. It takes its sibling's temperature (it has no held-out cells of its own to fit one on); the
  card says so and names the sibling's weights.
"""
import json
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, window_options
from trainer.recipe import SHIPPED

SIBLING_DIR = ".cache/held-out"  # <task>.pt under it: the siblings whose figures and temperature the shipped files
# carry (outside the package: they are not shipped)


@click.command()
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True)
@click.option("--metadata", "metadata_dir", default=DEFAULT_METADATA, show_default=True,
              help="Allen metadata folder: donors for the final and calibration splits.")
@click.option("--out", "out_dir", default="rtclassify/model/shipped", show_default=True)
@click.option("--task", "tasks", multiple=True, type=click.Choice(list(SHIPPED)),
              help="Build only this model (repeatable; default: all).")
@click.option("--train-on", type=click.Choice(["all", "development"]), default="all", show_default=True,
              help="all: every labelled cell, temperature from the held-out sibling (trained first into "
                   "--siblings unless --temperature-from names them); development: the held-out sibling itself, "
                   "into OUT (development cells less the calibration split; the final split unseen).")
@click.option("--siblings", "siblings_out", default=SIBLING_DIR, show_default=True,
              help="Folder the held-out siblings are written to, with --train-on all.")
@click.option("--temperature-from", "sibling_dir", default=None,
              help="Folder holding held-out siblings (<task>.pt) already built, to take the temperature from "
                   "instead of training them (with --train-on all).")
@click.option("--rig-draws", default=None, type=int,
              help="Acquisition chains drawn per cell (default: the recipe's; 0: windows as recorded only).")
@click.option("--threads", default=None, type=int,
              help="torch CPU threads (default: TrainConfig's; 1 when another training shares a 2-core machine).")
@click.option("--set", "settings", multiple=True, metavar="OPTION=VALUE",
              help="A TrainConfig option for every task built (trainer/fit.py; VALUE as JSON), e.g. "
                   "rig_undeclared_share=0.5 (repeatable).")
@window_options
def ship(data_dir, metadata_dir, out_dir, tasks, train_on, siblings_out, sibling_dir, rig_draws, threads, settings,
         fs_hz, seed, epochs, channels):
    """Build the built-in models (genetic5, broad2) from the shared data."""
    from trainer.cli.cmd_train import train_and_export
    from trainer.cli.common import fold_groups, load
    from trainer.evaluate import shipping_split

    data = load(data_dir, fs_hz)
    final, calibration = shipping_split(data, fold_groups("donor", metadata_dir, data))
    overrides = {} if rig_draws is None else {"rig_draws": rig_draws}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: write OPTION=VALUE, e.g. rig_undeclared_share=0.5", param_hint="--set")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    overrides = overrides or None
    for task, members in SHIPPED.items():
        if tasks and task not in tasks:
            continue
        out = Path(out_dir) / f"{task}.pt"
        sibling = out if train_on == "development" else Path(sibling_dir or siblings_out) / f"{task}.pt"
        if train_on == "development" or sibling_dir is None:
            card = train_and_export(task, data_dir, sibling, members, task, None, fs_hz, seed, epochs, channels,
                                    threads, data=data, train_cells=~final & ~calibration,
                                    calibration_cells=calibration, overrides=overrides)
            click.echo(f"{sibling}: held-out sibling, sha256 {card['weights_sha256'][:12]}")
        if train_on == "all":
            train_and_export(task, data_dir, out, members, task, None, fs_hz, seed, epochs, channels, threads,
                             data=data, overrides=overrides)
            card = take_temperature(out, sibling)
            click.echo(f"{out}: {card['classes']} sha256 {card['weights_sha256'][:12]}")


def take_temperature(path: Path, sibling: Path) -> dict:
    """Calibrate the all-cells file `path` with the temperature its held-out sibling (same recipe and seed,
    trained without the final and calibration splits) was fitted to (replacing any it had); returns the
    new card."""
    from rtclassify.model.file_format import ModelFileError, apply_temperature_to_file, load_model

    theirs = load_model(str(sibling)).card
    fitted = theirs.get("calibration") or {}
    if fitted.get("method") != "temperature":
        raise ModelFileError(f"{sibling}: not temperature-calibrated; build it with `ship --train-on development`")
    evidence = {"fitted_on": f"the held-out sibling (weights sha256 {theirs['weights_sha256'][:12]}, same recipe "
                             f"and seed, trained without the final and calibration splits): {fitted['fitted_on']}",
                **{k: fitted[k] for k in ("ece_before_on_fit_cells", "ece_after_on_fit_cells") if k in fitted},
                "held_out_figures": "the sibling's, on the final split (docs/rigs.md, python -m trainer rigs)"}
    before = (load_model(str(path), runtime="torchscript").card.get("calibration") or {}).get("temperature", 1.0)
    return apply_temperature_to_file(str(path), fitted["temperature"] / before, evidence)
