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

:func:`decode` reads the same from bytes in memory, by the same steps as :func:`read` reads a
file. :func:`read_tags` finds a few top-level elements (what grouping slices into
series needs) by walking the element headers of a file's first bytes, without pydicom's parse.
"""

from __future__ import annotations

import io
import struct
from typing import Sequence

import numpy as np

from ..errors import ReadError
from .base import GRAY, RGB, RGBA, Data, DecodedImage, ReadOptions, channel_first, check_pixel_limit, read_file

EXTENSIONS = (".dcm", ".dicom")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read(path: str, options: ReadOptions) -> DecodedImage:
    """Decode one DICOM file (all frames).

    pydicom reads the file itself: decoding the file's bytes read in one go (:func:`decode`)
    made ``stats --dicom-slices`` on 300 CT slices of 512x512 take 2.8 s instead of 1.5 s
    (2-core VM: with a whole-file buffer alive beside each decode, the arrays allocated after
    it took fresh pages every time).
    """
    return _decode(path, path, options)


def decode(data: Data, name: str, options: ReadOptions) -> DecodedImage:
    """Decode one DICOM object held in memory (all frames); ``name`` is what errors name."""
    return _decode(io.BytesIO(data), name, options)


def _decode(source: str | io.BytesIO, name: str, options: ReadOptions) -> DecodedImage:
    """The image of a DICOM file (a path) or object in memory (``BytesIO``)."""
    dataset = _dcmread(source, name)
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        if _pixel_data_cut(source):
            raise ReadError(name, "the file ends inside its pixel data (truncated)")
        raise ReadError(name, f"no pixel data (a DICOM {sop_class_name(dataset)} object)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    check_pixel_limit(name, int(dataset.Rows) * int(dataset.Columns) * frames, options.max_pixels)
    if getattr(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None), "is_encapsulated", False):
        check_frames(dataset, frames, name)
    stored = _pixels(dataset, name)
    # Modality values (a modality LUT or rescale, identity included) are physical units, in any
    # container; colours (palette, RGB, YBR) are raw pixel values like a photo's.
    samples = int(dataset.get("SamplesPerPixel", 1))
    physical = options.dicom_values == "modality" and samples == 1
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        colours = palette_colours(dataset, stored, name)
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


def _dcmread(source: str | io.BytesIO, name: str):
    """The dataset of a file or ``BytesIO``; one that is not DICOM is one line, not pydicom's advice."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(source)
    except InvalidDicomError:
        if not _meta_without_preamble(source):
            raise ReadError(name, "not a DICOM file (no DICM preamble or file meta)") from None
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return pydicom.dcmread(source, force=True)  # file meta first, no preamble: what some older tools write


def _meta_without_preamble(source: str | io.BytesIO) -> bool:
    """Whether the data begin with a file meta element (group 0002, little endian) instead of the
    128-byte preamble and "DICM"."""
    if isinstance(source, io.BytesIO):
        head = source.getvalue()[:4]
    else:
        with open(source, "rb") as file:
            head = file.read(4)
    return head[:2] == b"\x02\x00" and len(head) == 4


def sop_class_name(dataset) -> str:
    """The name of the dataset's SOP class: SOPClassUID, else the file meta's MediaStorageSOPClassUID."""
    meta = getattr(dataset, "file_meta", None)
    uid = dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if not uid:
        return "unknown SOP class"
    name = getattr(uid, "name", "")
    return name if name and name != str(uid) else f"SOP class {uid}"


def palette_colours(dataset, indices: np.ndarray, name: str) -> np.ndarray:
    """PALETTE COLOR indices as colours ``(..., 3 or 4)`` in the palette's depth (8- or 16-bit)."""
    from pydicom.pixels import apply_color_lut

    try:
        colours = apply_color_lut(indices, dataset)
    except (ValueError, AttributeError, KeyError) as error:
        raise ReadError(name, f"its PALETTE COLOR lookup table cannot be applied: {str(error).splitlines()[0]}") from None
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


