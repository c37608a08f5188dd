"""Check that normalized data is what was asked for: mean 0 and std 1, or inside the range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .containers import Selection
from .masks import MaskSpec
from .methods import MethodOptions, NormalizedItems, build_transform, read_options_for
from .options import OptionError, ReadOptions, check_choice
from .sources import PathSource, StreamSource, source_root
from .stats import compute_stats
from .stats.items import FileItems, as_item_source
from .stats.result import DatasetStats
from .stats.summary import Summary


@dataclass(frozen=True)
class ChannelCheck:
    """What came out for one channel (or all pooled), against the promise."""

    name: str
    summary: Summary
    promise: str
    passed: bool
    detail: str = ""  # where it missed most, when that says more than the numbers


@dataclass(frozen=True)
class CheckReport:
    method: str
    tolerance: float
    channels: list[ChannelCheck]
    files: int
    skipped: list[dict[str, str]]
    read_options: ReadOptions

    @property
    def passed(self) -> bool:
        return all(channel.passed for channel in self.channels)


def check_normalization(
    source: PathSource,
    stats: DatasetStats | None,
    options: MethodOptions,
    *,
    tolerance: float = 0.05,
    workers: int = 0,
    on_error: str = "fail",
    read_options: ReadOptions | None = None,
    column: str | None = None,
    member: str | None = None,
    split: str | None = None,
    **given: Any,
) -> CheckReport:
    """Normalize every image of ``source`` as ``stats`` were measured and measure the result exactly.

    The images are read with the stats' recorded read options (``given`` options may repeat
    them, never change them); with a foreground mask, every voxel is normalized and the
    foreground is measured. z-score promises mean 0 and std 1 (each within ``tolerance``);
    the range methods promise values inside ``out_range`` (within ``tolerance`` times its
    width). Statistics of another dataset, or a shifted test set, show up as a miss.
    Histogram standardization maps every image's landmarks onto the standard ones by
    construction; its check finds where that cannot hold: tied landmarks (a background or
    saturation filling several percentiles, or landmarks closer than ``eps``) that flatten
    segments, within ``tolerance`` times the standard scale's span.

    Raises:
        OptionConflictError: a given read option differs from the recorded one.
    """
    check_choice("on_error", on_error)
    reading = read_options_for(stats, read_options, **given)
    items, _ = as_item_source(source, reading.groups_series, Selection(column, member, split))
    if isinstance(items, StreamSource):
        raise OptionError("check needs a source with a length; for a streamed dataset, check a map-style copy "
                          "(datasets: load it without streaming=True)")
    mask = MaskSpec.from_options(reading, source_root(items.paths, source) if isinstance(items, FileItems) else None)
    transform = build_transform(stats, options, mask=mask if options.per_image else None)
    normalized = NormalizedItems(items, transform, reading, mask)
    landmarks = transform.spec if options.method == "histogram" else False
    result = compute_stats(normalized, workers=workers, on_error=on_error, nonfinite="ignore", percentiles=False,
                           landmarks=landmarks)
    rows = [("pooled", result.pooled)] if options.pooled else list(zip(result.channel_names, result.channels))
    if landmarks:
        judged = [_judge_landmarks(name, summary, result, transform, group, tolerance)
                  for group, (name, summary) in enumerate(rows)]
    else:
        judged = [_judge(name, summary, options, tolerance) for name, summary in rows]
    return CheckReport(
        method=options.describe(),
        tolerance=tolerance,
        channels=judged,
        files=result.files,
        skipped=result.skipped,
        read_options=reading,
    )


def _judge_landmarks(name: str, summary: Summary, result: DatasetStats, transform, group: int,
                     tolerance: float) -> ChannelCheck:
    """Histogram standardization promises every image's landmarks on the standard ones (within
    ``tolerance`` times the standard scale's span)."""
    spec = transform.spec
    standard = transform.standard[group].numpy()[spec.mapped_index]
    channel = None if not transform.channel_wise and result.landmarks.channels > 1 else group
    found = result.landmarks.group(channel)[:, spec.mapped_index]
    slack = tolerance * (standard[-1] - standard[0])
    distance = np.abs(found - standard)
    miss = float(np.nanmax(distance)) if np.isfinite(distance).any() else 0.0
    detail = ""
    if miss > 0:
        image, landmark = np.unravel_index(np.nanargmax(distance), found.shape)
        detail = (f"{name}: the farthest landmark is {miss:.3g} off, at p{spec.mapped[landmark]:g} of "
                  f"{result.landmarks.names[image]}")
    return ChannelCheck(name, summary, f"landmarks on the standard ± {slack:g}", miss <= slack, detail)


def _judge(name: str, summary: Summary, options: MethodOptions, tolerance: float) -> ChannelCheck:
    if options.method == "zscore":
        passed = abs(summary.mean) <= tolerance and abs(summary.std - 1) <= tolerance
        return ChannelCheck(name, summary, f"mean 0 ± {tolerance:g}, std 1 ± {tolerance:g}", passed)
    low, high = sorted(options.out_range)
    slack = tolerance * (high - low)
    passed = summary.min >= low - slack and summary.max <= high + slack
    return ChannelCheck(name, summary, f"within [{low:g}, {high:g}] ± {slack:g}", passed)
