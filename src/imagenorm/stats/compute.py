"""compute_stats: the one entry point for measuring a dataset."""

from __future__ import annotations

import os
from typing import Any, Callable

from ..atomic import check_target
from ..audit import flag_outliers
from ..errors import EmptyDatasetError, ImagenormError, display_path, warn
from ..masks import MaskSpec
from ..options import ReadOptions, check_choice, OptionError
from ..sources import StreamSource, source_root
from ..version import __version__
from . import accumulate, distributed
from .accumulate import Job
from .checkpoint import Checkpoint
from .items import FileItems, ItemSource, as_item_source
from ..containers import Selection
from .landmarks import DegenerateLandmarksError, ImageLandmarks, LandmarkSpec
from .measurement import Measurement
from .result import DatasetStats, coarse_histograms, float_percentiles_from
from .state import common_dtype


def compute_stats(
    source: Any,
    read_options: ReadOptions | None = None,
    *,
    workers: int = 0,
    on_error: str = "fail",
    audit: bool = False,
    landmarks: bool | LandmarkSpec = False,
    percentiles: bool = True,
    float_percentiles: str = "exact",
    distributed: bool = False,
    group=None,
    timeout: float | None = 300.0,
    checkpoint: str | os.PathLike | Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
    column: str | None = None,
    member: str | None = None,
    split: str | None = None,
    **options: Any,
) -> DatasetStats:
    """Measure per-channel and pooled statistics of every pixel of ``source``.

    Args:
        source: a folder, glob, image file, ``.txt`` list of paths, list of paths,
            tar shards (WebDataset; braces expand), zip archives, parquet or Arrow files,
            a ``save_to_disk`` folder, URLs (fsspec), a Hugging Face ``Dataset``,
            ``DatasetDict`` or ``IterableDataset``, a map-style Dataset (items: tensor,
            array, PIL image, or ``(image, label)``), a tensor (``(B, C, H, W)`` or one
            image), or a numpy array.
        read_options: how to read the pixels (:class:`~imagenorm.options.ReadOptions`);
            its fields may also be given as keywords (``alpha="keep"``, ``mask="nonzero"``,
            ``dicom_values="stored"``, ``mixed_depth="scale"``, ...). They are recorded
            in the result, so that transforms, ``check`` and ``apply`` read the same way.
        workers: processes that decode and reduce (0: this process only).
        on_error: ``"fail"`` raises at the first bad image; ``"skip"`` records it in
            ``DatasetStats.skipped`` and goes on.
        audit: keep a row of statistics per image (``DatasetStats.audit_rows``) and flag
            the images that stand out (``DatasetStats.flagged``, saved in the stats file).
        landmarks: record each image's histogram landmarks (``True``: TorchIO's percentiles,
            or a :class:`~imagenorm.stats.landmarks.LandmarkSpec`) and learn the standard
            scale of Nyúl standardization (``DatasetStats.landmarks``; see
            :class:`~imagenorm.HistogramStandardize`). Same pass, inside the mask.
        percentiles: False skips the passes that float data need for percentiles.
        float_percentiles: for float data, ``"exact"`` (a third pass collects the values in
            the histogram bins that hold the target ranks: numpy's values exactly) or
            ``"histogram"`` (two passes; error at most one of 65,536 bins of the range).
        distributed: inside an initialized torch.distributed process group, each rank
            measures its shard (items ``rank, rank + world, ...``) and the ranks combine
            their statistics; every rank returns the same result (``group``: another group).
        timeout: seconds a rank waits for the others before naming the ranks missing.
        checkpoint: a file (or a :class:`~imagenorm.stats.checkpoint.Checkpoint` saying how
            often) where the first pass saves its merged state; the same call after an
            interruption resumes from it and gives exactly the uninterrupted result (it is
            removed at the end; under torch.distributed each rank keeps ``FILE.rank<r>``).
        progress: called with the number of items done after each chunk.
        column: the image column of parquet/Arrow files and Hugging Face datasets (default:
            the only image column).
        member: the member of each WebDataset sample to measure, by extension (``"seg.png"``;
            default: the sample's only image).
        split: the split of a ``DatasetDict`` or of a folder of splits (default ``"train"``).

    Returns:
        The dataset's statistics. Integer data are exact; float data use float64
        moments (Chan's merge) and percentiles from later passes (see
        ``DatasetStats.percentile_method``).

    Raises:
        OptionError: an option is unknown or has a value outside its choices (before any
            file is read).
        ReadError: a bad image under ``on_error="fail"``, naming it and why.
        EmptyDatasetError: no images, or none readable.

    Example:
        >>> import torch, imagenorm
        >>> batch = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
        >>> stats = imagenorm.compute_stats(batch)
        >>> stats.files, stats.pooled.count, stats.pooled.max
        (2, 96, 95.0)
    """
    read_options = resolve_read_options(read_options, options)
    check_choice("on_error", on_error)
    check_choice("float_percentiles", float_percentiles)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise OptionError(f"workers must be a non-negative integer, got {workers!r}")
    items, ignored = as_item_source(source, read_options.groups_series, Selection(column, member, split))
    streamed = isinstance(items, StreamSource)  # a streamed dataset: no length, read in order
    if not streamed and len(items) == 0:
        raise EmptyDatasetError("the dataset is empty")
    if streamed and checkpoint is not None:
        raise OptionError("checkpoint needs a source with a length (files, shards, a map-style dataset), not a stream")
    mask = MaskSpec.from_options(read_options, source_root(items.paths, source) if isinstance(items, FileItems) else None)
    if mask is not None and mask.kind == "folder":
        _check_mask_files(mask, items, read_options)
    runner = Ranks(group, timeout) if distributed or group is not None else OneProcess()
    layout, first_name = runner.probe(items, read_options, on_error)
    spec = _landmark_spec(landmarks)
    job = Job(runner.shard(items), read_options, layout, first_name, on_error=on_error, mask=mask, audit=audit,
              landmarks=spec)
    accumulate.prepare(job)
    saver = _checkpoint(checkpoint, runner)
    if saver is not None:
        check_target(saver.path, regular=True)
    first_pass = runner.run(job, workers, progress, saver)
    _check_counted(first_pass, first_pass.files + len(first_pass.skipped))
    if spec is not None:
        first_pass.landmarks = _learned(first_pass.landmarks)
    float_results = _float_percentiles(runner, job, first_pass, workers, float_percentiles) if (
        percentiles and not first_pass.state.exact) else {}
    result = DatasetStats(
        dtype=_result_dtype(first_pass, job),
        channel_names=layout.channels,
        measurement=first_pass,
        read_options=read_options,
        ignored=ignored,
        hidden=items.hidden,
        alpha=_alpha_record(read_options.alpha, layout.channels),
        created_by=f"imagenorm {__version__}",
        **float_results,
    )
    if audit:
        result.audit_rows = first_pass.rows
        result.flagged = flag_outliers(first_pass.rows, result)
    if saver is not None:
        saver.remove()
    return result


