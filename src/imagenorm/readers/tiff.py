"""TIFF through tifffile: every page, any bit depth, integer or float samples."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ReadError
from .base import ReadOptions, DecodedImage, array_channels, channels_for, check_pixel_limit

EXTENSIONS = (".tif", ".tiff")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode all series of a TIFF file.

    One series becomes ``(C, *spatial)`` (pages become a leading spatial axis); a file
    whose series differ in shape is flattened to ``(C, N)``, all pixels kept.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = list(tif.series)
        if not series:
            raise ReadError(path, "cannot decode: no image data in the TIFF file")
        total = sum(math.prod(s.shape) // _channel_count(s) for s in series)
        check_pixel_limit(path, total, options.max_pixels)
        arrays = [_channel_first(s.asarray(), s.axes) for s in series]
        has_alpha = bool(tif.pages[0].extrasamples)
    counts = {a.shape[0] for a in arrays}
    if len(counts) > 1:
        raise ReadError(path, f"its series have different channel counts {sorted(counts)}")
    if len(arrays) == 1:
        pixels = arrays[0]
    elif len({a.shape for a in arrays}) == 1:
        pixels = np.stack(arrays, axis=1)
    else:
        pixels = np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)
    count = pixels.shape[0]
    names = channels_for(count) if has_alpha and count in (2, 4) else array_channels(count)
    return DecodedImage(pixels=pixels, channels=names)


def _channel_count(series) -> int:
    axes, shape = series.axes, series.shape
    for axis in "SC":
        if axis in axes:
            return shape[axes.index(axis)]
    return 1


def _channel_first(array: np.ndarray, axes: str) -> np.ndarray:
    for axis in "SC":
        if axis in axes:
            return np.moveaxis(array, axes.index(axis), 0)
    return array[None]
