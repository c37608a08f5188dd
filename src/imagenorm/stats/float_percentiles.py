"""The later passes that give float data their percentiles.

Second pass, :class:`FloatHistogram`: every finite value binned in ``FLOAT_BINS`` equal bins
between min and max (error at most one bin width). Third pass, :class:`BracketValues`: the
values inside the bins that hold the target ranks, which reproduce ``numpy.percentile``
exactly. Both are states (reduction: sum of counts; union of values with summed counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .moments import FloatMoments
from .state import State
from .summary import PERCENTILES, linear_percentiles, target_ranks

#: Bins of the float percentile histogram (error at most one bin width).
FLOAT_BINS = 1 << 16
#: Distinct values a row may collect in its target bins before exactness is given up.
MAX_BRACKET_VALUES = 1 << 24


@dataclass(eq=False)
class FloatHistogram(State):
    """Counts in ``FLOAT_BINS`` equal bins from low to high.

    Row ``c`` holds channel ``c``; the last row the pooled data (its own range).
    """

    kind = "float_histogram"

    low: np.ndarray  # (C + 1,)
    high: np.ndarray
    counts: np.ndarray = field(default=None)  # (C + 1, FLOAT_BINS) int64

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros((self.low.size, FLOAT_BINS), np.int64)

    @classmethod
    def for_moments(cls, moments: FloatMoments) -> "FloatHistogram":
        pooled = moments.pooled()
        return cls(np.append(moments.minimum, pooled.minimum), np.append(moments.maximum, pooled.maximum))

    def empty(self) -> "FloatHistogram":
        return FloatHistogram(self.low, self.high)

    def bin_width(self, row: int) -> float:
        return float(self.high[row] - self.low[row]) / FLOAT_BINS

    def update(self, pixels: np.ndarray) -> None:
        """Bin the finite samples of channel-first ``pixels`` (per channel and pooled)."""
        flat = pixels.reshape(pixels.shape[0], -1)
        pooled_row = self.low.size - 1
        for channel, samples in enumerate(flat):
            for row in (channel, pooled_row):
                kernels.bin_floats(samples, self.low[row], self.scale(row), self.counts[row])

    def scale(self, row: int) -> float:
        """Bins per unit of value in ``row`` (0 when min equals max: one bin)."""
        width = self.high[row] - self.low[row]
        return FLOAT_BINS / width if width > 0 else 0.0

    def bin_of(self, samples: np.ndarray, row: int) -> np.ndarray:
        """The bin of each sample in ``row`` (the compiled formula every pass uses)."""
        return kernels.bin_indices(samples, self.low[row], self.scale(row), FLOAT_BINS)

    def target_bins(self, row: int, qs=PERCENTILES) -> np.ndarray:
        """The bins that hold the ranks numpy's linear percentiles read."""
        cumulative = np.cumsum(self.counts[row])
        return np.unique(np.searchsorted(cumulative, target_ranks(int(cumulative[-1]), qs), side="right"))

    def merge(self, other: "FloatHistogram") -> "FloatHistogram":
        return FloatHistogram(self.low, self.high, self.counts + other.counts)

    def percentiles(self, row: int, qs=PERCENTILES) -> dict[str, float]:
        """Percentiles located to within one bin width (a rank inside its bin by interpolation)."""
        counts = self.counts[row]
        cumulative = np.cumsum(counts)
        width = self.bin_width(row)

        def value_at(rank: int) -> float:
            index = int(np.searchsorted(cumulative, rank, side="right"))
            before = int(cumulative[index - 1]) if index else 0
            inside = (rank - before + 0.5) / counts[index]
            return float(self.low[row] + (index + inside) * width)

        values = linear_percentiles(int(cumulative[-1]), value_at, qs)
        return {key: float(min(max(value, self.low[row]), self.high[row])) for key, value in values.items()}

    def to_arrays(self):
        return {"kind": self.kind}, {"low": self.low, "high": self.high, "counts": self.counts}

    @classmethod
    def _from_arrays(cls, meta, arrays):
        return cls(arrays["low"], arrays["high"], arrays["counts"])

    def sum_key(self) -> tuple:
        return self.kind, self.counts.shape, tuple(self.low.tolist()), tuple(self.high.tolist())

    def with_counts(self, counts: np.ndarray) -> "FloatHistogram":
        return FloatHistogram(self.low, self.high, counts)