def resolve_read_options(read_options: ReadOptions | None, given: dict[str, Any]) -> ReadOptions:
    """``read_options`` and keyword options as one validated ReadOptions (a keyword may repeat a
    field of ``read_options``, not change it)."""
    if read_options is None:
        return ReadOptions.from_keywords(**given)
    if not isinstance(read_options, ReadOptions):
        raise OptionError(f"read_options must be a ReadOptions, got {type(read_options).__name__}")
    return read_options.with_given("read_options", recorded_as="has", **given)


def _check_mask_files(mask: MaskSpec, items: ItemSource, read_options: ReadOptions) -> None:
    """Mask files name single files: several nnU-Net channel files of one case are not one
    channel, and DICOM slices of one folder are measured one by one (said, not silent)."""
    pooled = mask.nnunet_channels(items.paths)
    if pooled:
        case, channels = next(iter(pooled.items()))
        folder, name = os.path.split(case)
        raise OptionError(f"{display_path(case)}: nnU-Net channel files _{' and _'.join(channels)} of one case would be "
                          f"measured as one channel; measure each channel apart, e.g. "
                          f"'{display_path(os.path.join(folder, '*_' + channels[0]))}.*'")
    from ..readers import dicom, reader_for

    folders = [os.path.dirname(path) for path in items.paths if reader_for(path) is dicom.read]
    if read_options.dicom_series and len(folders) > len(set(folders)):
        warn("with mask files (mask_dir=) each DICOM file is its own image, its mask file named like the slice: "
             "per-image statistics, landmarks and audit rows are per slice, not per series")


