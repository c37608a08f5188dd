"""What a channel's statistics say, and numpy's "linear" percentile rule in one place.

Every percentile imagenorm reports goes through :func:`linear_rank`: the exact histograms,
the float histogram's target bins, the exact float pass and the approximate one.

Example:
    >>> import numpy as np
    >>> values = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    >>> ordered = np.sort(values)
    >>> linear_percentiles(values.size, lambda rank: ordered[rank], qs=(25, 50))
    {'25': 1.0, '50': 3.0}
    >>> [float(np.percentile(values, q)) for q in (25, 50)]
    [1.0, 3.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

#: Percentiles every stats file reports, as numpy.percentile's ``q``.
PERCENTILES = (0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5)
#: The percentiles shown beside the [0, 1]-scale statistics (terminal table and HTML report).
SCALED_PERCENTILES = (0.5, 50.0, 99.5)


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


def linear_rank(total: int, q: float) -> tuple[int, int, float]:
    """numpy's "linear" percentile ``q`` of ``total`` sorted values: ``(below, above, gamma)``,
    the two ranks it reads and the weight of the upper one, in numpy's float64 arithmetic."""
    virtual = (total - 1) * (np.float64(q) / 100)
    below = math.floor(virtual)
    if virtual >= total - 1:
        below = total - 1
    return below, min(below + 1, total - 1), float(virtual - below)


def target_ranks(total: int, qs: Iterable[float] = PERCENTILES) -> list[int]:
    """Every rank that the percentiles ``qs`` of ``total`` values read, sorted."""
    ranks = set()
    for q in qs:
        below, above, _ = linear_rank(total, q)
        ranks.update((below, above))
    return sorted(ranks)


def linear_percentile_values(total: int, value_at: Callable[[int], float], qs: Iterable[float]) -> list[float]:
    """``numpy.percentile(data, qs)`` (method "linear") of ``total`` sorted values, given
    ``value_at(rank)``, in the order of ``qs``; numpy's interpolation is replicated step by step."""
    result = []
    for q in qs:
        below, above, gamma = linear_rank(total, q)
        a, b = value_at(below), value_at(above)
        difference = b - a
        result.append(float(b - difference * (1 - gamma) if gamma >= 0.5 else a + difference * gamma))
    return result


def linear_percentiles(total: int, value_at: Callable[[int], float], qs=PERCENTILES) -> dict[str, float]:
    """:func:`linear_percentile_values` keyed as in the stats file (``"0.5"``, ``"99"``)."""
    return dict(zip((percentile_key(q) for q in qs), linear_percentile_values(total, value_at, qs)))


def percentile_values_from_counts(values: np.ndarray, counts: np.ndarray, qs: Iterable[float]) -> list[float]:
    """``numpy.percentile(data, qs)`` (method "linear") of data given as sorted values with counts."""
    cumulative = np.cumsum(counts)
    return linear_percentile_values(int(cumulative[-1]), lambda rank: float(values[np.searchsorted(cumulative, rank, side="right")]), qs)


def percentiles_from_counts(values: np.ndarray, counts: np.ndarray, qs=PERCENTILES) -> dict[str, float]:
    """:func:`percentile_values_from_counts` keyed as in the stats file."""
    return dict(zip((percentile_key(q) for q in qs), percentile_values_from_counts(values, counts, qs)))
