"""``imagenorm check`` and ``apply``: normalize as the statistics were measured."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.markup import escape

from .app import (Alpha, Convert, DicomValues, Method, MixedDepth, Monochrome1, Nifti4D, NonFinite, OnError, app,
                  as_recorded, choices, err, on_error_option, out, quiet_option, read_option_values, reports_errors,
                  workers_option)

OutputFormat = choices("output_format")


def method_options(method: Method, per_image: bool, pooled: bool, out_range, percentiles):
    from ..methods import MethodOptions

    return MethodOptions(method.value, per_image, pooled, None if out_range is None else tuple(out_range), tuple(percentiles))


def load_stats(stats_file: Optional[Path], per_image: bool):
    from ..stats import DatasetStats

    if stats_file is None:
        if not per_image:
            raise typer.BadParameter("--stats is needed unless --per-image is given", param_hint="--stats")
        return None
    return DatasetStats.load(stats_file)


STATS = typer.Option(None, "--stats", "-s", help="Stats file from 'imagenorm stats' (not needed with --per-image).")
METHOD = typer.Option(..., "--method", "-m", help="zscore, minmax, percentile, or histogram (Nyúl; stats with --landmarks).")
PER_IMAGE = typer.Option(False, "--per-image", help="Normalize each image by its own statistics instead of the dataset's.")
POOLED = typer.Option(False, "--pooled", help="One value for all channels instead of one per channel.")
RANGE = typer.Option(None, "--range", help="Output range of minmax and percentile (default 0 1), e.g. --range -1 1; "
                                           "of histogram's standard scale (default 0 100).")
PERCENTILES = typer.Option((0.5, 99.5), "--percentiles", help="Lower and upper percentile of the percentile method.")


def read_options(alpha, convert, dicom_values, monochrome1, nifti_4d, nonfinite, mixed_depth, max_pixels, mask,
                 mask_dir, dicom_series) -> dict:
    return read_option_values(alpha=alpha, convert=convert, dicom_values=dicom_values, monochrome1=monochrome1,
                              nifti_4d=nifti_4d, nonfinite=nonfinite, mixed_depth=mixed_depth, max_pixels=max_pixels,
                              mask=mask, mask_dir=mask_dir, dicom_series=dicom_series)


# Read options: not given means "as recorded in the stats file"; a different value is refused.
ALPHA = as_recorded("--alpha", "Drop or keep an alpha channel.")
CONVERT = as_recorded("--convert", "Convert every image to gray or rgb.")
DICOM_VALUES = as_recorded("--dicom-values", "DICOM: modality units or stored values.")
MONOCHROME1 = as_recorded("--monochrome1", "DICOM MONOCHROME1: keep or invert.")
NIFTI_4D = as_recorded("--nifti-4d", "NIfTI 4th axis: channels or pooled.")
NONFINITE = as_recorded("--nonfinite", "NaN/Inf in float images: fail or ignore.")
MIXED_DEPTH = as_recorded("--mixed-depth", "8- and 16-bit images together: fail or scale.")
MAX_PIXELS = typer.Option(None, "--max-pixels", min=1, help="Refuse larger images before decoding. Default: as recorded.")
MASK = as_recorded("--mask", "Foreground: nonzero, or threshold:>-500.")
MASK_DIR = as_recorded("--mask-dir", "Foreground: a mask file per image.")
DICOM_SERIES = typer.Option(None, "--dicom-series/--dicom-slices", help="A DICOM series is one image (or each slice is). Default: as recorded.")
COLUMN = typer.Option(None, "--column", help="Parquet/Arrow data: the image column (default: the only one).")
MEMBER = typer.Option(None, "--member", help="WebDataset shards: each sample's image member by extension, e.g. seg.png.")
SPLIT = typer.Option(None, "--split", help="A save_to_disk DatasetDict or Hub folder: the split (default train).")


@app.command()
@reports_errors
def check(
    paths: List[str] = typer.Argument(..., help="Images to normalize and check (as for 'stats')."),
    stats_file: Optional[Path] = STATS,
    method: Method = METHOD,
    per_image: bool = PER_IMAGE,
    pooled: bool = POOLED,
    out_range: Optional[Tuple[float, float]] = RANGE,
    percentiles: Tuple[float, float] = PERCENTILES,
    tolerance: float = typer.Option(0.05, "--tolerance", "-t", min=0.0, help="Allowed miss (std units, or range fraction)."),
    workers: int = workers_option(),
    on_error: OnError = on_error_option(),
    alpha: Optional[Alpha] = ALPHA,
    convert: Optional[Convert] = CONVERT,
    dicom_values: Optional[DicomValues] = DICOM_VALUES,
    monochrome1: Optional[Monochrome1] = MONOCHROME1,
    nifti_4d: Optional[Nifti4D] = NIFTI_4D,
    nonfinite: Optional[NonFinite] = NONFINITE,
    mixed_depth: Optional[MixedDepth] = MIXED_DEPTH,
    max_pixels: Optional[int] = MAX_PIXELS,
    mask: Optional[str] = MASK,
    mask_dir: Optional[Path] = MASK_DIR,
    dicom_series: Optional[bool] = DICOM_SERIES,
    column: Optional[str] = COLUMN,
    member: Optional[str] = MEMBER,
    split: Optional[str] = SPLIT,
) -> None:
    """Normalize on the fly, read as the stats were measured, and report what came out; exit 1 when it misses."""
    from ..check import check_normalization
    from .report import print_check

    options = method_options(method, per_image, pooled, out_range, percentiles)
    given = read_options(alpha, convert, dicom_values, monochrome1, nifti_4d, nonfinite, mixed_depth, max_pixels, mask,
                         mask_dir, dicom_series)
    report = check_normalization(paths, load_stats(stats_file, per_image), options, tolerance=tolerance,
                                 workers=workers, on_error=on_error.value, column=column, member=member, split=split,
                                 **given)
    print_check(out, report)
    if not report.passed:
        raise typer.Exit(1)


@app.command()
@reports_errors
def apply(
    paths: List[str] = typer.Argument(..., help="Images to normalize (as for 'stats')."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the normalized copy (outside the sources)."),
    output_format: OutputFormat = typer.Option(OutputFormat.npy, "--format",
                                               help="npy; nifti (NIfTI sources, header kept); tiff."),
    stats_file: Optional[Path] = STATS,
    method: Method = METHOD,
    per_image: bool = PER_IMAGE,
    pooled: bool = POOLED,
    out_range: Optional[Tuple[float, float]] = RANGE,
    percentiles: Tuple[float, float] = PERCENTILES,
    workers: int = workers_option(),
    on_error: OnError = on_error_option(),
    quiet: bool = quiet_option(),
    alpha: Optional[Alpha] = ALPHA,
    convert: Optional[Convert] = CONVERT,
    dicom_values: Optional[DicomValues] = DICOM_VALUES,
    monochrome1: Optional[Monochrome1] = MONOCHROME1,
    nifti_4d: Optional[Nifti4D] = NIFTI_4D,
    nonfinite: Optional[NonFinite] = NONFINITE,
    mixed_depth: Optional[MixedDepth] = MIXED_DEPTH,
    max_pixels: Optional[int] = MAX_PIXELS,
    mask: Optional[str] = MASK,
    mask_dir: Optional[Path] = MASK_DIR,
    dicom_series: Optional[bool] = DICOM_SERIES,
    column: Optional[str] = COLUMN,
    member: Optional[str] = MEMBER,
    split: Optional[str] = SPLIT,
) -> None:
    """Write a normalized float32 copy (.npy, .nii.gz or .tiff per image, mirroring the tree); resumable."""
    from ..apply import apply_normalization
    from .report import progress_bar

    options = method_options(method, per_image, pooled, out_range, percentiles)
    given = read_options(alpha, convert, dicom_values, monochrome1, nifti_4d, nonfinite, mixed_depth, max_pixels, mask,
                         mask_dir, dicom_series)
    stats = load_stats(stats_file, per_image)
    with progress_bar(err, enabled=not quiet) as advance:
        report = apply_normalization(paths, stats, None if stats_file is None else str(stats_file), options,
                                     str(output), on_error=on_error.value, workers=workers, progress=advance,
                                     column=column, member=member, split=split, output_format=output_format.value,
                                     **given)
    out.print(f"{report.written} written, {report.resumed} already there (resumed), {len(report.skipped)} skipped: "
              f"{escape(options.describe())} into {escape(str(output))}", soft_wrap=True)
    for entry in report.skipped:
        out.print(escape(f"  skipped {entry['path']}: {entry['reason']}"), soft_wrap=True)
