"""`python -m trainer`: evaluate (the report), ship (the built-in models), train (your own model).

One click group; each command lives in its own module of trainer/cli/ and imports torch and the
training code inside its body, so that `--help` stays quick. The shipped models' recipe is in
trainer/recipe.py, the evaluation protocol in trainer/evaluate.py, the scores in trainer/metrics.py.
"""
import click

from trainer.cli.cmd_adapt import adapt, adapt_curve
from trainer.cli.cmd_bias_sweep import bias_sweep
from trainer.cli.cmd_build import build
from trainer.cli.cmd_cells import cells
from trainer.cli.cmd_calibration import calibration
from trainer.cli.cmd_cards import cards
from trainer.cli.cmd_evaluate import evaluate
from trainer.cli.cmd_fetch import fetch
from trainer.cli.cmd_figures import figures
from trainer.cli.cmd_fit_neurons import fit_neurons
from trainer.cli.cmd_learning_curve import learning_curve
from trainer.cli.cmd_patchseq_labels import patchseq_labels
from trainer.cli.cmd_rescore import rescore
from trainer.cli.cmd_rig_cv import rig_cv
from trainer.cli.cmd_rigs import rigs
from trainer.cli.cmd_ship import ship
from trainer.cli.cmd_teacher_spread import teacher_spread
from trainer.cli.cmd_train import train
from trainer.cli.cmd_transfer import transfer
from trainer.cli.cmd_trust import trust


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Training and evaluation of rtclassify models."""


for command in (evaluate, figures, rescore, bias_sweep, learning_curve, teacher_spread, train, ship, cards, build,
                calibration, fit_neurons, patchseq_labels, transfer, fetch, rigs, rig_cv, adapt, adapt_curve, cells,
                trust):
    main.add_command(command)

if __name__ == "__main__":
    main()
