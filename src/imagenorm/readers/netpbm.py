"""PBM/PGM/PPM (``P1``-``P6``), read here: plain (ASCII) and raw (binary) files alike keep their
sample values as stored, 8-bit (maxval < 256) or 16-bit (big-endian in the file).

OpenCV rescales plain files whose maxval is below 255 to 0-255 and keeps raw ones as stored,
and Pillow rescales any maxval other than 255, so neither decides. A maxval of the form 2^k - 1
below the dtype's maximum is the file's declared maximum: the [0, 1] scale is raw / maxval
(``value_scale`` of the statistics), whatever the container. Bitmaps (PBM, 1 = black)
follow the bool rule: white is 255, black 0, as Pillow reads them. The first image of a file is read.

``decode(data, name, options)`` reads the same from bytes (an archive member, a parquet cell);
``read(path, options)`` is ``decode`` of the whole file, read in one go. 8-bit raw pixels are a
read-only view of those bytes (of a copy when the caller's buffer could change).
"""

from __future__ import annotations

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, Data, DecodedImage, ReadOptions, check_pixel_limit, read_file

EXTENSIONS = (".pgm", ".ppm", ".pnm", ".pbm")
_SAMPLES = {b"P1": 1, b"P2": 1, b"P3": 3, b"P4": 1, b"P5": 1, b"P6": 3}
_PLAIN = (b"P1", b"P2", b"P3")
_BITMAP = (b"P1", b"P4")
_HEADER_LIMIT = 4096  # bytes a header (with its comments) may take


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode a Netpbm file with its raw sample values."""
    return decode(read_file(path), path, options)


def decode(data: Data, name: str, options: ReadOptions) -> DecodedImage:
    """Decode Netpbm data with their raw sample values; ``name`` is what errors name."""
    view = _immutable(data)
    magic, width, height, maxval, start = parse_header(bytes(view[:_HEADER_LIMIT]), name)
    check_pixel_limit(name, width * height, options.max_pixels)
    body = view[start:]
    shape = (height, width, _SAMPLES[magic])
    if magic in _BITMAP:
        ink = _plain_bits(bytes(body), shape, name) if magic == b"P1" else _raw_bits(body, shape, name)
        return DecodedImage(pixels=np.where(ink, np.uint8(0), np.uint8(255))[None], channels=GRAY)
    dtype = np.dtype(np.uint8 if maxval < 256 else ">u2")
    samples = _plain_samples(bytes(body), shape, name) if magic in _PLAIN else _raw_samples(body, shape, dtype, name)
    _check_maxval(samples, maxval, name)
    pixels = np.moveaxis(samples.astype(dtype.newbyteorder("="), copy=False), -1, 0)
    declared = maxval if maxval < np.iinfo(pixels.dtype).max else None
    return DecodedImage(pixels=pixels, channels=GRAY if shape[2] == 1 else RGB, maximum=declared)


def _immutable(data: Data) -> memoryview:
    """A view of ``data`` when they are ``bytes`` (nobody can change them), else of a copy: 8-bit
    raw pixels are a view of what this returns, and must not change with the caller's buffer."""
    view = memoryview(data).cast("B")
    return view if isinstance(view.obj, bytes) else memoryview(view.tobytes())


def parse_header(head: bytes, name: str) -> tuple[bytes, int, int, int, int]:
    """(magic, width, height, maxval, offset of the pixel data) from the first bytes of a file.

    Fields are separated by whitespace, and ``#`` starts a comment to the end of its line;
    one whitespace character ends the header.
    """
    magic = head[:2]
    if magic not in _SAMPLES:
        raise ReadError(name, "not a Netpbm file (expected P1 to P6 in its first bytes)")
    fields, position = [], 2
    wanted = 2 if magic in _BITMAP else 3
    while len(fields) < wanted:
        while position < len(head) and (head[position:position + 1].isspace() or head[position:position + 1] == b"#"):
            if head[position:position + 1] == b"#":
                end = head.find(b"\n", position)
                position = len(head) if end < 0 else end
            position += 1
        end = position
        while end < len(head) and head[end:end + 1].isdigit():
            end += 1
        if end == position:
            raise ReadError(name, "cannot decode: its Netpbm header is incomplete or malformed")
        fields.append(int(head[position:end]))
        position = end
    width, height, maxval = fields[0], fields[1], fields[2] if wanted == 3 else 1
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise ReadError(name, f"cannot decode: its Netpbm header declares {width}x{height} pixels and maxval {maxval}")
    return magic, width, height, maxval, position + 1


def _plain_samples(data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The decimal samples of a plain (ASCII) file, comments left out."""
    tokens = _without_comments(data).split()
    count = int(np.prod(shape))
    if len(tokens) < count:
        raise ReadError(name, f"pixel data end after {len(tokens):,} of {count:,} samples (truncated)")
    try:
        return np.array(tokens[:count], dtype=np.bytes_).astype(np.int64).reshape(shape)
    except ValueError:
        raise ReadError(name, "cannot decode: its plain (ASCII) pixel data hold something other than numbers") from None


def _raw_samples(data: memoryview, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    count = int(np.prod(shape))
    if len(data) < count * dtype.itemsize:
        raise ReadError(name, f"pixel data end after {len(data):,} of {count * dtype.itemsize:,} bytes (truncated)")
    return np.frombuffer(data, dtype, count).reshape(shape)


def _plain_bits(data: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The bits of a plain PBM: digits 0 and 1, with or without whitespace between them."""
    digits = np.frombuffer(bytes(c for c in _without_comments(data) if c in b"01"), np.uint8)
    count = shape[0] * shape[1]
    if digits.size < count:
        raise ReadError(name, f"pixel data end after {digits.size:,} of {count:,} pixels (truncated)")
    return (digits[:count] == ord("1")).reshape(shape[:2])


def _raw_bits(data: memoryview, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The bits of a raw PBM: each row packed into whole bytes, most significant bit first."""
    height, width = shape[:2]
    row_bytes = -(-width // 8)
    if len(data) < height * row_bytes:
        raise ReadError(name, f"pixel data end after {len(data):,} of {height * row_bytes:,} bytes (truncated)")
    packed = np.frombuffer(data, np.uint8, height * row_bytes).reshape(height, row_bytes)
    return np.unpackbits(packed, axis=1)[:, :width].astype(bool)


def _without_comments(data: bytes) -> bytes:
    return b"\n".join(line.split(b"#", 1)[0] for line in data.split(b"\n"))


def _check_maxval(samples: np.ndarray, maxval: int, name: str) -> None:
    largest = int(samples.max(initial=0))
    if largest > maxval:
        raise ReadError(name, f"a sample ({largest}) exceeds the file's maxval {maxval}")
