"""Datasets that keep bit depth, and normalized datasets in memory or on the fly.

Example:
    >>> import imagenorm
    >>> folder = imagenorm.ImageFolderDataset("samples/gray16")
    >>> image = folder[0]
    >>> image.dtype, image.shape
    (torch.uint16, torch.Size([1, 72, 96]))
    >>> stats = imagenorm.compute_stats(folder.paths)
    >>> normalized = imagenorm.normalize_dataset(folder, imagenorm.Standardize.from_stats(stats))
    >>> normalized.cache, normalized[0].dtype
    ('memory', torch.float32)
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ImagenormError, display_path
from .readers import DEFAULT_MAX_PIXELS, ReadOptions, read_image
from .sources import PathSource, find_images

__all__ = ["ImageFolderDataset", "NormalizedDataset", "normalize_dataset", "parse_size"]


class ImageFolderDataset(Dataset):
    """Images under a folder (or any path source) as channel-first tensors of their own dtype.

    Unlike torchvision's ``ImageFolder``, which converts everything to 8-bit RGB, a 16-bit
    PNG stays ``torch.uint16``, a float TIFF ``torch.float32``.

    Args:
        root: a folder, glob, list of paths or ``.txt`` list (see ``imagenorm stats``).
        labels: ``True``: the first sub-folder under ``root`` names the class, as in
            torchvision's ``ImageFolder`` (items are ``(image, label)``); ``False``: items
            are images; ``None`` (default): labels when ``root`` is a folder whose images
            all lie in sub-folders.
        transform: applied to each image tensor (e.g. a :class:`~imagenorm.Standardize`).
        max_pixels, alpha, convert: as for :func:`~imagenorm.compute_stats`.

    Attributes:
        paths: the image paths, in order. classes: sorted class names. targets: labels.
    """

    def __init__(
        self,
        root: PathSource,
        *,
        labels: bool | None = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        alpha: str = "drop",
        convert: str | None = None,
    ) -> None:
        self.paths = find_images(root).paths
        self.transform = transform
        self.options = ReadOptions(max_pixels=max_pixels, alpha=alpha, convert=convert)
        folder = os.fspath(root) if isinstance(root, (str, os.PathLike)) and os.path.isdir(root) else None
        self.classes, self.targets = self._labels(folder, labels)

    def _labels(self, folder: str | None, labels: bool | None) -> tuple[list[str], list[int] | None]:
        if labels is False or (labels is None and folder is None):
            return [], None
        if folder is None:
            raise ImagenormError("labels=True needs a folder whose sub-folders name the classes")
        names = [os.path.relpath(path, folder).split(os.sep)[0] for path in self.paths]
        loose = [path for path, name in zip(self.paths, names) if name == os.path.basename(path)]
        if loose:
            if labels:
                raise ImagenormError(f"{display_path(loose[0])}: not inside a class sub-folder of {display_path(folder)}")
            return [], None
        classes = sorted(set(names))
        index = {name: i for i, name in enumerate(classes)}
        return classes, [index[name] for name in names]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """The image at ``index`` as a contiguous channel-first tensor, dtype kept."""
        pixels = read_image(self.paths[index], self.options).pixels
        if not (pixels.flags.writeable and pixels.flags.c_contiguous):
            pixels = np.array(pixels, order="C")  # decoders may hand out read-only buffers
        return torch.from_numpy(pixels)

    def __getitem__(self, index: int):
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image if self.targets is None else (image, self.targets[index])


class NormalizedDataset(Dataset):
    """A dataset whose images pass through ``transform``: precomputed or per item.

    Attributes:
        cache: ``"memory"`` (all normalized images in one preallocated tensor) or ``"none"``
            (normalized in ``__getitem__``, also inside DataLoader workers).
        reason: why that cache was chosen.
    """

    def __init__(self, dataset: Dataset, transform: Callable, cache: str, reason: str,
                 first: tuple | None = None) -> None:
        self.dataset, self.transform, self.cache, self.reason = dataset, transform, cache, reason
        self._images: torch.Tensor | None = None
        self._labels: list | None = None
        if cache == "memory":
            self._fill(first)

    def _fill(self, first_item: tuple | None) -> None:
        """Normalize every item once, straight into one preallocated tensor.

        ``first_item``: item 0 as ``(image, label, normalized)`` when already at hand.
        """
        if first_item is None:
            first, first_label = _split(self.dataset[0])
            first_item = (first, first_label, self.transform(first))
        first, first_label, sample = first_item
        self._images = torch.empty((len(self.dataset), *sample.shape), dtype=sample.dtype)
        self._images[0] = sample
        labels = [first_label]
        for index in range(1, len(self.dataset)):
            image, label = _split(self.dataset[index])
            if image.shape != first.shape:
                raise ImagenormError(
                    f"item {index} has shape {tuple(image.shape)} but item 0 has {tuple(first.shape)}: "
                    "cache='memory' needs images of one shape; use cache='none'"
                )
            _apply(self.transform, image, self._images[index])
            labels.append(label)
        self._labels = None if first_label is _NO_LABEL else labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self._images is not None:
            image = self._images[index]
            return image if self._labels is None else (image, self._labels[index])
        image, label = _split(self.dataset[index])
        image = self.transform(image)
        return image if label is _NO_LABEL else (image, label)


_NO_LABEL = object()


def _split(item) -> tuple[torch.Tensor, Any]:
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else _NO_LABEL)
    return item, _NO_LABEL


def _apply(transform: Callable, image: torch.Tensor, out: torch.Tensor) -> None:
    """``transform(image)`` written into ``out`` (in place when the transform takes ``out=``)."""
    try:
        transform(image, out=out)
    except TypeError:  # a transform without out=: one temporary, then a copy
        out.copy_(transform(image))


def parse_size(size: int | str) -> int:
    """Bytes from ``4GiB``, ``500MB``, ``1.5 GiB`` or an integer."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", size)
    if not match:
        raise ValueError(f"cannot read a memory size from {size!r}; write e.g. '4GiB' or '500MB'")
    number, prefix, binary = match.groups()
    power = " kmgt".index(prefix.lower() or " ")
    return int(float(number) * (1024 if binary else 1000) ** power)


