"""`rtclassify`: one click group; each verb lives in its own module and imports heavy packages
(torch, numba, pylsl, Qt) inside its body so that `--help` stays instant."""
import sys

import click

from rtclassify.cli.cmd_annotate import annotate
from rtclassify.cli.cmd_bench import bench
from rtclassify.cli.cmd_demo import demo
from rtclassify.cli.cmd_detect import detect
from rtclassify.cli.cmd_overlay import overlay
from rtclassify.cli.cmd_predict import predict
from rtclassify.cli.cmd_serve import serve
from rtclassify.cli.cmd_simulate import simulate
from rtclassify.cli.cmd_sweeps import sweeps
from rtclassify.cli.cmd_watch import watch


class OneLineErrors(click.Group):
    """Turn an unexpected exception into a one-line error (full traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"Error: {exc} ({type(exc).__name__}; --debug shows the traceback)", err=True)
            sys.exit(1)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="rtclassify")
def main(debug):
    """Classify patch-clamped neurons from their evoked action potentials.

    Tasks: genetic5 (Exc, Ndnf, Pvalb, Sst, Vip) and broad2 (Exc, Inh).

    Exit status: 0 done (per-item problems are in the output); 1 the inputs exist but cannot be
    used, or the work failed; 2 the command line is wrong (unknown option, bad value, a file or
    folder that does not exist), told before anything slow loads.
    """
    if not debug:  # liblsl's own INFO lines stay off the terminal
        from rtclassify.transport.lsl_log import quiet_liblsl

        quiet_liblsl()


main.add_command(predict)
main.add_command(detect)
main.add_command(simulate)
main.add_command(serve)
main.add_command(demo)
main.add_command(bench)
main.add_command(overlay)
main.add_command(sweeps)
main.add_command(annotate)
main.add_command(watch)
