"""NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``) through nibabel (the ``medical`` extra).

``scl_slope``/``scl_inter`` are applied; unscaled integer volumes keep their dtype (so
their statistics are exact), scaled ones become float64 (``read_image`` makes big-endian
data native). A 3-D volume is one channel ``(1, X, Y, Z)``; the 4th axis of a 4-D
volume is the channel axis (``nifti_4d="channels"``; named ``channel0``, ``channel1``, ...:
time points or modalities, never colours) or pooled into one channel
(``"pooled"``). RGB24 and RGBA32 volumes give their colour channels (8-bit raw values).

``decode(data, name, options)`` reads the same from bytes (an archive member, a parquet cell);
``read(path, options)`` hands nibabel the open file, so that an uncompressed volume is
memory-mapped. Gzip data are known by their first bytes or a name ending ``.gz``; the header
says NIfTI-1 or NIfTI-2, and is checked (pixel limit, data length) before any voxel is read.
"""

from __future__ import annotations

import gzip
import io
import math
from typing import BinaryIO

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, RGBA, Data, DecodedImage, ReadOptions, check_pixel_limit, generic_channels

EXTENSIONS = (".nii",)  # and .nii.gz, matched by reader_for
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_SIZES = {348: "NIfTI-1", 540: "NIfTI-2"}  # sizeof_hdr, the header's first field
_CIFTI_EXTENSION = 32  # NIfTI extension code of CIFTI-2


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode a NIfTI file with its scaling applied; an uncompressed one is memory-mapped."""
    nibabel = _nibabel(path)
    with open(path, "rb") as file:
        return _decode_stream(file, path, options, nibabel)


def decode(data: Data, name: str, options: ReadOptions) -> DecodedImage:
    """Decode NIfTI data (``.nii`` or ``.nii.gz``) with their scaling applied; ``name`` is what errors name."""
    return _decode_stream(io.BytesIO(data), name, options, _nibabel(name))


def _nibabel(name: str):
    try:
        import nibabel
    except ImportError:
        raise ReadError(name, "reading NIfTI needs nibabel: pip install 'imagenorm[medical]'") from None
    return nibabel


def _decode_stream(stream: BinaryIO, name: str, options: ReadOptions, nibabel) -> DecodedImage:
    """The volume in ``stream`` (a file or bytes, gzip-compressed or not), its header checked first."""
    if not _is_gzip(stream, name):
        return _decode_volume(stream, _length(stream), name, options, nibabel)
    with gzip.GzipFile(fileobj=stream, mode="rb") as voxels:
        try:
            return _decode_volume(voxels, None, name, options, nibabel)
        except EOFError as error:  # the compressed data end early
            raise ReadError(name, f"cannot decode: {error}") from None


def _decode_volume(stream: BinaryIO, length: int | None, name: str, options: ReadOptions, nibabel) -> DecodedImage:
    """The volume of an uncompressed NIfTI ``stream`` (``length`` bytes; None: unknown, gzip)."""
    image = _load(stream, name, nibabel)
    _check_not_cifti(image, name)
    shape = image.shape
    check_pixel_limit(name, math.prod(shape[:3]) * (math.prod(shape[3:]) if len(shape) > 3 else 1), options.max_pixels)
    if length is not None:
        _check_length(image, length, name)
    return _decoded(_scaled(image), tuple(float(z) for z in image.header.get_zooms()[:3]), name, options)


def _load(stream: BinaryIO, name: str, nibabel):
    """A nibabel image of the NIfTI-1 or NIfTI-2 header in ``stream``; its voxels are read as used
    (memory-mapped from a file on disk)."""
    head = stream.read(540)
    stream.seek(0)
    if nibabel.Nifti1Header.may_contain_header(head):
        kind = nibabel.Nifti1Image
    elif nibabel.Nifti2Header.may_contain_header(head):
        kind = nibabel.Nifti2Image
    else:
        raise ReadError(name, _not_a_header(head))
    return kind.from_file_map(kind.make_file_map({"image": stream}), mmap=True)


def _check_not_cifti(image, name: str) -> None:
    """Refuse CIFTI-2 (a NIfTI-2 header with a CIFTI extension): a matrix over brain locations, not a volume."""
    if any(extension.get_code() == _CIFTI_EXTENSION for extension in image.header.extensions):
        raise ReadError(name, "a CIFTI-2 file (values over brain locations, not a volume) is not supported")


def _not_a_header(head: bytes) -> str:
    """Why ``head`` (the first 540 bytes, or all there are) is no NIfTI-1 or NIfTI-2 header."""
    if not head:
        return "empty file (0 bytes)"
    declared = {int.from_bytes(head[:4], order) for order in ("little", "big")} & _HEADER_SIZES.keys()
    if declared and len(head) < min(declared):
        size = min(declared)
        return f"the data end after {len(head):,} of the {size:,} bytes of its {_HEADER_SIZES[size]} header (truncated)"
    return "not a NIfTI-1 or NIfTI-2 file (no n+1 or n+2 header)"


def _decoded(data: np.ndarray, zooms: tuple[float, ...], name: str, options: ReadOptions) -> DecodedImage:
    """The image of the voxel values ``data``: 3-D as one channel, 4-D as ``options.nifti_4d`` says."""
    if data.dtype.names:  # RGB24 or RGBA32: a colour per voxel
        return _colour_volume(data, zooms, name)
    if data.ndim <= 3:
        return DecodedImage(pixels=data.reshape((1,) + data.shape), channels=GRAY, spacing=zooms, physical=True)
    volumes = data.reshape(data.shape[:3] + (-1,))
    if options.nifti_4d == "pooled":
        return DecodedImage(pixels=np.moveaxis(volumes, -1, 0).reshape((1, -1) + data.shape[1:3]), channels=GRAY, spacing=zooms, physical=True)
    pixels = np.moveaxis(volumes, -1, 0)
    return DecodedImage(pixels=pixels, channels=volume_channels(pixels.shape[0]), spacing=zooms, physical=True)


def _colour_volume(data: np.ndarray, zooms: tuple[float, ...], name: str) -> DecodedImage:
    """An RGB24 or RGBA32 volume as its colour channels ``(3 or 4, X, Y, Z)``, 8-bit raw values."""
    if data.ndim > 3:
        raise ReadError(name, f"a {data.ndim}-D colour (RGB) volume is not supported")
    fields = data.dtype.names
    pixels = np.stack([data[field] for field in fields])
    return DecodedImage(pixels=pixels, channels=RGBA if len(fields) == 4 else RGB, spacing=zooms)


def volume_channels(count: int) -> tuple[str, ...]:
    """Names of the volumes along a 4th axis (time points, modalities): never colours."""
    return GRAY if count == 1 else generic_channels(count)


def _is_gzip(stream: BinaryIO, name: str) -> bool:
    """Whether ``stream`` holds gzip data: by its first bytes, or by ``name`` (a cut or foreign
    ``.nii.gz`` then fails in gzip, naming why). Leaves ``stream`` at its start."""
    magic = stream.read(len(_GZIP_MAGIC))
    stream.seek(0)
    return magic == _GZIP_MAGIC or name.lower().endswith(".gz")


def _length(stream: BinaryIO) -> int:
    """The length of ``stream`` in bytes; leaves it at its start."""
    length = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return length


def _check_length(image, length: int, name: str) -> None:
    """Uncompressed data of ``length`` bytes hold every voxel the header declares (cut gzip data
    fail in gzip)."""
    proxy = image.dataobj  # its offset is the file's; image.header's is reset on load
    expected = math.prod(proxy.shape) * np.dtype(proxy.dtype).itemsize
    held = length - int(proxy.offset)
    if held < expected:
        raise ReadError(name, f"voxel data end after {max(held, 0):,} of {expected:,} bytes")


def _scaled(image) -> np.ndarray:
    """The voxel values with scl_slope/scl_inter applied, integer dtype kept when unscaled."""
    proxy = image.dataobj
    slope, intercept = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    unscaled = (slope is None or np.isnan(slope) or slope == 1) and (intercept is None or np.isnan(intercept) or intercept == 0)
    if unscaled and hasattr(proxy, "get_unscaled"):
        return np.asarray(proxy.get_unscaled())
    return np.asarray(image.get_fdata(dtype=np.float64))
