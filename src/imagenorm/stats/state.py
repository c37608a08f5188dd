"""The protocol every statistics state implements, so that one code path serves them all.

A state is what a file, a worker, a checkpoint or a rank hands on. Each declares one
reduction per field, so that merging the states of any split of the data gives the state
of the whole, in any order:

- :class:`~.histogram.IntegerHistogram` (integers): exact counts per value (sum);
- :class:`~.moments.FloatMoments` (floats): count (sum), mean and M2 (Chan's merge), min,
  max, non-finite count (sum);
- :class:`~.float_percentiles.FloatHistogram` and :class:`~.float_percentiles.BracketValues`:
  the second and third passes that give float data their percentiles.

Workers merge states, checkpoints store ``to_arrays()``, ranks sum ``sum_key()``-compatible
counts with one ``all_reduce`` and merge the rest: nothing outside a state asks its type.
"""

from __future__ import annotations

import functools

from typing import Any, ClassVar

import numpy as np


class State:
    """Mergeable statistics of some pixels (see the module docstring)."""

    kind: ClassVar[str] = ""
    #: Every statistic derived from it is exact (integer histograms).
    exact: ClassVar[bool] = False
    _kinds: ClassVar[dict[str, type["State"]]] = {}

    def __init_subclass__(cls, **options) -> None:
        super().__init_subclass__(**options)
        State._kinds[cls.kind] = cls

    def update(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Add channel-first ``pixels``; first-pass states return the image's per-channel mean and std."""
        raise NotImplementedError

    def merge(self, other: "State") -> "State":
        """The state of both parts together (never modifies either)."""
        raise NotImplementedError

    def accepting(self, dtype: np.dtype) -> "State":
        """This state, promoted if needed to take pixels of ``dtype`` (see :func:`common_dtype`)."""
        return self

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able description, named arrays): how checkpoints store a state."""
        raise NotImplementedError

    @classmethod
    def _from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "State":
        raise NotImplementedError

    @staticmethod
    def from_arrays(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "State":
        """The state that ``to_arrays`` described."""
        return State._kinds[meta["kind"]]._from_arrays(meta, arrays)

    def sum_key(self) -> tuple | None:
        """For states whose bulk is one fixed-size count array that ranks add up: what must be
        equal on every rank for the sum to be valid (else None: ranks merge whole states)."""
        return None

    def with_counts(self, counts: np.ndarray) -> "State":
        """The same state with its count array replaced (the all-reduced sum)."""
        raise NotImplementedError

    def emptied(self) -> "State":
        """The same state with zero counts (what travels beside an all-reduced sum)."""
        return self.with_counts(np.zeros_like(self.counts))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        meta, arrays = self.to_arrays()
        other_meta, other_arrays = other.to_arrays()
        return meta == other_meta and arrays.keys() == other_arrays.keys() and all(
            np.array_equal(arrays[key], other_arrays[key], equal_nan=arrays[key].dtype.kind == "f") for key in arrays)

    __hash__ = None


@functools.lru_cache(maxsize=None)
def common_dtype(*names: str) -> str:
    """The dtype that holds the values of all ``names``: the same one, the widest integer
    that holds every integer type, or float64 as soon as a float is involved.

    Example:
        >>> common_dtype("int16", "int32"), common_dtype("uint16", "int16"), common_dtype("uint16", "float32")
        ('int32', 'int32', 'float64')
    """
    kinds = {np.dtype(name) for name in names}
    if len(kinds) == 1:
        return next(iter(kinds)).name
    if any(kind.kind not in "ui" for kind in kinds):
        return "float64"
    return np.result_type(*kinds).name
