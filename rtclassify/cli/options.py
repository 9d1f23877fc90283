"""Options shared by the commands, with one default and one check each (no heavy imports here:
a bad value is refused before torch is loaded)."""
from pathlib import Path

import click

from rtclassify.config import BUILTIN_MODELS


class OptionError(click.ClickException):
    """A bad option value: one `Error:` line (no usage text), exit status 2 like click's usage errors."""

    exit_code = 2


def check_model(ctx, param, value: str) -> str:
    """A built-in model name or the path of an existing file, else a one-line error."""
    if value in BUILTIN_MODELS or Path(value).is_file():
        return value
    raise OptionError(f"--model {value!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor an "
                      "existing model file")


model_option = click.option(
    "--model", "model_name", default="genetic5", show_default=True, metavar="MODEL", callback=check_model,
    help=f"Built-in model ({', '.join(BUILTIN_MODELS)}) or the path of an exported model file.")

device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the model runs; auto: CUDA when torch sees a GPU, else the CPU.")
