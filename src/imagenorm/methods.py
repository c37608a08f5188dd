"""The CLI's normalization methods (``--method``) as transforms, and what each promises."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .stats.result import DatasetStats
from .transforms import MinMaxScale, PercentileScale, Standardize

METHODS = ("zscore", "minmax", "percentile")


@dataclass(frozen=True)
class MethodOptions:
    """``--method`` and its options, as recorded in manifests."""

    method: str = "zscore"
    per_image: bool = False
    pooled: bool = False
    out_range: tuple[float, float] = (0.0, 1.0)
    low: float = 0.5
    high: float = 99.5

    def describe(self) -> str:
        scope = "per image" if self.per_image else "dataset"
        channels = "pooled" if self.pooled else "per channel"
        if self.method == "zscore":
            return f"z-score ({scope}, {channels})"
        what = "min-max" if self.method == "minmax" else f"percentiles {self.low:g}-{self.high:g}, clipped,"
        return f"{what} to [{self.out_range[0]:g}, {self.out_range[1]:g}] ({scope}, {channels})"


def build_transform(stats: DatasetStats | None, options: MethodOptions) -> nn.Module:
    """The transform for ``options``; dataset-level methods take their numbers from ``stats``."""
    channel_wise = not options.pooled
    if options.method not in METHODS:
        raise ValueError(f"unknown method {options.method!r}; choose one of {', '.join(METHODS)}")
    if options.per_image:
        if options.method == "zscore":
            return Standardize(per_image=True, channel_wise=channel_wise)
        if options.method == "minmax":
            return MinMaxScale(per_image=True, channel_wise=channel_wise, out_range=options.out_range)
        return PercentileScale(options.low, options.high, per_image=True, channel_wise=channel_wise, out_range=options.out_range)
    if options.method == "zscore":
        return Standardize.from_stats(stats, channel_wise=channel_wise)
    if options.method == "minmax":
        return MinMaxScale.from_stats(stats, channel_wise=channel_wise, out_range=options.out_range)
    return PercentileScale.from_stats(stats, low=options.low, high=options.high, channel_wise=channel_wise, out_range=options.out_range)
