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
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ImagenormError, display_path
from .options import OptionConflictError, OptionError, ReadOptions, check_choice
from .readers import read_image
from .functional import as_one_volume
from .masks import MaskSpec
from .sources import PathSource, find_images, is_hidden, source_root

if TYPE_CHECKING:
    from .stats import DatasetStats

__all__ = ["ImageFolderDataset", "NormalizedDataset", "normalize_dataset", "parse_size"]


class ImageFolderDataset(Dataset):
    """Images under a folder (or any path source) as channel-first tensors of their own dtype.

    Unlike torchvision's ``ImageFolder``, which converts everything to 8-bit RGB, a 16-bit
    PNG stays ``torch.uint16``, a float TIFF ``torch.float32``. Given the statistics, the
    files are read exactly as they were measured (same alpha, conversion, DICOM values, ...).

    Classes follow torchvision's ``ImageFolder``: each sub-folder of ``root`` is a class,
    numbered in sorted name order, whether or not it holds images, so that a training and a
    validation folder with the same sub-folders get the same labels. Hidden files and
    folders (names starting with ``.``, e.g. ``.ipynb_checkpoints``) are skipped: never read,
    never a class.

    Args:
        root: a folder, glob, list of paths or ``.txt`` list (see ``imagenorm stats``).
        labels: ``True``: the first sub-folder under ``root`` names the class, as in
            torchvision's ``ImageFolder`` (items are ``(image, label)``); ``False``: items
            are images; ``None`` (default): labels when ``root`` is a folder whose images
            all lie in sub-folders, or when ``class_to_idx`` is given.
        class_to_idx: the label of each class, e.g. the training set's ``class_to_idx``
            for its validation set; every class folder under ``root`` must be in it.
            ``None`` (default): the sorted class folders, numbered from 0.
        allow_empty: keep a class whose folder holds no image (or, with ``class_to_idx``,
            has no folder) instead of refusing it.
        transform: applied to each image tensor (e.g. a :class:`~imagenorm.Standardize`).
        stats: the :class:`~imagenorm.DatasetStats` the images will be normalized with;
            the read options default to ``stats.read_options``.
        read_options: a whole :class:`~imagenorm.options.ReadOptions` (with ``stats``, it
            must equal the recorded one).
        max_pixels, alpha, convert, dicom_values, monochrome1, nifti_4d: single read
            options, as for :func:`~imagenorm.compute_stats`; ``None`` (default): not given,
            i.e. as recorded in ``stats`` (or ``read_options``), else the defaults. For no
            pixel limit, pass ``read_options=ReadOptions(max_pixels=None)``.

    Raises:
        OptionConflictError: an option given here differs from the one ``stats`` was
            measured with (or from ``read_options``); the message names both values.
        OptionError: ``class_to_idx`` is not a mapping of names to distinct labels, or
            ``allow_empty`` is not a bool.
        ImagenormError: a class folder holds no image (without ``allow_empty``), or is
            missing from ``class_to_idx``.

    Attributes:
        paths: the image paths, in order. classes: class names in label order.
        class_to_idx: the label of each class name. targets: labels (None: no labels).
        hidden: how many hidden files and folders were skipped. read_options: how every
        file is read.

    Example:
        >>> import imagenorm
        >>> stats = imagenorm.compute_stats("samples/rgb8", convert="gray")
        >>> folder = imagenorm.ImageFolderDataset("samples/rgb8", stats=stats)  # read as measured
        >>> folder[0].shape, folder.read_options.convert
        (torch.Size([1, 72, 96]), 'gray')
    """

    def __init__(
        self,
        root: PathSource,
        *,
        labels: bool | None = None,
        class_to_idx: Mapping[str, int] | None = None,
        allow_empty: bool = False,
        transform: Callable[[torch.Tensor], Any] | None = None,
        stats: DatasetStats | None = None,
        read_options: ReadOptions | None = None,
        max_pixels: int | None = None,
        alpha: str | None = None,
        convert: str | None = None,
        dicom_values: str | None = None,
        monochrome1: str | None = None,
        nifti_4d: str | None = None,
    ) -> None:
        given = dict(max_pixels=max_pixels, alpha=alpha, convert=convert, dicom_values=dicom_values,
                     monochrome1=monochrome1, nifti_4d=nifti_4d)
        self.read_options = resolve_read_options(stats, read_options, **given)
        mapping = _checked_class_to_idx(class_to_idx, labels, allow_empty)
        found = find_images(root)
        self.paths, self.hidden = found.paths, found.hidden
        self.transform = transform
        self._masks = None  # mask files, for a transform that takes each image's mask (HistogramStandardize)
        if getattr(transform, "needs_mask", False) and self.read_options.mask_dir is not None and self.paths:
            self._masks = MaskSpec.from_options(self.read_options, source_root(self.paths, root))
        folder = os.fspath(root) if isinstance(root, (str, os.PathLike)) and os.path.isdir(root) else None
        wanted = labels if labels is not None else (True if mapping is not None else None)
        self.class_to_idx, self.targets = self._labels(folder, wanted, mapping, allow_empty)
        self.classes = sorted(self.class_to_idx, key=self.class_to_idx.__getitem__)

    def _labels(self, folder: str | None, labels: bool | None, mapping: dict[str, int] | None,
                allow_empty: bool) -> tuple[dict[str, int], list[int] | None]:
        """(class_to_idx, targets), or ({}, None) without labels."""
        if labels is False or (labels is None and folder is None):
            return {}, None
        if folder is None:
            given = "class_to_idx=" if mapping is not None else "labels=True"
            raise ImagenormError(f"{given} needs a folder whose sub-folders name the classes")
        names = [os.path.relpath(path, folder).split(os.sep)[0] for path in self.paths]
        loose = [path for path, name in zip(self.paths, names) if name == os.path.basename(path)]
        if loose:
            if labels:
                raise ImagenormError(f"{display_path(loose[0])}: not inside a class sub-folder of {display_path(folder)}")
            return {}, None
        folders = class_folders(folder)
        if mapping is None:
            mapping = {name: index for index, name in enumerate(folders)}
        unknown = [name for name in folders if name not in mapping]
        if unknown:
            raise ImagenormError(f"{display_path(folder)}: class folder(s) {', '.join(map(repr, unknown))} "
                                 "not in class_to_idx")
        empty = sorted(set(mapping) - set(names))
        if empty and not allow_empty:
            raise ImagenormError(
                f"{display_path(folder)}: no images for class(es) {', '.join(map(repr, empty))} (an empty or missing "
                "folder); pass allow_empty=True to keep every label as it is, or remove the folder"
            )
        return dict(mapping), [mapping[name] for name in names]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """The image at ``index`` as a contiguous channel-first tensor, dtype kept."""
        pixels = read_image(self.paths[index], self.read_options).pixels
        if not (pixels.flags.writeable and pixels.flags.c_contiguous):
            pixels = np.array(pixels, order="C")  # decoders may hand out read-only buffers
        return torch.from_numpy(pixels)

    def __getitem__(self, index: int):
        image = self.load(index)
        if self.transform is not None:
            image = self._transformed(image, index)
        return image if self.targets is None else (image, self.targets[index])

    def _transformed(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """The transform of one image, with its mask file where the transform takes one; a stack
        of more than three spatial axes ``(C, T, Z, Y, X)`` goes in as one volume."""
        given = {}
        if self._masks is not None:
            given["mask"] = torch.from_numpy(np.ascontiguousarray(self._masks.spatial(image.numpy(), self.paths[index])))[None]
        if image.ndim <= 4:
            return self.transform(image, **given)
        given = {key: as_one_volume(value) for key, value in given.items()}
        return self.transform(as_one_volume(image), **given)[0].reshape(image.shape)


def class_folders(folder: str) -> list[str]:
    """The class names under ``folder``: its sub-folders that are not hidden, sorted."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not is_hidden(entry.name))


def _checked_class_to_idx(class_to_idx: Any, labels: bool | None, allow_empty: Any) -> dict[str, int] | None:
    """``class_to_idx`` as a dict, validated: names to distinct non-negative integer labels."""
    if not isinstance(allow_empty, bool):
        raise OptionError(f"allow_empty must be True or False, got {allow_empty!r}")
    if class_to_idx is None:
        return None
    if labels is False:
        raise OptionError("class_to_idx= gives labels, but labels=False was given")
    if not isinstance(class_to_idx, Mapping) or not class_to_idx:
        raise OptionError(f"class_to_idx must be a non-empty mapping of class names to labels, got {class_to_idx!r}")
    for name, label in class_to_idx.items():
        if not isinstance(name, str) or isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise OptionError(f"class_to_idx maps {name!r} to {label!r}; expected class names to non-negative integers")
    if len(set(class_to_idx.values())) < len(class_to_idx):
        raise OptionError(f"class_to_idx gives two classes the same label: {dict(class_to_idx)!r}")
    return dict(class_to_idx)


def resolve_read_options(
    stats: DatasetStats | None, read_options: ReadOptions | None = None, **given: Any
) -> ReadOptions:
    """The read options of ``stats`` (else ``read_options``, else the defaults) with ``given`` ones.

    ``None`` in ``given`` means "not given".

    Raises:
        OptionConflictError: ``read_options`` or a given option differs from the recorded
            (or from ``read_options``); the message names both values.

    Example:
        >>> resolve_read_options(None, alpha="keep").alpha
        'keep'
        >>> resolve_read_options(None, ReadOptions(alpha="keep"), alpha="drop")
        Traceback (most recent call last):
        ...
        imagenorm.options.OptionConflictError: alpha='drop' was given, but read_options has alpha='keep'; give it once
    """
    if stats is not None:
        source = stats.source or "the statistics"
        key = None if read_options is None else _first_difference(read_options, stats.read_options)
        if key is not None:
            raise OptionConflictError(
                f"read_options has {key}={getattr(read_options, key)!r}, but {display_path(source)} was measured "
                f"with {key}={getattr(stats.read_options, key)!r}; omit read_options to read as measured"
            )
        return stats.read_options.with_given(source, **given)
    given = {key: value for key, value in given.items() if value is not None}
    if read_options is None:
        return ReadOptions.from_keywords(**given)
    wanted = ReadOptions.from_keywords(**{**read_options.to_dict(), **given})
    key = _first_difference(wanted, read_options)
    if key is not None:
        raise OptionConflictError(f"{key}={getattr(wanted, key)!r} was given, but read_options has "
                                  f"{key}={getattr(read_options, key)!r}; give it once")
    return wanted


def _first_difference(first: ReadOptions, second: ReadOptions) -> str | None:
    """The name of the first option whose values differ, or None."""
    return next((f.name for f in fields(ReadOptions) if getattr(first, f.name) != getattr(second, f.name)), None)


class NormalizedDataset(Dataset):
    """A dataset whose images pass through ``transform``: precomputed or per item.

    Attributes:
        cache: ``"memory"`` (all normalized images in one preallocated buffer; each item
            a view of it) or ``"none"`` (normalized in ``__getitem__``, also inside
            DataLoader workers).
        reason: why that cache was chosen.
    """

    def __init__(self, dataset: Dataset, transform: Callable, cache: str, reason: str,
                 stored: _Stored | None = None) -> None:
        self.dataset, self.transform = dataset, transform
        self.cache, self.reason = check_choice("cache", cache), reason
        if cache == "memory" and stored is None:
            stored = _store(dataset, transform, budget=None)
            if not isinstance(stored, _Stored):
                raise ImagenormError(f"{stored}; use cache='none'")
        self._stored = stored if cache == "memory" else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self._stored is not None:
            return self._stored.item(index)
        image, label = _split(self.dataset[index])
        image = self.transform(image)
        return image if label is _NO_LABEL else (image, label)


_NO_LABEL = object()


def _split(item) -> tuple[torch.Tensor, Any]:
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else _NO_LABEL)
    return item, _NO_LABEL


# --- the memory cache: one flat buffer, each item a view of it ------------------------
_Signature = tuple[tuple[int, ...], torch.dtype]  # shape and dtype


class _Layout:
    """Where each normalized item lies in one flat buffer of one dtype.

    Example:
        >>> layout = _Layout([(1, 2, 3), (1, 4, 4)], torch.float32)
        >>> layout.offsets.tolist(), layout.nbytes
        ([0, 6, 22], 88)
    """

    def __init__(self, shapes: list[tuple[int, ...]], dtype: torch.dtype) -> None:
        self.shapes, self.dtype = shapes, dtype
        sizes = np.fromiter((math.prod(shape) for shape in shapes), np.int64, len(shapes))
        self.offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes)])

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1]) * self.dtype.itemsize

    def allocate(self) -> torch.Tensor:
        """The flat buffer, uninitialized."""
        try:
            return torch.empty(int(self.offsets[-1]), dtype=self.dtype)
        except (RuntimeError, MemoryError):  # torch reports a failed allocation as RuntimeError
            raise ImagenormError(f"not enough memory for {_bytes(self.nbytes)} of normalized data; "
                                 "use cache='none'") from None

    def view(self, buffer: torch.Tensor, index: int) -> torch.Tensor:
        """Item ``index``: a view of ``buffer``, in its own shape."""
        return buffer[int(self.offsets[index]) : int(self.offsets[index + 1])].view(self.shapes[index])


@dataclass
class _Stored:
    """Normalized items in one buffer, with their labels (None: the items had none)."""

    buffer: torch.Tensor
    layout: _Layout
    labels: list | None

    def item(self, index: int):
        index = range(len(self.layout.shapes))[index]  # negative indices; IndexError past the end
        image = self.layout.view(self.buffer, index)
        return image if self.labels is None else (image, self.labels[index])


class _OutputSignatures:
    """The shape and dtype ``transform`` gives an image, learned once per input shape and dtype.

    The first image of each input shape and dtype is transformed, and its output kept in
    ``fresh`` until the next call (so that it need not be normalized again); later ones
    are looked up. A transform whose output shape depends on pixel values rather than on
    the input's shape is caught when its output meets the slot planned for it.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform
        self.known: dict[_Signature, _Signature] = {}
        self.fresh: torch.Tensor | None = None

    def __call__(self, image: torch.Tensor) -> _Signature:
        key = (tuple(image.shape), image.dtype)
        self.fresh = None
        if key not in self.known:
            self.fresh = self.transform(image)
            self.known[key] = (tuple(self.fresh.shape), self.fresh.dtype)
        return self.known[key]


def _store(dataset: Dataset, transform: Callable, budget: int | None) -> _Stored | str:
    """Normalize every item of ``dataset`` once into one exactly sized buffer, or say why not.

    Item 0 gives a first guess: every item of its shape. When that guess fits ``budget``
    (``None``: no budget), items are normalized straight into their slots (``out=``) until
    one differs, so a dataset of one shape takes a single pass. Otherwise one pass decodes
    the remaining items to learn each normalized shape (stopping once ``budget`` is
    exceeded); then the exact buffer is allocated, what is already normalized is copied
    over, and a second pass decodes those items again, straight into their slots. Mixed
    sizes thus cost up to two decodes per image, and no more than one decoded image is
    held besides the buffer.

    Returns:
        The stored items, or why they were not stored (the text for ``reason``).
    """
    signatures = _OutputSignatures(transform)
    image, label = _split(dataset[0])
    shape, dtype = signatures(image)
    guess = _Layout([shape] * len(dataset), dtype)
    done, labels, buffer = 0, [], _guess_buffer(guess, budget)
    if buffer is not None:
        guess.view(buffer, 0).copy_(signatures.fresh)
        labels.append(label)
        done = _fill(dataset, signatures, guess, buffer, 1, labels)
    if done == len(dataset):
        return _Stored(buffer, guess, _labels_or_none(labels))
    layout = _measure(dataset, signatures, guess.shapes[:done], dtype, budget)
    if isinstance(layout, str):
        return layout
    exact = layout.allocate()
    if done:
        normalized = int(guess.offsets[done])
        exact[:normalized].copy_(buffer[:normalized])
    del buffer
    if _fill(dataset, signatures, layout, exact, done, labels) != len(dataset):
        raise ImagenormError(f"item {len(labels)} changed shape between two reads: cache='memory' needs a dataset "
                             "that gives the same item each time; use cache='none'")
    return _Stored(exact, layout, _labels_or_none(labels))


def _guess_buffer(guess: _Layout, budget: int | None) -> torch.Tensor | None:
    """A buffer for the guessed layout, or None when it exceeds ``budget`` or the memory (an
    outsized item 0 times the length): then the items are measured first."""
    if budget is not None and guess.nbytes > budget:
        return None
    try:
        return guess.allocate()
    except ImagenormError:
        return None


def _fill(dataset: Dataset, signatures: _OutputSignatures, layout: _Layout, buffer: torch.Tensor,
          start: int, labels: list) -> int:
    """Normalize items from ``start`` on into their slots, appending their labels.

    Returns:
        The index of the first item whose normalized shape or dtype differs from its slot's
        (``len(dataset)``: none).
    """
    for index in range(start, len(dataset)):
        image, label = _split(dataset[index])
        slot = layout.view(buffer, index)
        if signatures(image) != (tuple(slot.shape), slot.dtype):
            return index
        if signatures.fresh is not None:
            slot.copy_(signatures.fresh)
        else:
            _apply(signatures.transform, image, slot, index)
        labels.append(label)
    return len(dataset)


def _measure(dataset: Dataset, signatures: _OutputSignatures, shapes: list[tuple[int, ...]],
             dtype: torch.dtype, budget: int | None) -> _Layout | str:
    """The layout of all items, learning (decoding) those after ``shapes``; or why they do not fit one buffer."""
    nbytes = sum(math.prod(shape) for shape in shapes) * dtype.itemsize
    for index in range(len(shapes), len(dataset)):
        shape, item_dtype = signatures(_split(dataset[index])[0])
        if item_dtype != dtype:
            return f"item {index} normalizes to {item_dtype} but item 0 to {dtype}, and one buffer holds one dtype"
        shapes.append(shape)
        nbytes += math.prod(shape) * dtype.itemsize
        if budget is not None and nbytes > budget:
            return _too_large(nbytes, index + 1, len(dataset), budget)
    return _Layout(shapes, dtype)


def _too_large(nbytes: int, measured: int, length: int, budget: int) -> str:
    if measured == length:
        return f"{_bytes(nbytes)} of normalized data exceed the {_human(budget)} budget"
    return (f"the first {measured} of {length} items already need {_bytes(nbytes)} of normalized data, "
            f"which exceeds the {_human(budget)} budget")


def _labels_or_none(labels: list) -> list | None:
    return None if labels[0] is _NO_LABEL else labels


def _apply(transform: Callable, image: torch.Tensor, out: torch.Tensor, index: int) -> None:
    """``transform(image)`` written into ``out`` (in place when the transform takes ``out=``)."""
    try:
        transform(image, out=out)
        return
    except TypeError:  # a transform without out=: one temporary, then a copy
        result = transform(image)
    if result.shape != out.shape or result.dtype != out.dtype:
        raise ImagenormError(
            f"item {index} normalized to {tuple(result.shape)} {result.dtype}, but an item of its input shape to "
            f"{tuple(out.shape)} {out.dtype}: cache='memory' needs an output shape that follows from the input's"
        )
    out.copy_(result)


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:([kmgt])(i)?)?b?", re.IGNORECASE)


