"""Decode one file to a channel-first array, keeping its dtype and values.

Every reader returns a :class:`DecodedImage` whose ``pixels`` are ``(C, *spatial)``
(often a view of the decoder's channel-last buffer, not a copy). Which library
decodes what is chosen so that no bit is lost:

=====================  =====================================================
format                 decoder
=====================  =====================================================
PNG 8-bit, 16-bit gray Pillow (palette images expanded to RGB/RGBA)
PNG 16-bit color       OpenCV (Pillow would cut it to 8 bits), every APNG frame
JPEG, BMP, WebP, GIF   Pillow; every frame of an animation, a JPEG's primary picture
PBM/PGM/PPM/PNM        imagenorm itself, plain and raw alike, values as stored (Pillow
                       rescales ``maxval`` != 255, OpenCV plain files with maxval < 255)
TIFF (all pages)       tifffile, with imagecodecs for LZW, Deflate, JPEG, ...
``.npy``               numpy, memory-mapped, never unpickled
DICOM                  pydicom: ``.dcm``/``.dicom``, and any other file with the
                       DICM preamble (UID names, ``.IMA``); never a DICOMDIR
NIfTI ``.nii(.gz)``    nibabel
=====================  =====================================================

Bool (1-bit) samples are uint8 0 and 255 in every reader (:func:`bilevel`).

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
    bilevel,
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
        raise ReadError(path, _not_an_image(path))
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
    """The reader function for ``path``, or None if it is not an image.

    A known image extension decides. Any other file (no extension, a UID-like name such
    as ``1.3.46.670589.33.1.2``, Siemens ``.IMA``) is read as DICOM if it has the DICOM
    preamble ("DICM" at byte 128, probed in the first 1 KiB). A DICOM Media Storage
    Directory (named ``DICOMDIR``, or probed to hold that MediaStorageSOPClassUID) is not
    an image.
    """
    name = path.lower()
    readers = _readers_by_extension()
    if name.endswith(".nii.gz"):
        return readers[".nii"]
    if os.path.basename(name) == "dicomdir":
        return None
    reader = readers.get(os.path.splitext(name)[1])
    if reader is not None:
        return reader
    storage_class = dicom_storage_class(path)
    if storage_class is None or storage_class == MEDIA_STORAGE_DIRECTORY:
        return None
    return readers[".dcm"]


def image_extension(path: str) -> str:
    """The known image extension that ends ``path`` (``".nii.gz"``, ``".png"``), or "" (a
    DICOM file named by a UID keeps every dot of its name).

    Example:
        >>> image_extension("scan.nii.gz"), image_extension("a/B.PNG"), image_extension("1.2.840.113619.2")
        ('.nii.gz', '.PNG', '')
    """
    if path.lower().endswith(".nii.gz"):
        return path[-7:]
    extension = os.path.splitext(path)[1]
    return extension if extension.lower() in _readers_by_extension() else ""


def _not_an_image(path: str) -> str:
    """Why ``path`` has no reader."""
    if not os.path.lexists(path):
        return "no such file"
    if os.path.basename(path).lower() == "dicomdir" or dicom_storage_class(path) == MEDIA_STORAGE_DIRECTORY:
        return "a DICOM Media Storage Directory (DICOMDIR): an index of other files, not an image"
    return f"not a supported image format ({os.path.splitext(path)[1] or 'no extension'})"


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: an index of other files, no image
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def dicom_storage_class(path: str) -> str | None:
    """The MediaStorageSOPClassUID of a file with the DICOM preamble ("" when its file meta
    does not say), or None when the file has no preamble. Reads at most 1 KiB."""
    try:
        with open(path, "rb") as file:
            head = file.read(1024)
    except OSError:
        return None
    if head[128:132] != b"DICM":
        return None
    return _meta_element(head, 132, 0x0002) or ""


def _meta_element(data: bytes, offset: int, element: int) -> str | None:
    """The text of file meta element (0002, ``element``), walking the explicit-VR little-endian
    group 0002 from ``offset``; None if it is not found within ``data``."""
    while offset + 8 <= len(data):
        group, number = int.from_bytes(data[offset:offset + 2], "little"), int.from_bytes(data[offset + 2:offset + 4], "little")
        vr = data[offset + 4:offset + 6]
        if group != 0x0002 or not vr.isalpha():
            return None
        if vr in _LONG_LENGTH_VRS:
            length, offset = int.from_bytes(data[offset + 8:offset + 12], "little"), offset + 12
        else:
            length, offset = int.from_bytes(data[offset + 6:offset + 8], "little"), offset + 8
        if number == element:
            return data[offset:offset + length].rstrip(b"\x00 ").decode("ascii", "replace")
        offset += length
    return None


@functools.cache
def _readers_by_extension() -> dict[str, Callable[[str, ReadOptions], DecodedImage]]:
    from . import dicom, netpbm, nifti, numpy_file, pillow, tiff

    return {
        extension: module.read
        for module in (pillow, netpbm, tiff, numpy_file, dicom, nifti)
        for extension in module.EXTENSIONS
    }


def is_image_path(path: str) -> bool:
    """Whether imagenorm reads ``path`` as an image (see :func:`reader_for`)."""
    return reader_for(path) is not None
