"""Compiled reduction kernel: exact per-channel histograms of 8- and 16-bit pixels.

The kernel counts the raw *unsigned* bit patterns (signed data are viewed as unsigned
and their bins rotated by half afterwards, see :func:`bins_to_values`), so every
index is unsigned and needs no bounds or wrap-around arithmetic. Two histogram banks
are filled in turn so that equal neighbouring values do not wait on each other's
store. About 1,000 megapixels per second for interleaved 8-bit RGB on one core
(numpy's bincount per channel: ~210; OpenCV's calcHist: ~560).
"""

from __future__ import annotations

import numpy as np

from ..compiled import kernel

BANKS = 2


@kernel(nogil=True)
def _count_interleaved(flat, channels, banks):  # pragma: no cover - compiled
    """Add ``flat`` (pixels of ``channels`` interleaved samples) into ``banks[2, C, bins]``."""
    pixels = flat.size // channels
    for pair in range(pixels // 2):
        first = 2 * pair * channels
        second = first + channels
        for channel in range(channels):
            banks[0, channel, flat[first + channel]] += 1
            banks[1, channel, flat[second + channel]] += 1
    if pixels % 2:
        last = (pixels - 1) * channels
        for channel in range(channels):
            banks[0, channel, flat[last + channel]] += 1


@kernel(nogil=True)
def _count_plane(flat, banks):  # pragma: no cover - compiled
    """One channel, unrolled by four over two banks: ~3.4x the generic loop on gray images."""
    quads = flat.size // 4
    for quad in range(quads):
        j = 4 * quad
        banks[0, 0, flat[j]] += 1
        banks[1, 0, flat[j + 1]] += 1
        banks[0, 0, flat[j + 2]] += 1
        banks[1, 0, flat[j + 3]] += 1
    for j in range(4 * quads, flat.size):
        banks[0, 0, flat[j]] += 1


@kernel(nogil=True)
def _count_rgb(flat, banks):  # pragma: no cover - compiled
    """The 3-channel case unrolled: the common RGB image."""
    pixels = flat.size // 3
    for pair in range(pixels // 2):
        j = 6 * pair
        banks[0, 0, flat[j]] += 1
        banks[0, 1, flat[j + 1]] += 1
        banks[0, 2, flat[j + 2]] += 1
        banks[1, 0, flat[j + 3]] += 1
        banks[1, 1, flat[j + 4]] += 1
        banks[1, 2, flat[j + 5]] += 1
    if pixels % 2:
        j = 3 * (pixels - 1)
        for channel in range(3):
            banks[0, channel, flat[j + channel]] += 1


@kernel(nogil=True)
def _count_from(flat, low, counts):  # pragma: no cover - compiled
    """counts[v - low] += 1 for each value v of ``flat`` (all known to lie in counts' range)."""
    for i in range(flat.size):
        counts[np.uint64(np.int64(flat[i]) - low)] += 1


def count_range(values: np.ndarray, low: int, counts: np.ndarray) -> None:
    """Add the values of each row of ``values`` ``(C, N)`` into ``counts[C, bins]`` from ``low`` (one pass)."""
    for row, out in zip(values, counts):
        _count_from(np.ascontiguousarray(row), np.int64(low), out)


def native(array: np.ndarray) -> np.ndarray:
    """``array`` in this machine's byte order (a copy only for big-endian data)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def as_kernel_floats(array: np.ndarray) -> np.ndarray:
    """Native-order values of a type the float kernels compile for (float16 and bool widened)."""
    if array.dtype.kind == "b" or array.dtype.kind == "f" and array.dtype.itemsize < 4:
        return array.astype(np.float32)
    return native(array)


def count_values(pixels: np.ndarray, banks: np.ndarray) -> None:
    """Add the bit patterns of channel-first ``pixels`` ``(C, ...)`` into ``banks[2, C, bins]``.

    Channel-last buffers (what decoders produce) and channel-first ones are both
    read in place; other strides are copied first.
    """
    pixels = native(pixels)  # the bit patterns must be native order
    unsigned = pixels.view(np.dtype(f"u{pixels.dtype.itemsize}"))
    channels = unsigned.shape[0]
    if channels == 1:  # any memory order will do (NIfTI volumes are Fortran-ordered): no copy
        _count_plane(unsigned[0].ravel(order="K"), banks)
        return
    channel_last = unsigned.transpose((*range(1, unsigned.ndim), 0))
    if channel_last.flags.c_contiguous:
        flat = np.ascontiguousarray(channel_last).reshape(-1)
        if channels == 3:
            _count_rgb(flat, banks)
        else:
            _count_interleaved(flat, channels, banks)
        return
    for channel in range(channels):
        plane = np.ascontiguousarray(unsigned[channel]).reshape(-1)
        _count_plane(plane, banks[:, channel : channel + 1])


def bins_to_values(counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reorder counts of bit patterns so that bin ``b`` counts the value ``dtype.min + b``."""
    if np.dtype(dtype).kind == "i":
        return np.roll(counts, counts.shape[-1] // 2, axis=-1)
    return counts


def warm_up(dtype: np.dtype, channels: int) -> None:
    """Compile the kernel for ``dtype`` now (before worker processes fork)."""
    sample = np.zeros((channels, 2, 3), dtype=dtype)
    count_values(sample, np.zeros((BANKS, channels, 1 << (8 * np.dtype(dtype).itemsize)), np.int64))


@kernel(nogil=True)
def _float_row_moments(row, out):  # pragma: no cover - compiled
    """out = [count, mean, m2, min, max, nonfinite] of the finite values of ``row`` (float64,
    compensated sums: relative error near machine precision whatever the length)."""
    count = 0
    total = 0.0
    carry = 0.0
    low = np.inf
    high = -np.inf
    bad = 0
    for i in range(row.size):
        value = np.float64(row[i])
        if not np.isfinite(value):
            bad += 1
            continue
        count += 1
        step = value - carry
        new_total = total + step
        carry = (new_total - total) - step
        total = new_total
        low = min(low, value)
        high = max(high, value)
    mean = total / count if count else 0.0
    m2 = 0.0
    carry = 0.0
    if count:
        for i in range(row.size):
            value = np.float64(row[i])
            if np.isfinite(value):
                square = (value - mean) * (value - mean)
                step = square - carry
                new_m2 = m2 + step
                carry = (new_m2 - m2) - step
                m2 = new_m2
    out[0] = count
    out[1] = mean
    out[2] = m2
    out[3] = low
    out[4] = high
    out[5] = bad


def float_moments(pixels: np.ndarray) -> np.ndarray:
    """Per channel ``[count, mean, m2, min, max, nonfinite]`` of channel-first pixels, ``(C, 6)``."""
    flat = as_kernel_floats(pixels).reshape(pixels.shape[0], -1)
    result = np.zeros((flat.shape[0], 6), np.float64)
    for channel in range(flat.shape[0]):
        _float_row_moments(np.ascontiguousarray(flat[channel]), result[channel])
    return result


@kernel(inline="always")
def _bin_index(value, low, scale, bins):  # pragma: no cover - compiled
    """The float histogram's bin of ``value``: ``clip(int((value - low) * scale), 0, bins - 1)``."""
    index = np.int64((value - low) * scale)
    if index < 0:
        return 0
    if index > bins - 1:
        return bins - 1
    return index


@kernel(nogil=True)
def _bin_float_row(row, low, scale, bins, counts):  # pragma: no cover - compiled
    for i in range(row.size):
        value = np.float64(row[i])
        if np.isfinite(value):
            counts[_bin_index(value, low, scale, bins)] += 1


@kernel(nogil=True)
def _bin_indices(row, low, scale, bins, out):  # pragma: no cover - compiled
    for i in range(row.size):
        out[i] = _bin_index(np.float64(row[i]), low, scale, bins)


@kernel(nogil=True)
def _select_in_bins(row, low, scale, bins, wanted, out):  # pragma: no cover - compiled
    kept = 0
    for i in range(row.size):
        value = np.float64(row[i])
        if np.isfinite(value) and wanted[_bin_index(value, low, scale, bins)]:
            out[kept] = value
            kept += 1
    return kept


def _flat(row: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(as_kernel_floats(row)).reshape(-1)


def bin_floats(row: np.ndarray, low: float, scale: float, counts: np.ndarray) -> None:
    """Add the finite values of ``row`` into the float histogram ``counts`` (``scale`` 0: bin 0)."""
    _bin_float_row(_flat(row), np.float64(low), np.float64(scale), counts.size, counts)


def bin_indices(values: np.ndarray, low: float, scale: float, bins: int) -> np.ndarray:
    """The bin of each (finite) value, by the same formula as :func:`bin_floats`."""
    flat = _flat(values)
    out = np.empty(flat.size, np.int64)
    _bin_indices(flat, np.float64(low), np.float64(scale), bins, out)
    return out


def values_in_bins(row: np.ndarray, low: float, scale: float, wanted: np.ndarray) -> np.ndarray:
    """The finite values of ``row`` that fall in the bins marked by the boolean ``wanted``."""
    flat = _flat(row)
    out = np.empty(flat.size, np.float64)
    kept = _select_in_bins(flat, np.float64(low), np.float64(scale), wanted.size, wanted, out)
    return out[:kept]
