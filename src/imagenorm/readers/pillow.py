"""PNG, JPEG, BMP, WebP and GIF, from a file or from bytes in memory.

JPEG and PNG go first to exact fast decoders (libjpeg-turbo, :mod:`.jpeg`; libspng, :mod:`.png`)
that give Pillow's samples bit for bit; every other kind, and every file those decoders leave,
is decoded by Pillow, with 16-bit RGB and gray+alpha PNG (Pillow would cut them to 8 bits) handed to OpenCV.

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
from dataclasses import replace
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile

from ..errors import ReadError
from . import jpeg, png
from .base import (GRAY, GRAY_ALPHA, RGB, Data, DecodedImage, ReadOptions, channel_first, channels_for, check_pixel_limit,
                   read_file)

EXTENSIONS = (".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".bmp", ".webp", ".gif")
CUT_SHORT = "the file ends before its pixel data do (truncated)"
_MARKER = (183, 61, 29, 7)  # per band: a colour no row of a real image is likely to hold throughout


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode the file at ``path`` (opened once, read whole): see :func:`decode`."""
    return decode(read_file(path), path, options)


def decode(data: Data, name: str, options: ReadOptions) -> DecodedImage:
    """Decode an image held in memory; ``name`` is what errors name.

    JPEG and PNG go to their exact fast decoders first (:mod:`.jpeg`, :mod:`.png`), which
    give Pillow's samples bit for bit; what they leave (other kinds, and damaged files)
    is decoded here with Pillow, refusing oversized images before any pixel is decoded.
    An animated image (GIF, APNG of any depth, WebP) gives every frame as displayed, as a
    leading spatial axis ``(C, frames, H, W)``; a JPEG is its primary picture only (an MPO
    file's second picture, a stereo pair's other eye or a preview, is not counted).
    """
    header = png.png_header(data, name) if png.is_png(data) else None
    if header is not None:
        complete = png.check_crc(data, name)
        fast = png.decode_fast(data, name, options, header) or _opencv_png(data, name, options, header, complete)
    else:
        fast = jpeg.decode_fast(data, name, options) if jpeg.is_jpeg(data) else None
    return fast if fast is not None else _decode_with_pillow(data, name, options, header)


def _opencv_png(data: Data, name: str, options: ReadOptions, header: png.PngHeader,
                complete: bool) -> DecodedImage | None:
    """A still 16-bit RGB or gray+alpha PNG straight through OpenCV (None for any other kind;
    refused when its chunks end before IEND, as Pillow's ``verify`` refused it)."""
    if header.bit_depth != 16 or header.colour_type not in (2, 4) or header.animated:
        return None
    check_pixel_limit(name, header.width * header.height, options.max_pixels)
    if not complete:
        png.check_png_data(data, name, header)  # say which rows are missing, if some are
        raise ReadError(name, CUT_SHORT)
    return replace(_read_16bit_colour(data, name, header, 1), significant_bits=header.significant_bits)


def _decode_with_pillow(data: Data, name: str, options: ReadOptions, header: png.PngHeader | None) -> DecodedImage:
    with EndAwareBytes(data) as file, open_image(file, name) as image:
        width, height = image.size
        frames = counted_frames(image)
        check_pixel_limit(name, width * height * len(frames), options.max_pixels)
        if image.format != "PNG":
            header = None
        if header is not None and header.bit_depth == 16 and header.colour_type in (2, 4, 6):
            image.verify()  # walks every chunk and CRC: a truncated file fails here
            return replace(_read_16bit_colour(data, name, header, len(frames)), significant_bits=header.significant_bits)
        arrays, palette = _decode_frames(image, frames, file, data, name, header)
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


def _read_16bit_colour(data: Data, name: str, header: png.PngHeader, frames: int) -> DecodedImage:
    """16-bit colour PNG (every frame of an APNG) through OpenCV (Pillow would cut it to 8 bits);
    missing rows make it fail."""
    try:
        image = read_with_opencv(data, name, frames)
    except ReadError:
        png.check_png_data(data, name, header)  # say which rows are missing, if that is why
        raise
    if header.colour_type == 4:  # OpenCV repeats the gray of gray+alpha into BGR
        return replace(image, pixels=image.pixels[[0, 3]], channels=GRAY_ALPHA)
    if header.colour_type == 2 and image.pixels.shape[0] == 4:  # OpenCV made alpha of a tRNS colour key;
        return replace(image, pixels=image.pixels[:3], channels=RGB)  # 8-bit RGB (Pillow) has none either
    return image


