"""PNG, JPEG, BMP, WebP and GIF through Pillow, with 16-bit colour PNG handed to OpenCV.

Nothing here changes Pillow's process-wide settings. Files are opened without Pillow's own
decompression-bomb check (``Image.MAX_IMAGE_PIXELS``, which ``max_pixels`` replaces), and a
file whose pixel data end early is an error whatever ``ImageFile.LOAD_TRUNCATED_IMAGES`` says.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import replace
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageFile

from ..errors import ReadError
from .base import ReadOptions, GRAY, DecodedImage, channel_first, channels_for, check_pixel_limit

EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".gif")
CUT_SHORT = "the file ends before its pixel data do (truncated)"
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode with Pillow, refusing oversized images before any pixel is decoded."""
    with EndAwareFile(path) as file, open_image(file, path) as image:
        width, height = image.size
        frames = getattr(image, "n_frames", 1)
        check_pixel_limit(path, width * height * frames, options.max_pixels)
        header = png_header(path) if image.format == "PNG" else None
        if header is not None and header.bit_depth == 16 and header.colour_type in (2, 4, 6):
            image.verify()  # walks every chunk and CRC: a truncated file fails here
            from .netpbm import read_with_opencv

            return replace(read_with_opencv(path), significant_bits=header.significant_bits)
        if image.mode == "CMYK":
            raise ReadError(path, "CMYK images are not supported; convert them to RGB first")
        arrays, palette = [], False
        for index in range(frames):
            array, palette = _decode_frame(image, index, file, path)
            arrays.append(array)
        if header is not None and frames == 1:
            check_png_rows(path, header, image, arrays[0])
    pixels = arrays[0] if frames == 1 else np.stack(arrays)
    bits = header.significant_bits if header is not None else None
    if pixels.ndim == 2 + (frames > 1):  # one channel: no channel axis yet
        return DecodedImage(pixels=pixels[None], channels=GRAY, palette=palette, significant_bits=bits)
    names = channels_for(pixels.shape[-1])
    return DecodedImage(pixels=channel_first(pixels), channels=names, palette=palette, significant_bits=bits)


def _decode_frame(image: Image.Image, index: int, file: EndAwareFile, path: str) -> tuple[np.ndarray, bool]:
    """Frame ``index`` as exact samples; refused if the decoder wanted more bytes than the file has.

    Pillow fills the rest silently when the program set ``LOAD_TRUNCATED_IMAGES``. A PNG of
    one image is left to :func:`check_png_rows` (its reader also looks past the pixel data,
    for IEND, which is no loss of pixels).
    """
    file.ran_out = False
    try:
        image.seek(index)
        array, palette = _frame_array(image)
    except OSError:
        if file.ran_out:
            raise ReadError(path, CUT_SHORT) from None
        raise
    if file.ran_out and not (image.format == "PNG" and getattr(image, "n_frames", 1) == 1):
        raise ReadError(path, CUT_SHORT)
    return array, palette


def _frame_array(image: Image.Image) -> tuple[np.ndarray, bool]:
    """The current frame as an array of exact samples (palette expanded)."""
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB")), True
    if image.mode == "1":
        return np.asarray(image.convert("L")), False
    if image.mode == "I":  # 32-bit integer (rare outside TIFF); values kept
        return np.asarray(image, dtype=np.int32), False
    return np.asarray(image), False  # L, LA, RGB, RGBA, I;16, F: samples as stored


class EndAwareFile(io.BufferedReader):
    """A binary file that notes a read finding nothing left: a decoder wanting more than the file holds."""

    def __init__(self, path: str) -> None:
        super().__init__(io.FileIO(path))
        self.ran_out = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.ran_out = True
        return data


