"""Uniform access to the images of any source: files, a Dataset, or a tensor.

An :class:`ItemSource` has a length, a printable name per item and ``load(i)`` giving a
:class:`~imagenorm.readers.DecodedImage`. It is what worker processes receive: for
files only the path list crosses the process boundary, never pixels.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ImagenormError, ReadError, display_path
from ..options import OptionError
from ..readers import (
    DecodedImage,
    ReadOptions,
    apply_channel_options,
    native_order,
    read_image,
)
from ..readers.objects import to_decoded
from ..sources import ItemSource, Offsets
from .state import common_dtype


class ConcatItems(ItemSource):
    """Several item sources as one, in order."""

    def __init__(self, parts: list[ItemSource]) -> None:
        self.parts = parts
        self.offsets = Offsets(len(part) for part in parts)
        self.hidden = sum(part.hidden for part in parts)
        self.only_decodes = all(part.only_decodes for part in parts)

    def __len__(self) -> int:
        return len(self.offsets)

    def _part(self, index: int) -> tuple[ItemSource, int]:
        number, inside = self.offsets.locate(index)
        return self.parts[number], inside

    def name(self, index):
        return _call(self._part(index), "name")

    def load(self, index, options):
        return _call(self._part(index), "load", options)

    def path(self, index):
        return _call(self._part(index), "path")

    def key(self, index):
        return _call(self._part(index), "key")

    def files(self, index):
        return _call(self._part(index), "files")

    def probe(self, index, options):
        return _call(self._part(index), "probe", options)

    def slices(self, index, options):
        return _call(self._part(index), "slices", options)

    def read_whole(self, index):
        return _call(self._part(index), "read_whole")

    def units(self) -> list[tuple[int, int]] | None:
        units = []
        for part, start in zip(self.parts, self.offsets.starts):
            own = part.units() or [(first, min(first + 64, len(part))) for first in range(0, len(part), 64)]
            units += [(int(start) + first, int(start) + stop) for first, stop in own]
        return units


def _call(located: tuple[ItemSource, int], method: str, *args):
    part, index = located
    return getattr(part, method)(index, *args)


@dataclass
class FileItems(ItemSource):
    """Image files, decoded by imagenorm's readers."""

    paths: list[str]
    only_decodes = True

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
    Statistics count a series slice by slice (:meth:`slices`); :meth:`load` gives the volume.
    """

    groups: list[Series]
    only_decodes = True

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
        return _read_slice(self.name(index), self.groups[index].paths, 0, options)  # one slice tells the layout

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        """The whole item: a series as one volume, allocated once and filled slice by slice."""
        slices = self.slices(index, options)
        if slices is None:
            return read_image(self.groups[index].paths[0], options)
        return slices.volume(_filled(slices))

    def slices(self, index: int, options: ReadOptions) -> "SeriesSlices | None":
        series = self.groups[index]
        return SeriesSlices(self.name(index), series, options) if len(series.paths) > 1 else None


class SeriesSlices:
    """The slices of one series, decoded one at a time in patient-axis order.

    Iterating yields each slice that counts: a repeated instance (same SOPInstanceUID,
    position, number and pixels) is left out, and only the slices of an instance that the
    headers name twice are kept to compare. After the iteration, :attr:`shape` is the shape
    of the series as one image, and :meth:`volume` that image with given pixels.

    Raises (while iterating) ReadError naming the series: a slice that cannot be read (and
    which one), one instance with two sets of pixels (naming both files), or a slice whose
    shape, dtype or channels differ from the first one's.
    """

    def __init__(self, name: str, series: Series, options: ReadOptions) -> None:
        self.name, self.series, self.options = name, series, options
        self.counted = 0
        self.first: DecodedImage | None = None  # the first slice counted, without its pixels
        self.first_path, self.layout = "", ((), None, ())  # the first slice's shape, dtype and channels
        self.notes: set[str] = set()
        self.palette = False
        self.declared: set[int | None] = set()  # the significant bits the slices declare
        self.repeats: list[str] = []

    def __len__(self) -> int:
        """The files of the series (repeats included)."""
        return len(self.series.paths)

    def __iter__(self) -> Iterator[DecodedImage]:
        if self.counted or self.repeats:
            raise RuntimeError("a series' slices are counted in one pass; make a new SeriesSlices to read them again")
        paths, headers = self.series.paths, self.series.headers
        twice = _repeated_instances(headers)
        first_seen: dict[tuple, tuple[str, DecodedImage]] = {}
        for position, (path, header) in enumerate(zip(paths, headers)):
            image = _read_slice(self.name, paths, position, self.options)
            if header.instance in twice:
                earlier = first_seen.setdefault(header.instance, (path, replace(image, pixels=image.pixels.copy())))
                if earlier[0] != path:
                    self._check_repeat(path, image, *earlier, header.instance_uid)
                    continue
            self._count(path, image)
            yield image
            del image  # the caller's last slice is freed before the next decode

    @property
    def shape(self) -> tuple[int, ...]:
        """The series as one image: ``(C, slices, H, W)``; one slice's shape if only one counted."""
        channels, *spatial = shape = self.layout[0]
        return shape if self.counted == 1 else (channels, self.counted, *spatial)

    def volume(self, pixels: np.ndarray) -> DecodedImage:
        """The series as one image of ``pixels``: the first slice's properties, the notes of
        every slice (and of the repeats), palette if any slice had one, the largest significant
        bits (none if a slice declares none)."""
        notes = set(self.notes)
        if self.repeats:
            notes.add(f"{self.series.name()}: {len(self.repeats)} file(s) repeat an instance (same SOPInstanceUID "
                      f"and pixels) and were counted once: {'; '.join(self.repeats)}")
        return replace(self.first, pixels=pixels, notes=tuple(sorted(notes)), palette=self.palette,
                       significant_bits=None if None in self.declared else max(self.declared))

    def _count(self, path: str, image: DecodedImage) -> None:
        """Check a slice against the first one (shape, dtype, channels; slices in physical units may
        differ in dtype: a per-slice rescale) and keep what the volume says of it."""
        layout = (image.pixels.shape, image.pixels.dtype, image.channels)
        if self.first is None:
            self.first, self.first_path, self.layout = replace(image, pixels=np.empty(0, image.pixels.dtype)), path, layout
        elif layout != self.layout and not (image.physical and self.first.physical and
                                            (layout[0], layout[2]) == (self.layout[0], self.layout[2])):
            raise ReadError(self.name, f"its slice {display_path(path)} is {_describe(*layout)}, but "
                                       f"{display_path(self.first_path)} is {_describe(*self.layout)}")
        self.counted += 1
        self.notes.update(image.notes)
        self.palette |= image.palette
        self.declared.add(image.significant_bits)

    def _check_repeat(self, path: str, image: DecodedImage, earlier_path: str, earlier: DecodedImage, uid: str) -> None:
        """Note a repeated instance with the same pixels; refuse one with other pixels."""
        if not _same_pixels(earlier, image):
            raise ReadError(self.series.name(), f"{display_path(path)} and {display_path(earlier_path)} are the same "
                                                f"instance (SOPInstanceUID {uid}) with different pixels")
        self.repeats.append(f"{display_path(path)} repeats {display_path(earlier_path)}")


