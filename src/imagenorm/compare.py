"""Exact drift between two datasets, from their stats files alone.

Each channel (and all channels pooled) is a distribution: integer data an exact histogram of
values, float data the stored 256-bin histogram (values spread evenly within a bin). Between a
reference and another dataset, per channel:

- ``mean_shift`` (other - reference), also in reference stds (``mean_shift_std``), ``std_ratio``
  (other / reference), min, max and percentile shifts;
- ``wasserstein``: the Wasserstein-1 (earth mover's) distance, the area between the two CDFs,
  in reference stds (``wasserstein_raw`` in the values' units);
- ``ks``: the Kolmogorov-Smirnov statistic, the largest gap between the two CDFs;
- ``psi``: the population stability index over the reference's ten decile bins, with empty
  bins taken as :data:`PSI_EPSILON`.

For integer data these are exact; for float data ``wasserstein_raw_error`` and ``ks_error`` bound
the error of the even-spread assumption (one bin width of each histogram; the largest share
of values in one bin of each). Datasets of different dtypes are compared in the [0, 1] scale
(raw / ``value_scale``) when both have one; other differences (channels, units) are refused.

Example:
    >>> import numpy as np, imagenorm
    >>> a = imagenorm.compute_stats(np.array([[0, 10, 20, 30]], np.uint8))
    >>> b = imagenorm.compute_stats(np.array([[10, 20, 30, 40]], np.uint8))
    >>> drift = compare_stats(a, b)
    >>> drift.channels[0].wasserstein_raw, drift.channels[0].ks, drift.drift
    (10.0, 0.25, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import ImagenormError
from .options import OptionError

#: The default drift thresholds: Wasserstein-1 in reference stds, and the KS statistic.
MAX_WASSERSTEIN = 0.1
MAX_KS = 0.1
#: Share of values taken for an empty PSI bin (either side), so that the index stays finite.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class Distribution:
    """Values as a CDF known at ``knots`` (ascending): ``cdf`` at each knot (right-continuous),
    ``left`` just below it; between two knots the CDF runs linearly from one's ``cdf`` to the
    next one's ``left`` (flat for integer values, rising within a float bin). ``cumulative``
    and ``total`` hold the exact counts of integer data (None for binned floats)."""

    knots: np.ndarray
    cdf: np.ndarray
    left: np.ndarray
    width: float = 0.0  # the widest bin (binned floats), 0 when exact
    heaviest: float = 0.0  # the largest share of values in one bin (binned floats), 0 when exact
    cumulative: np.ndarray | None = None  # integer data: values up to each knot
    total: int = 0

    def at(self, x: np.ndarray) -> np.ndarray:
        """The CDF at ``x`` (right-continuous)."""
        return self._value(x, np.searchsorted(self.knots, x, side="right") - 1)

    def before(self, x: np.ndarray) -> np.ndarray:
        """The CDF just below ``x`` (its left limit)."""
        return self._value(x, np.searchsorted(self.knots, x, side="left") - 1)

    def _value(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The CDF at ``x`` from the segment that starts at knot ``index`` (-1: before the first)."""
        last = self.knots.size - 1
        start = np.clip(index, 0, last)
        stop = np.clip(index + 1, 0, last)
        span = self.knots[stop] - self.knots[start]
        fraction = np.divide(x - self.knots[start], span, out=np.zeros(np.shape(x)), where=span > 0)
        value = self.cdf[start] + np.clip(fraction, 0, 1) * (self.left[stop] - self.cdf[start])
        return np.where(index < 0, 0.0, np.where(index >= last, self.cdf[last], value))

    def quantile(self, q: float) -> float:
        """The smallest value whose CDF reaches ``q``: at a knot where it jumps to ``q`` or
        beyond, or inside a rising segment (never inside a flat one)."""
        jumps = np.flatnonzero(self.cdf >= q - 1e-12)
        best = float(self.knots[jumps[0]]) if jumps.size else float(self.knots[-1])
        begin, end = self.cdf[:-1], self.left[1:]
        rising = np.flatnonzero((begin < q) & (end >= q) & (end > begin))
        if rising.size:
            i = rising[0]
            inside = self.knots[i] + (q - begin[i]) / (end[i] - begin[i]) * (self.knots[i + 1] - self.knots[i])
            best = min(best, float(inside))
        return best