def _landmark_spec(landmarks: bool | LandmarkSpec) -> LandmarkSpec | None:
    if isinstance(landmarks, LandmarkSpec):
        return landmarks
    if not isinstance(landmarks, bool):
        raise OptionError(f"landmarks must be True, False or a LandmarkSpec, got {landmarks!r}")
    return LandmarkSpec() if landmarks else None


def _learned(landmarks: ImageLandmarks) -> ImageLandmarks:
    """The images' landmarks in item order; a warning says which images the standard scale leaves out."""
    ordered = landmarks.in_item_order()
    try:
        ordered.standard(channel_wise=True)
        if ordered.channels > 1:
            ordered.standard(channel_wise=False, quiet=True)
    except DegenerateLandmarksError as error:
        warn(str(error))
    return ordered


def _checkpoint(checkpoint, runner) -> Checkpoint | None:
    if checkpoint is None:
        return None
    saver = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(os.fspath(checkpoint))
    if isinstance(runner, Ranks):
        saver = Checkpoint(f"{saver.path}.rank{runner.rank}", saver.every_items, saver.every_seconds)
    return saver


def _check_counted(first_pass: Measurement, items: int) -> None:
    if first_pass.files == 0:
        _, name, reason = first_pass.skipped[0]
        raise EmptyDatasetError(f"all {items} images were skipped; the first: {name}: {reason}")
    if not first_pass.state.exact and first_pass.state.as_moments().count.min() == 0:
        raise EmptyDatasetError("a channel has no finite value at all")


def _float_percentiles(runner, job: Job, first_pass: Measurement, workers: int, mode: str) -> dict[str, Any]:
    """The second (and for ``mode="exact"`` third) pass over float data."""
    second_job = accumulate.percentile_job(job, first_pass)
    histogram = runner.run(second_job, workers).state
    values, errors = float_percentiles_from(histogram)
    if mode == "exact":
        brackets = runner.run(accumulate.bracket_job(second_job, histogram), workers).state
        for row, exact in enumerate(brackets.exact_rows()):
            if exact:
                values[row], errors[row] = brackets.percentiles(row), 0.0
    return dict(float_percentiles=values, percentile_error=errors, float_histograms=coarse_histograms(histogram))


def _result_dtype(first_pass: Measurement, job: Job) -> str:
    """The dtype the statistics are in: the images', their common type, or float64 in the [0, 1] scale."""
    if first_pass.state.exact:
        return first_pass.state.dtype
    dtypes = (first_pass.dtypes - first_pass.scaled) | ({"float64"} if first_pass.scaled else set())
    return common_dtype(*(dtypes or {job.layout.dtype}))


class OneProcess:
    """Measure everything here (with optional worker processes)."""

    def shard(self, items: ItemSource) -> ItemSource:
        return items

    def probe(self, items, options, on_error):
        return accumulate.probe_layout(items, options, on_error)

    def run(self, job, workers, progress=None, checkpoint=None) -> Measurement:
        return accumulate.run(job, workers, progress, checkpoint)


class Ranks(OneProcess):
    """Measure this rank's shard; combine with the other ranks after each pass."""

    def __init__(self, group, timeout: float | None) -> None:
        import torch.distributed as dist

        self.group = distributed.process_group(group)
        self.timeout = timeout
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)

    def shard(self, items):
        if isinstance(items, StreamSource):
            return items.shard(self.rank, self.world)
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

    def run(self, job, workers, progress=None, checkpoint=None) -> Measurement:
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
        return distributed.reduce_measurement(local, self.group)


def _alpha_record(policy: str, channel_names: tuple[str, ...]) -> str:
    if "alpha" in channel_names:
        return "kept"
    return "dropped where present" if policy == "drop" else "none present"
