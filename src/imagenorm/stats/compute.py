"""compute_stats: the one entry point for measuring a dataset."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..audit import flag_outliers
from ..errors import EmptyDatasetError, ImagenormError, display_path
from ..masks import MaskSpec
from ..readers import DEFAULT_MAX_PIXELS, ReadOptions
from ..sources import source_root
from . import accumulate, distributed
from .accumulate import Job, NonFinitePolicy, OnError
from .checkpoint import Checkpoint
from .items import FileItems, as_item_source
from .result import DatasetStats, coarse_histograms, float_percentiles_from
from .state import FloatMoments


def compute_stats(
    source: Any,
    *,
    workers: int = 0,
    on_error: OnError = "fail",
    nonfinite: NonFinitePolicy = "fail",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    alpha: str = "drop",
    convert: str | None = None,
    percentiles: bool = True,
    mask: str | None = None,
    mask_dir: str | None = None,
    dicom_values: str = "modality",
    monochrome1: str = "keep",
    nifti_4d: str = "channels",
    audit: bool = False,
    float_percentiles: str = "exact",
    dicom_series: bool = True,
    distributed: bool = False,
    group=None,
    timeout: float | None = 300.0,
    checkpoint: str | None = None,
    checkpoint_every: int = 1000,
    checkpoint_seconds: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> DatasetStats:
    """Measure per-channel and pooled statistics of every pixel of ``source``.

    Args:
        source: a folder, glob, image file, ``.txt`` list of paths, list of paths,
            map-style Dataset (items: tensor, array, PIL image, or ``(image, label)``),
            a tensor (``(B, C, H, W)`` or one image), or a numpy array.
        workers: processes that decode and reduce (0: this process only).
        on_error: ``"fail"`` raises at the first bad image; ``"skip"`` records it in
            ``DatasetStats.skipped`` and goes on.
        nonfinite: ``"fail"`` treats NaN/Inf in float images as bad input;
            ``"ignore"`` leaves them out of every statistic and counts them.
        max_pixels: images with more pixels are refused before decoding (None: no limit).
        alpha: ``"drop"`` or ``"keep"`` an alpha channel.
        convert: ``"gray"`` or ``"rgb"`` to bring every image to one channel layout.
        percentiles: False skips the second pass that float data need for percentiles.
        mask: count only foreground voxels: ``"nonzero"`` or ``"threshold:>-500"`` (>=, <, <=).
        mask_dir: count only voxels inside a mask file per image, at the image's relative path.
        dicom_values: ``"modality"`` (rescale applied: CT in HU) or ``"stored"``.
        monochrome1: MONOCHROME1 DICOM images ``"keep"`` their values or are ``"invert"``-ed.
        nifti_4d: the 4th axis of NIfTI volumes as ``"channels"`` or ``"pooled"`` into one.
        float_percentiles: for float data, ``"exact"`` (a third pass collects the values in
            the histogram bins that hold the target ranks: numpy's values exactly) or
            ``"histogram"`` (two passes; error at most one of 65,536 bins of the range).
        dicom_series: the slices of one DICOM series (a folder, one SeriesInstanceUID) are
            one image, for per-image statistics and the audit (not with ``mask_dir``).
        distributed: inside an initialized torch.distributed process group, each rank
            measures its shard (items ``rank, rank + world, ...``) and the ranks combine
            their statistics; every rank returns the same result (``group``: another group).
        timeout: seconds a rank waits for the others before naming the ranks missing.
        checkpoint: a file where the first pass saves its merged state every
            ``checkpoint_every`` items or ``checkpoint_seconds`` (at the end of a chunk of at
            most 64 items); the same call after an
            interruption resumes from it and gives exactly the uninterrupted result (it is
            removed at the end; under torch.distributed each rank keeps ``FILE.rank<r>``).
        audit: keep a row of statistics per image (``DatasetStats.audit_rows``) and flag
            the images that stand out (``DatasetStats.flagged``, saved in the stats file).
        progress: called with the number of items done after each chunk.

    Returns:
        The dataset's statistics. Integer data are exact; float data use float64
        moments (Chan's merge) and percentiles from a second pass (see
        ``DatasetStats.percentile_method``).

    Raises:
        ReadError: a bad image under ``on_error="fail"``, naming it and why.
        EmptyDatasetError: no images, or none readable.

    Example:
        >>> import torch, imagenorm
        >>> batch = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
        >>> stats = imagenorm.compute_stats(batch)
        >>> stats.files, stats.pooled.count, stats.pooled.max
        (2, 96, 95.0)
    """
    items, ignored = as_item_source(source, dicom_series=dicom_series and mask_dir is None)
    if len(items) == 0:
        raise EmptyDatasetError("the dataset is empty")
    options = ReadOptions(max_pixels=max_pixels, alpha=alpha, convert=convert, dicom_values=dicom_values,
                          monochrome1=monochrome1, nifti_4d=nifti_4d)
    runner = Ranks(group, timeout) if distributed or group is not None else OneProcess()
    layout, first_name = runner.probe(items, options, on_error)
    mask_spec = _mask_spec(mask, mask_dir, items, source)
    job = Job(runner.shard(items), options, layout, first_name, on_error=on_error, nonfinite=nonfinite,
              mask=mask_spec, audit=audit)
    accumulate.prepare(job)
    saver = None
    if checkpoint is not None:
        path = f"{checkpoint}.rank{runner.rank}" if isinstance(runner, Ranks) else checkpoint
        saver = Checkpoint(os.fspath(path), every_items=checkpoint_every, every_seconds=checkpoint_seconds)
    first_pass = runner.run(job, workers, progress, saver)
    if first_pass.files == 0:
        raise EmptyDatasetError(f"all {len(items)} images were skipped; the first: {first_pass.skipped[0][1]}: {first_pass.skipped[0][2]}")
    if isinstance(first_pass.state, FloatMoments) and first_pass.state.count.min() == 0:
        raise EmptyDatasetError("a channel has no finite value at all")
    dtype, channel_names = layout
    if float_percentiles not in ("exact", "histogram"):
        raise ValueError(f"float_percentiles must be 'exact' or 'histogram', got {float_percentiles!r}")
    percentile_values = percentile_error = float_histograms = None
    if isinstance(first_pass.state, FloatMoments) and percentiles:
        second_job = accumulate.percentile_job(job, first_pass)
        histogram = runner.run(second_job, workers).state
        percentile_values, percentile_error = float_percentiles_from(histogram)
        float_histograms = coarse_histograms(histogram)
        if float_percentiles == "exact":
            brackets = runner.run(accumulate.bracket_job(second_job, histogram), workers).state
            for row, exact in enumerate(brackets.exact_rows()):
                if exact:
                    percentile_values[row], percentile_error[row] = brackets.percentiles(row), 0.0
    result = DatasetStats(
        dtype=dtype,
        channel_names=channel_names,
        state=first_pass.state,
        files=first_pass.files,
        spread=first_pass.spread,
        skipped=[{"path": name, "reason": reason} for _, name, reason in sorted(first_pass.skipped)],
        ignored=ignored,
        alpha=_alpha_record(options.alpha, channel_names),
        palette_expanded=first_pass.palette,
        significant_bits=_fewer_bits(dtype, first_pass.bits),
        float_percentiles=percentile_values,
        percentile_error=percentile_error,
        float_histograms=float_histograms,
        created_by=f"imagenorm {__version__}",
        mask=None if mask_spec is None else mask_spec.describe(),
        notes=sorted(first_pass.notes),
    )
    if audit:
        result.audit_rows = first_pass.rows
        result.flagged = flag_outliers(first_pass.rows, result)
    if saver is not None:
        saver.remove()
    return result


class OneProcess:
    """Measure everything here (with optional worker processes)."""

    def shard(self, items):
        return items

    def probe(self, items, options, on_error):
        return accumulate.probe_layout(items, options, on_error)

    def run(self, job, workers, progress=None, checkpoint=None):
        return accumulate.run(job, workers, progress, checkpoint)


class Ranks(OneProcess):
    """Measure this rank's shard; combine with the other ranks after each pass."""

    def __init__(self, group, timeout: float | None) -> None:
        import torch.distributed as dist

        self.group = distributed.process_group(group)
        self.timeout = timeout
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)

    def shard(self, items):
        return distributed.ShardItems(items, self.rank, self.world)

    def probe(self, items, options, on_error):
        """Rank 0 finds the layout of the first readable item; every rank learns it (or its error)."""
        distributed.check_ranks(self.group, self.timeout)
        outcome = None
        if self.rank == 0:
            try:
                outcome = ("layout", accumulate.probe_layout(items, options, on_error))
            except ImagenormError as error:
                outcome = ("error", error)
        kind, value = distributed.broadcast(outcome, self.group)
        if kind == "error":
            raise value
        return value

    def run(self, job, workers, progress=None, checkpoint=None):
        failure = None
        try:
            local = accumulate.run(job, workers, progress, checkpoint)
        except ImagenormError as error:
            local, failure = None, error
        distributed.check_ranks(self.group, self.timeout)
        failures = distributed.gather(None if failure is None else str(failure), self.group)
        for rank, message in enumerate(failures):
            if message is not None:
                if rank == self.rank:
                    raise failure
                raise ImagenormError(f"rank {rank} failed: {message}")
        return distributed.reduce_partial(local, self.group)


def _mask_spec(mask: str | None, mask_dir: str | None, items, source) -> MaskSpec | None:
    if mask is not None and mask_dir is not None:
        raise ValueError("give mask or mask_dir, not both")
    if mask is not None:
        return MaskSpec.parse(mask)
    if mask_dir is None:
        return None
    if not isinstance(items, FileItems):
        raise ImagenormError("mask_dir needs image files (their relative paths name the masks)")
    if not os.path.isdir(mask_dir):
        raise ImagenormError(f"{display_path(mask_dir)}: no such mask folder")
    return MaskSpec.files(mask_dir, source_root(items.paths, source))


def _fewer_bits(dtype: str, bits: int) -> int | None:
    """The declared significant bits if every image has fewer than its integer dtype holds."""
    kind = np.dtype(dtype)
    return bits if kind.kind in "ui" and 0 < bits < kind.itemsize * 8 else None


def _alpha_record(policy: str, channel_names: tuple[str, ...]) -> str:
    if "alpha" in channel_names:
        return "kept"
    return "dropped where present" if policy == "drop" else "none present"