def distributions(stats: Any, scale: float = 1.0) -> list[Distribution]:
    """One :class:`Distribution` per channel, then pooled, of a
    :class:`~imagenorm.DatasetStats`, with values divided by ``scale``.

    Raises:
        ImagenormError: float statistics without a histogram (merged, or measured without percentiles).
    """
    if stats.exact:
        counts = stats.state.counts
        values = stats.state.values / scale
        return [_discrete(values, row) for row in [*counts, counts.sum(axis=0)]]
    if stats.float_histograms is None:
        raise ImagenormError("these float statistics carry no histogram (merged, or measured with percentiles=False); "
                             "measure again to compare them")
    binned = [_binned(np.asarray(edges, np.float64) / scale, np.asarray(counts, np.float64))
              for edges, counts in stats.float_histograms]
    weights = np.asarray([summary.count for summary in stats.channels], np.float64)
    return [*binned, _mixture(binned, weights / weights.sum())]


def _discrete(values: np.ndarray, counts: np.ndarray) -> Distribution:
    present = counts > 0
    cumulative = np.cumsum(counts[present])
    cdf = cumulative / cumulative[-1]
    return Distribution(values[present], cdf, np.concatenate([[0.0], cdf[:-1]]), cumulative=cumulative,
                        total=int(cumulative[-1]))


def _binned(edges: np.ndarray, counts: np.ndarray) -> Distribution:
    total = counts.sum()
    if edges[-1] <= edges[0]:  # one value: a step
        return Distribution(edges[:1], np.ones(1), np.zeros(1))
    cdf = np.concatenate([[0.0], np.cumsum(counts) / total])
    return Distribution(edges, cdf, cdf, float(np.max(np.diff(edges))), float(counts.max() / total))


def _mixture(parts: list[Distribution], weights: np.ndarray) -> Distribution:
    """The pooled distribution of channels with these shares of the values (steps kept)."""
    knots = np.unique(np.concatenate([part.knots for part in parts]))
    cdf = sum(weight * part.at(knots) for part, weight in zip(parts, weights))
    left = sum(weight * part.before(knots) for part, weight in zip(parts, weights))
    return Distribution(knots, np.minimum(cdf, 1.0), np.minimum(left, 1.0), max(part.width for part in parts),
                        max(part.heaviest for part in parts))


def wasserstein_and_ks(first: Distribution, second: Distribution) -> tuple[float, float]:
    """The area between the two CDFs and their largest gap, exactly for these piecewise CDFs
    (the gap of integer data from the counts: no rounding at a threshold)."""
    grid = np.unique(np.concatenate([first.knots, second.knots]))
    if grid.size == 1:
        return 0.0, 0.0
    start = first.at(grid[:-1]) - second.at(grid[:-1])  # each interval: the gap after its left end ...
    end = first.before(grid[1:]) - second.before(grid[1:])  # ... and just before its right end
    width = np.diff(grid)
    same_sign = start * end >= 0
    magnitude = np.abs(start) + np.abs(end)
    crossing = np.divide(start ** 2 + end ** 2, 2 * magnitude, out=np.zeros_like(magnitude), where=magnitude > 0)
    area = np.where(same_sign, magnitude / 2, crossing) * width
    if first.cumulative is not None and second.cumulative is not None:
        return float(area.sum()), _exact_gap(first, second, grid)
    return float(area.sum()), float(max(np.abs(start).max(), np.abs(end).max()))


def _exact_gap(first: Distribution, second: Distribution, grid: np.ndarray) -> float:
    """The largest CDF gap of two integer histograms, ``max |a * n2 - b * n1| / (n1 * n2)`` over
    the counts up to each value, correctly rounded (int64 where no product can overflow)."""
    from fractions import Fraction

    a, b = _counts_up_to(first, grid), _counts_up_to(second, grid)
    n1, n2 = first.total, second.total
    if n1 * n2 >= 2 ** 62:
        a, b = a.astype(object), b.astype(object)
    return float(Fraction(int(np.abs(a * n2 - b * n1).max()), n1 * n2))


