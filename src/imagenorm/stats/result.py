"""DatasetStats: the measured statistics of a dataset, mergeable and saveable."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import ImagenormError
from ..options import ReadOptions
from .state import (
    FLOAT_BINS,
    FloatHistogram,
    FloatMoments,
    ImageSpread,
    IntegerHistogram,
    Summary,
    summarize_moments,
)


def value_scale_of(dtype: str) -> float:
    """The dtype's maximum for integers (255, 65535, ...), 1 for floats."""
    kind = np.dtype(dtype)
    return float(np.iinfo(kind).max) if kind.kind in "ui" else 1.0


@dataclass
class DatasetStats:
    """Per-channel and pooled statistics of a dataset, in raw pixel units.

    Integer data keep their exact histograms (``state``), so two DatasetStats of
    disjoint parts merge exactly; float data keep float64 moments.

    Example:
        >>> import numpy as np, imagenorm
        >>> stats = imagenorm.compute_stats(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
        >>> stats.channel_names, [round(s.mean, 2) for s in stats.channels]
        (('red', 'green', 'blue'), [1.5, 5.5, 9.5])
        >>> stats.value_scale
        255.0
    """

    dtype: str
    channel_names: tuple[str, ...]
    state: IntegerHistogram | FloatMoments
    files: int
    spread: ImageSpread | None = None  # how images differ (per-image means and stds)
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: int = 0
    alpha: str = "none"
    palette_expanded: bool = False
    significant_bits: int | None = None  # declared by the files (PNG sBIT) when below the dtype's
    float_percentiles: list[dict[str, float]] | None = None  # per channel, then pooled
    percentile_error: list[float] | None = None
    float_histograms: list[tuple[list[float], list[int]]] | None = None  # per channel (edges, counts), 256 bins
    created_by: str = ""
    mask: str | None = None  # the foreground mask the statistics were restricted to
    notes: list[str] = field(default_factory=list)  # what readers decided, e.g. a MONOCHROME1 policy
    flagged: list[dict] | None = None  # images that stand out (per-image audit)
    audit_rows: list[dict] | None = field(default=None, repr=False, compare=False)  # not saved
    source: str | None = field(default=None, compare=False)  # the stats file it was loaded from
    read_options: ReadOptions = field(default_factory=ReadOptions)  # how the pixels were read

    # --- derived numbers -------------------------------------------------------
    @property
    def exact(self) -> bool:
        """True for integer data: every number comes from exact histograms."""
        return isinstance(self.state, IntegerHistogram)

    @property
    def value_scale(self) -> float:
        return value_scale_of(self.dtype)

    @cached_property
    def channels(self) -> list[Summary]:
        return [self._summary(c) for c in range(len(self.channel_names))]

    @cached_property
    def pooled(self) -> Summary:
        return self._summary(None)

    def _summary(self, channel: int | None) -> Summary:
        if isinstance(self.state, IntegerHistogram):
            return self.state.summary(channel)
        moments = self.state.pooled() if channel is None else self.state.select(channel)
        row = len(self.channel_names) if channel is None else channel
        percentiles = {} if self.float_percentiles is None else dict(self.float_percentiles[row])
        return summarize_moments(moments, percentiles)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(s.mean for s in self.channels)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(s.std for s in self.channels)

    @property
    def nonfinite(self) -> list[int]:
        """Non-finite values left out, per channel (always 0 for integer data)."""
        if isinstance(self.state, FloatMoments):
            return [int(v) for v in self.state.nonfinite]
        return [0] * len(self.channel_names)

    @property
    def percentile_method(self) -> str:
        if self.exact:
            return "exact: numpy.percentile (linear) over every pixel, from exact histograms"
        if self.float_percentiles is None:
            return "unavailable: percentiles of float data do not merge; recompute over the whole dataset"
        if self.percentile_error is not None and not any(self.percentile_error):
            return ("exact: numpy.percentile (linear) over every finite value; a histogram of "
                    f"{FLOAT_BINS} bins brackets the target ranks, a third pass collects the values inside them")
        return f"histogram of {FLOAT_BINS} bins between min and max (second pass); error at most one bin width"

    def normalize_line(self, digits: int = 4) -> str:
        """A paste-ready torchvision ``Normalize`` in the [0, 1] scale."""
        scale = self.value_scale
        mean = ", ".join(f"{m / scale:.{digits}f}" for m in self.mean)
        std = ", ".join(f"{s / scale:.{digits}f}" for s in self.std)
        return f"transforms.Normalize(mean=[{mean}], std=[{std}])"

    # --- merging ---------------------------------------------------------------
    def merge(self, other: "DatasetStats") -> "DatasetStats":
        """Statistics of both datasets together (exact for integer data).

        Raises:
            ImagenormError: the two were measured on different dtypes or channels.
        """
        if (self.dtype, self.channel_names) != (other.dtype, other.channel_names):
            raise ImagenormError(
                f"cannot merge statistics of {self.dtype} {list(self.channel_names)} "
                f"with {other.dtype} {list(other.channel_names)}"
            )
        return DatasetStats(
            dtype=self.dtype,
            channel_names=self.channel_names,
            state=self.state.merge(other.state),
            files=self.files + other.files,
            spread=None if self.spread is None or other.spread is None else self.spread.merge(other.spread),
            skipped=self.skipped + other.skipped,
            ignored=self.ignored + other.ignored,
            alpha=self.alpha,
            palette_expanded=self.palette_expanded or other.palette_expanded,
            significant_bits=_merged_bits(self, other),
            float_percentiles=None,
            percentile_error=None,
            created_by=self.created_by,
            mask=self.mask if self.mask == other.mask else None,
            notes=sorted(set(self.notes) | set(other.notes)),
        )

    def all_reduce(self, group=None) -> "DatasetStats":
        """The statistics of every rank's data together, on every rank (like torchmetrics' ``sync``).

        For statistics each rank measured of its own part (e.g. in a user's DDP loop).
        Integer data merge exactly; float percentiles need all data and are dropped.
        """
        from . import distributed

        distributed.process_group(group)
        return distributed.gather_merge(self, group)

    # --- files -----------------------------------------------------------------
    def save(self, path) -> None:
        """Write the stats file atomically (temporary file, then rename)."""
        from ..statsfile import save

        save(self, path)

    @classmethod
    def load(cls, path) -> "DatasetStats":
        """Read and validate a stats file (JSON; nothing is executed)."""
        from ..statsfile import load

        return load(path)

    def to_dict(self) -> dict[str, Any]:
        from ..statsfile import to_dict

        return to_dict(self)


def _merged_bits(a: DatasetStats, b: DatasetStats) -> int | None:
    """Declared significant bits of both parts (None when either uses the full dtype)."""
    if a.significant_bits is None or b.significant_bits is None:
        return None
    return max(a.significant_bits, b.significant_bits)


def float_percentiles_from(histogram: FloatHistogram) -> tuple[list[dict[str, float]], list[float]]:
    rows = range(histogram.low.size)
    return [histogram.percentiles(r) for r in rows], [histogram.bin_width(r) for r in rows]


def coarse_histograms(histogram: FloatHistogram, bins: int = 256) -> list[tuple[list[float], list[int]]]:
    """Per channel (not pooled): ``bins`` equal bins between min and max, for plots."""
    result = []
    for row in range(histogram.low.size - 1):
        counts = histogram.counts[row].reshape(bins, -1).sum(axis=1)
        edges = np.linspace(histogram.low[row], histogram.high[row], bins + 1)
        result.append((edges.tolist(), counts.tolist()))
    return result

