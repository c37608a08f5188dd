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
from dataclasses import dataclass, replace
from typing import Callable, Literal

import numpy as np

from ..errors import ReadError

AlphaPolicy = Literal["drop", "keep"]
ConvertTo = Literal["gray", "rgb"]

#: Pillow's own decompression-bomb limit, used as our default ``max_pixels``.
DEFAULT_MAX_PIXELS = 89_478_485

GRAY = ("gray",)
GRAY_ALPHA = ("gray", "alpha")
RGB = ("red", "green", "blue")
RGBA = ("red", "green", "blue", "alpha")


@dataclass(frozen=True)
class ReadOptions:
    """How to decode: pixel limit, alpha policy and an optional channel conversion."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    alpha: AlphaPolicy = "drop"
    convert: ConvertTo | None = None
    dicom_values: Literal["modality", "stored"] = "modality"  # RescaleSlope/Intercept applied (CT in HU)
    monochrome1: Literal["keep", "invert"] = "keep"  # MONOCHROME1: values as stored, or inverted
    nifti_4d: Literal["channels", "pooled"] = "channels"  # a 4-D NIfTI's 4th axis


@dataclass(frozen=True)
class DecodedImage:
    """Pixels ``(C, *spatial)`` in the file's own dtype, and what each channel is."""

    pixels: np.ndarray
    channels: tuple[str, ...]
    palette: bool = False  # palette indices were expanded to colours
    significant_bits: int | None = None  # declared by the file (PNG sBIT), if fewer than the dtype's
    spacing: tuple[float, ...] | None = None  # voxel size (mm) where the file says (DICOM, NIfTI)
    notes: tuple[str, ...] = ()  # what the reader decided, e.g. "MONOCHROME1 kept as stored"

    @property
    def bits(self) -> int:
        """Significant bits: the declared ones, else the dtype's (0 for floats)."""
        if self.significant_bits is not None:
            return self.significant_bits
        return self.pixels.dtype.itemsize * 8 if self.pixels.dtype.kind in "ui" else 0

    @property
    def layout(self) -> tuple[str, tuple[str, ...]]:
        """(dtype name, channel names): what every image of one dataset must share."""
        return self.pixels.dtype.name, self.channels


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


def native_order(image: DecodedImage) -> DecodedImage:
    """Decoded pixels are always in this machine's byte order (DICOM, NIfTI, TIFF and .npy may not be)."""
    pixels = image.pixels
    if pixels.dtype.isnative:
        return image
    return replace(image, pixels=pixels.astype(pixels.dtype.newbyteorder("=")))


def describe_decoder_error(error: Exception) -> str:
    """A short reason from a decoder's exception."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not a file"
    if type(error).__name__ == "UnidentifiedImageError":
        return "cannot decode: not an image, or an unknown or corrupt format"
    return f"cannot decode: {text}"


def check_pixel_limit(path: str, pixel_count: int, max_pixels: int | None) -> None:
    """Refuse an image before allocating it if it exceeds ``max_pixels``."""
    if max_pixels is not None and pixel_count > max_pixels:
        raise ReadError(
            path,
            f"{pixel_count:,} pixels exceed the limit of {max_pixels:,} "
            "(a decompression bomb?); raise it with --max-pixels if the image is legitimate",
        )


def apply_channel_options(image: DecodedImage, options: ReadOptions, path: str) -> DecodedImage:
    """Drop or keep alpha, then convert to gray or RGB if asked."""
    pixels, channels = image.pixels, image.channels
    if channels[-1] == "alpha" and options.alpha == "drop":
        pixels, channels = pixels[:-1], channels[:-1]
    if options.convert == "gray" and channels[:3] == RGB:
        pixels = np.concatenate([luminance(pixels[:3])[None], pixels[3:]])
        channels = GRAY + channels[3:]
    elif options.convert == "rgb" and channels[0] == "gray":
        pixels = np.concatenate([np.repeat(pixels[:1], 3, axis=0), pixels[1:]])
        channels = RGB + channels[1:]
    elif options.convert is not None and options.convert not in ("gray", "rgb"):
        raise ReadError(path, f"unknown channel conversion {options.convert!r}")
    return replace(image, pixels=pixels, channels=channels)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma in the input dtype, rounded as Pillow's ``convert("L")`` does."""
    if rgb.dtype.kind in "ui":
        r, g, b = (channel.astype(np.int64) for channel in rgb)
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(rgb.dtype)
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(rgb.dtype)


def channel_first(array: np.ndarray) -> np.ndarray:
    """A view of a channel-last decoder result ``(..., C)`` as ``(C, ...)``; 2-D gets C=1."""
    if array.ndim == 2:
        return array[None]
    return array.transpose((array.ndim - 1, *range(array.ndim - 1)))


def channels_for(count: int) -> tuple[str, ...]:
    """Channel names of a decoded picture with ``count`` channels (2 and 4 carry alpha)."""
    return {1: GRAY, 2: GRAY_ALPHA, 3: RGB, 4: RGBA}.get(count) or generic_channels(count)


def array_channels(count: int) -> tuple[str, ...]:
    """Channel names of raw arrays and tensors: nothing is taken for alpha."""
    return {1: GRAY, 3: RGB}.get(count) or generic_channels(count)


def generic_channels(count: int) -> tuple[str, ...]:
    return tuple(f"channel{i}" for i in range(count))


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
