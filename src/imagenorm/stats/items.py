"""Uniform access to the images of any source: files, a Dataset, or a tensor.

An :class:`ItemSource` has a length, a printable name per item and ``load(i)`` giving a
:class:`~imagenorm.readers.DecodedImage`. It is what worker processes receive: for
files only the path list crosses the process boundary, never pixels.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..errors import ImagenormError, ReadError, display_path
from ..readers import (
    DecodedImage,
    ReadOptions,
    apply_channel_options,
    array_channels,
    bilevel,
    channel_first,
    channels_for,
    native_order,
    read_image,
)
from ..readers.numpy_file import to_channel_first


class ItemSource:
    """Indexable images with names."""

    hidden: int = 0  # hidden files and folders skipped while the items were found (set by as_item_source)

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        raise NotImplementedError

    def path(self, index: int) -> str | None:
        """The file behind item ``index``, if there is one."""
        return None

    def key(self, index: int) -> str:
        """A path that stands for item ``index`` (its file; a series' first slice)."""
        return self.path(index) or self.name(index)

    def files(self, index: int) -> list[str]:
        """Every file item ``index`` is read from (none for in-memory items)."""
        path = self.path(index)
        return [] if path is None else [path]

    def probe(self, index: int, options: ReadOptions) -> DecodedImage:
        """Enough of item ``index`` to learn its dtype and channels (default: all of it)."""
        return self.load(index, options)

    def global_index(self, index: int) -> int:
        """The item's place in the whole dataset (a shard maps its own indices)."""
        return index


@dataclass
class FileItems(ItemSource):
    """Image files, decoded by imagenorm's readers."""

    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return display_path(self.paths[index])

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        return read_image(self.paths[index], options)

    def path(self, index: int) -> str | None:
        return self.paths[index]


@dataclass(frozen=True)
class SliceHeader:
    """What grouping needs from one DICOM file's header."""

    series_uid: str  # SeriesInstanceUID
    description: str  # SeriesDescription
    instance_uid: str  # SOPInstanceUID
    position: float  # along the patient axis (ImagePositionPatient z)
    number: int  # InstanceNumber

    @property
    def instance(self) -> tuple[str, float, int]:
        """What makes two files the same slice."""
        return self.instance_uid, self.position, self.number


@dataclass
class Series:
    """Files read as one item: one image file, or the slices of one DICOM series in one
    folder, in patient-axis order (``headers`` then has one per slice)."""

    paths: list[str]
    headers: list[SliceHeader] = field(default_factory=list)

    def name(self) -> str:
        """The file's path; a series' folder, SeriesInstanceUID, description and file count."""
        if len(self.paths) == 1:
            return display_path(self.paths[0])
        first = self.headers[0]
        description = f' "{first.description}"' if first.description else ""
        return f"{display_path(os.path.dirname(self.paths[0]))} (series {first.series_uid}{description}, {len(self.paths)} files)"


@dataclass
class SeriesItems(ItemSource):
    """Image files where the slices of one DICOM series (one folder, one SeriesInstanceUID)
    form one item ``(C, slices, H, W)``, ordered along the patient axis.

    A file that repeats an earlier slice (the same SOPInstanceUID, position and
    InstanceNumber, and the same pixels, as PACS exports may hold) is counted once, with a
    note naming both files. A bad slice makes the whole series fail, naming that slice.
    """

    groups: list[Series]

    def __len__(self) -> int:
        return len(self.groups)

    def name(self, index: int) -> str:
        return self.groups[index].name()

    def path(self, index: int) -> str | None:
        return self.groups[index].paths[0] if len(self.groups[index].paths) == 1 else None

    def key(self, index: int) -> str:
        return self.groups[index].paths[0]

    def files(self, index: int) -> list[str]:
        return list(self.groups[index].paths)

    def probe(self, index: int, options: ReadOptions) -> DecodedImage:
        return self._read_slice(index, 0, options)  # one slice tells the layout

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        series = self.groups[index]
        slices = [self._read_slice(index, position, options) for position in range(len(series.paths))]
        if len(slices) == 1:
            return slices[0]
        paths, slices, note = _without_repeats(series, slices)
        _check_alike(self.name(index), paths, slices)
        image = slices[0] if len(slices) == 1 else _stack(slices)
        return replace(image, notes=tuple(sorted(set(image.notes) | {note}))) if note else image

    def _read_slice(self, index: int, position: int, options: ReadOptions) -> DecodedImage:
        """One file of item ``index``; in a series, a failure names the series and the slice."""
        paths = self.groups[index].paths
        if len(paths) == 1:
            return read_image(paths[0], options)
        try:
            return read_image(paths[position], options)
        except ReadError as error:
            raise ReadError(self.name(index), f"its slice {display_path(paths[position])} (file {position + 1} "
                                              f"of {len(paths)}): {error.reason}") from None


def _without_repeats(series: Series, slices: list[DecodedImage]) -> tuple[list[str], list[DecodedImage], str | None]:
    """The slices with each repeated instance dropped (same SOPInstanceUID, position, number
    and pixels), and a note naming the repeats (None: there were none).

    Raises:
        ReadError: one instance (SOPInstanceUID, position, number) with two sets of pixels,
            naming both files: which one is right cannot be known.
    """
    first_seen: dict[tuple, tuple[str, DecodedImage]] = {}
    paths, kept, repeats = [], [], []
    for path, header, image in zip(series.paths, series.headers, slices):
        earlier = first_seen.get(header.instance) if header.instance_uid else None
        if earlier is not None and _same_pixels(earlier[1], image):
            repeats.append(f"{display_path(path)} repeats {display_path(earlier[0])}")
            continue
        if earlier is not None:
            raise ReadError(series.name(), f"{display_path(path)} and {display_path(earlier[0])} are the same instance "
                                           f"(SOPInstanceUID {header.instance_uid}) with different pixels")
        first_seen.setdefault(header.instance, (path, image))
        paths.append(path)
        kept.append(image)
    if not repeats:
        return paths, kept, None
    note = (f"{series.name()}: {len(repeats)} file(s) repeat an instance (same SOPInstanceUID and pixels) "
            f"and were counted once: {'; '.join(repeats)}")
    return paths, kept, note


def _same_pixels(first: DecodedImage, second: DecodedImage) -> bool:
    return first.pixels.dtype == second.pixels.dtype and np.array_equal(first.pixels, second.pixels)


def _check_alike(name: str, paths: list[str], slices: list[DecodedImage]) -> None:
    """Every slice must have the first one's shape, dtype and channels."""
    first = slices[0]
    for path, image in zip(paths[1:], slices[1:]):
        if (image.pixels.shape, image.pixels.dtype, image.channels) != (first.pixels.shape, first.pixels.dtype, first.channels):
            raise ReadError(name, f"its slice {display_path(path)} is {_describe(image)}, but {display_path(paths[0])} "
                                  f"is {_describe(first)}")


def _describe(image: DecodedImage) -> str:
    return f"{'x'.join(map(str, image.pixels.shape[1:]))} {image.pixels.dtype} ({', '.join(image.channels)})"


def _stack(slices: list[DecodedImage]) -> DecodedImage:
    """Slices of one shape as one ``(C, slices, H, W)`` image that keeps every property of the
    first slice (significant bits: the largest declared, none if a slice declares none)."""
    first = slices[0]
    declared = {image.significant_bits for image in slices}
    return replace(
        first,
        pixels=np.stack([image.pixels for image in slices], axis=1),
        notes=tuple(sorted({note for image in slices for note in image.notes})),
        palette=any(image.palette for image in slices),
        significant_bits=None if None in declared else max(declared),
    )


def group_dicom_series(paths: list[str]) -> list[Series]:
    """Group DICOM slices by folder and SeriesInstanceUID (other files stay alone), in path order."""
    from ..readers import dicom, reader_for

    groups: dict[tuple, list[tuple]] = {}
    for position, path in enumerate(paths):
        header = slice_header(path) if reader_for(path) is dicom.read else None
        key = ("series", os.path.dirname(path), header.series_uid) if header else ("file", position)
        groups.setdefault(key, []).append((header, position, path))
    return [_series(members) for members in groups.values()]


def _series(members: list[tuple]) -> Series:
    if members[0][0] is None:
        return Series([members[0][2]])
    members = sorted(members, key=lambda member: (member[0].position, member[0].number, member[1]))
    return Series([path for _, _, path in members], [header for header, _, _ in members])


def slice_header(path: str) -> SliceHeader | None:
    """The grouping header of a DICOM file, or None if it has no SeriesInstanceUID or cannot be read
    (the reader reports a broken file later, by name)."""
    try:
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
            "SeriesInstanceUID", "SeriesDescription", "SOPInstanceUID", "InstanceNumber", "ImagePositionPatient"])
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if not uid:
            return None
        position = header.get("ImagePositionPatient")
        return SliceHeader(
            series_uid=uid,
            description=str(header.get("SeriesDescription", "") or "").strip(),
            instance_uid=str(header.get("SOPInstanceUID", "") or ""),
            position=float(position[2]) if position else 0.0,
            number=int(header.get("InstanceNumber", 0) or 0),
        )
    except Exception:  # pydicom missing, or a broken header
        return None


