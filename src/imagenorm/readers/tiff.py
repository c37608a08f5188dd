"""TIFF through tifffile: every page, any bit depth, integer or float samples."""

from __future__ import annotations

import math
import struct

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
        check_complete(tif, series, path)
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


def check_complete(tif, series: list, path: str) -> None:
    """Refuse a TIFF whose data end before what its header declares.

    tifffile reads what it finds: it drops the pages after a broken chain of IFDs (a file cut
    short), reads an ImageJ stack cut short as its first image, fills a strip or tile that
    has no data (offset or byte count 0) with zeros, and reads past a single strip whose byte
    count is too small. Only the header and the IFD chain are read here, no pixel.
    """
    _check_page_chain(tif, path)
    _check_imagej_stack(tif, path)
    for pages in series:
        for page in pages:
            if page is not None:
                _check_segments(page, path, stacked=tif.is_stk or tif.is_lsm)


def _check_page_chain(tif, path: str) -> None:
    """The last page tifffile found must end the chain (its next-IFD offset is 0)."""
    position = tif.pages.next_page_offset
    if position is None:
        return
    form, handle = tif.tiff, tif.filehandle
    handle.seek(position)
    stored = handle.read(form.offsetsize)
    if len(stored) < form.offsetsize or struct.unpack(form.offsetformat, stored)[0] != 0:
        raise ReadError(path, f"the file ends after page {len(tif.pages)}, inside the pages it declares (truncated)")


def _check_imagej_stack(tif, path: str) -> None:
    """An ImageJ stack of more images than IFDs stores them all after the first page's data start."""
    if not tif.is_imagej:
        return
    images, first = int((tif.imagej_metadata or {}).get("images", 1)), tif.pages.first
    if images <= len(tif.pages) or not first.is_contiguous or not first.nbytes:
        return
    available = tif.filehandle.size - first.dataoffsets[0]
    if available < images * first.nbytes:
        raise ReadError(path, f"pixel data end after {available // first.nbytes} of {images} images (ImageJ stack)")


def _check_segments(page, path: str, stacked: bool) -> None:
    """Every strip or tile of ``page`` has data, and a single uncompressed one holds the whole page.

    ``stacked``: MetaMorph STK and Zeiss LSM files declare one plane's bytes for a stack.
    """
    offsets, counts = page.dataoffsets, page.databytecounts
    name = f"page {page.index + 1}" if isinstance(page.index, int) else f"page {page.index}"  # SubIFDs: a tuple
    for index, (offset, count) in enumerate(zip(offsets, counts)):
        if not offset or not count:
            kind = "tile" if page.is_tiled else "strip"
            raise ReadError(path, f"{name}: {kind} {index + 1} of {len(offsets)} has no data")
    if len(counts) == 1 and page.is_contiguous and not stacked and counts[0] < page.nbytes:
        raise ReadError(path, f"{name}: pixel data end after {counts[0]:,} of {page.nbytes:,} bytes")


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
