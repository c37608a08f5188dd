"""Uniform access to the images of any source: files, a Dataset, or a tensor.

An :class:`ItemSource` has a length, a printable name per item and ``load(i)`` giving a
:class:`~imagenorm.readers.DecodedImage`. It is what worker processes receive: for
files only the path list crosses the process boundary, never pixels.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ImagenormError, ReadError, display_path
from ..readers import (
    DecodedImage,
    ReadOptions,
    apply_channel_options,
    array_channels,
    channel_first,
    channels_for,
    native_order,
    read_image,
)
from ..readers.numpy_file import to_channel_first


class ItemSource:
    """Indexable images with names."""

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


@dataclass
class SeriesItems(ItemSource):
    """Image files where the slices of one DICOM series (one folder, one SeriesInstanceUID)
    form one item ``(C, slices, H, W)``, ordered along the patient axis."""

    groups: list[list[str]]

    def __len__(self) -> int:
        return len(self.groups)

    def name(self, index: int) -> str:
        group = self.groups[index]
        if len(group) == 1:
            return display_path(group[0])
        return f"{display_path(os.path.dirname(group[0]))} (series of {len(group)} slices)"

    def path(self, index: int) -> str | None:
        return self.groups[index][0] if len(self.groups[index]) == 1 else None

    def key(self, index: int) -> str:
        return self.groups[index][0]

    def probe(self, index: int, options: ReadOptions) -> DecodedImage:
        return read_image(self.groups[index][0], options)  # one slice tells the layout

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        group = self.groups[index]
        slices = [read_image(path, options) for path in group]
        first = slices[0]
        for path, image in zip(group[1:], slices[1:]):
            if image.pixels.shape != first.pixels.shape or image.pixels.dtype != first.pixels.dtype:
                raise ReadError(path, f"slice of shape {image.pixels.shape} ({image.pixels.dtype}) in a series of "
                                      f"{first.pixels.shape} ({first.pixels.dtype}) slices")
        if len(slices) == 1:
            return first
        pixels = np.stack([image.pixels for image in slices], axis=1)
        notes = tuple(sorted({note for image in slices for note in image.notes}))
        return DecodedImage(pixels=pixels, channels=first.channels, spacing=first.spacing, notes=notes)


def group_dicom_series(paths: list[str]) -> list[list[str]]:
    """Group DICOM slices by folder and SeriesInstanceUID (other files stay alone), in path order."""
    from ..readers import reader_for
    from ..readers import dicom

    groups: dict[tuple, list[tuple]] = {}
    order: list[tuple] = []
    for position, path in enumerate(paths):
        key: tuple = ("file", position)
        sort_key: tuple = (0.0, 0)
        if reader_for(path) is dicom.read:
            header = dicom.series_header(path)
            if header is not None:
                key = ("series", os.path.dirname(path), header[0])
                sort_key = header[1:]
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((sort_key, position, path))
    return [[path for _, _, path in sorted(groups[key])] for key in order]


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
    """Convert one dataset item to a DecodedImage."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if "torch" in sys.modules:
        import torch

        if isinstance(item, torch.Tensor):
            array = item.detach().cpu().numpy()
            if array.ndim not in (2, 3, 4):
                raise ReadError(name, f"expected a tensor of shape (H, W), (C, H, W) or (C, D, H, W), got {tuple(item.shape)}")
            pixels = array[None] if array.ndim == 2 else array
            return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))
    if "PIL" in sys.modules:
        from PIL import Image

        if isinstance(item, Image.Image):
            from ..readers.pillow import _frame_array

            array, palette = _frame_array(item)
            pixels = channel_first(array)
            return DecodedImage(pixels=pixels, channels=channels_for(pixels.shape[0]), palette=palette)
    if isinstance(item, np.ndarray):
        if item.dtype.kind not in "uif":
            raise ReadError(name, f"unsupported array dtype {item.dtype}")
        pixels = to_channel_first(item, name)
        return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))
    raise ReadError(name, f"expected a tensor, numpy array or PIL image, got {type(item).__name__}")



def as_item_source(source: Any, dicom_series: bool = True) -> tuple[ItemSource, int]:
    """(ItemSource, number of non-image files passed over) for any supported source.

    With ``dicom_series``, the slices of a DICOM series form one item.
    """
    from ..sources import find_images

    if isinstance(source, ItemSource):
        return source, 0
    if isinstance(source, (str, bytes, os.PathLike)) or _is_path_list(source):
        found = find_images(source)
        if dicom_series:
            groups = group_dicom_series(found.paths)
            if len(groups) < len(found.paths):
                return SeriesItems(groups), found.ignored
        return FileItems(found.paths), found.ignored
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


def _is_path_list(source: Any) -> bool:
    return isinstance(source, Sequence) and not isinstance(source, str) and len(source) > 0 and all(
        isinstance(item, (str, os.PathLike)) for item in source
    )