@dataclass
class DatasetItems(ItemSource):
    """A map-style ``torch.utils.data.Dataset`` (or any sequence) of images.

    Items may be tensors (channel-first), numpy arrays (the ``.npy`` layout rule),
    PIL images, or tuples whose first element is one of these (``(image, label)``).
    """

    dataset: Any

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        paths = getattr(self.dataset, "paths", None)  # e.g. ImageFolderDataset: name the file
        return display_path(paths[index]) if paths is not None else f"item {index}"

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        try:
            item = self.dataset[index]
        except ReadError:
            raise
        except Exception as error:
            raise ReadError(self.name(index), f"{type(error).__name__}: {error}") from None
        return apply_channel_options(native_order(to_decoded(item, self.name(index))), options, self.name(index))


def to_decoded(item: Any, name: str) -> DecodedImage:
    """Convert one dataset item to a DecodedImage, by the rules files follow.

    Bool samples become uint8 0 and 255 (:func:`~imagenorm.readers.bilevel`); a PIL image is
    read as a decoded file's frame is (palette expanded, CMYK and YCbCr refused).
    """
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if "torch" in sys.modules:
        import torch

        if isinstance(item, torch.Tensor):
            if item.dtype.is_complex:
                raise ReadError(name, f"expected pixel values (integer, bool or float), got {item.dtype}")
            if item.dtype == torch.bfloat16:  # numpy has no bfloat16; every value is a float32 value
                item = item.float()
            array = item.detach().cpu().numpy()
            if array.ndim not in (2, 3, 4):
                raise ReadError(name, f"expected a tensor of shape (H, W), (C, H, W) or (C, D, H, W), got {tuple(item.shape)}")
            pixels = bilevel(array[None] if array.ndim == 2 else array)
            return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))
    if "PIL" in sys.modules:
        from PIL import Image

        if isinstance(item, Image.Image):
            from ..readers.pillow import frame_array

            array, palette = frame_array(item, name)
            pixels = channel_first(array)
            return DecodedImage(pixels=pixels, channels=channels_for(pixels.shape[0]), palette=palette)
    if isinstance(item, np.ndarray):
        if item.dtype.kind not in "uifb":
            raise ReadError(name, f"unsupported array dtype {item.dtype}")
        pixels = bilevel(to_channel_first(item, name))
        return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))
    raise ReadError(name, f"expected a tensor, numpy array or PIL image, got {type(item).__name__}")