def _read_slice(name: str, paths: list[str], position: int, options: ReadOptions) -> DecodedImage:
    """One file of an item; in a series, a failure names the series and the slice."""
    if len(paths) == 1:
        return read_image(paths[0], options)
    try:
        return read_image(paths[position], options)
    except ReadError as error:
        raise ReadError(name, f"its slice {display_path(paths[position])} (file {position + 1} "
                              f"of {len(paths)}): {error.reason}") from None


def _repeated_instances(headers: list[SliceHeader]) -> set[tuple]:
    """The instances (SOPInstanceUID, position, number) that more than one file of a series holds."""
    seen, twice = set(), set()
    for header in headers:
        if header.instance_uid:
            (twice if header.instance in seen else seen).add(header.instance)
    return twice


def _same_pixels(first: DecodedImage, second: DecodedImage) -> bool:
    return first.pixels.dtype == second.pixels.dtype and np.array_equal(first.pixels, second.pixels)


def _describe(shape: tuple[int, ...], dtype: np.dtype, channels: tuple[str, ...]) -> str:
    return f"{'x'.join(map(str, shape[1:]))} {dtype} ({', '.join(channels)})"


def _filled(slices: SeriesSlices) -> np.ndarray:
    """The slices' pixels as one ``(C, slices, H, W)`` array, allocated once and filled in order
    (one slice's pixels if only one counted)."""
    volume = None
    for position, image in enumerate(slices):
        if volume is None:
            volume = np.empty((image.pixels.shape[0], len(slices), *image.pixels.shape[1:]), image.pixels.dtype)
        common = common_dtype(volume.dtype.name, image.pixels.dtype.name)
        if common != volume.dtype.name:  # physical values rescaled per slice: promote once (exact for integers)
            volume = volume.astype(common)
        volume[:, position] = image.pixels
    counted = volume[:, :slices.counted]
    return np.ascontiguousarray(counted[:, 0] if slices.counted == 1 else counted)


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