@dataclass(eq=False)
class BracketValues(State):
    """Every value inside the histogram bins that hold the target ranks, kept as sorted
    distinct values with counts. Reduction: union with summed counts.
    """

    kind = "brackets"

    histogram: FloatHistogram
    bins: list[np.ndarray]  # per row, the target bins
    values: list[np.ndarray] = field(default=None)
    counts: list[np.ndarray] = field(default=None)

    def __post_init__(self) -> None:
        rows = len(self.bins)
        if self.values is None:
            self.values = [np.zeros(0, np.float64) for _ in range(rows)]
            self.counts = [np.zeros(0, np.int64) for _ in range(rows)]

    @classmethod
    def for_histogram(cls, histogram: FloatHistogram) -> "BracketValues":
        return cls(histogram, [histogram.target_bins(row) for row in range(histogram.low.size)])

    def empty(self) -> "BracketValues":
        return BracketValues(self.histogram, self.bins)

    def update(self, pixels: np.ndarray) -> None:
        """Collect the finite values of channel-first ``pixels`` that fall in a target bin."""
        flat = pixels.reshape(pixels.shape[0], -1)
        pooled_row = len(self.bins) - 1
        for channel, samples in enumerate(flat):
            for row in (channel, pooled_row):
                wanted = np.zeros(FLOAT_BINS, np.bool_)
                wanted[self.bins[row]] = True
                inside = kernels.values_in_bins(samples, self.histogram.low[row], self.histogram.scale(row), wanted)
                if inside.size:
                    self._add(row, *np.unique(inside, return_counts=True))

    def _add(self, row: int, values: np.ndarray, counts: np.ndarray) -> None:
        merged, where = np.unique(np.concatenate([self.values[row], values]), return_inverse=True)
        summed = np.zeros(merged.size, np.int64)
        np.add.at(summed, where, np.concatenate([self.counts[row], counts]))
        self.values[row], self.counts[row] = merged, summed

    def merge(self, other: "BracketValues") -> "BracketValues":
        merged = BracketValues(self.histogram, self.bins, list(self.values), list(self.counts))
        for row in range(len(self.bins)):
            if other.values[row].size:
                merged._add(row, other.values[row], other.counts[row])
        return merged

    def exact_rows(self) -> list[bool]:
        return [values.size <= MAX_BRACKET_VALUES for values in self.values]

    def percentiles(self, row: int, qs=PERCENTILES) -> dict[str, float]:
        """Exact ``numpy.percentile`` values of ``row``."""
        cumulative = np.cumsum(self.histogram.counts[row])
        bins_of_values = self.histogram.bin_of(self.values[row], row)

        def value_at(rank: int) -> float:
            bin_index = int(np.searchsorted(cumulative, rank, side="right"))
            before = int(cumulative[bin_index - 1]) if bin_index else 0
            chosen = bins_of_values == bin_index
            inside = np.cumsum(self.counts[row][chosen])
            return float(self.values[row][chosen][np.searchsorted(inside, rank - before, side="right")])

        return linear_percentiles(int(cumulative[-1]), value_at, qs)

    def to_arrays(self):
        meta, arrays = self.histogram.to_arrays()
        arrays = {f"histogram.{key}": value for key, value in arrays.items()}
        for row in range(len(self.bins)):
            arrays[f"bins.{row}"], arrays[f"values.{row}"], arrays[f"counts.{row}"] = \
                self.bins[row], self.values[row], self.counts[row]
        return {"kind": self.kind, "rows": len(self.bins)}, arrays

    @classmethod
    def _from_arrays(cls, meta, arrays):
        histogram = FloatHistogram._from_arrays({}, {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("histogram.")})
        rows = range(meta["rows"])
        return cls(histogram, [arrays[f"bins.{r}"] for r in rows], [arrays[f"values.{r}"] for r in rows],
                   [arrays[f"counts.{r}"] for r in rows])