def as_item_source(source: Any, dicom_series: bool = True) -> tuple[ItemSource, int]:
    """(ItemSource, number of non-image files passed over) for any supported source.

    With ``dicom_series``, the slices of a DICOM series form one item. The item source's
    ``hidden`` says how many hidden files and folders were skipped unread.
    """
    from ..sources import find_images

    if isinstance(source, ItemSource):
        return source, 0
    if isinstance(source, (str, bytes, os.PathLike)) or _is_path_list(source):
        found = find_images(source)
        items = _file_items(found.paths, dicom_series)
        items.hidden = found.hidden
        return items, found.ignored
    if "torch" in sys.modules:
        import torch

        if isinstance(source, torch.Tensor):
            if source.ndim in (2, 3):
                source = source[None]
            return DatasetItems(source), 0
    if isinstance(source, np.ndarray):
        return DatasetItems([source] if source.ndim <= 3 else source), 0
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        return DatasetItems(source), 0
    raise ImagenormError(
        f"cannot read images from a {type(source).__name__}: expected a path, glob, list of paths, "
        "text file, map-style Dataset, tensor or array"
    )


def _file_items(paths: list[str], dicom_series: bool) -> ItemSource:
    """The files as items: each its own, or DICOM series grouped where there are some."""
    if dicom_series:
        groups = group_dicom_series(paths)
        if len(groups) < len(paths):
            return SeriesItems(groups)
    return FileItems(paths)


def _is_path_list(source: Any) -> bool:
    return isinstance(source, Sequence) and not isinstance(source, str) and len(source) > 0 and all(
        isinstance(item, (str, os.PathLike)) for item in source
    )
