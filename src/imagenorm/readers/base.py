"""The types every reader shares: options, the decoded image, channel names and layouts.

Format modules import from here (never from the package), so that the registry in
``readers/__init__.py`` can import them without a cycle.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ReadError
from ..options import DEFAULT_MAX_PIXELS, ReadOptions

__all__ = ["DEFAULT_MAX_PIXELS", "ReadOptions", "DecodedImage", "GRAY", "GRAY_ALPHA", "RGB", "RGBA", "bilevel", "read_file",
           "ReusedBuffer"]

Data = bytes | bytearray | memoryview  # what ``decode(data, name, options)`` of every reader takes

GRAY = ("gray",)
GRAY_ALPHA = ("gray", "alpha")
RGB = ("red", "green", "blue")
RGBA = ("red", "green", "blue", "alpha")


@dataclass(frozen=True)
class DecodedImage:
    """Pixels ``(C, *spatial)`` in the file's own dtype, and what each channel is."""

    pixels: np.ndarray
    channels: tuple[str, ...]
    palette: bool = False  # palette indices were expanded to colours
    significant_bits: int | None = None  # declared by the file (PNG sBIT), if fewer than the dtype's
    spacing: tuple[float, ...] | None = None  # voxel size (mm) where the file says (DICOM, NIfTI)
    notes: tuple[str, ...] = ()  # what the reader decided, e.g. "MONOCHROME1 kept as stored"
    physical: bool = False  # values in physical units (DICOM modality values, NIfTI), whatever the dtype
    maximum: int | None = None  # the file's declared maximum value (Netpbm maxval) below the dtype's

    @property
    def bits(self) -> int:
        """Significant bits: the declared ones, else the dtype's (0 for floats)."""
        if self.significant_bits is not None:
            return self.significant_bits
        return self.pixels.dtype.itemsize * 8 if self.pixels.dtype.kind in "ui" else 0

    @property
    def units(self) -> str:
        """What the values mean: ``"physical"`` (DICOM modality values, NIfTI: any dtype),
        ``"float"`` (float pixels) or ``"raw"`` (integer pixels whose scale is the dtype's)."""
        if self.physical:
            return "physical"
        return "float" if self.pixels.dtype.kind == "f" else "raw"

    @property
    def layout(self) -> tuple[str, tuple[str, ...]]:
        """(dtype name, channel names): what every image of one dataset must share."""
        return dtype_name(self.pixels.dtype), self.channels


@functools.lru_cache(maxsize=None)
def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, remembered: numpy computes it in Python on every access (~10 µs), and the
    per-image path asks for it several times."""
    return dtype.name


def read_file(path: str) -> bytes:
    """The whole file in one read: a reader's path form opens each file once, then decodes the bytes."""
    with open(path, "rb", buffering=0) as file:
        return file.read()


class ReusedBuffer:
    """One block of memory that the fast decoders (JPEG, PNG) of this thread decode into while the
    buffer is entered, each decode overwriting the last: for a loop that is done with an image
    before it loads the next (a reduction). A fresh image per file costs an allocation and a page
    fault per 4 KiB touched (copy-on-write ones in a forked worker); a reused one costs neither.
    Outside ``with buffer:`` every decode returns its own array.

    Example:
        >>> buffer = ReusedBuffer()
        >>> with buffer:
        ...     first = output_array((2, 3), np.uint16)
        >>> second = output_array((2, 3), np.uint16)
        >>> first.shape, second is None
        ((2, 3), True)
    """

    _active = threading.local()

    def __init__(self) -> None:
        self.memory = np.empty(0, np.uint8)
        self._outer: list = []

    def __enter__(self) -> "ReusedBuffer":
        self._outer.append(getattr(self._active, "buffer", None))
        self._active.buffer = self
        return self

    def __exit__(self, *exc) -> None:
        self._active.buffer = self._outer.pop()

    def array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A view of the buffer as an array of ``shape`` and ``dtype`` (the buffer grows to fit)."""
        size = math.prod(shape) * np.dtype(dtype).itemsize
        if self.memory.size < size:
            self.memory = np.empty(size, np.uint8)
        return self.memory[:size].view(dtype).reshape(shape)


def output_array(shape: tuple[int, ...], dtype) -> np.ndarray | None:
    """Where a fast decoder writes an image: the entered :class:`ReusedBuffer`, else None (its own array)."""
    buffer = getattr(ReusedBuffer._active, "buffer", None)
    return None if buffer is None else buffer.array(shape, dtype)


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
            "(a decompression bomb?); if the image is legitimate, raise the limit with max_pixels=N",
        )


def apply_channel_options(image: DecodedImage, options: ReadOptions, path: str) -> DecodedImage:
    """Drop (every alpha channel) or keep alpha, then convert to gray or RGB if asked."""
    pixels, channels = image.pixels, image.channels
    if options.convert is None and not (options.alpha == "drop" and "alpha" in channels):
        return image
    if "alpha" in channels and options.alpha == "drop":
        kept = [index for index, name in enumerate(channels) if name != "alpha"]
        pixels = pixels[: len(kept)] if kept == list(range(len(kept))) else pixels[kept]  # a view when alpha is last
        channels = tuple(channels[index] for index in kept)
    if options.convert == "gray" and channels[:3] == RGB:
        pixels = np.concatenate([luminance(pixels[:3])[None], pixels[3:]])
        channels = GRAY + channels[3:]
    elif options.convert == "rgb" and channels[0] == "gray":
        pixels = np.concatenate([np.repeat(pixels[:1], 3, axis=0), pixels[1:]])
        channels = RGB + channels[1:]
    return replace(image, pixels=pixels, channels=channels)


def bilevel(pixels: np.ndarray) -> np.ndarray:
    """Boolean (1-bit) samples as uint8 0 and 255: the rule for bool everywhere.

    Pillow reads 1-bit images (mode "1") so, and raw / 255 then gives False/True as 0 and 1 of
    the [0, 1] scale, as the transforms read a bool tensor. Any other dtype is returned as is.
    """
    if pixels.dtype != np.bool_:
        return pixels
    values = pixels.astype(np.uint8)
    values *= 255
    return values


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