_GROUPING_TAGS = ("SeriesInstanceUID", "SeriesDescription", "SOPInstanceUID", "InstanceNumber", "ImagePositionPatient")


def slice_header(path: str) -> SliceHeader | None:
    """The grouping header of a DICOM file (read from its first bytes, see
    :func:`~imagenorm.readers.dicom.read_tags`), or None if it has no SeriesInstanceUID or
    cannot be read (the reader reports a broken file later, by name)."""
    try:
        from ..readers.dicom import read_tags

        header = read_tags(path, _GROUPING_TAGS)
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


def as_item_source(source: Any, dicom_series: bool = True, selection=None) -> tuple[ItemSource, int]:
    """(ItemSource, number of non-image files passed over) for any supported source.

    With ``dicom_series``, the slices of a DICOM series form one item. The item source's
    ``hidden`` says how many hidden files and folders were skipped unread. ``selection``
    (:class:`~imagenorm.containers.Selection`) chooses the images of container sources (tar
    shards, zip, parquet/Arrow, URLs) and Hugging Face datasets.
    """
    from .. import containers

    selection = selection or containers.Selection()
    if isinstance(source, ItemSource):
        return source, 0
    if isinstance(source, (str, bytes, os.PathLike)) or _is_path_list(source):
        return _named_items([os.fspath(item) for item in ([source] if isinstance(source, (str, bytes, os.PathLike))
                                                          else source)], dicom_series, selection)
    from ..containers import hf

    if hf.is_hf_dataset(source):
        return hf.hf_items(source, selection), 0
    if selection != containers.Selection():
        raise OptionError(f"{_given(selection)} applies to tar, zip, parquet and Arrow sources and Hugging Face "
                                     f"datasets, not to a {type(source).__name__}")
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


def _named_items(named: list, dicom_series: bool, selection) -> tuple[ItemSource, int]:
    """Files, folders and globs as file items; containers (tar, zip, parquet, Arrow, URLs) as
    their members; several runs of each as one source, in the order named."""
    from ..containers import Selection, container_items, identity, is_container_source
    from ..sources import find_images

    named = [os.fsdecode(item) for item in named]
    runs: list[tuple[bool, list[str]]] = []
    for item in named:
        inside = is_container_source(item)
        if runs and runs[-1][0] == inside:
            runs[-1][1].append(item)
        else:
            runs.append((inside, [item]))
    if selection != Selection() and not any(inside for inside, _ in runs):
        raise OptionError(f"{_given(selection)} applies to tar, zip, parquet and Arrow sources, not to image files")
    parts, ignored, seen = [], 0, set()  # seen: every file taken, so that one named twice is read once
    for inside, items in runs:
        if inside:
            part = container_items(items, selection, seen)
            ignored += part.ignored
        else:
            found = _found_images(items, find_images)
            paths = found.paths
            if len(runs) > 1:  # files and archives named together: each file once
                paths = [path for path in paths if identity(path) not in seen]
                seen.update(map(identity, paths))
            part = _file_items(paths, dicom_series)
            part.hidden, ignored = found.hidden, ignored + found.ignored
        if len(part):
            parts.append(part)
    if not parts:
        from ..errors import EmptyDatasetError

        raise EmptyDatasetError(f"no images found under {', '.join(map(display_path, named))}")
    return (parts[0] if len(parts) == 1 else ConcatItems(parts)), ignored


def _found_images(items: list[str], find_images):
    """``find_images(items)``; a folder without images but with containers says how to name them."""
    from ..containers import CONTAINER_SUFFIXES
    from ..errors import EmptyDatasetError

    try:
        return find_images(items)
    except EmptyDatasetError as error:
        for item in items:
            if os.path.isdir(item):
                inside = sorted(name for name in os.listdir(item) if name.lower().endswith(CONTAINER_SUFFIXES))
                if inside:
                    kinds = sorted({os.path.splitext(name)[1] for name in inside})
                    raise EmptyDatasetError(
                        f"{error}; it holds {len(inside)} {'/'.join(kinds)} file(s), which are read when named: "
                        f"e.g. '{os.path.join(display_path(item), '*' + kinds[0])}'") from None
        raise


def _given(selection) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in vars(selection).items() if value is not None)


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
