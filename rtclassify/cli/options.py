"""Options shared by the commands, with one default and one check each (no heavy imports here:
a bad value is refused before torch is loaded).

Exit status, the same for every verb:
  0  the work was done (per-item problems, e.g. a cell without a usable AP, are in the output);
  1  the inputs exist but could not be used, or the work failed (the reason on one line);
  2  the command line is wrong: an unknown option, a bad value, or a file or folder named on it
     that does not exist. Checked before anything slow (torch, the model) is loaded.
"""
from pathlib import Path

import click

from rtclassify.config import BUILTIN_MODELS


class OptionError(click.ClickException):
    """A bad option value: one `Error:` line (no usage text), exit status 2 like click's usage errors."""

    exit_code = 2


def named(param, value) -> str:
    """'--data DIR' for an option, just the path for an argument."""
    opts = getattr(param, "opts", None) or []
    return f"{opts[0]} {value}" if opts and opts[0].startswith("-") else str(value)


def check_folder(ctx, param, value):
    """An existing folder, else a one-line error (exit 2)."""
    if value is not None and not Path(value).is_dir():
        what = "is a file, not a folder" if Path(value).exists() else "does not exist"
        raise OptionError(f"{named(param, value)}: {what}")
    return value


def check_files(ctx, param, value):
    """Existing files (one path or a tuple of them), else a one-line error naming the first missing."""
    for path in (value if isinstance(value, tuple) else () if value is None else (value,)):
        if not Path(path).is_file():
            what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
            raise OptionError(f"{named(param, path)}: {what}")
    return value


def check_recording(ctx, param, value):
    """An existing recording file, or a folder of Igor waves (.ibw: one cell, a sweep's V and I in two
    waves), else a one-line error."""
    p = Path(value)
    if p.is_dir():
        if any(f.suffix.lower() == ".ibw" for f in p.iterdir()):
            return value
        raise OptionError(f"{named(param, value)}: is a folder without Igor waves (.ibw): give a recording file")
    return check_files(ctx, param, value)


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


def check_temperature_option(ctx, param, value):
    """--temperature-c: a bath temperature in °C, or a usage error naming the value."""
    from rtclassify.dsp.temperature import check_temperature

    why = check_temperature(value)
    if why:
        raise click.BadParameter(why)
    return value


def rig_options(f):
    """--filter-hz and --temperature-c: the rig as the user declares it (model.envelope.RigInfo);
    what a source or file declares itself takes precedence, field by field."""
    f = click.option("--temperature-c", type=float, default=None, metavar="C", callback=check_temperature_option,
                     help="The bath temperature, °C (default: not declared, taken as 34 °C, the models' own). "
                          "Below 34 °C APs are wider: windows are read faster to match (the temperature warp); "
                          "outside the model's validated range the `envelope` says so.")(f)
    f = click.option("--filter-hz", type=click.FloatRange(0, 1e6), default=None, metavar="HZ",
                     help="The amplifier's analog low-pass corner, Hz (0: none), judged against the model's "
                          "envelope; a source's or file's own value takes precedence.")(f)
    return f


min_confidence_option = click.option(
    "--min-confidence", type=click.FloatRange(0.0, 1.0), default=None, metavar="P",
    help="The confidence the lab asks for: an answer (a label, or a cell's verdict) whose top probability is below "
         "P says `uncertain` (a verdict's label is then null). Default: the model card's, chosen from the "
         "risk-coverage curves of docs/confidence.md for labels; the cell model's own for verdicts.")
