"""PNG, JPEG, BMP, WebP and GIF through Pillow, with 16-bit colour PNG handed to OpenCV.

Frames: an animated image (GIF, APNG of 8 or 16 bits, WebP) counts every frame of its animation,
as displayed, stacked as a leading spatial axis ``(C, frames, H, W)``; a JPEG counts its primary
picture only (an MPO's stereo partner or preview is not part of it). Pillow images in memory
(:func:`frame_array`) follow the same sample rules as files: palette expanded, 1-bit as 0 and
255, CMYK, YCbCr and other colour spaces refused.

Nothing here changes Pillow's process-wide settings. Files are opened without Pillow's own
decompression-bomb check (``Image.MAX_IMAGE_PIXELS``, which ``max_pixels`` replaces), and a
file whose pixel data end early is an error whatever ``ImageFile.LOAD_TRUNCATED_IMAGES`` says:
a read past the end of the file is noticed, and a PNG whose complete stream holds fewer rows
than IHDR declares (Pillow keeps the rest, silently) is caught by a marker colour in the last row.
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import zlib
from dataclasses import replace
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageFile

from ..errors import ReadError
from .base import GRAY, GRAY_ALPHA, RGB, DecodedImage, ReadOptions, channel_first, channels_for, check_pixel_limit

EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".mpo", ".bmp", ".webp", ".gif")
CUT_SHORT = "the file ends before its pixel data do (truncated)"
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each colour type
_MARKER = (183, 61, 29, 7)  # per band: a colour no row of a real image is likely to hold throughout
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode with Pillow, refusing oversized images before any pixel is decoded.

    An animated image (GIF, APNG of any depth, WebP) gives every frame as displayed, as a
    leading spatial axis ``(C, frames, H, W)``; a JPEG is its primary picture only (an MPO
    file's second picture, a stereo pair's other eye or a preview, is not counted).
    """
    with EndAwareFile(path) as file, open_image(file, path) as image:
        width, height = image.size
        frames = counted_frames(image)
        check_pixel_limit(path, width * height * len(frames), options.max_pixels)
        header = png_header(path) if image.format == "PNG" else None
        if header is not None and header.bit_depth == 16 and header.colour_type in (2, 4, 6):
            image.verify()  # walks every chunk and CRC: a truncated file fails here
            return replace(_read_16bit_colour(path, header, len(frames)), significant_bits=header.significant_bits)
        arrays, palette = _decode_frames(image, frames, file, path, header)
    pixels = arrays[0] if len(frames) == 1 else np.stack(arrays)
    bits = header.significant_bits if header is not None else None
    if pixels.ndim == 2 + (len(frames) > 1):  # one channel: no channel axis yet
        return DecodedImage(pixels=pixels[None], channels=GRAY, palette=palette, significant_bits=bits)
    names = channels_for(pixels.shape[-1])
    return DecodedImage(pixels=channel_first(pixels), channels=names, palette=palette, significant_bits=bits)


def counted_frames(image: Image.Image) -> range:
    """The frames that count: every frame of an animation (not an APNG's default image where it
    is no frame of the animation: OpenCV skips it too), the primary picture of a JPEG (MPO)."""
    if image.format in ("JPEG", "MPO"):
        return range(1)
    count = getattr(image, "n_frames", 1)
    first = 1 if count > 1 and image.format == "PNG" and image.info.get("default_image") else 0
    return range(first, count)


def _read_16bit_colour(path: str, header: PngHeader, frames: int) -> DecodedImage:
    """16-bit colour PNG (every frame of an APNG) through OpenCV (Pillow would cut it to 8 bits);
    missing rows make it fail."""
    try:
        image = read_with_opencv(path, frames)
    except ReadError:
        check_png_data(path, header)  # say which rows are missing, if that is why
        raise
    if header.colour_type == 4:  # OpenCV repeats the gray of gray+alpha into BGR
        return replace(image, pixels=image.pixels[[0, 3]], channels=GRAY_ALPHA)
    if header.colour_type == 2 and image.pixels.shape[0] == 4:  # OpenCV made alpha of a tRNS colour key;
        return replace(image, pixels=image.pixels[:3], channels=RGB)  # 8-bit RGB (Pillow) has none either
    return image


def _decode_frames(image: ImageFile.ImageFile, frames: range, file: EndAwareFile, path: str,
                   header: PngHeader | None) -> tuple[list[np.ndarray], bool]:
    """The ``frames`` as exact samples (palette expanded); a PNG of one image is checked row by row."""
    single_png = header is not None and getattr(image, "n_frames", 1) == 1
    marker = mark_unwritten(image) if single_png and not header.interlaced else None
    arrays, palette = [], False
    try:
        for index in frames:
            array, palette = _decode_frame(image, index, file, path, watch_end=not single_png)
            arrays.append(array)
    except OSError as error:
        if header is not None:
            check_png_data(path, header)  # say which rows are missing, if that is why
        if len(frames) > 1:
            raise ReadError(path, f"frame {len(arrays) + 1} of {len(frames)} cannot be decoded ({error})") from None
        raise
    if single_png:
        check_png_rows(path, header, image, arrays[0], marker)
    return arrays, palette


def _decode_frame(image: Image.Image, index: int, file: EndAwareFile, path: str,
                  watch_end: bool) -> tuple[np.ndarray, bool]:
    """Frame ``index`` as exact samples; refused if the decoder wanted more bytes than the file has.

    Pillow fills the rest silently when the program set ``LOAD_TRUNCATED_IMAGES``. Without
    ``watch_end`` (a PNG of one image, checked row by row instead, whose reader also looks
    past the pixel data for IEND) only Pillow's own error counts.
    """
    file.ran_out = False
    try:
        image.seek(index)
        array, palette = frame_array(image, path)
    except OSError:
        if file.ran_out:
            raise ReadError(path, CUT_SHORT) from None
        raise
    if file.ran_out and watch_end:
        raise ReadError(path, CUT_SHORT)
    return array, palette