def open_image(file: BinaryIO, path: str) -> ImageFile.ImageFile:
    """What ``Image.open(file)`` returns, without Pillow's check against ``Image.MAX_IMAGE_PIXELS``.

    That check reads (and warns under) a process-wide setting that belongs to the program;
    the caller applies ``max_pixels`` instead. Formats are tried in Pillow's order, common
    ones first, each after its own test of the first bytes, as ``Image.open`` does.

    Raises:
        PIL.UnidentifiedImageError: no format accepts the file.
    """
    prefix = file.read(16)
    tried: set[str] = set()
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for name in [name for name in Image.ID if name not in tried]:
            tried.add(name)
            factory, accept = Image.OPEN[name]
            accepted = accept(prefix) if accept else True
            if not accepted or isinstance(accepted, str):  # a str says why not
                continue
            file.seek(0)
            try:
                return factory(file, path)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all
    raise Image.UnidentifiedImageError(f"cannot identify image file {path!r}")


class PngHeader(NamedTuple):
    bit_depth: int
    colour_type: int
    significant_bits: int | None  # from sBIT, when fewer than bit_depth
    width: int = 0
    height: int = 0
    interlaced: bool = False


def png_header(path: str) -> PngHeader:
    """Size, bit depth, colour type and interlacing (IHDR) and declared significant bits (sBIT, before IDAT).

    Pillow reports neither depth nor sBIT: it cuts 16-bit colour to 8 bits and ignores sBIT.
    """
    with open(path, "rb") as file:
        head = file.read(33)
        width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
        significant = None
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                break
            length, kind = struct.unpack(">I4s", chunk)
            if kind in (b"IDAT", b"IEND"):
                break
            if kind == b"sBIT":
                declared = max(file.read(length))
                significant = declared if declared < bit_depth else None
                break
            file.seek(length + 4, 1)  # data and CRC
    return PngHeader(bit_depth, colour_type, significant, width, height, interlace == 1)


def check_png_rows(path: str, header: PngHeader, image: Image.Image, array: np.ndarray) -> None:
    """Refuse a PNG whose compressed stream ends before its last row (Pillow leaves the rest zero).

    Nearly free for most images: Pillow decodes into a zeroed image, row after row, so a
    non-zero sample in the last row proves every row arrived. Only when the last row is all
    zero, or the image is interlaced, is the stream inflated again, to count its bytes.
    """
    if not header.interlaced and _last_row_written(image, array):
        return
    expected = png_data_size(header)
    found = _png_inflated_size(path, expected)
    if found < expected:
        raise ReadError(path, _png_shortage(header, found, expected))


def _last_row_written(image: Image.Image, array: np.ndarray) -> bool:
    """Whether the last row holds a non-zero decoded sample (palette images: a non-zero index)."""
    decoded = np.asarray(image) if image.mode in ("P", "PA") else array
    return bool(decoded[-1].any())


def png_data_size(header: PngHeader) -> int:
    """Bytes of filtered scanlines IHDR promises: per row a filter byte and the packed samples."""
    bits = header.bit_depth * _PNG_SAMPLES[header.colour_type]
    size = 0
    for x0, y0, dx, dy in _ADAM7 if header.interlaced else ((0, 0, 1, 1),):
        columns, rows = -(-(header.width - x0) // dx), -(-(header.height - y0) // dy)
        if columns > 0 and rows > 0:
            size += rows * (1 + -(-columns * bits // 8))
    return size


def _png_inflated_size(path: str, limit: int) -> int:
    """How many bytes the IDAT stream inflates to, counted up to ``limit`` (none are kept)."""
    inflater, size = zlib.decompressobj(), 0
    with open(path, "rb") as file:
        file.seek(8)
        while size < limit and not inflater.eof:
            head = file.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                file.seek(length + 4, 1)
                continue
            data = file.read(length)
            file.seek(4, 1)  # CRC
            while data and size < limit:
                size += len(inflater.decompress(data, min(limit - size, 1 << 22)))
                data = inflater.unconsumed_tail
    return size


def _png_shortage(header: PngHeader, found: int, expected: int) -> str:
    if header.interlaced:
        return f"pixel data end after {found:,} of {expected:,} bytes (interlaced)"
    row_bytes = expected // header.height
    return f"pixel data end after {found // row_bytes} of {header.height} rows"
