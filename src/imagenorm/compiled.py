"""Compiled kernels: numba's ``njit``, compiled on first call and cached on disk where a cache
folder can be written.

numba is imported only when a kernel first runs, so commands that only read stats files
(``show``, ``compare``, ``report``) start without it (about half a second). A read-only
install (a container image, a non-root user without a writable home) has no place for
numba's cache; the kernels then compile once per process instead of failing. Nothing
process-wide (``NUMBA_CACHE_DIR``, numba's config) is changed.

Example:
    >>> @kernel(nogil=True)
    ... def twice(x):
    ...     return 2 * x
    >>> twice(21)
    42
"""

from __future__ import annotations

import functools
import threading
from typing import Callable


def kernel(**options) -> Callable[[Callable], "LazyKernel"]:
    """``numba.njit(cache=True, **options)`` on first call (without the cache where none can
    be written)."""
    return lambda function: LazyKernel(function, options)


class LazyKernel:
    """A Python function compiled by numba when first called (once, under a lock of its own).
    The kernels it calls (LazyKernels among its module's globals, by the names its code uses)
    are compiled first and put in their place there, so that numba sees dispatchers: after
    that, the module's global of such a callee is the numba dispatcher itself. Pickles by
    module and name, as the numba dispatcher it stands for does."""

    def __init__(self, function: Callable, options: dict) -> None:
        self.function, self.options = function, options
        self._dispatcher = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, function)

    def compiled(self):
        """The numba dispatcher (compiled on first use)."""
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None:
                    names = self.function.__globals__
                    for name in self.function.__code__.co_names:
                        callee = names.get(name)
                        if isinstance(callee, LazyKernel) and callee is not self:
                            names[name] = callee.compiled()  # numba resolves callees from the globals
                    self._dispatcher = _njit(self.function, self.options)
        return self._dispatcher

    def __call__(self, *args):
        return (self._dispatcher or self.compiled())(*args)

    def __reduce__(self):
        return _kernel_named, (self.function.__module__, self.function.__qualname__)


def _njit(function: Callable, options: dict):
    from numba import njit

    try:
        return njit(cache=True, **options)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(**options)(function)


def _kernel_named(module: str, name: str):
    """The kernel ``module.name`` (a LazyKernel, or the dispatcher that took its place)."""
    import importlib

    value = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value