_SAMPLE_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N", "F")  # kept as stored


def frame_array(image: Image.Image, name: str) -> tuple[np.ndarray, bool]:
    """The current frame of a Pillow image (a file's, or one given in memory) as exact samples.

    Palette images are expanded to RGB(A); 1-bit images give 0 and 255 (the bool rule of
    :func:`~imagenorm.readers.base.bilevel`); RGBX loses its padding byte. Other colour spaces
    (CMYK, YCbCr, LAB, HSV, premultiplied alpha) are refused: their samples are not RGB, and
    dropping or relabelling a band would give wrong statistics.

    Returns:
        (array ``(H, W[, C])``, whether a palette was expanded).

    Raises:
        ReadError: the mode is not one of the above, named with ``name``.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB")), True
    if mode == "1":
        return np.asarray(image.convert("L")), False
    if mode == "RGBX":
        return np.asarray(image.convert("RGB")), False
    if mode == "I":  # 32-bit integer (rare outside TIFF); values kept
        return np.asarray(image, dtype=np.int32), False
    if mode not in _SAMPLE_MODES:
        raise ReadError(name, f"{mode} images are not supported (their samples are not RGB); "
                              "convert them to RGB first, e.g. image.convert('RGB') in Pillow")
    return np.asarray(image), False


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


def mark_unwritten(image: ImageFile.ImageFile) -> np.ndarray | None:
    """Pre-fill the memory Pillow decodes into with a marker colour; return its samples.

    Pillow decodes into an image that exists before ``load()`` and writes every row the data
    reach; rows they never reach keep the marker (they would be zero otherwise, which is
    also what black looks like). None, and nothing marked, for modes PNG rarely decodes to.
    """
    if image.mode == "I;16":  # Image.new fills 16-bit images pixel by pixel: mark the last row only
        memory = np.zeros((image.height, image.width), "<u2")
        memory[-1] = 0xB7B7
        image.im = Image.fromarray(memory).im
        return memory[-1, 0]
    if image.mode == "1":
        image.im = Image.new("1", image.size, 1).im
        return np.True_
    if image.mode not in ("L", "LA", "P", "PA", "RGB", "RGBA"):
        return None
    value = _MARKER[: len(image.getbands())]
    image.im = Image.new(image.mode, image.size, value if len(value) > 1 else value[0]).im
    return np.array(value, np.uint8)


def check_png_rows(path: str, header: PngHeader, image: Image.Image, array: np.ndarray,
                   marker: np.ndarray | None) -> None:
    """Refuse a PNG whose compressed stream ends before its last row (Pillow would keep the rest).

    Nearly free: the stream is inflated again, only to count its bytes, when the last row
    is the ``marker`` colour throughout (see :func:`mark_unwritten`) or the image is interlaced.
    """
    if marker is None or _last_row_is(marker, image, array):
        check_png_data(path, header)


def check_png_data(path: str, header: PngHeader) -> None:
    """Refuse a PNG whose IDAT stream inflates to fewer bytes than IHDR promises (inflates it again)."""
    expected = png_data_size(header)
    found = _png_inflated_size(path, expected)
    if found < expected:
        raise ReadError(path, _png_shortage(header, found, expected))


def _last_row_is(marker: np.ndarray, image: Image.Image, array: np.ndarray) -> bool:
    """Whether every sample of the last decoded row equals ``marker`` (palette images: by index)."""
    decoded = np.asarray(image) if image.mode in ("P", "PA", "1") else array
    return bool((decoded[-1] == marker).all())


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


def read_with_opencv(path: str, frames: int = 1) -> DecodedImage:
    """Decode with ``cv2.IMREAD_UNCHANGED`` (keeps 16 bits) and reorder BGR to RGB.

    With ``frames`` > 1 (an APNG), every frame as displayed (OpenCV composes them as Pillow
    does), stacked as a leading spatial axis.
    """
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    with _quiet_opencv(cv2):
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if frames == 1 else _opencv_frames(cv2, data, frames, path)
    if decoded is None:
        raise ReadError(path, "cannot decode: truncated or corrupt file")
    if decoded.ndim == 2 + (frames > 1):
        return DecodedImage(pixels=decoded[None], channels=GRAY)
    count = decoded.shape[-1]
    if count in (3, 4):  # OpenCV gives BGR(A)
        order = [2, 1, 0] + ([3] if count == 4 else [])
        decoded = decoded[..., order]
    return DecodedImage(pixels=channel_first(decoded), channels=channels_for(count))


def _opencv_frames(cv2, data: np.ndarray, frames: int, path: str) -> np.ndarray | None:
    """Every frame of an animation, ``(frames, H, W[, C])``; refused if fewer than declared."""
    decoded, animation = cv2.imdecodeanimation(data)
    if not decoded or not animation.frames:
        return None
    if len(animation.frames) != frames:
        raise ReadError(path, f"pixel data end after {len(animation.frames)} of {frames} frames")
    return np.stack(animation.frames)


_quiet_lock = threading.Lock()
_quiet_decodes = 0
_program_log_level = None


@contextlib.contextmanager
def _quiet_opencv(cv2):
    """Silence OpenCV's log (process-wide) only while decoding, and give the program its level back.

    Concurrent decodes share one silent period: the first saves the level, the last restores it.
    """
    global _quiet_decodes, _program_log_level
    with _quiet_lock:
        if _quiet_decodes == 0:
            _program_log_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_decodes += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_decodes -= 1
            if _quiet_decodes == 0:
                cv2.utils.logging.setLogLevel(_program_log_level)
