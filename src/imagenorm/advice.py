"""Advice from the numbers: which normalization fits a dataset, and why.

Example:
    >>> import numpy as np, imagenorm
    >>> pixels = np.arange(1000, dtype=np.uint16).reshape(1, 10, 100)
    >>> pixels[0, 0, 0] = 60000  # one hot pixel
    >>> [a.topic for a in advise(imagenorm.compute_stats(pixels))]
    ['outliers', 'channels', 'memory']
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .stats.result import DatasetStats

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: min or max beyond the 0.5-99.5 percentile range by more than this many times its width means
#: outliers (a Gaussian's extremes lie within about 0.3-0.7 widths of it even for 10^8 samples).
OUTLIER_SPAN = 1.0
#: channel stds that differ by more than this factor need per-channel statistics.
CHANNEL_STD_RATIO = 1.25
#: image means spread over more than this fraction of the pixel std means images differ.
IMAGE_SPREAD = 0.5
#: channel means apart by more than this fraction of the pooled std means channels differ.
CHANNEL_SPREAD = 0.1


@dataclass(frozen=True)
class Advice:
    topic: str  # outliers, images, channels, memory, imagenet
    recommendation: str
    reason: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.recommendation} — {self.reason}"


def advise(stats: DatasetStats, memory_bytes: int | None = None) -> list[Advice]:
    """Recommendations, each with the numbers behind it."""
    found = [_outliers(stats), _images(stats), _channels(stats), _memory(stats, memory_bytes), _imagenet(stats)]
    return [advice for advice in found if advice is not None]


def _outliers(stats: DatasetStats) -> Advice | None:
    worst, name = 0.0, ""
    for channel, summary in zip(stats.channel_names, stats.channels):
        low, high = summary.percentiles.get("0.5"), summary.percentiles.get("99.5")
        if low is None or high is None or high <= low:
            continue
        beyond = max(summary.max - high, low - summary.min) / (high - low)
        if beyond > worst:
            worst, name = beyond, channel
    if worst <= OUTLIER_SPAN:
        return None
    return Advice(
        "outliers",
        "percentile scaling (--method percentile, PercentileScale): clip to the 0.5-99.5 percentiles",
        f"in channel {name} the min or max lies {worst:.1f}x the 0.5-99.5 percentile range beyond it, so min-max "
        "scaling would squeeze most pixels into a narrow band",
    )


def _images(stats: DatasetStats) -> Advice | None:
    if stats.spread is None or stats.spread.means.count[0] < 2:
        return None
    ratios = []
    for channel, summary in enumerate(stats.channels):
        spread = (stats.spread.means.m2[channel] / stats.spread.means.count[channel]) ** 0.5
        ratios.append((spread / summary.std if summary.std > 0 else 0.0, spread, summary.std, stats.channel_names[channel]))
    ratio, spread, std, name = max(ratios)
    if ratio <= IMAGE_SPREAD:
        return None
    volumes = 3 in stats.measurement.spatial and "raw" not in stats.measurement.units  # NIfTI, DICOM volumes
    remedy = ("per-image normalization (--per-image), or for MR from several scanners histogram standardization "
              "(stats --landmarks, then --method histogram)") if volumes else "per-image normalization (--per-image, per_image=True)"
    return Advice(
        "images",
        remedy,
        f"in channel {name} image means vary by {spread:.4g} (std over images), {ratio:.2f}x the pixel std {std:.4g}: images differ in brightness or scanner",
    )


def _channels(stats: DatasetStats) -> Advice | None:
    if len(stats.channels) < 2:
        return Advice("channels", "one channel: per-channel and pooled are the same", "the data have a single channel")
    pooled = stats.pooled
    apart = max(abs(s.mean - pooled.mean) for s in stats.channels) / pooled.std if pooled.std > 0 else 0.0
    stds = [s.std for s in stats.channels]
    ratio = max(stds) / min(stds) if min(stds) > 0 else float("inf")
    if apart > CHANNEL_SPREAD or ratio > CHANNEL_STD_RATIO:
        return Advice("channels", "per-channel statistics (the default; not --pooled)",
                      f"channel means lie up to {apart:.2f} pooled stds from the pooled mean; channel stds differ "
                      f"up to {ratio:.2f}x")
    return Advice("channels", "pooled statistics would do (--pooled)",
                  f"channel means lie within {apart:.2f} pooled stds of each other and their stds within {ratio:.2f}x")


def _memory(stats: DatasetStats, memory_bytes: int | None) -> Advice:
    memory = memory_bytes or _physical_memory()
    needed = (stats.measurement.voxels or stats.pooled.count) * 4  # every voxel is normalized, masked or not
    share = needed / memory if memory else float("inf")
    size = f"the normalized float32 dataset takes {needed / 2**30:.2f} GiB, {100 * share:.1f}% of this machine's {memory / 2**30:.1f} GiB"
    if share <= 0.25:
        return Advice("memory", "in memory: normalize_dataset(..., cache='memory')", size)
    return Advice("memory", "on the fly: normalize_dataset(..., cache='none') in DataLoader workers", size)


def _imagenet(stats: DatasetStats) -> Advice | None:
    if stats.channel_names != ("red", "green", "blue") or not stats.has_unit_scale:
        return None
    scale = stats.value_scale
    off = max(max(abs(s.mean / scale - m), abs(s.std / scale - d)) for s, m, d in zip(stats.channels, IMAGENET_MEAN, IMAGENET_STD))
    if off <= 0.05:
        return None
    return Advice("imagenet", f"use the measured {stats.normalize_line()}",
                  f"the ImageNet constants are off by up to {off:.3f} (in the [0, 1] scale) for this dataset")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0
