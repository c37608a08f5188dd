"""Exact, mergeable dataset statistics: state, accumulation and the result type.

``compute_stats`` (and the readers it needs) is imported on first use, so that reading a
stats file (``imagenorm show``, ``compare``, ``report``) starts quickly.
"""

from .result import DatasetStats
from .summary import PERCENTILES, Summary

__all__ = ["compute_stats", "DatasetStats", "PERCENTILES", "Summary"]


def __getattr__(name: str):
    if name == "compute_stats":
        from .compute import compute_stats

        globals()["compute_stats"] = compute_stats
        return compute_stats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
