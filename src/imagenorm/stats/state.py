"""Mergeable statistics state: what a worker, a file or a rank hands on.

Two kinds of state, each with one declared reduction per field, so that merging
the states of any split of the data gives the state of the whole:

- :class:`IntegerHistogram` (8- and 16-bit integers, signed or not): exact counts per
  value and channel; reduction: sum. Mean, std, min, max and percentiles derived from
  it are exact and independent of worker count and order.
- :class:`FloatMoments` (floats and wider integers): count (sum), mean and M2 (Chan et
  al.'s parallel merge, float64), min (min), max (max), non-finite count (sum).
  :class:`FloatHistogram` is the second pass that gives their percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
import math

import numpy as np

from ..errors import ImagenormError
from . import kernels

#: Percentiles every stats file reports, as numpy.percentile's ``q``.
PERCENTILES = (0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5)

#: Dtypes counted exactly, value by value: by the compiled kernel (all values), or in a
#: range that grows with the data (32-bit integers).
KERNEL_DTYPES = ("uint8", "int8", "uint16", "int16")
HISTOGRAM_DTYPES = KERNEL_DTYPES + ("int32", "uint32")
MAX_RANGE_BINS = 1 << 24

#: Bins of the float percentile histogram (error at most one bin width).
FLOAT_BINS = 1 << 16


@dataclass(frozen=True)
class Summary:
    """Count, mean, population std, min, max and percentiles of one channel (or pooled)."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    percentiles: dict[str, float]


def percentile_key(q: float) -> str:
    """``0.5 -> "0.5"``, ``1.0 -> "1"``: the stats file's percentile keys."""
    return f"{q:g}"


def numpy_linear_percentiles(total: int, value_at, qs=PERCENTILES) -> dict[str, float]:
    """``numpy.percentile(data, q)`` (method "linear") of ``total`` sorted values, given
    ``value_at(rank)``; numpy's float64 arithmetic is replicated step by step."""
    result = {}
    for q in qs:
        virtual = (total - 1) * (np.float64(q) / 100)
        below = math.floor(virtual)
        if virtual >= total - 1:
            below = total - 1
        gamma = float(virtual - below)
        a = value_at(below)
        b = value_at(min(below + 1, total - 1))
        difference = b - a
        value = b - difference * (1 - gamma) if gamma >= 0.5 else a + difference * gamma
        result[percentile_key(q)] = float(value)
    return result


def linear_percentiles_from_counts(values: np.ndarray, counts: np.ndarray, qs=PERCENTILES) -> dict[str, float]:
    """``numpy.percentile(data, q)`` (method "linear") of data given as sorted values with counts."""
    cumulative = np.cumsum(counts)

    def value_at(rank: int) -> float:
        return float(values[np.searchsorted(cumulative, rank, side="right")])

    return numpy_linear_percentiles(int(cumulative[-1]), value_at, qs)


class RangeTooWide(Exception):
    """32-bit values spread wider than an exact histogram may grow; moments take over."""