def normalize_dataset(
    dataset: Dataset, transform: Callable, *, cache: str = "auto", memory_budget: int | str = "4GiB"
) -> NormalizedDataset:
    """``dataset`` with every image passed through ``transform``, in memory or on the fly.

    Args:
        cache: ``"memory"`` normalizes everything once into one preallocated tensor
            (images must share a shape); ``"none"`` normalizes per item in
            ``__getitem__`` (works with DataLoader workers); ``"auto"`` measures the
            normalized size (item 0's, times the length) against ``memory_budget`` and
            picks; ``.cache`` and ``.reason`` say which and why.

    Both modes give identical tensors.
    """
    if cache not in ("auto", "memory", "none"):
        raise ValueError(f"cache must be 'auto', 'memory' or 'none', got {cache!r}")
    if len(dataset) == 0:
        raise ImagenormError("the dataset is empty")
    if cache != "auto":
        return NormalizedDataset(dataset, transform, cache, f"cache={cache!r} was asked for")
    budget = parse_size(memory_budget)
    image, label = _split(dataset[0])
    sample = transform(image)  # measured once, then kept as item 0
    needed = len(dataset) * sample.numel() * sample.element_size()
    if needed <= budget:
        reason = f"{_human(needed)} of normalized data fit the {_human(budget)} budget: normalized once, kept in memory"
        return NormalizedDataset(dataset, transform, "memory", reason, first=(image, label, sample))
    reason = f"{_human(needed)} of normalized data exceed the {_human(budget)} budget: normalized on the fly"
    return NormalizedDataset(dataset, transform, "none", reason)


def _human(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = min(int(math.log(max(size, 1), 1024)), len(units) - 1)
    return f"{size / 1024 ** power:.1f} {units[power]}"
