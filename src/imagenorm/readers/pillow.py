"""PNG, JPEG, BMP, WebP and GIF through Pillow, with 16-bit colour PNG handed to OpenCV."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..errors import ReadError
from .base import ReadOptions, GRAY, DecodedImage, channel_first, channels_for, check_pixel_limit

EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".gif")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode with Pillow, refusing oversized images before any pixel is decoded."""
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with a clearer message
    with Image.open(path) as image:
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
            image.seek(index)
            array, palette = _frame_array(image)
            arrays.append(array)
    pixels = arrays[0] if frames == 1 else np.stack(arrays)
    bits = header.significant_bits if header is not None else None
    if pixels.ndim == 2 + (frames > 1):  # one channel: no channel axis yet
        return DecodedImage(pixels=pixels[None], channels=GRAY, palette=palette, significant_bits=bits)
    names = channels_for(pixels.shape[-1])
    return DecodedImage(pixels=channel_first(pixels), channels=names, palette=palette, significant_bits=bits)


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


class PngHeader(NamedTuple):
    bit_depth: int
    colour_type: int
    significant_bits: int | None  # from sBIT, when fewer than bit_depth


def png_header(path: str) -> PngHeader:
    """Bit depth and colour type (IHDR) and declared significant bits (sBIT, before IDAT).

    Pillow reports neither: it cuts 16-bit colour to 8 bits and ignores sBIT.
    """
    with open(path, "rb") as file:
        head = file.read(33)
        bit_depth, colour_type = head[24], head[25]
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
    return PngHeader(bit_depth, colour_type, significant)
