"""One-pass CPU kernels for the transforms: integer or float pixels in, affine-mapped floats out.

``y = x * scale[c] + shift[c]``, optionally clipped, read once and written once, with the
conversion from uint8/uint16/int16/float done inside the loop (no intermediate copies).
Arithmetic: float32 when the output is float32 and every ``|shift| <= 8`` (the error is
then below ~1e-6 absolute, under the output's own rounding for |y| >= 8), else float64, so
that large offsets (a mean far from zero relative to the std) cannot cancel digits away.
Each kernel releases the GIL, so batches are split over threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .compiled import kernel

#: Input dtypes the kernels take; others go through torch operations.
KERNEL_INPUTS = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")
KERNEL_OUTPUTS = ("float32", "float64")


@kernel(nogil=True)
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


@kernel(nogil=True)
def _planes32(x, out, scale, shift, first_plane, low, high, clip):  # pragma: no cover - compiled
    """As :func:`_planes`, in float32 arithmetic (three times faster on data in cache)."""
    channels = scale.size
    low32, high32 = np.float32(low), np.float32(high)
    for plane in range(x.shape[0]):
        channel = (first_plane + plane) % channels
        s = np.float32(scale[channel])
        b = np.float32(shift[channel])
        row_in = x[plane]
        row_out = out[plane]
        if clip:
            for i in range(row_in.size):
                row_out[i] = min(max(np.float32(row_in[i]) * s + b, low32), high32)
        else:
            for i in range(row_in.size):
                row_out[i] = np.float32(row_in[i]) * s + b


@kernel(nogil=True)
def _interleaved(x, out, scale, shift, low, high, clip):  # pragma: no cover - compiled
    """Rows of ``x``/``out`` ``(pixels, C)`` are pixels of C interleaved channels (channels-last)."""
    channels = scale.size
    for pixel in range(x.shape[0]):
        for channel in range(channels):
            value = x[pixel, channel] * scale[channel] + shift[channel]
            if clip:
                value = min(max(value, low), high)
            out[pixel, channel] = value


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool per process (a forked DataLoader worker makes its own)."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="imagenorm")
        return _pools[key]


def affine_planes(x: np.ndarray, out: np.ndarray, scale: np.ndarray, shift: np.ndarray, clip, threads: int = 1) -> None:
    """``out = x * scale + shift`` for ``(planes, size)`` arrays whose planes cycle through channels.

    ``scale`` and ``shift`` are float64 arrays, one value per channel (or per plane).
    """
    low, high, do_clip = _clip_args(clip)
    kernel = _planes32 if float32_is_exact_enough(shift, out.dtype) else _planes
    planes = x.shape[0]
    if threads <= 1 or planes < 2 * threads or x.size < 1 << 20:
        kernel(x, out, scale, shift, 0, low, high, do_clip)
        return
    bounds = np.linspace(0, planes, threads + 1).astype(int)
    jobs = [
        _pool(threads).submit(kernel, x[a:b], out[a:b], scale, shift, a, low, high, do_clip)
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    for job in jobs:
        job.result()


def affine_interleaved(x: np.ndarray, out: np.ndarray, scale: np.ndarray, shift: np.ndarray, clip, threads: int = 1) -> None:
    """``out = x * scale + shift`` for ``(pixels, C)`` arrays (channels-last memory)."""
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


def float32_is_exact_enough(shift: np.ndarray, dtype: np.dtype) -> bool:
    """float32 arithmetic for float32 output unless a large offset would cancel digits."""
    if dtype != np.float32:
        return False
    if shift.size <= 8:  # the common case: a few channels, cheaper without numpy reductions
        return all(-8.0 <= value <= 8.0 for value in shift.tolist())
    return float(np.abs(shift).max()) <= 8.0


def _clip_args(clip) -> tuple[float, float, bool]:
    if clip is None:
        return 0.0, 0.0, False
    return float(clip[0]), float(clip[1]), True


@kernel(nogil=True)
def _piecewise(x, out, breaks, slopes, intercepts):  # pragma: no cover - compiled
    """``out[i] = slopes[k] * x[i] + intercepts[k]``, k the number of ``breaks`` <= x[i]
    (``numpy.digitize(x, breaks)``), in float64; flat arrays."""
    count = breaks.size
    for i in range(x.size):
        value = np.float64(x[i])
        low, high = 0, count
        while low < high:  # the first break above value
            middle = (low + high) // 2
            if breaks[middle] <= value:
                low = middle + 1
            else:
                high = middle
        out[i] = slopes[low] * value + intercepts[low]


def piecewise_linear(x: np.ndarray, out: np.ndarray, breaks: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray,
                     threads: int = 1) -> None:
    """``out = slopes[k] * x + intercepts[k]`` for flat arrays, segment ``k`` from ``breaks`` (sorted,
    ``len(slopes) == len(breaks) + 1``) as ``numpy.digitize`` finds it; large arrays over threads."""
    size = x.size
    if threads <= 1 or size < 1 << 20:
        _piecewise(x, out, breaks, slopes, intercepts)
        return
    bounds = np.linspace(0, size, threads + 1).astype(int)
    jobs = [_pool(threads).submit(_piecewise, x[a:b], out[a:b], breaks, slopes, intercepts)
            for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for job in jobs:
        job.result()
