"""TIFF through tifffile: every page, any bit depth, integer or float samples.

Channels follow the file's tags: PhotometricInterpretation RGB (or JPEG-compressed YCbCr, which
the codec returns as RGB) names red, green, blue; a single MinIsBlack/MinIsWhite sample is gray;
an extra sample is alpha only where ExtraSamples says so (1: associated, 2: unassociated alpha),
otherwise it is a channel of its own (``channel3`` for the near-infrared band of RGB+NIR), kept
whatever ``alpha`` says. Palette images are expanded through their colour map (8-bit colours
when every entry of the 16-bit map is an 8-bit value times 256 or 257, as writers store them,
else 16-bit). 1-bit images give uint8 0 and 255 (the bool rule). CMYK (Separated), CIE Lab and
YCbCr samples that are not JPEG-compressed are refused, as CMYK is everywhere. Pages of
different dtypes are refused: their raw values do not share one scale, and so are pages that
tifffile would read as zeros because they are in other files it did not find.

``decode(data, name, options)`` reads the same from bytes (an archive member, a parquet cell).
``read(path, options)`` keeps the path: tifffile then finds the other files of a multi-file
OME-TIFF or Micro-Manager stack next to it, which bytes alone cannot name.
"""

from __future__ import annotations

import io
import math
import os
import struct

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, Data, DecodedImage, ReadOptions, bilevel, check_pixel_limit, generic_channels

EXTENSIONS = (".tif", ".tiff")
_MINISWHITE, _RGB, _PALETTE, _SEPARATED, _YCBCR = 0, 2, 3, 5, 6
_LAB = {8: "CIE L*a*b*", 9: "ICC L*a*b*", 10: "ITU L*a*b*"}
_ALPHA_SAMPLES = (1, 2)  # ExtraSamples: associated, unassociated alpha (0 is unspecified data)
_JPEG_COMPRESSION = (6, 7)


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode all series of a TIFF file, with the files it refers to (see the module docstring)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _decoded(tif, path, options)


def decode(data: Data, name: str, options: ReadOptions) -> DecodedImage:
    """Decode all series of TIFF data held in memory; ``name`` is what errors name."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data), name=os.path.basename(name)) as tif:
        return _decoded(tif, name, options)


def _decoded(tif, name: str, options: ReadOptions) -> DecodedImage:
    """The pixels of every series of an open ``tifffile.TiffFile``, checked from its tags first.

    One series becomes ``(C, *spatial)`` (pages become a leading spatial axis); a file
    whose series differ in shape is flattened to ``(C, N)``, all pixels kept.
    """
    series = list(tif.series)
    if not series:
        raise ReadError(name, "cannot decode: no image data in the TIFF file")
    _check_dtypes(series, name)
    for each in series:
        _check_colour_space(each.keyframe, name)
    total = sum(math.prod(s.shape) // _channel_count(s) for s in series)
    check_pixel_limit(name, total, options.max_pixels)
    check_complete(tif, series, name)
    arrays = [_palette_colours(s, name) if _is_palette(s) else _channel_first(s.asarray(), s.axes) for s in series]
    names = RGB if _is_palette(series[0]) else channel_names(series[0], arrays[0].shape[0])
    palette = any(_is_palette(s) for s in series)
    white_is_low = int(series[0].keyframe.photometric) == _MINISWHITE
    notes = ("MinIsWhite kept as stored (low values display bright)",) if white_is_low else ()
    return DecodedImage(pixels=bilevel(_combine(arrays, name)), channels=names, palette=palette, notes=notes)


def _combine(arrays: list[np.ndarray], path: str) -> np.ndarray:
    """The series' pixels as one array: stacked along a new axis when they share a shape, else
    flattened to ``(C, N)``. Channel counts and dtypes (palette colours included) must agree."""
    counts = {a.shape[0] for a in arrays}
    if len(counts) > 1:
        raise ReadError(path, f"its series have different channel counts {sorted(counts)}")
    dtypes = sorted({a.dtype.name for a in arrays})
    if len(dtypes) > 1:
        raise ReadError(path, f"its pages give different dtypes ({', '.join(dtypes)}) once palettes are expanded")
    if len(arrays) == 1:
        return arrays[0]
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays, axis=1)
    return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)


def _check_dtypes(series: list, path: str) -> None:
    """Pages of different dtypes (tifffile makes them separate series) would be upcast to one,
    their raw values then read under a scale that is not theirs: refused, naming them."""
    dtypes = {np.dtype(s.dtype) for s in series}
    if len(dtypes) > 1:
        found = ", ".join(f"{np.dtype(s.dtype)} ({_first_page(s)})" for s in series)
        raise ReadError(path, f"its pages have different dtypes: {found}; save them as separate files or convert them to one dtype")


def _first_page(series) -> str:
    index = series.keyframe.index
    return f"page {index + 1}" if isinstance(index, int) else f"page {index}"


def _check_colour_space(page, path: str) -> None:
    """Refuse samples that are not gray, RGB or palette indices (CMYK, Lab, raw YCbCr)."""
    photometric = int(page.photometric)
    if photometric == _SEPARATED:
        raise ReadError(path, "CMYK (Separated) images are not supported; convert them to RGB first")
    if photometric in _LAB:
        raise ReadError(path, f"{_LAB[photometric]} images are not supported; convert them to RGB first")
    if photometric == _YCBCR and int(page.compression) not in _JPEG_COMPRESSION:
        raise ReadError(path, "YCbCr samples that are not JPEG-compressed are not supported; convert them to RGB first")


def channel_names(series, count: int) -> tuple[str, ...]:
    """What each of the ``count`` channels of ``series`` is, from its first page's tags."""
    page = series.keyframe
    if "S" not in series.axes:  # one sample per pixel; a C axis (an ImageJ hyperstack) holds channels
        return GRAY if count == 1 else generic_channels(count)
    extras = [int(kind) for kind in page.extrasamples]
    colour = count - len(extras)
    if colour == 3 and int(page.photometric) in (_RGB, _YCBCR):
        names = RGB
    elif colour == 1 and all(kind in _ALPHA_SAMPLES for kind in extras):
        names = GRAY
    else:
        names = generic_channels(colour)
    return names + tuple("alpha" if kind in _ALPHA_SAMPLES else f"channel{colour + index}"
                         for index, kind in enumerate(extras))


