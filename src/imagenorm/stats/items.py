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
from ..readers import DecodedImage, ReadOptions, apply_channel_options, array_channels, channel_first, channels_for, read_image
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
        return apply_channel_options(to_decoded(item, self.name(index)), options, self.name(index))


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



def as_item_source(source: Any) -> tuple[ItemSource, int]:
    """(ItemSource, number of non-image files passed over) for any supported source."""
    from ..sources import find_images

    if isinstance(source, ItemSource):
        return source, 0
    if isinstance(source, (str, bytes, os.PathLike)) or _is_path_list(source):
        found = find_images(source)
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
