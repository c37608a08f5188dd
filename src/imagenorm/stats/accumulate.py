"""Accumulate partial statistics over a source, in this process or in worker processes.

Workers decode their share of the items and return only a :class:`Measurement`
(histograms or moments), never pixels. Chunks are merged in order, so integer results
are identical for any worker count and float results differ by rounding at most.

Images of different dtypes are measured together where their units allow it: values in
physical units (DICOM modality values, NIfTI) and float data are promoted to a common type
(integers stay exact in the widest one; any float makes float64). Integer images in raw
units of different bit depths (or next to float images) are an error, unless
``mixed_depth="scale"`` divides every raw integer image by its dtype's maximum (statistics in
the [0, 1] scale, where float images are taken to be); values in physical units are never
scaled, and never mixed with raw ones (see :func:`~imagenorm.stats.measurement.joinable`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import sys
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Literal, NamedTuple, TypeVar

import numpy as np

from ..errors import EmptyDatasetError, ReadError, warn
from ..audit import image_row
from ..masks import MaskSpec
from ..readers import DecodedImage, ReadOptions, ReusedBuffer
from ..readers.base import dtype_name
from . import kernels
from .float_percentiles import BracketValues, FloatHistogram
from .histogram import KERNEL_DTYPES, IntegerHistogram, RangeTooWide, histogram_moments
from .items import ItemSource
from .landmarks import ImageLandmarks, LandmarkSpec
from ..sources import StreamSource
from .measurement import Measurement, joinable, merged_maximum
from .moments import FloatMoments, ImageSpread
from .state import State

OnError = Literal["fail", "skip"]
T = TypeVar("T")


@dataclass(frozen=True)
class Layout:
    """What the first readable image says every other must share: channels, and dtype and
    units as far as promotion does not join them (see :func:`~imagenorm.stats.measurement.joinable`)."""

    dtype: str
    channels: tuple[str, ...]
    units: str = "raw"
    maximum: int | None = None  # a declared maximum (Netpbm maxval) is part of raw units

    @classmethod
    def of(cls, image: DecodedImage) -> "Layout":
        return cls(dtype_name(image.pixels.dtype), image.channels, image.units, image.maximum)


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to reduce a range of items (small and picklable)."""

    items: ItemSource
    options: ReadOptions
    layout: Layout
    first_name: str
    on_error: OnError = "fail"
    percentile_pass: FloatHistogram | None = None  # set for the second pass over float data
    bracket_pass: BracketValues | None = None  # set for the third pass (exact float percentiles)
    exclude: frozenset[int] = frozenset()
    mask: MaskSpec | None = None  # count only the voxels inside it
    audit: bool = False  # collect a row of statistics per image
    landmarks: LandmarkSpec | None = None  # record each image's histogram landmarks

    @property
    def scaled(self) -> bool:
        """Integer images are divided by their dtype's maximum (``mixed_depth="scale"``)."""
        return self.options.mixed_depth == "scale"

    def empty_state(self):
        if self.bracket_pass is not None:
            return self.bracket_pass.empty()
        if self.percentile_pass is not None:
            return self.percentile_pass.empty()
        channels = len(self.layout.channels)
        if np.dtype(self.layout.dtype).kind in "ui" and not (self.scaled and self.layout.units == "raw"):
            return IntegerHistogram.empty(self.layout.dtype, channels)
        return FloatMoments.empty(channels)

    def empty_measurement(self) -> Measurement:
        later_pass = self.percentile_pass is not None or self.bracket_pass is not None
        if later_pass:
            return Measurement(self.empty_state())
        channels = len(self.layout.channels)
        landmarks = None if self.landmarks is None else ImageLandmarks.empty(self.landmarks, channels)
        return Measurement(self.empty_state(), ImageSpread.empty(channels), landmarks=landmarks)


