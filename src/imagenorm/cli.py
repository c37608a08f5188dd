"""The ``imagenorm`` command line: a thin layer over the library.

Exit status: 0 done, 1 the data failed (bad file, empty dataset, bad stats file),
2 wrong usage. Errors are one line naming the file and the reason.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import ImagenormError, display_path
from .readers import DEFAULT_MAX_PIXELS

app = typer.Typer(
    help="Exact image-dataset statistics and correct normalization for PyTorch.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"


class NonFinite(str, Enum):
    fail = "fail"
    ignore = "ignore"


class Alpha(str, Enum):
    drop = "drop"
    keep = "keep"


class Convert(str, Enum):
    gray = "gray"
    rgb = "rgb"


def reports_errors(command):
    """Turn library errors into one red line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ImagenormError as error:
            err.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as error:
            where = f"{display_path(error.filename)}: " if error.filename else ""
            err.print(f"[red]error:[/red] {escape(where + (error.strerror or str(error)))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.command()
@reports_errors
def stats(
    paths: List[str] = typer.Argument(..., help="Image files, folders, globs or .txt lists of paths."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the stats file (JSON) here."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Worker processes (0: none)."),
    on_error: OnError = typer.Option(OnError.fail, "--on-error", help="fail: stop at a bad file; skip: list it and go on."),
    nonfinite: NonFinite = typer.Option(NonFinite.fail, "--nonfinite", help="NaN/Inf in float images: fail, or ignore (leave out, count)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse larger images before decoding."),
    alpha: Alpha = typer.Option(Alpha.drop, "--alpha", help="Drop or keep an alpha channel."),
    convert: Optional[Convert] = typer.Option(None, "--convert", help="Convert every image to gray or rgb."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure a dataset: per-channel and pooled count, mean, std, min, max, percentiles."""
    from .report import progress_bar, print_stats
    from .stats import compute_stats

    with progress_bar(err, enabled=not quiet) as advance:
        result = compute_stats(
            paths,
            workers=workers,
            on_error=on_error.value,
            nonfinite=nonfinite.value,
            max_pixels=max_pixels,
            alpha=alpha.value,
            convert=convert.value if convert else None,
            progress=advance,
        )
    if output is not None:
        result.save(output)
    print_stats(out, result)
    if output is not None:
        out.print(f"wrote {escape(str(output))}", soft_wrap=True)


@app.command()
@reports_errors
def show(stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'.")) -> None:
    """Print a stats file's table again (raw units and the [0, 1] scale)."""
    from .report import print_stats
    from .stats import DatasetStats

    print_stats(out, DatasetStats.load(stats_file))


def version_callback(value: bool) -> None:
    if value:
        out.print(f"imagenorm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Print the version."),
) -> None:
    """Exact image-dataset statistics and correct normalization for PyTorch."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        sys.exit(130)