def _pixel_data_cut(source: str | io.BytesIO) -> bool:
    """Whether a file or ``BytesIO`` holds a PixelData tag that pydicom dropped: it stops
    reading, with a warning, at an element the data end inside of."""
    data = read_file(source) if isinstance(source, str) else source.getvalue()
    return b"\xe0\x7f\x10\x00" in data or b"\x7f\xe0\x00\x10" in data  # (7FE0,0010), either byte order


def check_frames(dataset, frames: int, name: str) -> None:
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
            raise ReadError(name, f"frame {found} of {frames} ends early: its JPEG data have no end marker")
    if found < frames:
        raise ReadError(name, f"pixel data end after {found} of {frames} frames")


def _pixels(dataset, name: str) -> np.ndarray:
    """The stored pixel values, with decoder failures turned into one clear reason."""
    try:
        return dataset.pixel_array
    except (RuntimeError, NotImplementedError, ImportError) as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax))
        text = str(error)
        if "missing dependencies" in text or isinstance(error, ImportError):
            raise ReadError(name, f"compressed as {syntax_name}, and no installed decoder handles it: pip install 'imagenorm[medical]'") from None
        details = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        reason = details[0] if details else text.splitlines()[0]
        raise ReadError(name, f"cannot decode the {syntax_name} pixel data: {reason}") from None
    except (ValueError, EOFError, OSError, AttributeError) as error:
        raise ReadError(name, f"cannot decode the pixel data: {str(error).splitlines()[0]}") from None


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


_HEAD_BYTES = 16384  # grouping tags are looked for here first, in the whole file if they lie further
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_SPECIFIC_CHARACTER_SET = 0x00080005
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_TAG = {"<": struct.Struct("<HH"), ">": struct.Struct(">HH")}
_SHORT_LENGTH = {"<": struct.Struct("<H"), ">": struct.Struct(">H")}
_LONG_LENGTH = {"<": struct.Struct("<L"), ">": struct.Struct(">L")}


class _NeedMore(Exception):
    """The bytes end before the tag walk is done."""


class _Unusual(Exception):
    """An encoding the tag walk leaves to pydicom (deflated, a VR change, an unknown VR, ...)."""


def read_tags(path: str, keywords: Sequence[str]):
    """A pydicom dataset of only the top-level elements ``keywords`` of a DICOM file, and its
    SpecificCharacterSet (which decodes their text): found by walking the element headers
    of the file's first bytes, nothing decoded but them, nothing read after the last of them.

    pydicom reads a file the walk leaves (``specific_tags``), and raises what it raises for
    one that is not DICOM.
    """
    pydicom = _pydicom()
    wanted = frozenset(pydicom.datadict.tag_for_keyword(keyword) for keyword in keywords)
    with open(path, "rb") as file:
        data = file.read(_HEAD_BYTES)
        complete = len(data) < _HEAD_BYTES
        while True:
            try:
                return _raw_dataset(data, wanted, complete)
            except _Unusual:
                break
            except _NeedMore:
                if complete:
                    break
                data, complete = data + file.read(), True
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))


def meta_text(data: bytes, element: int) -> str | None:
    """The text of file meta element (0002, ``element``) of data that begin with the preamble and
    "DICM" (explicit VR little endian); None where the data do not hold it."""
    offset = 132
    try:
        while True:
            tag, _, length, start = _element_header(data, offset, False, "<")
            if tag >> 16 != 0x0002:
                return None
            if tag & 0xFFFF == element:
                return bytes(data[start:start + length]).rstrip(b"\x00 ").decode("ascii", "replace")
            offset = start + length
    except (_NeedMore, _Unusual):
        return None


