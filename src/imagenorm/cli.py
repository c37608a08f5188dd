"""The ``imagenorm`` command line: a thin layer over the library.

Exit status: 0 done, 1 the data failed (bad file, empty dataset, bad stats file),
2 wrong usage. Errors are one line naming the file and the reason.
"""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional, Tuple

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
if not out.is_terminal:  # piped or captured: room for the tables instead of 80 columns
    out = Console(highlight=False, width=120)


def choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of ``values`` (what typer needs for an option with fixed choices)."""
    return Enum(name, {value: value for value in values}, type=str)


OnError = choices("OnError", "fail", "skip")
NonFinite = choices("NonFinite", "fail", "ignore")
Alpha = choices("Alpha", "drop", "keep")
Convert = choices("Convert", "gray", "rgb")
DicomValues = choices("DicomValues", "modality", "stored")
Monochrome1 = choices("Monochrome1", "keep", "invert")
Nifti4D = choices("Nifti4D", "channels", "pooled")
FloatPercentiles = choices("FloatPercentiles", "exact", "histogram")
Method = choices("Method", "zscore", "minmax", "percentile")

ON_ERROR_OPTION = typer.Option(OnError.fail, "--on-error", help="fail: stop at a bad file; skip: list it and go on.")
WORKERS_OPTION = typer.Option(0, "--workers", "-w", min=0, help="Worker processes (0: none).")
STATS_OPTION = typer.Option(None, "--stats", "-s", help="Stats file from 'imagenorm stats' (not needed with --per-image).")
METHOD_OPTION = typer.Option(..., "--method", "-m", help="zscore, minmax or percentile.")
PER_IMAGE_OPTION = typer.Option(False, "--per-image", help="Each image's own statistics instead of the dataset's.")
POOLED_OPTION = typer.Option(False, "--pooled", help="One value for all channels instead of one per channel.")
RANGE_OPTION = typer.Option((0.0, 1.0), "--range", help="Output range of minmax and percentile, e.g. --range -1 1.")
LOW_OPTION = typer.Option(0.5, "--low", help="Lower percentile of the percentile method.")
HIGH_OPTION = typer.Option(99.5, "--high", help="Upper percentile of the percentile method.")


def method_options(method: Method, per_image: bool, pooled: bool, out_range, low: float, high: float):
    from .methods import MethodOptions

    return MethodOptions(method.value, per_image, pooled, (float(out_range[0]), float(out_range[1])), low, high)


def load_stats(stats_file: Optional[Path], per_image: bool):
    from .stats import DatasetStats

    if stats_file is None:
        if not per_image:
            raise typer.BadParameter("--stats is needed unless --per-image is given", param_hint="--stats")
        return None
    return DatasetStats.load(stats_file)


def reports_errors(command):
    """Turn library errors into one red line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ImagenormError as error:
            err.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except ValueError as error:  # e.g. a transform refusing the data it is given
            err.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as error:
            where = f"{display_path(error.filename)}: " if error.filename else ""
            err.print(f"[red]error:[/red] {escape(where + (error.strerror or str(error)))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, typer.BadParameter, KeyboardInterrupt):
            raise
        except Exception as error:  # a bug: still one line (IMAGENORM_DEBUG=1 shows the traceback)
            if os.environ.get("IMAGENORM_DEBUG"):
                raise
            err.print(f"[red]internal error:[/red] {escape(f'{type(error).__name__}: {error}')} "
                      "(please report it; IMAGENORM_DEBUG=1 shows the traceback)", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.command()
@reports_errors
def stats(
    paths: List[str] = typer.Argument(..., help="Image files, folders, globs or .txt lists of paths."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the stats file (JSON) here."),
    workers: int = WORKERS_OPTION,
    on_error: OnError = ON_ERROR_OPTION,
    nonfinite: NonFinite = typer.Option(NonFinite.fail, "--nonfinite", help="NaN/Inf in float images: fail, or ignore (leave out, count)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse larger images before decoding."),
    alpha: Alpha = typer.Option(Alpha.drop, "--alpha", help="Drop or keep an alpha channel."),
    convert: Optional[Convert] = typer.Option(None, "--convert", help="Convert every image to gray or rgb."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Foreground only: nonzero, or threshold:>-500 (>=, <, <=)."),
    mask_dir: Optional[Path] = typer.Option(None, "--mask-dir", help="Foreground only: a mask file per image at the same relative path."),
    dicom_values: DicomValues = typer.Option(DicomValues.modality, "--dicom-values", help="DICOM: modality units (rescale applied; CT in HU) or stored values."),
    monochrome1: Monochrome1 = typer.Option(Monochrome1.keep, "--monochrome1", help="DICOM MONOCHROME1: keep values as stored, or invert."),
    nifti_4d: Nifti4D = typer.Option(Nifti4D.channels, "--nifti-4d", help="NIfTI 4th axis: channels, or pooled into one."),
    per_image: Optional[Path] = typer.Option(None, "--per-image", help="Write a per-image audit (CSV) here and flag outliers."),
    float_percentiles: FloatPercentiles = typer.Option(FloatPercentiles.exact, "--float-percentiles", help="Float data: exact (three passes) or histogram (two; error stated)."),
    dicom_series: bool = typer.Option(True, "--dicom-series/--dicom-slices", help="A DICOM series is one image (or each slice is)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Save progress here; the same command resumes after a kill."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every", min=1, help="Save the checkpoint every N images..."),
    checkpoint_seconds: float = typer.Option(60.0, "--checkpoint-seconds", min=0.0, help="...or every S seconds."),
    timeout: float = typer.Option(300.0, "--timeout", min=1.0, help="Under torchrun: seconds to wait for the other ranks."),
    backend: str = typer.Option("auto", "--backend", help="Under torchrun: gloo, nccl, or auto (nccl with a GPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure a dataset: per-channel and pooled count, mean, std, min, max, percentiles.

    Under torchrun every rank measures its shard and rank 0 writes the file and the report.
    """
    from .report import print_advice, print_stats, progress_bar
    from .stats import compute_stats
    from .stats.distributed import launched_by_torchrun, start_process_group

    ranks = launched_by_torchrun()
    rank = int(os.environ.get("RANK", "0")) if ranks else 0
    if ranks:
        start_process_group(backend, timeout)
    with progress_bar(err, enabled=not quiet and rank == 0) as advance:
        result = compute_stats(
            paths,
            workers=workers,
            on_error=on_error.value,
            nonfinite=nonfinite.value,
            max_pixels=max_pixels,
            alpha=alpha.value,
            convert=convert.value if convert else None,
            mask=mask,
            mask_dir=None if mask_dir is None else str(mask_dir),
            dicom_values=dicom_values.value,
            monochrome1=monochrome1.value,
            nifti_4d=nifti_4d.value,
            audit=per_image is not None,
            float_percentiles=float_percentiles.value,
            dicom_series=dicom_series,
            distributed=ranks,
            timeout=timeout,
            checkpoint=None if checkpoint is None else str(checkpoint),
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            progress=advance,
        )
    if rank != 0:  # every rank holds the same result; rank 0 writes and reports
        return
    if output is not None:
        result.save(output)
    if per_image is not None:
        from .audit import write_csv

        write_csv(result.audit_rows, per_image)
    print_stats(out, result)
    if output is not None:
        out.print(f"wrote {escape(str(output))}", soft_wrap=True)
    if per_image is not None:
        out.print(f"wrote {escape(str(per_image))} ({len(result.audit_rows)} rows)", soft_wrap=True)
    print_advice(out, result)


@app.command()
@reports_errors
def check(
    paths: List[str] = typer.Argument(..., help="Images to normalize and check (as for 'stats')."),
    stats_file: Optional[Path] = STATS_OPTION,
    method: Method = METHOD_OPTION,
    per_image: bool = PER_IMAGE_OPTION,
    pooled: bool = POOLED_OPTION,
    out_range: Tuple[float, float] = RANGE_OPTION,
    low: float = LOW_OPTION,
    high: float = HIGH_OPTION,
    tolerance: float = typer.Option(0.05, "--tolerance", "-t", min=0.0, help="Allowed miss (std units, or range fraction)."),
    workers: int = WORKERS_OPTION,
    on_error: OnError = ON_ERROR_OPTION,
) -> None:
    """Normalize on the fly and report what came out per channel; exit 1 when it misses."""
    from .check import check_normalization
    from .report import print_check

    options = method_options(method, per_image, pooled, out_range, low, high)
    report = check_normalization(paths, load_stats(stats_file, per_image), options, tolerance=tolerance,
                                 workers=workers, on_error=on_error.value)
    print_check(out, report)
    if not report.passed:
        raise typer.Exit(1)


@app.command()
@reports_errors
def apply(
    paths: List[str] = typer.Argument(..., help="Images to normalize (as for 'stats')."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the normalized .npy copy (outside the sources)."),
    stats_file: Optional[Path] = STATS_OPTION,
    method: Method = METHOD_OPTION,
    per_image: bool = PER_IMAGE_OPTION,
    pooled: bool = POOLED_OPTION,
    out_range: Tuple[float, float] = RANGE_OPTION,
    low: float = LOW_OPTION,
    high: float = HIGH_OPTION,
    on_error: OnError = ON_ERROR_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a normalized float32 copy (.npy per image, mirroring the tree, with a manifest); resumable."""
    from .apply import apply_normalization
    from .report import progress_bar

    options = method_options(method, per_image, pooled, out_range, low, high)
    stats = load_stats(stats_file, per_image)
    with progress_bar(err, enabled=not quiet) as advance:
        report = apply_normalization(paths, stats, None if stats_file is None else str(stats_file), options,
                                     str(output), on_error=on_error.value, progress=advance)
    out.print(f"{report.written} written, {report.resumed} already there (resumed), {len(report.skipped)} skipped: "
              f"{escape(options.describe())} into {escape(str(output))}", soft_wrap=True)
    for entry in report.skipped:
        out.print(escape(f"  skipped {entry['path']}: {entry['reason']}"), soft_wrap=True)


@app.command()
@reports_errors
def plot(
    stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'."),
    output: Path = typer.Option(..., "--output", "-o", help="Image to write (.png, .svg or .pdf)."),
    log: bool = typer.Option(False, "--log", help="Logarithmic counts."),
) -> None:
    """Per-channel histograms with mean, ±1 std and the 0.5/99.5 percentiles marked."""
    from .plot import plot_histograms
    from .stats import DatasetStats

    plot_histograms(DatasetStats.load(stats_file), output, log=log)
    out.print(f"wrote {escape(str(output))}", soft_wrap=True)


@app.command()
@reports_errors
def advise(stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'.")) -> None:
    """Recommend a normalization for the dataset, with the numbers behind each advice."""
    from .report import print_advice
    from .stats import DatasetStats

    print_advice(out, DatasetStats.load(stats_file))


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
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
