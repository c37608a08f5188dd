"""``.npy`` arrays, never unpickled: a file is memory-mapped, bytes are read in memory.

Layout: 2-D is one gray image; 3-D is channel-last when the last axis has 1, 3 or 4
entries, channel-first when the first has, else a one-channel volume; 4-D is
``(C, D, H, W)``. Bool arrays are read as uint8 0 and 255 (the bool rule of every reader).

``read(path, options)`` maps the file, so that only the pixels used are read from disk;
``decode(data, name, options)`` reads the same from bytes (an archive member, a parquet cell).
Both check the header first (dtype, layout, pixel limit, data length), then make the array.
"""

from __future__ import annotations

import io
import math
import os
from typing import BinaryIO, NamedTuple

import numpy as np
from numpy.lib import format as npy

from ..errors import ReadError
from .base import Data, DecodedImage, ReadOptions, array_channels, bilevel, check_pixel_limit

EXTENSIONS = (".npy",)
_CHANNEL_COUNTS = (1, 3, 4)


class _Header(NamedTuple):
    """What a ``.npy`` header declares, and where its data start."""

    shape: tuple[int, ...]
    order: str  # "C" or "F"
    dtype: np.dtype
    offset: int


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Load an ``.npy`` file of integer, float or bool samples, memory-mapped."""
    with open(path, "rb") as file:
        header = _checked_header(file, os.fstat(file.fileno()).st_size, path, options)
        array = np.memmap(file, header.dtype, "r", header.offset, header.shape, header.order)
    return _decoded(array)


def decode(data: Data, name: str, options: ReadOptions) -> DecodedImage:
    """Load ``.npy`` data of integer, float or bool samples; ``name`` is what errors name."""
    stream = io.BytesIO(data)
    header = _checked_header(stream, stream.getbuffer().nbytes, name, options)
    values = stream.read(math.prod(header.shape) * header.dtype.itemsize)  # a copy: the caller's buffer may change
    return _decoded(np.frombuffer(values, header.dtype).reshape(header.shape, order=header.order))


def _checked_header(file: BinaryIO, size: int, name: str, options: ReadOptions) -> _Header:
    """The header of ``file`` (``size`` bytes long), checked before any pixel is read: a supported
    dtype and layout, pixels within the limit, and data for all of them. Leaves ``file`` at the data."""
    header = _read_header(file, size, name)
    if header.dtype.kind not in "uif" and header.dtype != np.bool_:
        raise ReadError(name, f"unsupported array dtype {header.dtype} (expected integers or floats)")
    axis = channel_axis(header.shape, name)
    check_pixel_limit(name, math.prod(n for index, n in enumerate(header.shape) if index != axis), options.max_pixels)
    expected, held = math.prod(header.shape) * header.dtype.itemsize, size - header.offset
    if held < expected:
        raise ReadError(name, f"pixel data end after {held:,} of {expected:,} bytes")
    return header


def _read_header(file: BinaryIO, size: int, name: str) -> _Header:
    """The header numpy wrote at the start of ``file``; a header numpy cannot read is refused."""
    if not size:
        raise ReadError(name, "empty file (0 bytes)")
    try:
        version = npy.read_magic(file)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
    except ValueError as error:  # not .npy, or cut inside its header
        raise ReadError(name, f"cannot decode: {error}") from None
    return _Header(tuple(shape), "F" if fortran_order else "C", dtype, file.tell())


def _decoded(array: np.ndarray) -> DecodedImage:
    """The image of a checked array, channel-first."""
    pixels = bilevel(np.asarray(to_channel_first(array)))
    return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))


def to_channel_first(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Apply the layout rule above; returns a view."""
    axis = channel_axis(array.shape, name)
    return array[None] if axis is None else np.moveaxis(array, axis, 0)


def channel_axis(shape: tuple[int, ...], name: str = "array") -> int | None:
    """The axis of ``shape`` that holds the channels under the layout rule above; None for one channel
    that the array has no axis for. Other than 2-D, 3-D and 4-D is refused, naming ``name``."""
    if len(shape) == 2:
        return None
    if len(shape) == 3:
        if shape[-1] in _CHANNEL_COUNTS and shape[0] not in _CHANNEL_COUNTS:
            return 2
        return 0 if shape[0] in _CHANNEL_COUNTS else None
    if len(shape) == 4:
        return 0
    raise ReadError(name, f"expected a 2-D, 3-D or 4-D array, got shape {tuple(shape)}")
