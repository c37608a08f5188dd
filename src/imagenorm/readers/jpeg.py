"""JPEG in memory through libjpeg-turbo (simplejpeg), straight into numpy, bit-identical to Pillow.

simplejpeg runs libjpeg-turbo with Pillow's defaults: the accurate integer IDCT and fancy
(smooth) chroma upsampling. Its ``fastdct`` and ``fastupsample`` modes differ from Pillow by up
to 33 levels and are never used. It decodes ~3x as many photos per second as Pillow's
``Image.open`` + ``np.asarray`` (which also copies the result once more).

The fast path takes what it is proven identical on: Huffman-coded baseline, extended and
progressive JPEGs of 8-bit samples, gray or three-component (YCbCr, or RGB where an Adobe
marker says so) with 4:4:4, 4:2:2 or 4:2:0 chroma, restart markers or not. Everything else
(CMYK and YCCK, arithmetic coding, 12-bit and lossless files, other subsamplings, a height
set by a DNL marker) is left to Pillow (None), and so are files libjpeg-turbo warns about
harmlessly (extraneous bytes) or that end early (Pillow's checks refuse them). Corrupt entropy
data (Pillow decodes garbage silently) and files libjpeg-turbo cannot decode at all are refused
here, whatever ``ImageFile.LOAD_TRUNCATED_IMAGES`` says. The fast path runs only where Pillow
itself is built on libjpeg-turbo and a check image decodes identically (:func:`same_as_pillow`).
Orientation is kept as stored (an EXIF rotation is not applied), as Pillow keeps it; an
MPO gives its primary picture.

Example:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.fromarray(np.full((16, 24, 3), 200, np.uint8)).save(buffer, "JPEG")
    >>> frame = frame_header(buffer.getvalue())
    >>> frame.width, frame.height, frame.precision, len(frame.components)
    (24, 16, 8, 3)
    >>> image = decode_fast(buffer.getvalue(), "a.jpg", ReadOptions())
    >>> image.channels, image.pixels.shape
    (('red', 'green', 'blue'), (3, 16, 24))
"""

from __future__ import annotations

import functools
import io
from typing import NamedTuple

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, Data, DecodedImage, ReadOptions, channel_first, check_pixel_limit, output_array

SIGNATURE = b"\xff\xd8\xff"
_HUFFMAN_FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive
_OTHER_FRAMES = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)  # lossless, hierarchical, arithmetic
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # markers without a length
_LUMA_SAMPLING = ((1, 1), (2, 1), (2, 2))  # 4:4:4, 4:2:2, 4:2:0 (chroma at 1x1)


class JpegFrame(NamedTuple):
    """The start-of-frame segment: coding process, sample precision, size and components."""

    marker: int
    precision: int
    height: int
    width: int
    components: tuple[tuple[int, int, int], ...]  # (id, horizontal, vertical sampling factor)

    @property
    def fast(self) -> bool:
        """Whether the fast path is proven identical to Pillow on this kind of frame."""
        if self.marker not in _HUFFMAN_FRAMES or self.precision != 8 or self.height == 0:
            return False
        if len(self.components) == 1:
            return True
        sampling = [(h, v) for _, h, v in self.components]
        return len(sampling) == 3 and sampling[0] in _LUMA_SAMPLING and sampling[1] == sampling[2] == (1, 1)


def is_jpeg(data: Data) -> bool:
    return bytes(data[:3]) == SIGNATURE


def frame_header(data: Data) -> JpegFrame | None:
    """The first start-of-frame segment, found by walking the markers from SOI; None when there
    is none before the first scan or the data end first."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # a fill byte
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if marker in _HUFFMAN_FRAMES or marker in _OTHER_FRAMES:
            return _frame(marker, bytes(data[offset + 4:offset + 2 + length]))
        if marker == 0xDA:  # a scan before any frame
            return None
        offset += 2 + length
    return None


def _frame(marker: int, segment: bytes) -> JpegFrame | None:
    if len(segment) < 6:
        return None
    count = segment[5]
    if len(segment) < 6 + 3 * count:
        return None
    components = tuple((segment[6 + 3 * i], segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15) for i in range(count))
    return JpegFrame(marker, segment[0], int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), components)


def decode_fast(data: Data, name: str, options: ReadOptions) -> DecodedImage | None:
    """The JPEG's primary picture through libjpeg-turbo, or None where Pillow must decode it."""
    frame = frame_header(data)
    if frame is None or not frame.fast or not same_as_pillow():
        return None
    check_pixel_limit(name, frame.width * frame.height, options.max_pixels)
    gray = len(frame.components) == 1
    out = output_array((frame.height, frame.width, 1 if gray else 3), np.uint8)
    try:
        array = decode_samples(data, gray, strict=True, out=out)
    except ValueError as error:
        _refuse_if_damaged(data, gray, name, str(error))
        return None  # a harmless warning (extraneous bytes) or the data end early: Pillow's checks decide
    if array.shape[:2] != (frame.height, frame.width):
        return None
    return DecodedImage(pixels=channel_first(array), channels=GRAY if gray else RGB)


def decode_samples(data: Data, gray: bool = False, strict: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 1 or 3)`` samples through libjpeg-turbo with Pillow's IDCT and upsampling (what the fast path calls)."""
    import simplejpeg

    return simplejpeg.decode_jpeg(data, "GRAY" if gray else "RGB", fastdct=False, fastupsample=False, strict=strict,
                                  buffer=out)


def _refuse_if_damaged(data: Data, gray: bool, name: str, warning: str) -> None:
    """Raise for a file whose pixels libjpeg-turbo cannot give right: corrupt entropy data (a bad
    Huffman code: Pillow decodes garbage without a word), or no decode at all (which Pillow turns
    into a black picture for a program that set ``ImageFile.LOAD_TRUNCATED_IMAGES``). Decodes
    the file a second time, without ``strict``, only to tell an error from a warning."""
    if "Corrupt JPEG data" in warning and "extraneous bytes" not in warning:
        raise ReadError(name, f"damaged: {warning}")
    try:
        decode_samples(data, gray, strict=False)
    except ValueError as error:
        raise ReadError(name, f"cannot decode: {error}") from None


@functools.cache
def same_as_pillow() -> bool:
    """Whether libjpeg-turbo here gives Pillow's samples: Pillow built on libjpeg-turbo, and a
    4:2:0 photo-like image decoding to the same samples both ways (checked once per process).
    Any other Pillow build (IJG libjpeg upsamples differently), or no simplejpeg, keeps every
    JPEG on Pillow."""
    try:
        import simplejpeg  # noqa: F401
        from PIL import Image, features
    except ImportError:
        return False
    if not features.check_feature("libjpeg_turbo"):
        return False
    rows, columns = np.mgrid[0:24, 0:40]
    picture = np.stack([rows * 10 % 256, columns * 6 % 256, (rows * columns) % 256], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=75, subsampling=2)
    with Image.open(buffer) as image:
        expected = np.asarray(image)
    return bool(np.array_equal(decode_samples(buffer.getvalue()), expected))
