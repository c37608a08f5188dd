"""DICOM through pydicom (the ``medical`` extra): modality values, signed data, multi-frame.

By default values are in modality units: RescaleSlope and RescaleIntercept are applied, so
CT is in Hounsfield units; Enhanced (multi-frame) CT, MR and PET keep them in the functional
groups (PixelValueTransformationSequence, per frame where the file gives them, else shared),
and those apply. Integer slope and intercept keep integer data exact: the result
is int16 when every value the file can hold fits int16 (12-bit CT: -1024..3071), else
uint16 or int32; other rescales give float64. ``dicom_values="stored"`` keeps the stored
values. MONOCHROME1 images (where low values display bright) are kept as stored by default
and say so; ``monochrome1="invert"`` maps them to MONOCHROME2 orientation first.
PALETTE COLOR images are expanded through their palette (pydicom's ``apply_color_lut``) to
RGB(A) colours of the palette's depth (8- or 16-bit entries), whatever ``dicom_values`` says:
palette indices are never counted.
Compressed transfer syntaxes need a decoder plugin (pylibjpeg and its JPEG/JPEG 2000
plugins, in the ``medical`` extra); a missing one is an error naming the file and the extra.
"""

from __future__ import annotations

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, RGBA, DecodedImage, ReadOptions, channel_first, check_pixel_limit

EXTENSIONS = (".dcm", ".dicom")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode one DICOM file (all frames)."""
    dataset = _dcmread(path)
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        if _pixel_data_cut(path):
            raise ReadError(path, "the file ends inside its pixel data (truncated)")
        raise ReadError(path, f"no pixel data (a DICOM {sop_class_name(dataset)} object)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    check_pixel_limit(path, int(dataset.Rows) * int(dataset.Columns) * frames, options.max_pixels)
    if getattr(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None), "is_encapsulated", False):
        check_frames(dataset, frames, path)
    stored = _pixels(dataset, path)
    # Modality values (a modality LUT or rescale, identity included) are physical units, in any
    # container; colours (palette, RGB, YBR) are raw pixel values like a photo's.
    samples = int(dataset.get("SamplesPerPixel", 1))
    physical = options.dicom_values == "modality" and samples == 1
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        colours = palette_colours(dataset, stored, path)
        return DecodedImage(pixels=channel_first(colours), channels=RGBA if colours.shape[-1] == 4 else RGB,
                            palette=True, spacing=_spacing(dataset))
    notes = []
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        if options.monochrome1 == "invert":
            low, high = _stored_range(dataset)
            stored = (high + low - stored.astype(np.int64)).astype(stored.dtype)
            notes.append("MONOCHROME1 inverted")
        else:
            notes.append("MONOCHROME1 kept as stored (low values display bright)")
    values = stored if options.dicom_values == "stored" else _modality(dataset, stored, frames)
    bits = int(dataset.get("BitsStored", 0) or 0)
    declared = bits if values is stored and values.dtype.kind == "u" and 0 < bits < values.dtype.itemsize * 8 else None
    if samples == 1:
        pixels, names = values[None], GRAY
    else:
        pixels, names = channel_first(values), RGB if samples == 3 else tuple(f"channel{i}" for i in range(samples))
    return DecodedImage(pixels=pixels, channels=names, spacing=_spacing(dataset), notes=tuple(notes),
                        significant_bits=declared, physical=physical)


def _dcmread(path: str):
    """The dataset of ``path``; a file that is not DICOM is one line, not pydicom's advice."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise ReadError(path, "not a DICOM file (no DICM preamble or file meta)") from None


def sop_class_name(dataset) -> str:
    """The name of the dataset's SOP class: SOPClassUID, else the file meta's MediaStorageSOPClassUID."""
    meta = getattr(dataset, "file_meta", None)
    uid = dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if not uid:
        return "unknown SOP class"
    name = getattr(uid, "name", "")
    return name if name and name != str(uid) else f"SOP class {uid}"


