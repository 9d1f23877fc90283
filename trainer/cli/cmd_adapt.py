"""`python -m trainer adapt`: a shipped model fine-tuned on a few labelled cells of a lab's own rig."""
from pathlib import Path

import click


@click.command()
@click.option("--base", required=True, help="Model to adapt: genetic5, broad2 or a model file.")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="The lab's cells: cells.csv (specimen_id, fs_hz, label; optional filter_hz, temperature_c) "
                   "and traces/<specimen_id>.npy (mV, 1 ms before to 2 ms after the peak).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), metavar="FILE.pt")
@click.option("--epochs", default=60, show_default=True, help="Passes over the lab's (jittered) cells.")
@click.option("--seed", default=0, show_default=True)
def adapt(base, data_dir, out_path, epochs, seed):
    """Fine-tune BASE's dense head on the labelled cells of DIR and write FILE.pt, usable wherever a
    shipped model is (serve, predict, sweeps, watch, the overlay). Prints the lab's cross-validated
    figures (base vs adapted) when every class has at least 2 cells."""
    from rtclassify.model.file_format import ModelFileError
    from trainer.adapt import AdaptConfig, adapt_model

    try:
        card = adapt_model(base, Path(data_dir), Path(out_path), AdaptConfig(epochs=epochs, seed=seed))
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    a = card["adaptation"]
    click.echo(f"{out_path}: {card['name']} from {a['base']['name']} ({a['base']['weights_sha256'][:12]}), "
               f"{a['cells']['n_cells']} cells {a['cells']['per_class']}")
    cv = a["cross_validation"]
    if isinstance(cv, dict):
        b, d = cv["base"], cv["adapted"]
        click.echo(f"cross-validated on the lab's cells ({cv['folds']} folds): balanced accuracy base "
                   f"{b['balanced_accuracy']:.3f} {b['balanced_accuracy_ci95']} -> adapted {d['balanced_accuracy']:.3f} "
                   f"{d['balanced_accuracy_ci95']}")
        if d["balanced_accuracy"] < b["balanced_accuracy"]:
            click.echo("warning: the adapted model did worse than the base model on cells it had not seen; "
                       "label more cells or keep the base model", err=True)
    else:
        click.echo(f"not cross-validated: {cv}", err=True)
    click.echo(f"calibration: {card['calibration']['method']}")


@click.command("adapt-curve")
@click.option("--model", required=True,
              help="A held-out sibling (`ship` writes .cache/held-out/genetic5.pt): the simulated lab is the final and "
                   "calibration cells, which the shipped file itself has trained on.")
@click.option("--task", default="genetic5", show_default=True, type=click.Choice(["genetic5", "broad2"]))
@click.option("--data", "data_dir", default="../shared/data/allen-ctdb-spikes", show_default=True)
@click.option("--metadata", "metadata_dir", default="../shared/data/allen-ctdb-metadata", show_default=True)
@click.option("--sizes", default="2,4,6,8,16", show_default=True, help="Labelled cells per class, comma-separated.")
@click.option("--seeds", default=5, show_default=True)
@click.option("--out", "out_dir", default="docs/adapt", show_default=True)
@click.option("--set", "settings", multiple=True, metavar="OPTION=VALUE",
              help="An AdaptConfig option for every adaptation, e.g. prior=lab or anchor=0.1 (repeatable).")
def adapt_curve(model, task, data_dir, metadata_dir, sizes, seeds, out_dir, settings):
    """Learning curve of `adapt` on a simulated 25 °C rig (docs/adapt): balanced accuracy on the lab's
    other cells against labelled cells per class, with the spread over seeds."""
    from trainer.adapt_curve import run_adapt_curve
    from trainer.rigs import Condition, Rig

    rig = Condition("25 °C told, 50 kHz, 10 kHz", Rig(fs_hz=50_000.0, filter_hz=10_000.0, temperature_c=25.0,
                                                      stored=True))
    import json

    from dataclasses import fields

    from trainer.adapt import AdaptConfig

    options, known = {}, {f.name for f in fields(AdaptConfig)}
    for item in settings:
        key, _, text = item.partition("=")
        if key not in known:
            raise click.BadParameter(f"{item!r}: unknown option {key!r}; valid: {sorted(known)}", param_hint="--set")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    res = run_adapt_curve(model, task, data_dir, metadata_dir, rig, [int(s) for s in sizes.split(",")], seeds,
                          Path(out_dir), options=options)
    from trainer.adapt_curve import render

    click.echo(render(res))
