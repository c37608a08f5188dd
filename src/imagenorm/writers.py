"""Write one normalized image, atomically: float32 ``.npy``, NIfTI with its source's header, or TIFF.

Every writer writes a temporary file beside the target and renames it (:func:`atomic_write`):
an interrupted run leaves no partial file. Sources are only read.

- ``npy``: the channel-first array ``(C, *spatial)`` as it is.
- ``nifti`` (``.nii.gz``, for NIfTI sources on disk): the voxels back in the source's own shape
  and axis order (the reader's channel-first layout undone, ``nifti_4d`` as read), under a copy
  of its header: affine, sform/qform codes and matrices, pixdim, xyzt units, dim_info and slice
  timing, extensions; NIfTI-2 stays NIfTI-2. The data are little-endian float32 with scl_slope
  1 and scl_inter 0; cal_min/cal_max and the intent are reset, as they described the old values.
- ``tiff``: float32 samples. One channel is gray, red/green/blue first is RGB, any other
  layout gray plus extra samples; extra samples are never marked as alpha (a normalized alpha
  holds values, not opacity, and readers would drop it). A volume ``(C, D, H, W)`` is D pages,
  one per index of its first spatial axis (a DICOM series' slices; a NIfTI volume's first voxel
  axis), in the layout of the ``.npy``: tifffile and :func:`~imagenorm.readers.read_image` give
  back the same array and channel count. No voxel geometry is kept (NIfTI output keeps it).
"""

from __future__ import annotations

import gzip
import math
import os

import numpy as np

from .atomic import atomic_write
from .errors import ImagenormError, ReadError, display_path, first_line
from .options import OptionError, check_choice
from .readers import RGB

#: The file name ending of each output format.
SUFFIXES = {"npy": ".npy", "nifti": ".nii.gz", "tiff": ".tiff"}
_NIFTI_NAMES = (".nii", ".nii.gz")
_UNSPECIFIED = 0  # TIFF ExtraSamples: data of its own, neither associated nor unassociated alpha


def write_image(target: str, pixels: np.ndarray, output_format: str, *, name: str, channels: tuple[str, ...],
                source: str | None = None, nifti_4d: str = "channels") -> None:
    """Write ``pixels`` ``(C, *spatial)`` to ``target`` (its folder made) as ``output_format``.

    Args:
        name: what errors name (the source's display name).
        channels: the channel names (TIFF: RGB or not).
        source: the NIfTI file whose header NIfTI output copies.
        nifti_4d: how the source's 4th axis was read (``"channels"`` or ``"pooled"``).

    Raises:
        ReadError: this image cannot be written in this format (see each writer).
    """
    check_choice("output_format", output_format)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    if output_format == "nifti":
        if source is None:
            raise ReadError(name, "NIfTI output needs the NIfTI source file whose header it copies")
        write_nifti(target, pixels, source, name=name, nifti_4d=nifti_4d)
    elif output_format == "tiff":
        write_tiff(target, pixels, channels, name=name)
    else:
        write_npy(target, pixels)


def write_npy(target: str, pixels: np.ndarray) -> None:
    """Save ``pixels`` as float32 ``.npy`` (never pickled) into an existing folder.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "a.npy")
        >>> write_npy(target, np.zeros((1, 4, 5), np.float64))
        >>> np.load(target).dtype.name, np.load(target).shape
        ('float32', (1, 4, 5))
    """
    with atomic_write(target, "wb") as file:
        np.save(file, np.ascontiguousarray(pixels, dtype=np.float32), allow_pickle=False)


def write_tiff(target: str, pixels: np.ndarray, channels: tuple[str, ...], *, name: str | None = None) -> None:
    """Save ``pixels`` ``(C, *spatial)`` as a float32 TIFF into an existing folder (see the module docstring).

    Raises:
        ReadError: ``pixels`` have one spatial axis (a TIFF whose pages differ in shape is read
            as a flat ``(C, N)`` list): a TIFF page needs two.

    Example:
        >>> import os, tempfile, tifffile
        >>> target = os.path.join(tempfile.mkdtemp(), "a.tiff")
        >>> write_tiff(target, np.zeros((2, 4, 5, 6)), ("channel0", "channel1"))
        >>> tifffile.imread(target).shape  # 4 pages of 5 x 6 pixels, 2 samples each
        (4, 5, 6, 2)
    """
    import tifffile

    if pixels.ndim < 3:
        raise ReadError(name or target, f"its pixels {tuple(pixels.shape)} have one spatial axis, and a TIFF page "
                                        "needs two; choose npy output")
    pixels = np.asarray(pixels, dtype=np.float32)
    count = pixels.shape[0]
    if count == 1:
        data, layout = pixels[0], {"photometric": "minisblack"}
    else:
        colour = 3 if tuple(channels[:3]) == RGB else 1
        data = np.moveaxis(pixels, 0, -1)  # samples last: a pixel's channels side by side
        layout = {"photometric": "rgb" if colour == 3 else "minisblack", "planarconfig": "contig",
                  "extrasamples": (_UNSPECIFIED,) * (count - colour)}
    with atomic_write(target, "wb") as file:  # named: tifffile asks a file object for its name
        tifffile.imwrite(tifffile.FileHandle(file, name=os.path.basename(target)), data, ome=False, **layout)
        # ome=False: a name ending .ome.tiff would make tifffile guess OME axes (slices as channels)


