"""`python -m trainer fit-neurons`: the simulator's model neurons fitted to real APs."""
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA


@click.command("fit-neurons")
@click.option("--data", "spikes_dir", default=DEFAULT_DATA, show_default=True,
              type=click.Path(exists=True, file_okay=False), help="Folder in the allen-ctdb-spikes layout.")
@click.option("--evaluations", default=1000, show_default=True, help="Objective evaluations per neuron (~60 ms each).")
@click.option("--restart", is_flag=True, help="Start from the package's current table, not the published models.")
@click.option("--workers", default=2, show_default=True, help="Neurons fitted in parallel.")
@click.option("--out", "out_csv", default=None, type=click.Path(dir_okay=False),
              help="Table to write [rtclassify/simulator/neuron_params.csv].")
@click.option("--plot", "plot_path", default="docs/neurons.png", show_default=True, type=click.Path(dir_okay=False))
def fit_neurons(spikes_dir, evaluations, restart, workers, out_csv, plot_path):
    """Fit the built-in model neurons to the class-median APs of the Allen recordings at 50 kHz;
    write their parameter table into the package and a plot of fitted vs target APs."""
    from concurrent.futures import ProcessPoolExecutor

    from rtclassify.simulator.neurons import NEURONS, PARAMS_TABLE, read_params
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
    from rtclassify.model.file_format import load_model
    from trainer.neuron_fit import fit_neuron

    name, target, n_cells, evaluations, start = job
    return fit_neuron(name, target, n_cells, load_model("genetic5"), evaluations, start)
