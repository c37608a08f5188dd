"""Decode one file to a channel-first array, keeping its dtype and values.

Every reader returns a :class:`DecodedImage` whose ``pixels`` are ``(C, *spatial)``
(often a view of the decoder's channel-last buffer, not a copy). Which library
decodes what is chosen so that no bit is lost:

=====================  =====================================================
format                 decoder
=====================  =====================================================
PNG 8-bit, 16-bit gray Pillow (palette images expanded to RGB/RGBA)
PNG 16-bit color       OpenCV (Pillow would cut it to 8 bits)
JPEG, BMP, WebP, GIF   Pillow
PGM/PPM/PNM            OpenCV (Pillow rescales ``maxval`` != 255 and cuts 16-bit RGB)
TIFF (all pages)       tifffile
``.npy``               numpy, memory-mapped, never unpickled
=====================  =====================================================

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.zeros((4, 5), np.uint16))
    >>> image = read_image(path)
    >>> image.pixels.shape, image.pixels.dtype.name, image.channels
    ((1, 4, 5), 'uint16', ('gray',))
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import numpy as np

from ..errors import ReadError
from .base import (  # noqa: F401  (the readers' shared types, re-exported)
    DEFAULT_MAX_PIXELS,
    GRAY,
    GRAY_ALPHA,
    RGB,
    RGBA,
    DecodedImage,
    ReadOptions,
    apply_channel_options,
    array_channels,
    channel_first,
    channels_for,
    check_pixel_limit,
    describe_decoder_error,
    generic_channels,
    luminance,
    native_order,
)

def read_image(path: str | os.PathLike, options: ReadOptions = ReadOptions()) -> DecodedImage:
    """Decode ``path`` to a :class:`DecodedImage`, applying ``options``.

    Raises:
        ReadError: the file is missing, empty, truncated, too large, of an unknown
            format, or holds data imagenorm cannot keep exactly.
    """
    path = os.fspath(path)
    reader = reader_for(path)
    if reader is None:
        raise ReadError(path, f"not a supported image format ({os.path.splitext(path)[1] or 'no extension'})")
    try:
        image = reader(path, options)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(path, "not enough memory to decode it") from None
    except Exception as error:  # decoders raise many types; each becomes one clear line
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise ReadError(path, "empty file (0 bytes)") from None
        raise ReadError(path, describe_decoder_error(error)) from None
    return apply_channel_options(native_order(image), options, path)


def reader_for(path: str) -> Callable[[str, ReadOptions], DecodedImage] | None:
    """The reader function for ``path``'s extension, or None if not an image.

    A file without extension is read as DICOM if it has the DICOM preamble ("DICM" at byte 128).
    """
    name = path.lower()
    if name.endswith(".nii.gz"):
        return _readers_by_extension()[".nii"]
    extension = os.path.splitext(name)[1]
    if not extension and _has_dicom_preamble(path):
        return _readers_by_extension()[".dcm"]
    return _readers_by_extension().get(extension)


def _has_dicom_preamble(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            file.seek(128)
            return file.read(4) == b"DICM"
    except OSError:
        return False


@functools.cache
def _readers_by_extension() -> dict[str, Callable[[str, ReadOptions], DecodedImage]]:
    from . import dicom, netpbm, nifti, numpy_file, pillow, tiff

    return {
        extension: module.read
        for module in (pillow, netpbm, tiff, numpy_file, dicom, nifti)
        for extension in module.EXTENSIONS
    }


def is_image_path(path: str) -> bool:
    """Whether ``path`` has an extension that imagenorm reads."""
    return reader_for(path) is not None