def accumulate_range(job: Job, start: int, stop: int) -> Measurement:
    """Reduce items ``start..stop-1`` of ``job`` to one Measurement."""
    partial = job.empty_measurement()
    image_means, image_stds = [], []
    buffer = ReusedBuffer() if job.items.only_decodes else contextlib.nullcontext()  # each image is dropped
    # before the next is decoded; a Dataset's own code might keep what it decodes
    for index in range(start, stop):
        if job.items.global_index(index) in job.exclude:
            continue
        try:
            counted = count_slices(job, index, partial.state)
            if counted is None:
                with buffer:  # the load only: a mask file read later gets its own array
                    image = job.items.load(index, job.options)
                check_layout(job, index, image)
                pixels = measured_values(job, index, image)
            else:
                image, pixels = counted.image, counted.image.pixels
        except ReadError as error:
            if job.on_error == "fail":
                raise
            partial.skipped.append((job.items.global_index(index), job.items.name(index), error.reason))
            continue
        if counted is not None:
            partial.state, image_moments = counted.state, counted.moments
        else:
            partial.state = partial.state.accepting(pixels.dtype)
            try:
                image_moments = partial.state.update(pixels)
            except RangeTooWide:  # values too spread for bins: continue with exact-merge moments
                partial.state = partial.state.as_moments()
                image_moments = partial.state.update(pixels)
        if image_moments is not None:
            image_means.append(image_moments[0])
            image_stds.append(image_moments[1])
        partial.files += 1
        partial.dtypes |= {dtype_name(image.pixels.dtype)}
        partial.units |= {image.units}
        partial.voxels += image.pixels.size
        partial.spatial |= {image.pixels.ndim - 1}
        partial.maximum = merged_maximum(partial.maximum, image.maximum or 0)
        if pixels.dtype != image.pixels.dtype:
            partial.scaled |= {dtype_name(image.pixels.dtype)}
        partial.palette |= image.palette
        partial.bits = max(partial.bits, image.bits)
        if image.notes:
            partial.notes |= frozenset(image.notes)
        if job.audit and partial.spread is not None:
            partial.rows.append(_audit_row(job, index, image, pixels))
        if partial.landmarks is not None:
            partial.landmarks.add(job.items.global_index(index), job.items.name(index), pixels)
        del image, pixels  # free the pixels before the next decode, so their memory is reused
    if partial.spread is not None:
        partial.spread = ImageSpread.of_images(image_means, image_stds, len(job.layout.channels))
    return partial


class Counted(NamedTuple):
    """A series counted slice by slice: the state with its counts, its mean and std per channel,
    and the series as one image whose pixels are a stand-in (zero strides, no memory) of the
    volume's shape and dtype, for the bookkeeping."""

    state: State
    moments: tuple[np.ndarray, np.ndarray]
    image: DecodedImage


def count_slices(job: Job, index: int, state) -> Counted | None:
    """Item ``index`` counted slice by slice into ``state``, when it is a series of integer
    slices that nothing needs as one volume (no mask, audit row or scaling); None: load it whole.

    The volume's counts go to a histogram of its own, merged into ``state`` once every slice
    was read (a bad slice leaves ``state`` as it was). Its bins are those ``state.update`` gives
    the whole volume (a kernel dtype's, or the volume's own range), so the counts and the
    volume's mean and std are bit-identical. Float slices (the first one read), slices whose
    dtype changes within the series (a per-slice rescale) and values too spread for bins are
    measured as the whole volume instead, read again.
    """
    if job.mask is not None or job.audit or job.landmarks is not None or job.scaled or state.kind != IntegerHistogram.kind:
        return None
    slices = job.items.slices(index, job.options)
    if slices is None:
        return None
    target = counts = None
    try:
        for image in slices:
            if counts is None:
                check_layout(job, index, image)
                target = state.accepting(image.pixels.dtype)
                if target.kind != IntegerHistogram.kind:
                    return None
                counts = VolumeCounts(target, image.pixels.dtype)
            if image.pixels.dtype != counts.dtype:  # rescaled per slice: the volume, promoted, is measured whole
                return None
            counts.add(image.pixels)
            del image  # free the slice before the next decode
    except RangeTooWide:
        return None
    volume = counts.histogram()
    merged = target.merge(volume)  # moments, where the bins would grow too wide: as state.update does
    stand_in = np.broadcast_to(np.zeros((), counts.dtype), slices.shape)
    return Counted(merged, _volume_moments(volume), slices.volume(stand_in))


