"""`python -m trainer transfer`: the published rate transfer experiment."""
import json
import sys
from pathlib import Path

import click

from trainer.cli.common import DEFAULT_DATA, window_options, load
from trainer.recipe import make_config


@click.command()
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
