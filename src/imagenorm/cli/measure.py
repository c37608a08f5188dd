"""``imagenorm stats``, ``show``, ``plot`` and ``advise``: measure a dataset and look at the result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.markup import escape

from ..options import DEFAULT_MAX_PIXELS
from .app import (Alpha, Convert, DicomValues, FloatPercentiles, MixedDepth, Monochrome1, Nifti4D, NonFinite, OnError, app, err,
                  on_error_option, out, quiet_option, read_option_values, reports_errors, workers_option)


@app.command()
@reports_errors
def stats(
    paths: List[str] = typer.Argument(..., help="Image files, folders, globs, .txt lists; tar shards ({000..099} "
                                               "braces), zip, parquet, Arrow, save_to_disk folders, URLs."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the stats file (JSON) here."),
    workers: int = workers_option(),
    on_error: OnError = on_error_option(),
    nonfinite: NonFinite = typer.Option(NonFinite.fail, "--nonfinite", help="NaN/Inf in float images: fail, or ignore (leave out, count)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse larger images before decoding."),
    alpha: Alpha = typer.Option(Alpha.drop, "--alpha", help="Drop or keep an alpha channel."),
    convert: Optional[Convert] = typer.Option(None, "--convert", help="Convert every image to gray or rgb."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Foreground only: nonzero, or threshold:>-500 (>=, <, <=)."),
    mask_dir: Optional[Path] = typer.Option(None, "--mask-dir", help="Foreground only: a mask file per image at the same relative path."),
    dicom_values: DicomValues = typer.Option(DicomValues.modality, "--dicom-values", help="DICOM: modality units (rescale applied; CT in HU) or stored values."),
    monochrome1: Monochrome1 = typer.Option(Monochrome1.keep, "--monochrome1", help="DICOM MONOCHROME1: keep values as stored, or invert."),
    nifti_4d: Nifti4D = typer.Option(Nifti4D.channels, "--nifti-4d", help="NIfTI 4th axis: channels, or pooled into one."),
    mixed_depth: MixedDepth = typer.Option(MixedDepth.fail, "--mixed-depth", help="8- and 16-bit images together: fail, or scale each to [0, 1]."),
    dicom_series: bool = typer.Option(True, "--dicom-series/--dicom-slices", help="A DICOM series is one image (or each slice is)."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Write a per-image audit (CSV) here and flag outliers."),
    landmarks: bool = typer.Option(False, "--landmarks", help="Record each image's histogram landmarks (Nyúl, TorchIO's) for --method histogram."),
    landmark_cutoff: Tuple[float, float] = typer.Option((1.0, 99.0), "--landmark-cutoff", help="With --landmarks: the cutoff percentiles."),
    landmark_percentiles: Optional[str] = typer.Option(None, "--landmark-percentiles", help="With --landmarks: the landmarks between the cutoffs, e.g. 25,50,75 (default the deciles)."),
    float_percentiles: FloatPercentiles = typer.Option(FloatPercentiles.exact, "--float-percentiles", help="Float data: exact (three passes) or histogram (two; error stated)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Save progress here; the same command resumes after a kill."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every", min=1, help="Save the checkpoint every N images..."),
    checkpoint_seconds: float = typer.Option(60.0, "--checkpoint-seconds", min=0.0, help="...or every S seconds."),
    timeout: float = typer.Option(300.0, "--timeout", min=1.0, help="Under torchrun: seconds to wait for the other ranks."),
    backend: str = typer.Option("auto", "--backend", help="Under torchrun: gloo, nccl, or auto (nccl with a GPU)."),
    column: Optional[str] = typer.Option(None, "--column", help="Parquet/Arrow data: the image column (default: the only one)."),
    member: Optional[str] = typer.Option(None, "--member", help="WebDataset shards: each sample's image member by extension, e.g. seg.png."),
    split: Optional[str] = typer.Option(None, "--split", help="A save_to_disk DatasetDict or Hub folder: the split (default train)."),
    quiet: bool = quiet_option(),
) -> None:
    """Measure a dataset: per-channel and pooled count, mean, std, min, max, percentiles.

    Under torchrun every rank measures its shard and rank 0 writes the file and the report.
    """
    from ..atomic import check_target
    from ..stats import compute_stats
    from ..stats.checkpoint import Checkpoint
    from ..stats.distributed import launched_by_torchrun, start_process_group
    from .report import print_advice, print_stats, progress_bar

    read_options = read_option_values(nonfinite=nonfinite, max_pixels=max_pixels, alpha=alpha, convert=convert, mask=mask,
                                      mask_dir=mask_dir, dicom_values=dicom_values, monochrome1=monochrome1,
                                      nifti_4d=nifti_4d, mixed_depth=mixed_depth, dicom_series=dicom_series)
    spec = _landmark_spec(landmarks, landmark_cutoff, landmark_percentiles)
    saver = None if checkpoint is None else Checkpoint(str(checkpoint), checkpoint_every, checkpoint_seconds)
    for target in (output, audit):  # before the first image is read
        if target is not None:
            check_target(target)
    ranks = launched_by_torchrun()
    rank = int(os.environ.get("RANK", "0")) if ranks else 0
    if ranks:
        start_process_group(backend, timeout)
    with progress_bar(err, enabled=not quiet and rank == 0) as advance:
        result = compute_stats(paths, workers=workers, on_error=on_error.value, audit=audit is not None, landmarks=spec,
                               float_percentiles=float_percentiles.value, distributed=ranks, timeout=timeout,
                               checkpoint=saver, progress=advance, column=column, member=member, split=split,
                               **read_options)
    if rank != 0:  # every rank holds the same result; rank 0 writes and reports
        return
    if output is not None:
        result.save(output)
    if audit is not None:
        from ..audit import write_csv

        write_csv(result.audit_rows, audit)
    print_stats(out, result)
    if output is not None:
        out.print(f"wrote {escape(str(output))}", soft_wrap=True)
    if audit is not None:
        out.print(f"wrote {escape(str(audit))} ({len(result.audit_rows)} rows)", soft_wrap=True)
    print_advice(out, result)


def _landmark_spec(landmarks: bool, cutoff: Tuple[float, float], inner: Optional[str]):
    """The landmarks ``--landmarks`` asks for (False: none); the two options need it."""
    from ..options import OptionError
    from ..stats.landmarks import DECILES, TORCHIO_CUTOFF, LandmarkSpec

    if not landmarks:
        if tuple(cutoff) != TORCHIO_CUTOFF or inner is not None:
            raise OptionError("--landmark-cutoff and --landmark-percentiles need --landmarks")
        return False
    return LandmarkSpec(tuple(cutoff), DECILES if inner is None else tuple(q for q in inner.split(",") if q.strip()))


@app.command()
@reports_errors
def plot(
    stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'."),
    output: Path = typer.Option(..., "--output", "-o", help="Image to write (.png, .svg or .pdf)."),
    log: bool = typer.Option(False, "--log", help="Logarithmic counts."),
) -> None:
    """Per-channel histograms with mean, ±1 std and the 0.5/99.5 percentiles marked."""
    from ..plot import plot_histograms
    from ..stats import DatasetStats

    plot_histograms(DatasetStats.load(stats_file), output, log=log)
    out.print(f"wrote {escape(str(output))}", soft_wrap=True)


@app.command()
@reports_errors
def advise(stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'.")) -> None:
    """Recommend a normalization for the dataset, with the numbers behind each advice."""
    from ..stats import DatasetStats
    from .report import print_advice

    print_advice(out, DatasetStats.load(stats_file))


@app.command()
@reports_errors
def show(stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'.")) -> None:
    """Print a stats file's table again (raw units and the [0, 1] scale)."""
    from ..stats import DatasetStats
    from .report import print_stats

    print_stats(out, DatasetStats.load(stats_file))