class VolumeCounts:
    """One volume's counts, added slice by slice and binned as ``state.update`` bins the whole
    volume: a kernel dtype's bins when the dtypes match (the kernel's banks filled across the
    slices; no per-slice moments), else the volume's own range, grown slice by slice."""

    def __init__(self, state: IntegerHistogram, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.kernel = dtype.name == state.dtype and state.dtype in KERNEL_DTYPES
        if self.kernel:
            self.volume = IntegerHistogram.empty(state.dtype, state.channels)
            self.banks = np.zeros((kernels.BANKS, *self.volume.counts.shape), np.int64)
        else:
            self.volume = IntegerHistogram(state.dtype, np.zeros((state.channels, 0), np.int64), offset=0)

    def add(self, pixels: np.ndarray) -> None:
        """Count one slice (RangeTooWide: the volume's values spread too wide for bins)."""
        if self.kernel:
            kernels.count_values(pixels, self.banks)
        else:
            self.volume.update(pixels)

    def histogram(self) -> IntegerHistogram:
        """The volume's histogram (once, after the last slice)."""
        if self.kernel:
            self.volume.counts += kernels.bins_to_values(self.banks.sum(axis=0), self.dtype)
        return self.volume


def _volume_moments(volume: IntegerHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The volume's per-channel mean and std, as ``state.update`` gives them for the whole volume."""
    if volume.counts.shape[1] == 0:  # no value: an empty volume
        return np.full(volume.channels, np.nan), np.full(volume.channels, np.nan)
    return histogram_moments(volume.counts, volume.values)


def measured_values(job: Job, index: int, image: DecodedImage) -> np.ndarray:
    """The values of ``image`` that count: inside the mask (decided on the values as read),
    in the [0, 1] scale under ``mixed_depth="scale"``, and finite unless told to ignore."""
    pixels = image.pixels if job.mask is None else job.mask.select(image.pixels, job.items.path(index) or "", image.channels)
    if job.scaled and image.units == "raw":  # divided by the declared maximum, else the dtype's
        pixels = pixels.astype(np.float64) / float(image.maximum or np.iinfo(pixels.dtype).max)
    check_finite(job, index, pixels)
    return pixels


def _audit_row(job: Job, index: int, image: DecodedImage, pixels: np.ndarray) -> dict:
    if pixels.dtype.kind == "f":
        nonfinite = (~np.isfinite(pixels.reshape(pixels.shape[0], -1))).sum(axis=1)
    else:
        nonfinite = np.zeros(pixels.shape[0], np.int64)
    return image_row(job.items.name(index), image.pixels.shape[1:], image.pixels.dtype.name, image.spacing,
                     image.channels, pixels, nonfinite)


def check_layout(job: Job, index: int, image: DecodedImage) -> None:
    """Every image must have the channels of the first one, and its dtype unless the units
    allow promotion (see the module docstring)."""
    dtype, channels = image.layout
    want = job.layout
    if channels != want.channels:
        what = f"{len(channels)} channel(s) ({', '.join(channels)}), but {job.first_name} has {len(want.channels)} ({', '.join(want.channels)})"
        raise ReadError(job.items.name(index), f"has {what}; pass convert='gray' or convert='rgb' to convert every image")
    if (dtype, image.units, image.maximum) == (want.dtype, want.units, want.maximum):
        return
    why = joinable(frozenset({image.units, want.units}), frozenset({dtype, want.dtype}), job.scaled)
    if why is None and image.units == want.units == "raw" and image.maximum != want.maximum and not job.scaled:
        why = "raw values of different declared maxima do not share units"
        dtype, want_dtype = f"{dtype} (maxval {image.maximum or 'of the dtype'})", f"{want.dtype} (maxval {want.maximum or 'of the dtype'})"
        raise ReadError(job.items.name(index), f"has {dtype} raw values, but {job.first_name} has {want_dtype} raw values: "
                                               f"{why}; measure them separately, or pass mixed_depth='scale' to measure "
                                               "every image in the [0, 1] scale (each divided by its maximum)")
    if why is None:
        return
    hint = "" if "physical" in why else (
        ", or pass mixed_depth='scale' to measure every image in the [0, 1] scale (each raw integer image divided "
        "by its dtype's maximum)")
    raise ReadError(job.items.name(index), f"has {dtype} {image.units} values, but {job.first_name} has {want.dtype} "
                                           f"{want.units} values: {why}; measure them separately{hint}")


def check_finite(job: Job, index: int, pixels: np.ndarray) -> None:
    """Under the "fail" policy, NaN or Inf in a float image is an error naming the counts."""
    if job.options.nonfinite != "fail" or pixels.dtype.kind != "f":
        return
    if np.isfinite(pixels).all():
        return
    nan = int(np.isnan(pixels).sum())
    inf = int(np.isinf(pixels).sum())
    raise ReadError(
        job.items.name(index),
        f"contains {nan} NaN and {inf} infinite values; pass nonfinite='ignore' to leave them out of the statistics",
    )


def probe_layout(items: ItemSource, options: ReadOptions, on_error: OnError) -> tuple[Layout, str]:
    """Layout of the first readable item (the one every other item must match); of a stream,
    its first readable row."""
    if isinstance(items, StreamSource):
        candidates = ((block, index, block.load) for block in items.blocks() for index in range(len(block)))
    else:
        candidates = ((items, index, items.probe) for index in range(len(items)))
    first = None
    for source, index, read in candidates:
        try:
            return Layout.of(read(index, options)), source.name(index)
        except ReadError as error:
            if on_error == "fail":
                raise
            first = first or error
    if first is None:
        raise EmptyDatasetError("the dataset is empty")
    raise EmptyDatasetError(f"every image failed to read; the first: {first}")


def run(job: Job, workers: int, progress: Callable[[int], None] | None = None, checkpoint=None) -> Measurement:
    """Reduce all items of ``job``, with ``workers`` processes (0: in this process).

    With a :class:`~imagenorm.stats.checkpoint.Checkpoint`, the merged state is saved as the
    chunks complete, and a run of the same job resumes after the chunks already counted.
    A :class:`~imagenorm.sources.StreamSource` (a streamed Hugging Face dataset) is measured block
    by block as it is read (:func:`run_stream`).
    """
    if isinstance(job.items, StreamSource):
        return run_stream(job, workers, progress)
    chunks = plan_chunks(job.items, workers)
    merged, done = job.empty_measurement(), 0
    if checkpoint is not None:
        from .checkpoint import run_signature

        signature = run_signature(job, chunks)
        resumed = checkpoint.load(signature, job.items)
        if resumed is not None:
            merged, done = resumed
            if progress is not None:
                progress(sum(stop - start for start, stop in chunks[:done]))
    for number, (partial, size) in enumerate(_reduce_chunks(job, chunks[done:], workers), start=done + 1):
        merged = merged.merge(partial)
        if progress is not None:
            progress(size)
        if checkpoint is not None and checkpoint.due(size) and number < len(chunks):
            checkpoint.save(merged, number, signature, counted=chunks[number - 1][1])
    return merged


def run_stream(job: Job, workers: int, progress: Callable[[int], None] | None = None) -> Measurement:
    """Reduce a stream's blocks in order; with workers, a few blocks per worker at a time (the
    encoded rows travel to the workers; the stream is never held whole)."""
    merged = job.empty_measurement()
    blocks = job.items.blocks()
    window = max(1, workers) * 4
    pool = None
    if workers > 0:
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        pool = context.Pool(workers)
    try:
        while batch := [replace(job, items=block) for block in itertools.islice(blocks, window)]:
            results = pool.map(_accumulate_block, batch) if pool is not None else map(_accumulate_block, batch)
            for partial, block_job in zip(results, batch):
                merged = merged.merge(partial)
                if progress is not None:
                    progress(len(block_job.items))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return merged


def _accumulate_block(job: Job) -> Measurement:
    return accumulate_range(job, 0, len(job.items))


def plan_chunks(items: ItemSource, workers: int) -> list[tuple[int, int]]:
    """The ranges workers take, in order.

    Without units (files, a Dataset): :func:`chunk_ranges`. With units (tar shards, row groups):
    a unit that is read whole (``items.read_whole``: a parquet row group, a compressed or remote
    shard) stays one range while there are at least as many units as workers, and is cut in as
    many pieces as it needs to give every worker work otherwise (each piece then reads it: said
    with a warning); any other unit is cut into pieces of at most 256 items (for the progress
    and checkpoints; reading part of it costs only that part).
    """
    units = items.units()
    if not units:
        return list(chunk_ranges(len(items), workers))
    few = len(units) < max(1, workers)
    whole = [items.read_whole(start) for start, _ in units]
    if few and any(whole):
        warn(f"{len(units)} shard(s) or row group(s) for {workers} workers: each is split between workers by "
                      "its members, and each worker reads a compressed or remote shard, or a parquet row group, whole")
    share = -(-workers // len(units))  # pieces per unit that give every worker work
    pieces = [(share if few else 1) if read_whole else max(-(-(stop - start) // 256), 4 * share if few else 1)
              for (start, stop), read_whole in zip(units, whole)]
    return [piece for (start, stop), count in zip(units, pieces) for piece in _split(start, stop, count)]


def _split(start: int, stop: int, count: int) -> list[tuple[int, int]]:
    """``start..stop`` in ``count`` contiguous pieces of nearly equal size (none empty)."""
    count = max(1, min(count, stop - start))
    bounds = [start + (stop - start) * part // count for part in range(count + 1)]
    return list(zip(bounds, bounds[1:]))


def chunk_ranges(total: int, workers: int) -> Iterator[tuple[int, int]]:
    """Contiguous ranges: several per worker for load balance, at most 64 items each."""
    size = max(1, min(64, total // max(1, workers * 8)))
    for start in range(0, total, size):
        yield start, min(total, start + size)


def _reduce_chunks(job: Job, chunks, workers: int):
    yield from map_chunks(functools.partial(accumulate_range, job), chunks, workers)


def map_chunks(work: Callable[[int, int], T], chunks: list[tuple[int, int]], workers: int) -> Iterator[tuple[T, int]]:
    """``(work(start, stop), stop - start)`` for each chunk, in order, computed here or by
    ``workers`` processes (``work`` must pickle; it travels once per worker, not per chunk)."""
    if workers <= 0 or len(chunks) <= 1:
        for start, stop in chunks:
            yield work(start, stop), stop - start
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = context.Pool(workers, initializer=_init_worker, initargs=(work,))
    try:
        for (start, stop), result in zip(chunks, pool.imap(_work_in_worker, chunks)):
            yield result, stop - start
    finally:
        pool.terminate()
        pool.join()


_worker_work: Callable | None = None


def _init_worker(work: Callable) -> None:
    global _worker_work
    _worker_work = work


def _work_in_worker(chunk: tuple[int, int]):
    return _worker_work(*chunk)


def bracket_job(job: Job, histogram: FloatHistogram) -> Job:
    """The third pass over float data: collect the values in the bins holding the target ranks."""
    return replace(job, percentile_pass=None, bracket_pass=BracketValues.for_histogram(histogram))


def prepare(job: Job) -> None:
    """Compile the histogram kernel in this process, so forked workers inherit it."""
    if job.layout.dtype in KERNEL_DTYPES:
        kernels.warm_up(np.dtype(job.layout.dtype), len(job.layout.channels))


def percentile_job(job: Job, first_pass: Measurement) -> Job:
    """The second pass over float data: bin every finite value between min and max."""
    return replace(
        job,
        percentile_pass=FloatHistogram.for_moments(first_pass.state),
        exclude=frozenset(index for index, _, _ in first_pass.skipped),
        on_error="fail",
    )
