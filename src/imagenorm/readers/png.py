"""PNG in memory: the chunks before the pixels, an exact fast decode through libspng, chunk
checksums, and the length of the pixel data.

Pillow reports neither the bit depth nor sBIT (it cuts 16-bit colour to 8 bits and ignores
sBIT), so :func:`png_header` reads them from the bytes. :func:`decode_fast` hands a PNG to
libspng (``imagecodecs.spng_decode``: ~1.1x Pillow's decode on 8-bit gray, ~1.7x on RGB),
which gives exactly Pillow's samples for the kinds it takes: gray of 1 to 8 bits (scaled
to 8 bits as Pillow does), palettes (expanded to RGB), 8-bit RGB and 8- and 16-bit RGBA.
The rest stays with Pillow: 16-bit gray (Pillow keeps it), 8-bit gray+alpha, 16-bit RGB and
gray+alpha (through OpenCV), a ``tRNS`` chunk (libspng would add an alpha channel that Pillow keeps as
an ``info`` entry), an APNG (every frame, not the default image), and any file libspng
refuses (Pillow's checks then say what is wrong). libpng itself (``imagecodecs.png_decode``,
faster on gray) is not used: on Python 3.11 each file it refuses takes a reference from
``None``, and enough damaged files crash the interpreter. Every chunk's CRC is checked
first (:func:`check_crc`): a damaged chunk is refused whatever decodes the file (Pillow reads
a damaged IDAT without a word).

Example:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(buffer, "PNG")
    >>> header = png_header(buffer.getvalue())
    >>> header.width, header.height, header.bit_depth, header.colour_type
    (4, 3, 8, 0)
    >>> decode_fast(buffer.getvalue(), "a.png", ReadOptions(), header).pixels[0, 2]
    array([ 8,  9, 10, 11], dtype=uint8)
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator, NamedTuple

import numpy as np

from ..errors import ReadError
from .base import (GRAY, GRAY_ALPHA, RGB, RGBA, Data, DecodedImage, ReadOptions, channel_first, check_pixel_limit,
                   output_array)

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each colour type
_CHANNELS = {0: GRAY, 2: RGB, 3: RGB, 4: GRAY_ALPHA, 6: RGBA}  # as decoded (a palette expands to RGB)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class PngHeader(NamedTuple):
    bit_depth: int
    colour_type: int
    significant_bits: int | None  # from sBIT, when fewer than bit_depth
    width: int = 0
    height: int = 0
    interlaced: bool = False
    transparency: bool = False  # a tRNS chunk: a colour key or palette alphas
    animated: bool = False  # an acTL chunk: an APNG


def is_png(data: Data) -> bool:
    return bytes(data[:8]) == SIGNATURE


def png_header(data: Data, name: str = "PNG data") -> PngHeader | None:
    """IHDR (size, bit depth, colour type, interlacing) and what the chunks before the first
    IDAT declare: significant bits (sBIT), transparency (tRNS), animation (acTL).

    None when the first chunk is no IHDR (Pillow then says what the data are).

    Raises:
        ReadError: the data end inside the signature and IHDR.
    """
    if len(data) < 33:
        raise ReadError(name, f"the data end after {len(data)} bytes, inside the PNG header (truncated)")
    if bytes(data[12:16]) != b"IHDR":
        return None
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", bytes(data[16:29]))
    significant, transparency, animated = None, False, False
    for kind, start, length in chunks(data):
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"sBIT" and length:
            declared = max(data[start:start + length])
            significant = declared if declared < bit_depth else None
        transparency |= kind == b"tRNS"
        animated |= kind == b"acTL"
    return PngHeader(bit_depth, colour_type, significant, width, height, interlace == 1, transparency, animated)


def chunks(data: Data) -> Iterator[tuple[bytes, int, int]]:
    """(type, data offset, data length) of each whole chunk header after the signature."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", bytes(data[offset:offset + 8]))
        yield kind, offset + 8, min(length, len(data) - offset - 8)
        offset += 12 + length


def check_crc(data: Data, name: str) -> bool:
    """Refuse a PNG in which a whole chunk fails its CRC; return whether the data are complete
    (every chunk whole, up to IEND). A chunk cut short is left to the decoders, whose messages
    say how much is missing."""
    for kind, start, length in chunks(data):
        end = start + length
        if end + 4 > len(data):
            return False
        if zlib.crc32(data[start - 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            raise ReadError(name, f"damaged: its {kind.decode('latin-1')} chunk fails its CRC check")
        if kind == b"IEND":
            return True
    return False


def decode_fast(data: Data, name: str, options: ReadOptions, header: PngHeader) -> DecodedImage | None:
    """The PNG's samples through libspng, or None where Pillow must decode it (see the module)."""
    if header.transparency or header.animated or not _fast_kind(header):
        return None
    check_pixel_limit(name, header.width * header.height, options.max_pixels)
    import imagecodecs

    channels = _CHANNELS[header.colour_type]
    out = output_array((header.height, header.width, len(channels)), np.uint16 if header.bit_depth == 16 else np.uint8)
    try:
        array = imagecodecs.spng_decode(data, out=None if out is None else out if len(channels) > 1 else out[..., 0])
    except Exception:  # libspng refuses it: Pillow's reader says why
        return None
    if array.shape[:2] != (header.height, header.width) or (array.shape[2] if array.ndim == 3 else 1) != len(channels):
        return None
    return DecodedImage(pixels=channel_first(array), channels=channels, palette=header.colour_type == 3,
                        significant_bits=header.significant_bits)


def _fast_kind(header: PngHeader) -> bool:
    """Whether libspng gives Pillow's samples for this colour type and depth (see the module)."""
    kind = header.colour_type, header.bit_depth
    return kind[0] == 0 and kind[1] <= 8 or kind in ((2, 8), (6, 8), (6, 16)) or kind[0] == 3


def check_png_data(data: Data, name: str, header: PngHeader) -> None:
    """Refuse a PNG whose IDAT stream inflates to fewer bytes than IHDR promises (inflates it again)."""
    expected = png_data_size(header)
    found = inflated_size(data, expected)
    if found < expected:
        raise ReadError(name, _shortage(header, found, expected))


def png_data_size(header: PngHeader) -> int:
    """Bytes of filtered scanlines IHDR promises: per row a filter byte and the packed samples."""
    bits = header.bit_depth * _SAMPLES[header.colour_type]
    size = 0
    for x0, y0, dx, dy in _ADAM7 if header.interlaced else ((0, 0, 1, 1),):
        columns, rows = -(-(header.width - x0) // dx), -(-(header.height - y0) // dy)
        if columns > 0 and rows > 0:
            size += rows * (1 + -(-columns * bits // 8))
    return size


def inflated_size(data: Data, limit: int) -> int:
    """How many bytes the IDAT stream inflates to, counted up to ``limit`` (none are kept)."""
    inflater, size = zlib.decompressobj(), 0
    for kind, start, length in chunks(data):
        if kind == b"IEND" or size >= limit or inflater.eof:
            break
        if kind != b"IDAT":
            continue
        compressed = bytes(data[start:start + length])
        while compressed and size < limit:
            size += len(inflater.decompress(compressed, min(limit - size, 1 << 22)))
            compressed = inflater.unconsumed_tail
    return size


def _shortage(header: PngHeader, found: int, expected: int) -> str:
    if header.interlaced:
        return f"pixel data end after {found:,} of {expected:,} bytes (interlaced)"
    row_bytes = expected // header.height
    return f"pixel data end after {found // row_bytes} of {header.height} rows"
