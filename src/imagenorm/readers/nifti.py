"""NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``) through nibabel (the ``medical`` extra).

``scl_slope``/``scl_inter`` are applied; unscaled integer volumes keep their dtype (so
their statistics are exact), scaled ones become float64 (``read_image`` makes big-endian
data native). A 3-D volume is one channel ``(1, X, Y, Z)``; the 4th axis of a 4-D
volume is the channel axis (``nifti_4d="channels"``; named ``channel0``, ``channel1``, ...:
time points or modalities, never colours) or pooled into one channel
(``"pooled"``). RGB24 and RGBA32 volumes give their colour channels (8-bit raw values).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, RGBA, DecodedImage, ReadOptions, check_pixel_limit, generic_channels

EXTENSIONS = (".nii",)  # and .nii.gz, matched by reader_for


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode a NIfTI volume with its scaling applied."""
    try:
        import nibabel
    except ImportError:
        raise ReadError(path, "reading NIfTI needs nibabel: pip install 'imagenorm[medical]'") from None
    image = nibabel.load(path)
    shape = image.shape
    check_pixel_limit(path, math.prod(shape[:3]) * (math.prod(shape[3:]) if len(shape) > 3 else 1), options.max_pixels)
    _check_length(image, path)
    data = _scaled(image)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if data.dtype.names:  # RGB24 or RGBA32: a colour per voxel
        return _colour_volume(data, zooms, path)
    if data.ndim <= 3:
        return DecodedImage(pixels=data.reshape((1,) + data.shape), channels=GRAY, spacing=zooms, physical=True)
    volumes = data.reshape(data.shape[:3] + (-1,))
    if options.nifti_4d == "pooled":
        return DecodedImage(pixels=np.moveaxis(volumes, -1, 0).reshape((1, -1) + data.shape[1:3]), channels=GRAY, spacing=zooms, physical=True)
    pixels = np.moveaxis(volumes, -1, 0)
    return DecodedImage(pixels=pixels, channels=volume_channels(pixels.shape[0]), spacing=zooms, physical=True)


def _colour_volume(data: np.ndarray, zooms: tuple[float, ...], path: str) -> DecodedImage:
    """An RGB24 or RGBA32 volume as its colour channels ``(3 or 4, X, Y, Z)``, 8-bit raw values."""
    if data.ndim > 3:
        raise ReadError(path, f"a {data.ndim}-D colour (RGB) volume is not supported")
    fields = data.dtype.names
    pixels = np.stack([data[field] for field in fields])
    return DecodedImage(pixels=pixels, channels=RGBA if len(fields) == 4 else RGB, spacing=zooms)


def volume_channels(count: int) -> tuple[str, ...]:
    """Names of the volumes along a 4th axis (time points, modalities): never colours."""
    return GRAY if count == 1 else generic_channels(count)


def _check_length(image, path: str) -> None:
    """An uncompressed file holds every voxel its header declares (a cut ``.nii.gz`` fails in gzip)."""
    if path.lower().endswith(".gz"):
        return
    proxy = image.dataobj  # its offset is the file's; image.header's is reset on load
    expected = math.prod(proxy.shape) * np.dtype(proxy.dtype).itemsize
    held = os.path.getsize(path) - int(proxy.offset)
    if held < expected:
        raise ReadError(path, f"voxel data end after {max(held, 0):,} of {expected:,} bytes")


def _scaled(image) -> np.ndarray:
    """The voxel values with scl_slope/scl_inter applied, integer dtype kept when unscaled."""
    proxy = image.dataobj
    slope, intercept = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    unscaled = (slope is None or np.isnan(slope) or slope == 1) and (intercept is None or np.isnan(intercept) or intercept == 0)
    if unscaled and hasattr(proxy, "get_unscaled"):
        return np.asarray(proxy.get_unscaled())
    return np.asarray(image.get_fdata(dtype=np.float64))