def _is_palette(series) -> bool:
    return int(series.keyframe.photometric) == _PALETTE and series.keyframe.colormap is not None


def _palette_colours(series, path: str) -> np.ndarray:
    """A palette series as colours ``(3, *spatial)`` through its colour map."""
    colormap = series.keyframe.colormap
    for page in series.pages:
        other = getattr(page, "colormap", None)
        if other is not None and not np.array_equal(other, colormap):
            raise ReadError(path, "its palette pages have different colour maps")
    indices = series.asarray()
    if indices.max(initial=0) >= colormap.shape[1]:
        raise ReadError(path, f"a palette index ({int(indices.max())}) is beyond its colour map of {colormap.shape[1]} entries")
    return _colour_depth(colormap)[:, indices]


def _colour_depth(colormap: np.ndarray) -> np.ndarray:
    """A TIFF colour map (16-bit entries) as 8-bit colours when every entry is an 8-bit value
    times 257 or 256 (how writers store 8-bit palettes), else as stored."""
    for factor in (257, 256):
        if not (colormap % factor).any() and colormap.max(initial=0) // factor <= 255:
            return (colormap // factor).astype(np.uint8)
    return colormap.astype(np.uint16)


def check_complete(tif, series: list, path: str) -> None:
    """Refuse a TIFF whose data end before what its header declares.

    tifffile reads what it finds: it drops the pages after a broken chain of IFDs (a file cut
    short), reads an ImageJ stack cut short as its first image, fills a strip or tile that
    has no data (offset or byte count 0) or a page in another file it did not find with zeros,
    and reads past a single strip whose byte count is too small. Only the header and the IFD
    chain are read here, no pixel.
    """
    _check_page_chain(tif, path)
    _check_imagej_stack(tif, path)
    for pages in series:
        for number, page in enumerate(pages, 1):
            if page is None:
                raise ReadError(path, f"page {number} of {len(pages)} of a series is in another file, not found "
                                      "(a multi-file OME-TIFF or Micro-Manager stack: read it from its folder)")
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
