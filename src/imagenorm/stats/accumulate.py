"""Accumulate partial statistics over a source, in this process or in worker processes.

Workers decode their share of the items and return only :class:`PartialStats`
(histograms or moments), never pixels. Chunks are merged in order, so integer results
are identical for any worker count and float results differ by rounding at most.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Literal

import numpy as np

from ..errors import EmptyDatasetError, ImagenormError, ReadError
from ..audit import image_row
from ..masks import MaskSpec
from ..readers import DecodedImage, ReadOptions
from . import kernels
from .items import ItemSource
from .state import HISTOGRAM_DTYPES, KERNEL_DTYPES, BracketValues, FloatHistogram, FloatMoments, ImageSpread, IntegerHistogram, RangeTooWide

OnError = Literal["fail", "skip"]
NonFinitePolicy = Literal["fail", "ignore"]
Layout = tuple[str, tuple[str, ...]]


@dataclass
class PartialStats:
    """Statistics of some items: their state, how many, and which were skipped and why."""

    state: IntegerHistogram | FloatMoments | FloatHistogram
    spread: ImageSpread | None = None  # per-image means and stds (first pass only)
    files: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (index, name, reason)
    palette: bool = False  # any palette image expanded
    bits: int = 0  # the most significant bits any image declared or used
    notes: frozenset[str] = frozenset()  # what readers decided (e.g. MONOCHROME1 policy)
    rows: list[dict] = field(default_factory=list)  # per-image audit rows, in item order

    def merge(self, other: "PartialStats") -> "PartialStats":
        spread = None if self.spread is None or other.spread is None else self.spread.merge(other.spread)
        return PartialStats(
            state=self.state.merge(other.state),
            spread=spread,
            files=self.files + other.files,
            skipped=self.skipped + other.skipped,
            palette=self.palette or other.palette,
            bits=max(self.bits, other.bits),
            notes=self.notes | other.notes,
            rows=self.rows + other.rows,
        )


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to reduce a range of items (small and picklable)."""

    items: ItemSource
    options: ReadOptions
    layout: Layout
    first_name: str
    on_error: OnError = "fail"
    nonfinite: NonFinitePolicy = "fail"
    percentile_pass: FloatHistogram | None = None  # set for the second pass over float data
    bracket_pass: BracketValues | None = None  # set for the third pass (exact float percentiles)
    exclude: frozenset[int] = frozenset()
    mask: MaskSpec | None = None  # count only the voxels inside it
    audit: bool = False  # collect a row of statistics per image

    def empty_state(self):
        dtype, channels = self.layout
        if self.bracket_pass is not None:
            return self.bracket_pass.empty()
        if self.percentile_pass is not None:
            return FloatHistogram(self.percentile_pass.low, self.percentile_pass.high)
        if dtype in HISTOGRAM_DTYPES:
            return IntegerHistogram.empty(dtype, len(channels))
        return FloatMoments.empty(len(channels))

    def empty_partial(self) -> PartialStats:
        later_pass = self.percentile_pass is not None or self.bracket_pass is not None
        spread = None if later_pass else ImageSpread.empty(len(self.layout[1]))
        return PartialStats(self.empty_state(), spread)


def accumulate_range(job: Job, start: int, stop: int) -> PartialStats:
    """Reduce items ``start..stop-1`` of ``job`` to one PartialStats."""
    partial = job.empty_partial()
    image_means, image_stds = [], []
    for index in range(start, stop):
        if job.items.global_index(index) in job.exclude:
            continue
        try:
            image = job.items.load(index, job.options)
            check_layout(job, index, image)
            pixels = image.pixels if job.mask is None else job.mask.select(image.pixels, job.items.path(index) or "")
            check_finite(job, index, pixels)
        except ReadError as error:
            if job.on_error == "fail":
                raise
            partial.skipped.append((job.items.global_index(index), job.items.name(index), error.reason))
            continue
        try:
            image_moments = partial.state.update(pixels)
        except RangeTooWide:  # 32-bit values too spread for bins: continue with exact-merge moments
            partial.state = partial.state.to_moments()
            image_moments = partial.state.update(pixels)
        if image_moments is not None:
            image_means.append(image_moments[0])
            image_stds.append(image_moments[1])
        partial.files += 1
        partial.palette |= image.palette
        partial.bits = max(partial.bits, image.bits)
        if image.notes:
            partial.notes |= frozenset(image.notes)
        if job.audit and partial.spread is not None:
            partial.rows.append(_audit_row(job, index, image, pixels))
        del image, pixels  # free the pixels before the next decode, so their memory is reused
    if partial.spread is not None:
        partial.spread = ImageSpread.of_images(image_means, image_stds, len(job.layout[1]))
    return partial


def _audit_row(job: Job, index: int, image: DecodedImage, pixels: np.ndarray) -> dict:
    if pixels.dtype.kind == "f":
        nonfinite = (~np.isfinite(pixels.reshape(pixels.shape[0], -1))).sum(axis=1)
    else:
        nonfinite = np.zeros(pixels.shape[0], np.int64)
    return image_row(job.items.name(index), image.pixels.shape[1:], image.pixels.dtype.name, image.spacing,
                     image.channels, pixels, nonfinite)


