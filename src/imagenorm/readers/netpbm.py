"""PGM/PPM/PNM (8- and 16-bit, any maxval) and 16-bit colour PNG through OpenCV."""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..errors import ReadError
from .base import ReadOptions, GRAY, DecodedImage, channel_first, channels_for, check_pixel_limit
from .pillow import open_image

EXTENSIONS = (".pgm", ".ppm", ".pnm", ".pbm")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode a Netpbm file with its raw sample values."""
    with open(path, "rb") as file, open_image(file, path) as image:  # header only: the size, for the pixel limit
        width, height = image.size
    check_pixel_limit(path, width * height, options.max_pixels)
    return read_with_opencv(path)


def read_with_opencv(path: str) -> DecodedImage:
    """Decode with ``cv2.IMREAD_UNCHANGED`` (keeps 16 bits) and reorder BGR to RGB."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    with _quiet_opencv(cv2):
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ReadError(path, "cannot decode: truncated or corrupt file")
    if decoded.ndim == 2:
        return DecodedImage(pixels=decoded[None], channels=GRAY)
    count = decoded.shape[-1]
    if count in (3, 4):  # OpenCV gives BGR(A)
        order = [2, 1, 0] + ([3] if count == 4 else [])
        decoded = decoded[..., order]
    return DecodedImage(pixels=channel_first(decoded), channels=channels_for(count))


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
