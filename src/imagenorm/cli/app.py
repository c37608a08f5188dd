"""The typer application, its consoles, and what every command shares: the choices (from
:data:`imagenorm.options.CHOICES`), the read options, and one way to report errors.

Exit status: 0 done, 1 the data failed (bad file, empty dataset, bad stats file, a check
that missed), 2 wrong usage (including an option that conflicts with the stats file).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import warnings
from enum import Enum
import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ImagenormError, ImagenormWarning, display_path
from ..options import CHOICES, OptionError

app = typer.Typer(
    help="Exact image-dataset statistics and correct normalization for PyTorch.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
if not out.is_terminal:  # piped or captured: room for the tables instead of 80 columns
    out = Console(highlight=False, width=120)


def choices(name: str) -> type[Enum]:
    """A str Enum of the allowed values of library option ``name`` (what typer needs)."""
    return Enum(name.title().replace("_", ""), {value: value for value in CHOICES[name]}, type=str)


OnError = choices("on_error")
NonFinite = choices("nonfinite")
Alpha = choices("alpha")
Convert = choices("convert")
DicomValues = choices("dicom_values")
Monochrome1 = choices("monochrome1")
Nifti4D = choices("nifti_4d")
MixedDepth = choices("mixed_depth")
FloatPercentiles = choices("float_percentiles")
Method = choices("method")


def value(option: Enum | None):
    """The plain value of a choice option (None stays None)."""
    return None if option is None else option.value


def read_option_values(**given) -> dict:
    """Read options from the command line as library keywords (None: not given)."""
    return {name: value(v) if isinstance(v, Enum) else (str(v) if name == "mask_dir" and v is not None else v)
            for name, v in given.items()}


# --- library parameter names in messages become the command line's flags ------------------
_SWITCHES = {("dicom_series", "True"): "--dicom-series", ("dicom_series", "False"): "--dicom-slices"}
_FLAGS = {"output_format": "--format", "export_to": "--to"}  # library names whose flag is another word
_NAMES = sorted({*CHOICES, "max_pixels", "mask", "mask_dir", "dicom_series", "workers", "checkpoint", "column", "member",
                 "split"}, key=len, reverse=True)
_PARAMETER = re.compile(r"\b(" + "|".join(_NAMES) + r")=(?:'([^']*)'|([^\s,;)]+))?")


def as_flags(message: str) -> str:
    """``mixed_depth='scale'`` -> ``--mixed-depth scale``, ``convert=None`` -> ``no --convert``:
    library messages in the command line's words."""
    def flag(match: re.Match) -> str:
        name, quoted, plain = match.groups()
        argument = quoted if quoted is not None else plain
        option = _FLAGS.get(name) or "--" + name.replace("_", "-")
        if argument is None:  # the parameter named without a value
            return option
        if (name, argument) in _SWITCHES:
            return _SWITCHES[name, argument]
        if argument == "None" and quoted is None:
            return f"no {option}"
        return f"{option} {shlex.quote(argument)}"

    return _PARAMETER.sub(flag, message)


def reports_errors(command):
    """Library errors become one red line on stderr: exit 1 for data, 2 for usage."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():  # the command's own process: our warnings as one yellow line
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except OptionError as error:
            fail(str(error), 2)
        except ImagenormError as error:
            fail(str(error), 1)
        except OSError as error:
            where = f"{display_path(error.filename)}: " if error.filename else ""
            fail(where + (error.strerror or str(error)), 1)
        except (typer.Exit, typer.Abort, typer.BadParameter, KeyboardInterrupt):
            raise
        except Exception as error:  # a bug: still one line (IMAGENORM_DEBUG=1 shows the traceback)
            if os.environ.get("IMAGENORM_DEBUG"):
                raise
            err.print(f"[red]internal error:[/red] {escape(str(error) or 'unexpected failure')} "
                      "(please report it; IMAGENORM_DEBUG=1 shows the traceback)", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _show_warning(message, category, *args, **kwargs) -> None:
    if issubclass(category, ImagenormWarning):
        err.print(f"[yellow]warning:[/yellow] {escape(as_flags(str(message)))}", soft_wrap=True)
    else:
        _default_show_warning(message, category, *args, **kwargs)


_default_show_warning = warnings.showwarning


def fail(message: str, status: int) -> None:
    err.print(f"[red]error:[/red] {escape(as_flags(message))}", soft_wrap=True)
    raise typer.Exit(status) from None


# --- options shared by several commands ------------------------------------------------------
def on_error_option():
    return typer.Option(OnError.fail, "--on-error", help="fail: stop at a bad file; skip: list it and go on.")


def workers_option():
    return typer.Option(0, "--workers", "-w", min=0, help="Worker processes (0: none).")


def quiet_option():
    return typer.Option(False, "--quiet", "-q", help="No progress bar.")


def as_recorded(flag: str, text: str):
    """A read option of check/apply: not given (None) means "as the stats file recorded"."""
    return typer.Option(None, flag, help=f"{text} Default: as recorded in the stats file.")
