"""Decode one file, or one image's bytes in memory, to a channel-first array, keeping its dtype and values.

Every reader returns a :class:`DecodedImage` whose ``pixels`` are ``(C, *spatial)``
(often a view of the decoder's channel-last buffer, not a copy). Which library
decodes what is chosen so that no bit is lost:

=====================  =====================================================
format                 decoder
=====================  =====================================================
PNG                    libspng (imagecodecs) for gray up to 8 bits, palette, RGB and RGBA:
                       Pillow's samples exactly; Pillow for 16-bit gray, tRNS and APNG
                       (palettes expanded to RGB/RGBA); OpenCV for 16-bit RGB and gray+alpha
JPEG                   libjpeg-turbo (simplejpeg), Pillow's samples exactly; Pillow for CMYK,
                       arithmetic coding and 12-bit; a JPEG's primary picture
BMP, WebP, GIF         Pillow; every frame of an animation
PBM/PGM/PPM/PNM        imagenorm itself, plain and raw alike, values as stored (Pillow
                       rescales ``maxval`` != 255, OpenCV plain files with maxval < 255)
TIFF (all pages)       tifffile, with imagecodecs for LZW, Deflate, JPEG, ...
``.npy``               numpy, memory-mapped, never unpickled
DICOM                  pydicom: ``.dcm``/``.dicom``, and any other file with the
                       DICM preamble (UID names, ``.IMA``); never a DICOMDIR
NIfTI ``.nii(.gz)``    nibabel
=====================  =====================================================

Bool (1-bit) samples are uint8 0 and 255 in every reader (:func:`bilevel`).

Each format module has ``read(path, options)`` and ``decode(data, name, options)``: the same
image from bytes (an archive member, a parquet cell, a remote object), no temporary file.
:func:`read_image` and :func:`decode_image` choose the module and give errors one form.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.zeros((4, 5), np.uint16))
    >>> image = read_image(path)
    >>> image.pixels.shape, image.pixels.dtype.name, image.channels
    ((1, 4, 5), 'uint16', ('gray',))
    >>> decode_image(open(path, "rb").read(), "shard.tar:a.npy").pixels.shape
    (1, 4, 5)
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Callable

from ..errors import InputError, ReadError
from . import jpeg, png
from .base import (  # noqa: F401  (the readers' shared types, re-exported)
    DEFAULT_MAX_PIXELS,
    Data,
    GRAY,
    GRAY_ALPHA,
    RGB,
    RGBA,
    DecodedImage,
    ReadOptions,
    ReusedBuffer,
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
    return _decoded(functools.partial(reader, path), path, options, path=path)


def decode_image(data: Data, name: str, options: ReadOptions = ReadOptions(), *,
                 extension: str | None = None) -> DecodedImage:
    """Decode an image held in memory (``bytes``, ``bytearray`` or ``memoryview``), applying
    ``options``; ``name`` is what errors name (``"shard.tar:0001.png"``).

    ``extension`` (``".png"``), else the extension of ``name``, chooses the format; without a
    known one, the data's first bytes do (:func:`sniff_extension`). Every guarantee of
    :func:`read_image` holds.

    Raises:
        ReadError: as for :func:`read_image`.
    """
    data = _as_bytes_like(data, name)
    if not len(data):
        raise ReadError(name, "empty (0 bytes)")
    extension = (extension or image_extension(name) or sniff_extension(data)).lower()
    module = _module_for(extension)
    if module is None:
        raise ReadError(name, f"not a supported image format ({os.path.splitext(name)[1] or 'no extension'})")
    return _decoded(functools.partial(module.decode, data, name), name, options)


def _as_bytes_like(data, name: str) -> Data:
    """``data`` as one-byte items (a memoryview of wider items is cast); anything else is refused."""
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        return data.cast("B")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{name}: expected the image's bytes (bytes, bytearray or memoryview), got {type(data).__name__}")
    return data


def _decoded(decode: Callable[[ReadOptions], DecodedImage], name: str, options: ReadOptions,
             path: str | None = None) -> DecodedImage:
    """``decode(options)`` with its channel options applied, and any failure as one ReadError
    (naming an empty file as such, where it is a ``path``)."""
    try:
        image = decode(options)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(name, "not enough memory to decode it") from None
    except Exception as error:  # decoders raise many types; each becomes one clear line
        if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise ReadError(name, "empty file (0 bytes)") from None
        raise ReadError(name, describe_decoder_error(error)) from None
    if image.pixels.dtype.kind == "c":
        raise ReadError(name, f"complex values ({image.pixels.dtype}, e.g. MR phase or k-space) are not pixel "
                              "intensities: store the magnitude (numpy.abs) or the real part")
    return apply_channel_options(native_order(image), options, name)


_MAGIC = (  # DICOM first: its 128-byte preamble may hold another format's header (a dual TIFF-DICOM file)
    (128, b"DICM", ".dcm"), (0, png.SIGNATURE, ".png"), (0, jpeg.SIGNATURE, ".jpg"), (0, b"GIF8", ".gif"),
    (0, b"BM", ".bmp"),
    (8, b"WEBP", ".webp"), (0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (0, b"II+\x00", ".tif"),
    (0, b"MM\x00+", ".tif"), (0, b"\x93NUMPY", ".npy"), (344, b"n+1\x00", ".nii"),
    (4, b"n+2\x00", ".nii"),
)


def sniff_extension(data: Data) -> str:
    r"""The extension of the format whose signature starts ``data`` (``".png"``, ``".dcm"``), or "".

    Netpbm (``P1``-``P6`` and whitespace) is recognized too; gzip data are not (a ``.nii.gz``
    needs its name). A DICOMDIR is no image: "".

    Example:
        >>> sniff_extension(b"\x89PNG\r\n\x1a\n..."), sniff_extension(b"P5 4 4 255 ..."), sniff_extension(b"text")
        ('.png', '.pgm', '')
    """
    head = bytes(data[:1024])
    for offset, magic, extension in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if extension == ".dcm" and _is_dicomdir(head):
                return ""
            return extension
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return ".pgm"
    return ""


def reader_for(path: str) -> Callable[[str, ReadOptions], DecodedImage] | None:
    """The reader function for ``path``, or None if it is not an image.

    A known image extension decides. Any other file (no extension, a UID-like name such
    as ``1.3.46.670589.33.1.2``, Siemens ``.IMA``, a photo saved without extension) is read
    as what its first bytes say (:func:`sniff_extension`, the first 1 KiB), as
    :func:`decode_image` reads bytes. A DICOM Media Storage Directory (named ``DICOMDIR``,
    or probed to hold that MediaStorageSOPClassUID) is not an image.
    """
    if os.path.basename(path).lower() == "dicomdir":
        return None
    extension = image_extension(path).lower() or sniff_extension(_head(path))
    return _module_for(extension).read if extension else None


def is_image_path(path: str) -> bool:
    """Whether a folder scan takes ``path`` as an image: a known image extension, or the DICOM
    preamble (slices named by UIDs, ``.IMA``). Other files are passed over, however they
    begin (a file named one by one is read by its content, see :func:`reader_for`)."""
    if os.path.basename(path).lower() == "dicomdir":
        return False
    if image_extension(path):
        return True
    return dicom_storage_class(path) not in (None, MEDIA_STORAGE_DIRECTORY)


def _head(path: str) -> bytes:
    """The first 1 KiB of ``path`` (empty if it cannot be read)."""
    try:
        with open(path, "rb") as file:
            return file.read(1024)
    except OSError:
        return b""


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
    return extension if extension.lower() in _modules_by_extension() else ""


def _not_an_image(path: str) -> str:
    """Why ``path`` has no reader."""
    if not os.path.lexists(path):
        return "no such file"
    if os.path.basename(path).lower() == "dicomdir" or dicom_storage_class(path) == MEDIA_STORAGE_DIRECTORY:
        return "a DICOM Media Storage Directory (DICOMDIR): an index of other files, not an image"
    return f"not a supported image format ({os.path.splitext(path)[1] or 'no extension'})"


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: an index of other files, no image


def _is_dicomdir(head: bytes) -> bool:
    from . import dicom

    return dicom.meta_text(head, 0x0002) == MEDIA_STORAGE_DIRECTORY


def dicom_storage_class(path: str) -> str | None:
    """The MediaStorageSOPClassUID of a file with the DICOM preamble ("" when its file meta
    does not say), or None when the file has no preamble. Reads at most 1 KiB."""
    head = _head(path)
    if head[128:132] != b"DICM":
        return None
    from . import dicom

    return dicom.meta_text(head, 0x0002) or ""


def _module_for(extension: str) -> ModuleType | None:
    """The format module of a known image extension (lower case; ``.nii.gz`` is NIfTI's)."""
    return _modules_by_extension().get(".nii" if extension == ".nii.gz" else extension)


@functools.cache
def _modules_by_extension() -> dict[str, ModuleType]:
    from . import dicom, netpbm, nifti, numpy_file, pillow, tiff

    return {extension: module for module in (pillow, netpbm, tiff, numpy_file, dicom, nifti) for extension in module.EXTENSIONS}

