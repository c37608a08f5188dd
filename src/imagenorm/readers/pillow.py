"""PNG, JPEG, BMP, WebP and GIF through Pillow, with 16-bit colour PNG handed to OpenCV."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import ReadError
from . import GRAY, DecodedImage, channels_for, check_pixel_limit

EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".gif")

# Modes whose samples Pillow hands over unchanged, with their channel names.
_EXACT_MODES = {"L": GRAY, "LA": ("gray", "alpha"), "RGB": None, "RGBA": None, "I;16": GRAY, "F": GRAY}


def read(path: str, max_pixels: int | None) -> DecodedImage:
    """Decode with Pillow, refusing oversized images before any pixel is decoded."""
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with a clearer message
    with Image.open(path) as image:
        width, height = image.size
        frames = getattr(image, "n_frames", 1)
        check_pixel_limit(path, width * height * frames, max_pixels)
        if image.format == "PNG" and _is_16bit_colour_png(path):
            image.verify()  # walks every chunk and CRC: a truncated file fails here
            from .netpbm import read_with_opencv

            return read_with_opencv(path)
        if image.mode == "CMYK":
            raise ReadError(path, "CMYK images are not supported; convert them to RGB first")
        arrays, palette = [], False
        for index in range(frames):
            image.seek(index)
            array, palette = _frame_array(image)
            arrays.append(array)
    pixels = arrays[0] if frames == 1 else np.stack(arrays)
    channel_last = pixels.ndim == 3 + (frames > 1)
    if channel_last:
        names = channels_for(pixels.shape[-1])
        pixels = np.moveaxis(pixels, -1, 0)
    else:
        names = GRAY
        pixels = pixels[None]
    return DecodedImage(pixels=pixels, channels=names, palette=palette)


def _frame_array(image: Image.Image) -> tuple[np.ndarray, bool]:
    """The current frame as an array of exact samples (palette expanded)."""
    if image.mode in ("P", "PA"):
        has_alpha = image.mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB")), True
    if image.mode == "1":
        return np.asarray(image.convert("L")), False
    if image.mode == "I":  # 32-bit integer (rare outside TIFF); values kept
        return np.asarray(image, dtype=np.int32), False
    if image.mode not in _EXACT_MODES:
        return np.asarray(image), False
    return np.asarray(image), False


def _is_16bit_colour_png(path: str) -> bool:
    """Read the PNG header: bit depth 16 with colour, where Pillow would drop to 8 bits."""
    with open(path, "rb") as file:
        header = file.read(26)
    bit_depth, colour_type = header[24], header[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)
