"""Compiled kernels: numba's ``njit``, cached on disk where a cache folder can be written.

A read-only install (a container image, a non-root user without a writable home) has no
place for numba's cache; the kernels then compile once per process instead of failing at
import. Nothing process-wide (``NUMBA_CACHE_DIR``, numba's config) is changed.

Example:
    >>> @kernel(nogil=True)
    ... def twice(x):
    ...     return 2 * x
    >>> twice(21)
    42
"""

from __future__ import annotations

from typing import Callable

from numba import njit


def kernel(**options) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``, or without the cache where none can be written."""
    def decorate(function: Callable) -> Callable:
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(**options)(function)

    return decorate
