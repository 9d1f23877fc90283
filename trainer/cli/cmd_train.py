"""`python -m trainer train`: a model file trained on every labelled cell."""
import json
from dataclasses import replace
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, window_options, load
from trainer.recipe import make_config


@click.command()
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
                     threads=None, data=None, train_cells=None, calibration_cells=None,
                     overrides: dict | None = None):
    """Train the task's recipe and write the model file; returns its card (None on ranks > 0).

    data: the loaded folder (default: read data_dir). train_cells: (N,) bool, the cells trained on
    (default: all). calibration_cells: (N,) bool, cells whose windows (as recorded and through rigs)
    fit the file's temperature afterwards (default: none, uncalibrated). overrides: TrainConfig options
    replacing the recipe's (e.g. {"rig_draws": 0})."""
    import numpy as np
    from tqdm import tqdm

    from trainer import distributed
    from trainer.export import export_model
    from trainer.fit import fit_ensemble
    from trainer.labels import get_task

    rank, size = distributed.start()  # several processes when launched by torchrun
    task = get_task(task_name)
    data = load(data_dir, fs_hz) if data is None else data
    cfg = replace(make_config(epochs, channels, task_name), members=members)
    if threads:
        cfg = replace(cfg, threads=threads)
    if overrides:
        cfg = replace(cfg, **overrides)
    if cfg.rig_draws and (data.traces is None or data.spec.anchor != "peak"):
        click.echo(f"{name}: no acquisition-chain draws: they start from stored APs (a folder of peak-aligned "
                   "traces), not from windows already built; training on the windows as they are", err=True)
        cfg = replace(cfg, rig_draws=0)
    cells = np.ones(len(data.specimen_ids), bool) if train_cells is None else train_cells
    y = np.where(cells, data.training_labels(task, cfg.related_lines), -1)
    used, unlabelled = y >= 0, cells & (y < 0)
    x = data.windows
    if cfg.rig_draws:
        with tqdm(total=int(cells.sum()), desc=f"{name} rigs", unit="cell", disable=rank != 0) as bar:
            x = data.rig_windows(task, cfg.rig_draws, cfg.rig_seed, bar.update, cells=cells, rates_hz=cfg.rig_rates_hz,
                                 cooled_share=cfg.rig_cooled_share, undeclared_share=cfg.rig_undeclared_share)
    student_epochs = cfg.student().max_epochs if cfg.distilled else 0
    epochs_total = sum(cfg.member(m).max_epochs for m in range(members)) + student_epochs
    bar = tqdm(total=epochs_total, desc=f"{name} epochs", unit="ep", disable=rank != 0)
    aux = {}
    if cfg.aux_weight > 0:  # labels of the members' auxiliary output
        labels = data.auxiliary_labels(cfg.aux_target, cells)
        aux = {"aux": labels[used], "unlabelled_aux": labels[unlabelled]}
    fits = fit_ensemble(x[used], y[used], len(task.classes), data.spec.fs_hz, cfg, seed,
                        progress=lambda *a: bar.update(1), unlabelled=x[unlabelled], **aux)
    bar.close()
    evaluation = evaluation_for(report_json, task_name)
    card = None
    if rank == 0:
        from trainer.rigs import training_envelope

        card = export_model([f.model for f in fits], name, task, data, y, cfg, Path(out_path), source=str(data_dir),
                            evaluation=evaluation, seed=seed, processes=size,
                            envelope=training_envelope(x[used | unlabelled]))
        if cfg.output_shift:
            from trainer.calibration import shift_file_for_frequencies

            card = shift_file_for_frequencies(Path(out_path), cfg.output_shift)
        if calibration_cells is not None:
            from trainer.calibration import calibrate_file_on_rigs

            card = calibrate_file_on_rigs(Path(out_path), data, task, calibration_cells, cfg)
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