def check_nifti_source(name: str, path: str | None) -> None:
    """Refuse, before any work, a source that NIfTI output cannot copy the header of: no NIfTI
    file on disk (another format, a DICOM series, a member of an archive or table), or an RGB24
    or RGBA32 volume (colours, not one float per voxel). A header that cannot be read is left
    to the reader, which reports it as ``on_error`` says.

    Raises:
        OptionError: naming the source and why.
    """
    if path is None or not path.lower().endswith(_NIFTI_NAMES):
        member = name.lower().endswith(_NIFTI_NAMES)  # "shard.tar:scan.nii.gz"
        what = "a member of an archive or table" if member else "not a NIfTI file (.nii, .nii.gz)"
        raise OptionError(f"{name}: NIfTI output copies each source's NIfTI header, and this is {what}; "
                          "choose npy or tiff output")
    try:
        _, header = _source_header(path, name)
    except ReadError:
        return
    dtype = header.get_data_dtype()
    if dtype.names:
        raise OptionError(f"{name}: an RGB NIfTI volume ({len(dtype.names)} colours per voxel) cannot be written as "
                          "float32 NIfTI; choose npy or tiff output")


def write_nifti(target: str, pixels: np.ndarray, source: str, *, name: str | None = None,
                nifti_4d: str = "channels") -> None:
    """Save ``pixels`` as read from the NIfTI file ``source`` (``nifti_4d`` as read) into an
    existing folder as gzip-compressed float32 NIfTI with ``source``'s header (see the module docstring).

    Raises:
        ReadError: ``source``'s header cannot be read, or ``pixels`` do not have the layout
            the reader gives its voxels (other read options changed the channels).

    Example:
        >>> import os, tempfile, nibabel
        >>> folder = tempfile.mkdtemp()
        >>> affine = np.diag([2.0, 2.0, 3.0, 1.0])
        >>> nibabel.save(nibabel.Nifti1Image(np.ones((4, 5, 6), np.int16), affine), os.path.join(folder, "a.nii"))
        >>> write_nifti(os.path.join(folder, "b.nii.gz"), np.zeros((1, 4, 5, 6)), os.path.join(folder, "a.nii"))
        >>> written = nibabel.load(os.path.join(folder, "b.nii.gz"))
        >>> written.shape, written.get_data_dtype().name, bool((written.affine == affine).all())
        ((4, 5, 6), 'float32', True)
    """
    name = name or display_path(source)
    kind, header = _source_header(source, name)
    voxels = _source_layout(np.asarray(pixels, dtype=np.float32), header.get_data_shape(), nifti_4d, name)
    little = header.as_byteswapped("<")  # the common byte order, whatever the source's
    little.extensions[:] = header.extensions  # which as_byteswapped leaves out
    image = kind(voxels, None, header=little)  # no affine given: the header's sform and qform stay as they are
    header = image.header  # the image's own copy, which nibabel writes
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)  # after the constructor, which resets them to "choose a scaling on write"
    header["cal_min"] = header["cal_max"] = 0
    header.set_intent("none")
    with atomic_write(target, "wb") as file, \
            gzip.GzipFile(filename="", mode="wb", fileobj=file, compresslevel=1, mtime=0) as stream:
        image.to_stream(stream)


def _source_layout(pixels: np.ndarray, shape: tuple[int, ...], nifti_4d: str, name: str) -> np.ndarray:
    """``pixels`` as the NIfTI reader lays out a volume of ``shape`` (``(1, X, Y, Z)``; a 4th
    and further axes flattened to channels ``(C, X, Y, Z)``, or pooled ``(1, C * X, Y, Z)``)
    back in ``shape``: the exact inverse of that layout."""
    count = math.prod(shape[3:])
    if len(shape) <= 3:
        expected = (1, *shape)
    elif nifti_4d == "pooled":
        expected = (1, count * shape[0], *shape[1:3])
    else:
        expected = (count, *shape[:3])
    if tuple(pixels.shape) != expected:
        raise ReadError(name, f"its normalized pixels {tuple(pixels.shape)} do not have the layout {expected} of its "
                              f"NIfTI shape {tuple(shape)}; choose npy or tiff output")
    if len(shape) <= 3:
        return pixels.reshape(shape)
    return np.moveaxis(pixels.reshape((count, *shape[:3])), 0, -1).reshape(shape)


def _source_header(path: str, name: str):
    """(image class, header with extensions) of the NIfTI-1 or NIfTI-2 file ``path``; no voxel is read."""
    nibabel = _nibabel()
    try:
        with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as file:
            head = file.read(540)
        kind = nibabel.Nifti1Image if nibabel.Nifti1Header.may_contain_header(head) else nibabel.Nifti2Image
        return kind, kind.from_filename(path).header
    except Exception as error:  # nibabel and gzip raise many types for a broken file
        raise ReadError(name, f"cannot read its NIfTI header: {first_line(error)}") from None


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImagenormError("writing NIfTI needs nibabel: pip install 'imagenorm[medical]'") from None
    return nibabel