class IntegerHistogram:
    """Exact per-channel value counts of integer pixels.

    8- and 16-bit data use one bin per possible value, filled by the compiled kernel.
    32-bit data (e.g. DICOM values after an integer rescale) use bins from the smallest to
    the largest value seen, grown as needed, up to ``MAX_RANGE_BINS`` per channel.

    Example:
        >>> import numpy as np
        >>> state = IntegerHistogram.empty("uint8", channels=1)
        >>> state.update(np.array([[[0, 10], [20, 30]]], np.uint8))  # this image's mean and std
        (array([15.]), array([11.18033989]))
        >>> state.summary(0).mean, state.summary(0).percentiles["50"]
        (15.0, 15.0)
    """

    def __init__(self, dtype: str, counts: np.ndarray, offset: int | None = None) -> None:
        self.dtype = dtype
        self.counts = counts  # (C, bins) int64; bin b counts the value b + offset
        self.offset = int(np.iinfo(np.dtype(dtype)).min) if offset is None else int(offset)

    @classmethod
    def empty(cls, dtype: str, channels: int) -> "IntegerHistogram":
        if dtype in KERNEL_DTYPES:
            bits = np.dtype(dtype).itemsize * 8
            return cls(dtype, np.zeros((channels, 1 << bits), np.int64))
        return cls(dtype, np.zeros((channels, 0), np.int64), offset=0)

    @property
    def values(self) -> np.ndarray:
        return np.arange(self.counts.shape[1], dtype=np.int64) + self.offset

    def update(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count the samples of channel-first ``pixels`` ``(C, ...)``; returns the image's
        per-channel mean and std (from its own histogram, no second look at the pixels)."""
        if self.dtype in KERNEL_DTYPES:
            banks = np.zeros((kernels.BANKS, *self.counts.shape), np.int64)
            kernels.count_values(pixels, banks)
            image = kernels.bins_to_values(banks.sum(axis=0), np.dtype(self.dtype))
            self.counts += image
            return histogram_moments(image, self.values)
        flat = pixels.reshape(pixels.shape[0], -1)
        if flat.shape[1] == 0:
            return np.full(flat.shape[0], np.nan), np.full(flat.shape[0], np.nan)
        low, high = int(flat.min()), int(flat.max())
        self._cover(low, high)
        image = np.zeros((flat.shape[0], high - low + 1), np.int64)
        kernels.count_range(flat, low, image)
        start = low - self.offset
        self.counts[:, start : start + image.shape[1]] += image
        return histogram_moments(image, np.arange(low, high + 1, dtype=np.int64))

    def _cover(self, low: int, high: int) -> None:
        """Grow the bins to hold ``low..high``."""
        if self.counts.shape[1] == 0:
            first, last = low, high
        else:
            first, last = min(low, self.offset), max(high, self.offset + self.counts.shape[1] - 1)
        if last - first + 1 > MAX_RANGE_BINS:
            raise RangeTooWide(f"{self.dtype} values from {first} to {last} span more than {MAX_RANGE_BINS:,} bins")
        if (first, last) == (self.offset, self.offset + self.counts.shape[1] - 1):
            return
        grown = np.zeros((self.counts.shape[0], last - first + 1), np.int64)
        if self.counts.shape[1]:
            start = self.offset - first
            grown[:, start : start + self.counts.shape[1]] = self.counts
        self.counts, self.offset = grown, first

    def to_moments(self) -> "FloatMoments":
        """The same data as float64 moments (when the values range too wide for bins)."""
        channels = self.counts.shape[0]
        moments = FloatMoments.empty(channels)
        if self.counts.shape[1] == 0:
            return moments
        mean, std = histogram_moments(self.counts, self.values)
        moments.count = self.counts.sum(axis=1)
        moments.mean = np.where(moments.count > 0, mean, 0.0)
        moments.m2 = np.where(moments.count > 0, std * std * moments.count, 0.0)
        for channel in range(channels):
            present = np.flatnonzero(self.counts[channel])
            if present.size:
                moments.minimum[channel] = present[0] + self.offset
                moments.maximum[channel] = present[-1] + self.offset
        return moments

    def merge(self, other: "IntegerHistogram | FloatMoments") -> "IntegerHistogram | FloatMoments":
        if isinstance(other, FloatMoments):
            return self.to_moments().merge(other)
        if self.offset == other.offset and self.counts.shape == other.counts.shape:
            return IntegerHistogram(self.dtype, self.counts + other.counts, self.offset)
        merged = IntegerHistogram(self.dtype, self.counts.copy(), self.offset)
        for part in (other,):
            if part.counts.shape[1]:
                merged._cover(part.offset, part.offset + part.counts.shape[1] - 1)
                start = part.offset - merged.offset
                merged.counts[:, start : start + part.counts.shape[1]] += part.counts
        return merged

    def summary(self, channel: int | None) -> Summary:
        """Statistics of one channel, or of all channels pooled (``channel=None``)."""
        counts = self.counts.sum(axis=0) if channel is None else self.counts[channel]
        return summarize_counts(self.values, counts)


def histogram_moments(counts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and population std (float64) of data given as ``(C, bins)`` counts.

    Sums of values and squares as float64 dot products (E[x²] − E[x]²): for 16-bit data with a
    large mean and a tiny spread the std loses digits (relative 1e-6 at mean 60000, std 0.5),
    far below what the between-image spread and the advice need; the dataset statistics
    themselves never come from here.
    """
    total = np.maximum(counts.sum(axis=1), 1)
    value = values.astype(np.float64)
    mean = counts @ value / total
    variance = np.maximum(counts @ (value * value) / total - mean * mean, 0.0)
    return mean, np.sqrt(variance)


def summarize_counts(values: np.ndarray, counts: np.ndarray) -> Summary:
    """Exact statistics of integer data given as a histogram (Python integers inside)."""
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise ImagenormError("no pixel was counted")
    values, counts = values[present], counts[present]
    n = int(counts.sum())
    total = sum(int(v) * int(c) for v, c in zip(values.tolist(), counts.tolist()))
    squares = sum(int(v) * int(v) * int(c) for v, c in zip(values.tolist(), counts.tolist()))
    variance = Fraction(n * squares - total * total, n * n)
    return Summary(
        count=n,
        mean=float(Fraction(total, n)),
        std=exact_sqrt(variance),
        min=float(values[0]),
        max=float(values[-1]),
        percentiles=linear_percentiles_from_counts(values, counts),
    )


def exact_sqrt(value: Fraction) -> float:
    """sqrt of a non-negative rational, correctly rounded to float64 in all but ties."""
    if value == 0:
        return 0.0
    scale = 1 << 128
    root = math.isqrt(value.numerator * scale * scale // value.denominator)
    return float(Fraction(root, scale))


@dataclass
class FloatMoments:
    """Per-channel count, mean, M2, min, max (float64) and non-finite count.

    Example:
        >>> import numpy as np
        >>> a, b = FloatMoments.empty(1), FloatMoments.empty(1)
        >>> image_moments = a.update(np.array([[1.0, 2.0]])), b.update(np.array([[3.0, 4.0]]))
        >>> merged = a.merge(b)
        >>> float(merged.mean[0]), float(merged.m2[0] / merged.count[0])
        (2.5, 1.25)
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    nonfinite: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> "FloatMoments":
        zeros = np.zeros(channels, np.float64)
        return cls(
            count=np.zeros(channels, np.int64),
            mean=zeros.copy(),
            m2=zeros.copy(),
            minimum=np.full(channels, np.inf),
            maximum=np.full(channels, -np.inf),
            nonfinite=np.zeros(channels, np.int64),
        )

    def update(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add channel-first ``pixels``; non-finite values are counted, not used.

        Returns the image's per-channel mean and std (NaN for a channel with no finite value).
        """
        moments = kernels.float_moments(pixels)  # compiled passes, no temporaries
        batch = FloatMoments(
            count=moments[:, 0].astype(np.int64),
            mean=moments[:, 1].copy(),
            m2=moments[:, 2].copy(),
            minimum=moments[:, 3].copy(),
            maximum=moments[:, 4].copy(),
            nonfinite=moments[:, 5].astype(np.int64),
        )
        merged = self.merge(batch)
        self.__dict__.update(merged.__dict__)
        with np.errstate(invalid="ignore", divide="ignore"):
            empty = batch.count == 0
            return np.where(empty, np.nan, batch.mean), np.where(empty, np.nan, np.sqrt(batch.m2 / batch.count))

    def merge(self, other: "FloatMoments | IntegerHistogram") -> "FloatMoments":
        """Chan et al.'s parallel combination of two states."""
        if isinstance(other, IntegerHistogram):
            other = other.to_moments()
        count = self.count + other.count
        safe = np.maximum(count, 1)
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / safe)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / safe)
        return FloatMoments(
            count=count,
            mean=np.where(count > 0, mean, 0.0),
            m2=np.where(count > 0, m2, 0.0),
            minimum=np.minimum(self.minimum, other.minimum),
            maximum=np.maximum(self.maximum, other.maximum),
            nonfinite=self.nonfinite + other.nonfinite,
        )

    def pooled(self) -> "FloatMoments":
        """All channels merged into one."""
        result = FloatMoments.empty(1)
        for channel in range(self.count.size):
            result = result.merge(self.select(channel))
        return result

    def select(self, channel: int) -> "FloatMoments":
        pick = slice(channel, channel + 1)
        return FloatMoments(*(getattr(self, name)[pick] for name in ("count", "mean", "m2", "minimum", "maximum", "nonfinite")))



