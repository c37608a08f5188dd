"""Exact, mergeable dataset statistics: state, accumulation and the result type."""

from .compute import compute_stats
from .result import DatasetStats
from .summary import PERCENTILES, Summary

__all__ = ["compute_stats", "DatasetStats", "PERCENTILES", "Summary"]
