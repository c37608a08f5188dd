"""DICOM through pydicom (the ``medical`` extra): modality values, signed data, multi-frame.

By default values are in modality units: RescaleSlope and RescaleIntercept are applied, so
CT is in Hounsfield units. Integer slope and intercept keep integer data exact: the result
is int16 when every value the file can hold fits int16 (12-bit CT: -1024..3071), else
uint16 or int32; other rescales give float64. ``dicom_values="stored"`` keeps the stored
values. MONOCHROME1 images (where low values display bright) are kept as stored by default
and say so; ``monochrome1="invert"`` maps them to MONOCHROME2 orientation first.
Compressed transfer syntaxes need a decoder plugin (pylibjpeg and its JPEG/JPEG 2000
plugins, in the ``medical`` extra); a missing one is an error naming the file and the extra.
"""

from __future__ import annotations

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, DecodedImage, ReadOptions, channel_first, check_pixel_limit

EXTENSIONS = (".dcm", ".dicom")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode one DICOM file (all frames)."""
    pydicom = _pydicom()
    dataset = pydicom.dcmread(path)
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        if _pixel_data_cut(path):
            raise ReadError(path, "the file ends inside its pixel data (truncated)")
        kind = getattr(dataset.get("SOPClassUID"), "name", "unknown SOP class")
        raise ReadError(path, f"no pixel data (a DICOM {kind} object)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    check_pixel_limit(path, int(dataset.Rows) * int(dataset.Columns) * frames, options.max_pixels)
    if getattr(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None), "is_encapsulated", False):
        check_frames(dataset, frames, path)
    stored = _pixels(dataset, path)
    notes = []
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        if options.monochrome1 == "invert":
            low, high = _stored_range(dataset)
            stored = (high + low - stored.astype(np.int64)).astype(stored.dtype)
            notes.append("MONOCHROME1 inverted")
        else:
            notes.append("MONOCHROME1 kept as stored (low values display bright)")
    values = stored if options.dicom_values == "stored" else _modality(dataset, stored)
    bits = int(dataset.get("BitsStored", 0) or 0)
    declared = bits if values is stored and values.dtype.kind == "u" and 0 < bits < values.dtype.itemsize * 8 else None
    samples = int(dataset.get("SamplesPerPixel", 1))
    if samples == 1:
        pixels, names = values[None], GRAY
    else:
        pixels, names = channel_first(values), RGB if samples == 3 else tuple(f"channel{i}" for i in range(samples))
    return DecodedImage(pixels=pixels, channels=names, spacing=_spacing(dataset), notes=tuple(notes),
                        significant_bits=declared, physical=options.dicom_values == "modality")


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ReadError("DICOM", "reading DICOM needs pydicom: pip install 'imagenorm[medical]'") from None
    return pydicom


def _pixel_data_cut(path: str) -> bool:
    """Whether the file holds a PixelData tag that pydicom dropped: it stops reading, with a
    warning, at an element the file ends inside of."""
    with open(path, "rb") as file:
        data = file.read()
    return b"\xe0\x7f\x10\x00" in data or b"\x7f\xe0\x00\x10" in data  # (7FE0,0010), either byte order


def check_frames(dataset, frames: int, path: str) -> None:
    """Refuse compressed pixel data that hold fewer frames than declared, or a JPEG frame cut short.

    pydicom stops at the last frame it finds, and a JPEG decoder (pylibjpeg) fills the rest
    of a frame whose data end early. A JPEG or JPEG-LS frame ends with its end-of-image
    marker, before at most some padding; only the fragments are read here, nothing decoded.
    """
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

    syntax = dataset.file_meta.TransferSyntaxUID
    jpeg = syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes
    offsets = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        offsets = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
    found = 0
    encoded = generate_frames(dataset.PixelData, number_of_frames=frames, extended_offsets=offsets)
    for found, frame in enumerate(encoded, 1):
        if jpeg and not frame.rstrip(b"\x00\xff").endswith(b"\xff\xd9"):
            raise ReadError(path, f"frame {found} of {frames} ends early: its JPEG data have no end marker")
    if found < frames:
        raise ReadError(path, f"pixel data end after {found} of {frames} frames")


def _pixels(dataset, path: str) -> np.ndarray:
    """The stored pixel values, with decoder failures turned into one clear reason."""
    try:
        return dataset.pixel_array
    except (RuntimeError, NotImplementedError, ImportError) as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        text = str(error)
        if "missing dependencies" in text or isinstance(error, ImportError):
            raise ReadError(path, f"compressed as {name}, and no installed decoder handles it: pip install 'imagenorm[medical]'") from None
        details = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        reason = details[0] if details else text.splitlines()[0]
        raise ReadError(path, f"cannot decode the {name} pixel data: {reason}") from None
    except (ValueError, EOFError, OSError, AttributeError) as error:
        raise ReadError(path, f"cannot decode the pixel data: {str(error).splitlines()[0]}") from None


def _stored_range(dataset) -> tuple[int, int]:
    """The values the stored pixels can take (BitsStored, PixelRepresentation)."""
    bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 16)))
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _modality(dataset, stored: np.ndarray) -> np.ndarray:
    """Stored values to modality units, integer where slope and intercept are integers."""
    if "ModalityLUTSequence" in dataset:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(stored, dataset)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0 or stored.dtype.kind == "f":
        return stored if stored.dtype.kind != "f" or (slope == 1 and intercept == 0) else stored * slope + intercept
    if slope.is_integer() and intercept.is_integer():
        low, high = sorted(v * slope + intercept for v in _stored_range(dataset))
        for target in (np.int16, np.uint16, np.int32):
            info = np.iinfo(target)
            if info.min <= low and high <= info.max:
                wide = np.int32 if np.dtype(target).itemsize <= 2 else np.int64
                values = stored.astype(wide)  # one copy; the rescale happens in place
                if slope != 1:
                    values *= int(slope)
                values += int(intercept)
                return values if np.dtype(target) == np.dtype(wide) else values.astype(target)
    return stored.astype(np.float64) * slope + intercept


def _spacing(dataset) -> tuple[float, ...] | None:
    spacing = dataset.get("PixelSpacing")
    if spacing is None:
        return None
    thickness = dataset.get("SliceThickness")
    values = [float(v) for v in spacing] + ([float(thickness)] if thickness not in (None, "") else [])
    return tuple(values)


def series_header(path: str) -> tuple[str, float, int] | None:
    """(SeriesInstanceUID, position along the patient axis, InstanceNumber), or None if unreadable."""
    try:
        pydicom = _pydicom()
        header = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SeriesInstanceUID", "InstanceNumber", "ImagePositionPatient"])
    except Exception:  # the reader reports a broken file later, by name
        return None
    uid = str(header.get("SeriesInstanceUID", ""))
    if not uid:
        return None
    position = header.get("ImagePositionPatient")
    return uid, float(position[2]) if position else 0.0, int(header.get("InstanceNumber", 0) or 0)
