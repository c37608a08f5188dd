"""``.npy`` arrays, memory-mapped and never unpickled.

Layout: 2-D is one gray image; 3-D is channel-last when the last axis has 1, 3 or 4
entries, channel-first when the first has, else a one-channel volume; 4-D is
``(C, D, H, W)``. Bool arrays are read as uint8 0 and 255 (the bool rule of every reader).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import ReadError
from .base import DecodedImage, ReadOptions, array_channels, bilevel, check_pixel_limit

EXTENSIONS = (".npy",)
_CHANNEL_COUNTS = (1, 3, 4)


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Load an ``.npy`` file of integer, float or bool samples."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ReadError(path, _data_shortage(path) or f"cannot decode: {error}") from None
    if array.dtype.kind not in "uif" and array.dtype != np.bool_:
        raise ReadError(path, f"unsupported array dtype {array.dtype} (expected integers or floats)")
    pixels = to_channel_first(array, path)
    check_pixel_limit(path, math.prod(pixels.shape[1:]), options.max_pixels)
    pixels = bilevel(np.asarray(pixels))  # read the mapped data now, inside the size limit
    names = array_channels(pixels.shape[0])
    return DecodedImage(pixels=pixels, channels=names)


def _data_shortage(path: str) -> str | None:
    """What is missing when the file ends before the data its header declares, else None."""
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as file:
            version = npy.read_magic(file)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(file)
            start = file.tell()
    except (ValueError, OSError):
        return None
    expected, held = math.prod(shape) * dtype.itemsize, os.path.getsize(path) - start
    return f"pixel data end after {held:,} of {expected:,} bytes" if held < expected else None


def to_channel_first(array: np.ndarray, name: str = "array") -> np.ndarray:
    """Apply the layout rule above; returns a view."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        if array.shape[-1] in _CHANNEL_COUNTS and array.shape[0] not in _CHANNEL_COUNTS:
            return np.moveaxis(array, -1, 0)
        if array.shape[0] in _CHANNEL_COUNTS:
            return array
        return array[None]
    if array.ndim == 4:
        return array
    raise ReadError(name, f"expected a 2-D, 3-D or 4-D array, got shape {tuple(array.shape)}")