@dataclass
class FloatHistogram:
    """Second pass for float percentiles: counts in ``FLOAT_BINS`` equal bins from low to high.

    Row ``c`` holds channel ``c``; the last row the pooled data (its own range).
    A percentile is located in its bin and interpolated by rank inside it; its error
    is at most one bin width, ``(high - low) / FLOAT_BINS``.
    """

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
        total = int(cumulative[-1])
        ranks = set()
        for q in qs:
            below = min(math.floor((total - 1) * (q / 100)), total - 1)
            ranks.update((below, min(below + 1, total - 1)))
        return np.unique(np.searchsorted(cumulative, sorted(ranks), side="right"))

    def merge(self, other: "FloatHistogram") -> "FloatHistogram":
        return FloatHistogram(self.low, self.high, self.counts + other.counts)

    def percentiles(self, row: int, qs=PERCENTILES) -> dict[str, float]:
        """Percentiles (numpy's "linear" definition) located to within one bin width."""
        counts = self.counts[row]
        cumulative = np.cumsum(counts)
        total = int(cumulative[-1])
        width = self.bin_width(row)

        def value_at(rank: int) -> float:
            index = int(np.searchsorted(cumulative, rank, side="right"))
            before = int(cumulative[index - 1]) if index else 0
            inside = (rank - before + 0.5) / counts[index]
            return float(self.low[row] + (index + inside) * width)

        result = {}
        for q in qs:
            virtual = (total - 1) * (q / 100)
            below = min(math.floor(virtual), total - 1)
            gamma = virtual - below
            a, b = value_at(below), value_at(min(below + 1, total - 1))
            value = a + (b - a) * gamma
            result[percentile_key(q)] = float(min(max(value, self.low[row]), self.high[row]))
        return result