def check_layout(job: Job, index: int, image: DecodedImage) -> None:
    """Every image must have the dtype and channels of the first one."""
    if image.layout == job.layout:
        return
    dtype, channels = image.layout
    want_dtype, want_channels = job.layout
    if channels != want_channels:
        what = f"{len(channels)} channel(s) ({', '.join(channels)}), but {job.first_name} has {len(want_channels)} ({', '.join(want_channels)})"
        hint = "; pass --convert gray or --convert rgb to convert every image"
    else:
        what = f"dtype {dtype}, but {job.first_name} has {want_dtype}"
        hint = "; measure images of each bit depth separately"
    raise ReadError(job.items.name(index), f"has {what}{hint}")


def check_finite(job: Job, index: int, pixels: np.ndarray) -> None:
    """Under the "fail" policy, NaN or Inf in a float image is an error naming the counts."""
    if job.nonfinite != "fail" or pixels.dtype.kind != "f":
        return
    if np.isfinite(pixels).all():
        return
    nan = int(np.isnan(pixels).sum())
    inf = int(np.isinf(pixels).sum())
    raise ReadError(
        job.items.name(index),
        f"contains {nan} NaN and {inf} infinite values; pass --nonfinite ignore to leave them out of the statistics",
    )


def probe_layout(items: ItemSource, options: ReadOptions, on_error: OnError) -> tuple[Layout, str]:
    """Layout of the first readable item (the one every other item must match)."""
    for index in range(len(items)):
        try:
            return items.probe(index, options).layout, items.name(index)
        except ReadError:
            if on_error == "fail":
                raise
    raise EmptyDatasetError(f"every one of the {len(items)} images failed to read")


def run(job: Job, workers: int, progress: Callable[[int], None] | None = None, checkpoint=None) -> PartialStats:
    """Reduce all items of ``job``, with ``workers`` processes (0: in this process).

    With a :class:`~imagenorm.stats.checkpoint.Checkpoint`, the merged state is saved as the
    chunks complete, and a run of the same job resumes after the chunks already counted.
    """
    total = len(job.items)
    chunks = list(chunk_ranges(total, workers))
    merged, done = job.empty_partial(), 0
    if checkpoint is not None:
        from .checkpoint import run_signature

        signature = run_signature(job, chunks)
        resumed = checkpoint.load(signature)
        if resumed is not None:
            merged, done = resumed
            if progress is not None:
                progress(sum(stop - start for start, stop in chunks[:done]))
    for number, (partial, size) in enumerate(_reduce_chunks(job, chunks[done:], workers), start=done + 1):
        merged = merged.merge(partial)
        if progress is not None:
            progress(size)
        if checkpoint is not None and checkpoint.due(size) and number < len(chunks):
            checkpoint.save(merged, number, signature)
    return merged


def chunk_ranges(total: int, workers: int) -> Iterator[tuple[int, int]]:
    """Contiguous ranges: several per worker for load balance, at most 64 items each."""
    size = max(1, min(64, total // max(1, workers * 8)))
    for start in range(0, total, size):
        yield start, min(total, start + size)


def _reduce_chunks(job: Job, chunks, workers: int):
    if workers <= 0 or len(chunks) == 1:
        for start, stop in chunks:
            yield accumulate_range(job, start, stop), stop - start
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = context.Pool(workers, initializer=_init_worker, initargs=(job,))
    try:
        for (start, stop), partial in zip(chunks, pool.imap(_reduce_in_worker, chunks)):
            yield partial, stop - start
    finally:
        pool.terminate()
        pool.join()


_worker_job: Job | None = None


def _init_worker(job: Job) -> None:
    global _worker_job
    _worker_job = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _reduce_in_worker(chunk: tuple[int, int]) -> PartialStats:
    return accumulate_range(_worker_job, *chunk)


def bracket_job(job: Job, histogram: FloatHistogram) -> Job:
    """The third pass over float data: collect the values in the bins holding the target ranks."""
    return replace(job, percentile_pass=None, bracket_pass=BracketValues.for_histogram(histogram))


def prepare(job: Job) -> None:
    """Compile the histogram kernel in this process, so forked workers inherit it."""
    dtype, channels = job.layout
    if dtype in KERNEL_DTYPES:
        kernels.warm_up(np.dtype(dtype), len(channels))


def percentile_job(job: Job, first_pass: PartialStats) -> Job:
    """The second pass over float data: bin every finite value between min and max."""
    if not isinstance(first_pass.state, FloatMoments):
        raise ImagenormError("the percentile pass is only for float data")
    return replace(
        job,
        percentile_pass=FloatHistogram.for_moments(first_pass.state),
        exclude=frozenset(index for index, _, _ in first_pass.skipped),
        on_error="fail",
    )
