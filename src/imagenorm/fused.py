"""One-pass CPU kernels for the transforms: integer or float pixels in, affine-mapped floats out.

``y = x * scale[c] + shift[c]``, optionally clipped, read once and written once, with the
conversion from uint8/uint16/int16/float done inside the loop (no intermediate copies).
The arithmetic is float64 (scale and shift are float64), so a float32 output is the
float64 result rounded once. Each kernel releases the GIL, so batches are split over threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

#: Input dtypes the kernels take; others go through torch operations.
KERNEL_INPUTS = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")
KERNEL_OUTPUTS = ("float32", "float64")


@njit(nogil=True, cache=True)
def _planes(x, out, scale, shift, first_plane, low, high, clip):  # pragma: no cover - compiled
    """Rows of ``x``/``out`` ``(planes, plane_size)`` are channel planes; plane p has channel (first_plane + p) % C."""
    channels = scale.size
    for plane in range(x.shape[0]):
        channel = (first_plane + plane) % channels
        s = scale[channel]
        b = shift[channel]
        row_in = x[plane]
        row_out = out[plane]
        if clip:
            for i in range(row_in.size):
                row_out[i] = min(max(row_in[i] * s + b, low), high)
        else:
            for i in range(row_in.size):
                row_out[i] = row_in[i] * s + b


@njit(nogil=True, cache=True)
def _interleaved(x, out, scale, shift, low, high, clip):  # pragma: no cover - compiled
    """Rows of ``x``/``out`` ``(pixels, C)`` are pixels of C interleaved channels (channels-last)."""
    channels = scale.size
    for pixel in range(x.shape[0]):
        for channel in range(channels):
            value = x[pixel, channel] * scale[channel] + shift[channel]
            if clip:
                value = min(max(value, low), high)
            out[pixel, channel] = value


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool per process (a forked DataLoader worker makes its own)."""
    key = os.getpid() * 1000 + threads
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="imagenorm")
        return _pools[key]


def affine_planes(x: np.ndarray, out: np.ndarray, scale, shift, clip, threads: int = 1) -> None:
    """``out = x * scale + shift`` for ``(planes, size)`` arrays whose planes cycle through channels."""
    scale, shift = np.asarray(scale, np.float64), np.asarray(shift, np.float64)
    low, high, do_clip = _clip_args(clip)
    planes = x.shape[0]
    if threads <= 1 or planes < 2 * threads:
        _planes(x, out, scale, shift, 0, low, high, do_clip)
        return
    bounds = np.linspace(0, planes, threads + 1).astype(int)
    jobs = [
        _pool(threads).submit(_planes, x[a:b], out[a:b], scale, shift, a, low, high, do_clip)
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    for job in jobs:
        job.result()


def affine_interleaved(x: np.ndarray, out: np.ndarray, scale, shift, clip, threads: int = 1) -> None:
    """``out = x * scale + shift`` for ``(pixels, C)`` arrays (channels-last memory)."""
    scale, shift = np.asarray(scale, np.float64), np.asarray(shift, np.float64)
    low, high, do_clip = _clip_args(clip)
    pixels = x.shape[0]
    if threads <= 1 or pixels < 4096 * threads:
        _interleaved(x, out, scale, shift, low, high, do_clip)
        return
    bounds = np.linspace(0, pixels, threads + 1).astype(int)
    jobs = [
        _pool(threads).submit(_interleaved, x[a:b], out[a:b], scale, shift, low, high, do_clip)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    for job in jobs:
        job.result()


def _clip_args(clip) -> tuple[float, float, bool]:
    if clip is None:
        return 0.0, 0.0, False
    return float(clip[0]), float(clip[1]), True