def parse_size(size: int | str, name: str = "memory_budget") -> int:
    """Bytes from ``4GiB``, ``500MB``, ``1.5 GiB`` or a whole number of bytes.

    Raises:
        OptionError: naming ``name`` and the value.

    Example:
        >>> parse_size("1.5 KiB"), parse_size("2MB"), parse_size(123)
        (1536, 2000000, 123)
    """
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    match = _SIZE.fullmatch(size.strip()) if isinstance(size, str) else None
    if not match:
        raise OptionError(f"{name}={size!r} is not a memory size; write e.g. '4GiB', '500MB' or a number of bytes")
    number, prefix, binary = match.groups()
    power = " kmgt".index((prefix or " ").lower())
    return int(float(number) * (1024 if binary else 1000) ** power)


def normalize_dataset(
    dataset: Dataset, transform: Callable, *, cache: str = "auto", memory_budget: int | str = "4GiB"
) -> NormalizedDataset:
    """``dataset`` with every image passed through ``transform``, in memory or on the fly.

    Args:
        cache: ``"memory"`` normalizes everything once into one preallocated buffer (one
            ``(N, *shape)`` block when all images share a shape; otherwise items of any
            shapes, one after another); ``"none"`` normalizes per item in ``__getitem__``
            (works with DataLoader workers); ``"auto"`` sizes the normalized data exactly
            (the sum over items) against ``memory_budget`` and picks; ``.cache`` and
            ``.reason`` say which and why.
        memory_budget: bytes, or text such as ``"4GiB"`` or ``"500MB"``.

    Images of one shape are read once. With several shapes, learning each item's normalized
    shape costs one more decode of the items after the first that differs (``"auto"``
    stops counting once the budget is exceeded).

    Both modes give identical tensors.

    Raises:
        OptionError: an unknown ``cache`` or an unreadable ``memory_budget``.
    """
    check_choice("cache", cache)
    budget = parse_size(memory_budget, "memory_budget")
    if len(dataset) == 0:
        raise ImagenormError("the dataset is empty")
    if cache != "auto":
        return NormalizedDataset(dataset, transform, cache, f"cache={cache!r} was asked for")
    stored = _store(dataset, transform, budget)
    if isinstance(stored, str):
        return NormalizedDataset(dataset, transform, "none", f"{stored}: normalized on the fly")
    shapes = len(set(stored.layout.shapes))
    reason = (f"{_bytes(stored.layout.nbytes)} of normalized data ({len(dataset)} items, {shapes} "
              f"shape{'s' * (shapes > 1)}) fit the {_human(budget)} budget: normalized once, kept in memory")
    return NormalizedDataset(dataset, transform, "memory", reason, stored)


def _bytes(size: int) -> str:
    return f"{size:,} bytes ({_human(size)})"


def _human(size: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = min(int(math.log(max(size, 1), 1024)), len(units) - 1)
    return f"{size / 1024 ** power:.1f} {units[power]}"