def palette_colours(dataset, indices: np.ndarray, path: str) -> np.ndarray:
    """PALETTE COLOR indices as colours ``(..., 3 or 4)`` in the palette's depth (8- or 16-bit)."""
    from pydicom.pixels import apply_color_lut

    try:
        colours = apply_color_lut(indices, dataset)
    except (ValueError, AttributeError, KeyError) as error:
        raise ReadError(path, f"its PALETTE COLOR lookup table cannot be applied: {str(error).splitlines()[0]}") from None
    declared = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    if declared == 8 and colours.dtype != np.uint8 and colours.max(initial=0) <= 255:
        return colours.astype(np.uint8)  # 8-bit entries stored in 16-bit words
    return colours


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


def _modality(dataset, stored: np.ndarray, frames: int) -> np.ndarray:
    """Stored values to modality units, integer where every slope and intercept is an integer."""
    if "ModalityLUTSequence" in dataset:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(stored, dataset)
    slopes, intercepts = rescale_factors(dataset, frames)
    if (slopes == 1).all() and (intercepts == 0).all():
        return stored
    if frames > 1 and stored.ndim >= 3:  # one factor per frame, along the first axis
        shape = (frames,) + (1,) * (stored.ndim - 1)
        slopes, intercepts = slopes.reshape(shape), intercepts.reshape(shape)
    else:
        slopes, intercepts = slopes[0], intercepts[0]
    if stored.dtype.kind == "f":
        return stored * slopes + intercepts
    if np.all(np.mod(slopes, 1) == 0) and np.all(np.mod(intercepts, 1) == 0):
        target = _integer_target(dataset, slopes, intercepts)
        if target is not None:
            wide = np.int32 if np.dtype(target).itemsize <= 2 else np.int64
            values = stored.astype(wide)  # one copy; the rescale happens in place
            if np.any(slopes != 1):
                values *= np.asarray(slopes).astype(wide)
            values += np.asarray(intercepts).astype(wide)
            return values if np.dtype(target) == np.dtype(wide) else values.astype(target)
    return stored.astype(np.float64) * slopes + intercepts


def _integer_target(dataset, slopes, intercepts) -> type | None:
    """The smallest of int16, uint16, int32 that holds every value the file can hold, rescaled."""
    ends = [v * np.asarray(slopes, np.float64) + np.asarray(intercepts, np.float64) for v in _stored_range(dataset)]
    low, high = float(min(e.min() for e in ends)), float(max(e.max() for e in ends))
    for target in (np.int16, np.uint16, np.int32):
        info = np.iinfo(target)
        if info.min <= low and high <= info.max:
            return target
    return None


def rescale_factors(dataset, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, intercepts), one per frame: a frame's own PixelValueTransformationSequence
    (PerFrameFunctionalGroupsSequence), else the shared one (SharedFunctionalGroupsSequence),
    else the top-level RescaleSlope and RescaleIntercept. pydicom's ``apply_modality_lut``
    reads only the last."""
    top = (float(dataset.get("RescaleSlope", 1) or 1), float(dataset.get("RescaleIntercept", 0) or 0))
    shared = _pixel_value_transformation(dataset.get("SharedFunctionalGroupsSequence"))
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    factors = []
    for index in range(frames):
        own = _pixel_value_transformation(per_frame[index:index + 1]) if index < len(per_frame) else None
        factors.append(own or shared or top)
    slopes, intercepts = zip(*factors)
    return np.array(slopes, np.float64), np.array(intercepts, np.float64)


def _pixel_value_transformation(groups) -> tuple[float, float] | None:
    """(slope, intercept) from the first item of a functional groups sequence, if it has them."""
    if not groups:
        return None
    transformation = groups[0].get("PixelValueTransformationSequence")
    if not transformation or "RescaleSlope" not in transformation[0] and "RescaleIntercept" not in transformation[0]:
        return None
    item = transformation[0]
    return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)


def _spacing(dataset) -> tuple[float, ...] | None:
    """PixelSpacing (and SliceThickness): top-level, or in the shared PixelMeasuresSequence
    of an Enhanced (multi-frame) object."""
    source = dataset
    if "PixelSpacing" not in dataset:
        shared = dataset.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        source = measures[0] if measures else dataset
    spacing = source.get("PixelSpacing")
    if spacing is None:
        return None
    thickness = source.get("SliceThickness")
    values = [float(v) for v in spacing] + ([float(thickness)] if thickness not in (None, "") else [])
    return tuple(values)