def _raw_dataset(data: bytes, wanted: frozenset[int], complete: bool):
    """The elements ``wanted`` of the top-level dataset of a DICOM file's bytes, undecoded
    (``complete``: the bytes are the whole file, which may end after the last element)."""
    from pydicom.dataelem import RawDataElement, empty_value_for_VR
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    if data[128:132] != b"DICM":
        raise _Unusual  # pydicom says what it is
    offset, implicit, endian = _dataset_start(data)
    last, previous, found = max(wanted), -1, {}
    while True:
        if complete and offset == len(data):
            return Dataset(found)
        tag, vr, length, start = _element_header(data, offset, implicit, endian)
        if tag <= previous:
            raise _Unusual  # out of order: a later element might be one of those wanted
        if tag > last:
            return Dataset(found)
        if tag in wanted or tag == _SPECIFIC_CHARACTER_SET:
            if length == _UNDEFINED:
                raise _Unusual
            if start + length > len(data):
                raise _NeedMore
            vr = vr and vr.decode("ascii")
            value = data[start:start + length] if length else empty_value_for_VR(vr, raw=True)
            found[Tag(tag)] = RawDataElement(Tag(tag), vr, length, value, start, implicit, endian == "<")
        offset, previous = _value_end(data, start, length, implicit, endian), tag


def _dataset_start(data: bytes) -> tuple[int, bool, str]:
    """(offset, implicit VR, byte order) of the dataset after the file meta (group 0002, explicit
    VR little endian) of a file with the DICOM preamble."""
    from pydicom.uid import UID

    offset, syntax = 132, None
    while True:
        if offset + 8 > len(data):
            raise _NeedMore
        if _TAG["<"].unpack_from(data, offset)[0] != 0x0002:
            break
        tag, _, length, start = _element_header(data, offset, False, "<")
        if length == _UNDEFINED:
            raise _Unusual
        if tag == 0x00020010:
            if start + length > len(data):
                raise _NeedMore
            syntax = UID(data[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace"))
        offset = start + length
    if syntax is None or not syntax.is_transfer_syntax or syntax.is_deflated:
        raise _Unusual
    implicit, endian = syntax.is_implicit_VR, "<" if syntax.is_little_endian else ">"
    vr = data[offset + 4:offset + 6]
    if len(vr) < 2:
        raise _NeedMore
    if implicit == (b"A" <= vr[:1] <= b"Z" and b"A" <= vr[1:] <= b"Z"):
        raise _Unusual  # the dataset is not encoded as its syntax says: pydicom's heuristics decide
    return offset, implicit, endian


def _element_header(data: bytes, offset: int, implicit: bool, endian: str) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, value offset) of the element at ``offset``."""
    if offset + 8 > len(data):
        raise _NeedMore
    group, number = _TAG[endian].unpack_from(data, offset)
    if implicit or group == 0xFFFE:  # items and delimiters have no VR
        return group << 16 | number, None, _LONG_LENGTH[endian].unpack_from(data, offset + 4)[0], offset + 8
    vr = data[offset + 4:offset + 6]
    if vr in _SHORT_VRS:
        return group << 16 | number, vr, _SHORT_LENGTH[endian].unpack_from(data, offset + 6)[0], offset + 8
    if vr not in _LONG_VRS:
        raise _Unusual
    if offset + 12 > len(data):
        raise _NeedMore
    return group << 16 | number, vr, _LONG_LENGTH[endian].unpack_from(data, offset + 8)[0], offset + 12


def _value_end(data: bytes, start: int, length: int, implicit: bool, endian: str) -> int:
    """Where the value from ``start`` ends: its length on, or past the sequence delimiter of an
    undefined length (a sequence, or encapsulated pixel data), walking its items."""
    if length != _UNDEFINED:
        return start + length
    offset = start
    while True:
        tag, _, length, start = _element_header(data, offset, True, endian)
        if tag == _SEQUENCE_END:
            return start
        if tag != _ITEM:
            raise _Unusual
        offset = start + length if length != _UNDEFINED else _item_end(data, start, implicit, endian)


def _item_end(data: bytes, offset: int, implicit: bool, endian: str) -> int:
    """Past the delimiter of a sequence item of undefined length, walking its elements."""
    while True:
        tag, _, length, start = _element_header(data, offset, implicit, endian)
        if tag == _ITEM_END:
            return start
        offset = _value_end(data, start, length, implicit, endian)