@dataclass
class ImageSpread:
    """How much images differ: per channel, moments of the per-image means and stds.

    Reduction: Chan's merge of both (each image counts once, whatever its size).
    """

    means: FloatMoments
    stds: FloatMoments

    @classmethod
    def empty(cls, channels: int) -> "ImageSpread":
        return cls(FloatMoments.empty(channels), FloatMoments.empty(channels))

    @classmethod
    def of_images(cls, means: list[np.ndarray], stds: list[np.ndarray], channels: int) -> "ImageSpread":
        """The spread of images given by their per-channel means and stds."""
        spread = cls.empty(channels)
        if means:
            spread.means.update(np.stack(means, axis=1))
            spread.stds.update(np.stack(stds, axis=1))
        return spread

    def merge(self, other: "ImageSpread") -> "ImageSpread":
        return ImageSpread(self.means.merge(other.means), self.stds.merge(other.stds))


#: Distinct values a row may collect in its target bins before exactness is given up.
MAX_BRACKET_VALUES = 1 << 24


@dataclass
class BracketValues:
    """Third pass for float percentiles: every value inside the histogram bins that hold the
    target ranks, kept as sorted distinct values with counts. Reduction: union with summed
    counts. With them numpy's percentiles are reproduced exactly.
    """

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

        return numpy_linear_percentiles(int(cumulative[-1]), value_at, qs)


def summarize_moments(moments: FloatMoments, percentiles: dict[str, float]) -> Summary:
    """Summary of one-channel float state (a channel, or all pooled) with given percentiles."""
    n = int(moments.count[0])
    if n == 0:
        raise ImagenormError("no finite pixel was counted")
    return Summary(
        count=n,
        mean=float(moments.mean[0]),
        std=math.sqrt(float(moments.m2[0]) / n),
        min=float(moments.minimum[0]),
        max=float(moments.maximum[0]),
        percentiles=percentiles,
    )
