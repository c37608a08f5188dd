"""Check that normalized data is what was asked for: mean 0 and std 1, or inside the range."""

from __future__ import annotations

from dataclasses import dataclass

from .datasets import ImageFolderDataset
from .methods import MethodOptions, build_transform
from .sources import PathSource
from .stats import compute_stats
from .stats.result import DatasetStats
from .stats.state import Summary


@dataclass(frozen=True)
class ChannelCheck:
    """What came out for one channel (or all pooled), against the promise."""

    name: str
    summary: Summary
    promise: str
    passed: bool


@dataclass(frozen=True)
class CheckReport:
    method: str
    tolerance: float
    channels: list[ChannelCheck]
    files: int
    skipped: list[dict[str, str]]

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
) -> CheckReport:
    """Normalize every image of ``source`` on the fly and measure the result exactly.

    z-score promises mean 0 and std 1 (each within ``tolerance``); the range methods
    promise values inside ``out_range`` (within ``tolerance`` times its width).
    Statistics of another dataset, or a shifted test set, show up as a miss.
    """
    transform = build_transform(stats, options)
    dataset = ImageFolderDataset(source, labels=False, transform=transform)
    result = compute_stats(dataset, workers=workers, on_error=on_error, nonfinite="ignore", percentiles=False)
    rows = [("pooled", result.pooled)] if options.pooled else list(zip(result.channel_names, result.channels))
    return CheckReport(
        method=options.describe(),
        tolerance=tolerance,
        channels=[_judge(name, summary, options, tolerance) for name, summary in rows],
        files=result.files,
        skipped=result.skipped,
    )


def _judge(name: str, summary: Summary, options: MethodOptions, tolerance: float) -> ChannelCheck:
    if options.method == "zscore":
        passed = abs(summary.mean) <= tolerance and abs(summary.std - 1) <= tolerance
        return ChannelCheck(name, summary, f"mean 0 ± {tolerance:g}, std 1 ± {tolerance:g}", passed)
    low, high = sorted(options.out_range)
    slack = tolerance * (high - low)
    passed = summary.min >= low - slack and summary.max <= high + slack
    return ChannelCheck(name, summary, f"within [{low:g}, {high:g}] ± {slack:g}", passed)
