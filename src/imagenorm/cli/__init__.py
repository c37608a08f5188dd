"""The ``imagenorm`` command line: a thin typer + rich layer over the library.

The library never prints and knows nothing of this package; each command turns its
options into library calls and library errors into one line (see :mod:`.app`).
"""

from __future__ import annotations

import sys

import typer

from ..version import __version__
from . import drift, export, html_report, measure, normalize  # noqa: F401  (they register their commands)
from .app import app, err, out

__all__ = ["app", "main"]


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
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
