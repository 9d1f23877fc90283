"""`python -m trainer calibration`: temperature scaling measured on held-out donors, and built in."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, DEFAULT_METADATA, REPORT_DIRS, refuse_final, read_predictions


@click.command()
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

    report, saved, y, _ = read_predictions(report_dir, method, data_dir)
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
        from rtclassify.model.file_format import apply_temperature_to_file, load_model
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