def _decode_frames(image: ImageFile.ImageFile, frames: range, file: EndAwareBytes, data: Data, name: str,
                   header: png.PngHeader | None) -> tuple[list[np.ndarray], bool]:
    """The ``frames`` as exact samples (palette expanded); a PNG of one image is checked row by row."""
    single_png = header is not None and getattr(image, "n_frames", 1) == 1
    marker = mark_unwritten(image) if single_png and not header.interlaced else None
    arrays, palette = [], False
    try:
        for index in frames:
            array, palette = _decode_frame(image, index, file, name, watch_end=not single_png)
            arrays.append(array)
    except OSError as error:
        if header is not None:
            png.check_png_data(data, name, header)  # say which rows are missing, if that is why
        if len(frames) > 1:
            raise ReadError(name, f"frame {len(arrays) + 1} of {len(frames)} cannot be decoded ({error})") from None
        raise
    if single_png:
        check_png_rows(data, name, header, image, arrays[0], marker)
    return arrays, palette


def _decode_frame(image: Image.Image, index: int, file: EndAwareBytes, name: str,
                  watch_end: bool) -> tuple[np.ndarray, bool]:
    """Frame ``index`` as exact samples; refused if the decoder wanted more bytes than the file has.

    Pillow fills the rest silently when the program set ``LOAD_TRUNCATED_IMAGES``. Without
    ``watch_end`` (a PNG of one image, checked row by row instead, whose reader also looks
    past the pixel data for IEND) only Pillow's own error counts.
    """
    file.ran_out = False
    try:
        image.seek(index)
        array, palette = frame_array(image, name)
    except OSError:
        if file.ran_out:
            raise ReadError(name, CUT_SHORT) from None
        raise
    if file.ran_out and watch_end:
        raise ReadError(name, CUT_SHORT)
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


class EndAwareBytes(io.BytesIO):
    """Bytes read as a file that notes a read finding nothing left: a decoder wanting more than the data hold."""

    def __init__(self, data: Data) -> None:
        super().__init__(data)
        self.ran_out = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.ran_out = True
        return data


def open_image(file: BinaryIO, name: str) -> ImageFile.ImageFile:
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
                return factory(file, name)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all
    raise Image.UnidentifiedImageError(f"cannot identify image file {name!r}")


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


def check_png_rows(data: Data, name: str, header: png.PngHeader, image: Image.Image, array: np.ndarray,
                   marker: np.ndarray | None) -> None:
    """Refuse a PNG whose compressed stream ends before its last row (Pillow would keep the rest).

    Nearly free: the stream is inflated again, only to count its bytes, when the last row
    is the ``marker`` colour throughout (see :func:`mark_unwritten`) or the image is interlaced.
    """
    if marker is None or _last_row_is(marker, image, array):
        png.check_png_data(data, name, header)


def _last_row_is(marker: np.ndarray, image: Image.Image, array: np.ndarray) -> bool:
    """Whether every sample of the last decoded row equals ``marker`` (palette images: by index)."""
    decoded = np.asarray(image) if image.mode in ("P", "PA", "1") else array
    return bool((decoded[-1] == marker).all())


def read_with_opencv(data: Data, name: str, frames: int = 1) -> DecodedImage:
    """Decode with ``cv2.IMREAD_UNCHANGED`` (keeps 16 bits) and reorder BGR to RGB.

    With ``frames`` > 1 (an APNG), every frame as displayed (OpenCV composes them as Pillow
    does), stacked as a leading spatial axis.
    """
    import cv2

    encoded = np.frombuffer(data, dtype=np.uint8)
    with _quiet_opencv(cv2):
        decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if frames == 1 else _opencv_frames(cv2, encoded, frames, name)
    if decoded is None:
        raise ReadError(name, "cannot decode: truncated or corrupt file")
    if decoded.ndim == 2 + (frames > 1):
        return DecodedImage(pixels=decoded[None], channels=GRAY)
    count = decoded.shape[-1]
    if count in (3, 4):  # OpenCV gives BGR(A)
        order = [2, 1, 0] + ([3] if count == 4 else [])
        decoded = decoded[..., order]
    return DecodedImage(pixels=channel_first(decoded), channels=channels_for(count))


def _opencv_frames(cv2, encoded: np.ndarray, frames: int, name: str) -> np.ndarray | None:
    """Every frame of an animation, ``(frames, H, W[, C])``; refused if fewer than declared."""
    decoded, animation = cv2.imdecodeanimation(encoded)
    if not decoded or not animation.frames:
        return None
    if len(animation.frames) != frames:
        raise ReadError(name, f"pixel data end after {len(animation.frames)} of {frames} frames")
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
