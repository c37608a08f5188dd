"""PGM/PPM/PNM (8- and 16-bit, any maxval) through OpenCV, as 16-bit colour PNG is (``pillow.py``)."""

from __future__ import annotations

from .base import ReadOptions, DecodedImage, check_pixel_limit
from .pillow import open_image, read_with_opencv

EXTENSIONS = (".pgm", ".ppm", ".pnm", ".pbm")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode a Netpbm file with its raw sample values."""
    with open(path, "rb") as file, open_image(file, path) as image:  # header only: the size, for the pixel limit
        width, height = image.size
    check_pixel_limit(path, width * height, options.max_pixels)
    return read_with_opencv(path)