def _counts_up_to(distribution: Distribution, x: np.ndarray) -> np.ndarray:
    index = np.searchsorted(distribution.knots, x, side="right") - 1
    return np.where(index >= 0, distribution.cumulative[np.clip(index, 0, None)], 0)


def psi(reference: Distribution, other: Distribution, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index over the reference's decile bins (values up to each decile)."""
    if reference.cumulative is not None:  # integer data: the deciles from the counts, exactly
        edges = reference.knots[[int(np.searchsorted(reference.cumulative * 10, k * reference.total, side="left"))
                                 for k in range(1, 10)]]
    else:
        edges = np.array([reference.quantile(q / 10) for q in range(1, 10)])
    expected = np.diff(np.concatenate([[0.0], reference.at(edges), [1.0]]))
    actual = np.diff(np.concatenate([[0.0], other.at(edges), [1.0]]))
    expected, actual = np.maximum(expected, epsilon), np.maximum(actual, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class ChannelDrift:
    """How one channel (or all pooled) of another dataset differs from the reference."""

    name: str
    mean_shift: float
    mean_shift_std: float | None  # in reference stds (None: the reference std is 0)
    std_ratio: float | None  # None: the reference std is 0
    min_shift: float
    max_shift: float
    percentile_shifts: dict[str, float]
    wasserstein: float | None  # in reference stds (None: the reference std is 0)
    wasserstein_raw: float
    wasserstein_raw_error: float  # bounds wasserstein_raw (the values' units); 0 when exact
    ks: float
    ks_error: float  # 0 when exact
    psi: float
    drift: bool


@dataclass(frozen=True)
class Comparison:
    """The drift of ``other`` from ``reference``, per channel and pooled."""

    scale: str  # "raw", or "[0, 1]" (raw / value_scale) for datasets of different dtypes
    channels: list[ChannelDrift]
    pooled: ChannelDrift
    max_wasserstein: float = MAX_WASSERSTEIN
    max_ks: float = MAX_KS
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return any(channel.drift for channel in self.channels) or self.pooled.drift

    @property
    def drifting(self) -> list[str]:
        """The channels (and "pooled") that drift."""
        return [c.name for c in [*self.channels, self.pooled] if c.drift]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``imagenorm compare --json`` prints."""
        return {"scale": self.scale, "channels": [_finite(asdict(c)) for c in self.channels], "pooled": _finite(asdict(self.pooled)),
                "drift": self.drift, "thresholds": {"max_wasserstein": self.max_wasserstein, "max_ks": self.max_ks},
                "psi_epsilon": PSI_EPSILON, "notes": self.notes}


def _finite(record: dict) -> dict:
    """Non-finite numbers (an overflow past a tiny std) as None: valid JSON."""
    def clean(value):
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return None if isinstance(value, float) and not np.isfinite(value) else value

    return clean(record)


def compare_stats(reference: Any, other: Any, *, max_wasserstein: float = MAX_WASSERSTEIN,
                  max_ks: float = MAX_KS) -> Comparison:
    """How ``other`` differs from ``reference`` (two :class:`~imagenorm.DatasetStats`); drift
    where ``wasserstein`` (reference stds)
    exceeds ``max_wasserstein`` or ``ks`` exceeds ``max_ks`` in any channel or pooled.

    Raises:
        ImagenormError: other channels, or values in other units (raw against physical), or
            dtypes without a common [0, 1] scale; float statistics without histograms.
        OptionError: a threshold that is not a non-negative number.
    """
    for name, value in (("max_wasserstein", max_wasserstein), ("max_ks", max_ks)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise OptionError(f"{name} must be a finite non-negative number, got {value!r}")
    for name, stats in (("reference", reference), ("other", other)):
        if type(stats).__name__ != "DatasetStats":
            raise OptionError(f"{name} must be a DatasetStats (imagenorm.compute_stats or DatasetStats.load), "
                              f"got {type(stats).__name__}")
    scales, scale_name, notes = _common_scale(reference, other)
    mine, theirs = distributions(reference, scales[0]), distributions(other, scales[1])
    single = len(reference.channel_names) == 1  # pooled is the channel: measured once
    summaries = list(zip([*reference.channel_names, "pooled"], [*reference.channels, reference.pooled],
                         [*other.channels, other.pooled], mine, theirs))[:1 if single else None]
    drifts = [_channel(name, a, b, scales, first, second, max_wasserstein, max_ks) for name, a, b, first, second in summaries]
    if single:
        drifts.append(ChannelDrift(**{**asdict(drifts[0]), "name": "pooled"}))
    return Comparison(scale_name, drifts[:-1], drifts[-1], max_wasserstein, max_ks, notes)


def _common_scale(reference: Any, other: Any) -> tuple[tuple[float, float], str, list[str]]:
    """The divisors that put both in one unit: none for the same dtype and scale, else each
    ``value_scale`` (the [0, 1] scale) where both have one."""
    if reference.channel_names != other.channel_names:
        raise ImagenormError(f"cannot compare channels {list(other.channel_names)} with {list(reference.channel_names)}")
    units = reference.measurement.units | other.measurement.units
    if "physical" in units and units != {"physical"}:
        raise ImagenormError("cannot compare values in physical units (DICOM modality values, NIfTI) with raw pixel values")
    notes = []
    theirs = other.read_options.to_dict()
    differing = {key: (value, theirs[key]) for key, value in reference.read_options.to_dict().items()
                 if key != "mask_dir" and value != theirs[key]}
    if differing:
        notes.append("read with other options: " + ", ".join(f"{key} {a!r} vs {b!r}" for key, (a, b) in differing.items()))
    if (reference.dtype, reference.value_scale) == (other.dtype, other.value_scale):
        return (1.0, 1.0), "raw", notes
    if units == {"physical"}:  # HU in int16, int32 or float: one unit whatever the container
        notes.append(f"{reference.dtype} and {other.dtype} values in physical units compared as they are")
        return (1.0, 1.0), "raw", notes
    if np.dtype(reference.dtype).kind == np.dtype(other.dtype).kind == "f":  # floats: one unit whatever the width
        notes.append(f"{reference.dtype} and {other.dtype} values compared as they are")
        return (1.0, 1.0), "raw", notes
    for stats in (reference, other):
        kind = np.dtype(stats.dtype)
        if "physical" in units or not stats.has_unit_scale or kind.kind == "i":
            raise ImagenormError(f"cannot compare {reference.dtype} with {other.dtype} values: they share no unit "
                                 f"({stats.dtype} values have no [0, 1] scale)")
        if kind.kind == "f" and (stats.pooled.min < -0.5 or stats.pooled.max > 1.5):
            raise ImagenormError(f"cannot compare {reference.dtype} with {other.dtype} values: the {stats.dtype} values "
                                 f"({stats.pooled.min:g}..{stats.pooled.max:g}) are not in the [0, 1] scale that integer "
                                 "values are divided into")
    notes.append(f"{reference.dtype} and {other.dtype} compared in the [0, 1] scale "
                 f"(raw / {reference.value_scale:g} and raw / {other.value_scale:g})")
    return (reference.value_scale, other.value_scale), "[0, 1]", notes


def _channel(name: str, a, b, scales: tuple[float, float], first: Distribution, second: Distribution,
             max_wasserstein: float, max_ks: float) -> ChannelDrift:
    ra, rb = scales
    std = a.std / ra
    raw, ks = wasserstein_and_ks(first, second)
    shift = b.mean / rb - a.mean / ra
    wasserstein = raw / std if std > 0 else None
    shifts = {key: b.percentiles[key] / rb - value / ra for key, value in a.percentiles.items() if key in b.percentiles}
    drifting = ks > max_ks or (wasserstein > max_wasserstein if wasserstein is not None else raw > 0)
    return ChannelDrift(
        name=name,
        mean_shift=shift,
        mean_shift_std=shift / std if std > 0 else None,
        std_ratio=(b.std / rb) / std if std > 0 else None,
        min_shift=b.min / rb - a.min / ra,
        max_shift=b.max / rb - a.max / ra,
        percentile_shifts=shifts,
        wasserstein=wasserstein,
        wasserstein_raw=raw,
        wasserstein_raw_error=first.width + second.width,
        ks=ks,
        ks_error=first.heaviest + second.heaviest,
        psi=psi(first, second),
        drift=bool(drifting),
    )
