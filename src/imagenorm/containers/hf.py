"""Hugging Face ``datasets`` objects as sources: ``Dataset``, ``DatasetDict`` and ``IterableDataset``.

An ``Image`` column is read from its encoded bytes (``cast_column(..., Image(decode=False))``)
by imagenorm's readers, so 16-bit PNGs and TIFFs keep their values (``datasets`` decodes
with Pillow, which cuts 16-bit RGB to 8 bits). Other columns (``Array2D``/``Array3D``, nested
lists of numbers) are read as numpy arrays, channel-first as for ``.npy`` files.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import ReadError, display_path
from ..options import OptionError
from ..readers import (DecodedImage, ReadOptions, apply_channel_options, decode_image, image_extension, native_order,
                       sniff_extension)
from ..readers.objects import to_decoded
from ..sources import ItemSource, StreamSource
from .tables import pick_column

_KINDS = ("Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict")


def is_hf_dataset(source: Any) -> bool:
    """Whether ``source`` is one of ``datasets``' dataset objects (without importing ``datasets``)."""
    return type(source).__module__.split(".")[0] == "datasets" and type(source).__name__ in _KINDS


def hf_items(source: Any, selection) -> ItemSource:
    """The images of one column of a ``datasets`` object (a ``DatasetDict``: of ``selection.split``)."""
    if type(source).__name__.endswith("Dict"):
        split = selection.split or "train"
        if split not in source:
            raise OptionError(f"the DatasetDict has no split {split!r}; splits: {', '.join(source)} "
                                 "(choose one with split=)")
        source = source[split]
    elif selection.split is not None:
        raise OptionError(f"split={selection.split!r} applies to a DatasetDict, not to one {type(source).__name__}")
    if selection.member is not None:
        raise OptionError(f"member={selection.member!r} applies to tar shards, not to a {type(source).__name__}")
    column = _column(source, selection.column)
    if type(source).__name__ == "IterableDataset":
        return HFStream(source, column)
    return HFDatasetItems(source, column)


def _column(dataset: Any, column: str | None) -> str:
    import datasets

    features = dataset.features
    if features is None:
        raise OptionError("the dataset's features are unknown (a streamed dataset without them): "
                          "pass features= to load_dataset, or read its files by name")
    images = [name for name, feature in features.items() if isinstance(feature, datasets.Image) or _encoded_struct(feature)]

    def refusal(name: str) -> str | None:
        return None if _holds_arrays(features[name]) else f"{_describe(features[name])}, not images or arrays"

    return pick_column("the dataset", list(features), images, column, refusal)


def _holds_arrays(feature: Any) -> bool:
    """An ``ArrayND`` feature, or lists (of lists) of numbers."""
    import datasets

    if type(feature).__name__ in ("Array2D", "Array3D", "Array4D", "Array5D"):
        return True
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, (list, tuple)) and len(feature) == 1:
        inner = feature[0]
    if inner is not None:
        return _holds_arrays(inner) or (isinstance(inner, datasets.Value) and str(inner.dtype).startswith(
            ("int", "uint", "float", "bool")))
    return False


def _describe(feature: Any) -> str:
    return str(getattr(feature, "dtype", None) or type(feature).__name__)


def _encoded(dataset: Any, column: str) -> tuple[Any, bool]:
    """The dataset with only ``column`` and no format or transform of the user's, its images left
    encoded; and whether they are images."""
    import datasets

    dataset = dataset.select_columns([column]).with_format(None)
    if isinstance(dataset.features[column], datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False)), True
    if _encoded_struct(dataset.features[column]):  # {bytes, path} as a plain struct: Image's storage
        return dataset, True
    return dataset.with_format("numpy"), False


def _encoded_struct(feature: Any) -> bool:
    """A plain struct of ``bytes`` and ``path``: how an ``Image`` column is stored."""
    return isinstance(feature, dict) and {"bytes", "path"} <= set(feature) and \
        getattr(feature["bytes"], "dtype", None) in ("binary", "large_binary")


def decode_cell(cell: Any, name: str, options: ReadOptions, encoded: bool) -> DecodedImage:
    """One cell: an encoded image ``{"bytes", "path"}``, or an array."""
    if not encoded:
        if cell is None:
            raise ReadError(name, "the cell is null")
        return apply_channel_options(native_order(to_decoded(cell, name)), options, name)
    if cell is None or (cell.get("bytes") is None and cell.get("path") is None):
        raise ReadError(name, "the image is null")
    if cell.get("bytes") is not None:  # the bytes' own signature first, as for parquet cells
        data = cell["bytes"]
        extension = sniff_extension(data) or image_extension(cell.get("path") or "")
        return decode_image(data, name, options, extension=extension)
    path = cell["path"]
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ReadError(name, f"its image is the file {display_path(path)}: {error.strerror or error}") from None
    return decode_image(data, name, options, extension=image_extension(path))


class HFDatasetItems(ItemSource):
    """The rows of a map-style ``datasets.Dataset``, one image each."""

    only_decodes = True

    def __init__(self, dataset: Any, column: str) -> None:
        self.column = column
        self.dataset, self.encoded = _encoded(dataset, column)

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"row {index}"

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        return decode_cell(self.dataset[index][self.column], self.name(index), options, self.encoded)


class HFStream(StreamSource):
    """A streamed ``datasets.IterableDataset``: rows in order, without a length; ranks take its
    shards (``datasets.distributed.split_dataset_by_node``)."""

    def __init__(self, dataset: Any, column: str, rank: int = 0, world: int = 1) -> None:
        self.column, self.rank, self.world = column, rank, world
        self.dataset, self.encoded = _encoded(dataset, column) if world == 1 else (dataset, True)

    def shard(self, rank: int, world: int) -> "HFStream":
        from datasets.distributed import split_dataset_by_node

        shard = HFStream(split_dataset_by_node(self.dataset, rank=rank, world_size=world), self.column, rank, world)
        shard.encoded = self.encoded
        return shard

    def blocks(self, size: int = 64) -> Iterator["RowBlock"]:
        """The rows in order, ``size`` at a time (their cells still encoded)."""
        cells, offset = [], 0
        for row in self.dataset:
            cells.append(row[self.column])
            if len(cells) == size:
                yield RowBlock(offset, cells, self.encoded, self.rank, self.world)
                cells, offset = [], offset + size
        if cells:
            yield RowBlock(offset, cells, self.encoded, self.rank, self.world)


class RowBlock(ItemSource):
    """Consecutive rows of a stream (or of one rank's part of it), held encoded: what a worker
    decodes and measures. Rank ``r`` of ``w`` places its row ``i`` at ``i * w + r``."""

    only_decodes = True

    def __init__(self, offset: int, cells: list, encoded: bool, rank: int = 0, world: int = 1) -> None:
        self.offset, self.cells, self.encoded, self.rank, self.world = offset, cells, encoded, rank, world

    def __len__(self) -> int:
        return len(self.cells)

    def name(self, index: int) -> str:
        row = f"row {self.offset + index}"
        return row if self.world == 1 else f"{row} of rank {self.rank}'s part"

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        return decode_cell(self.cells[index], self.name(index), options, self.encoded)

    def global_index(self, index: int) -> int:
        return (self.offset + index) * self.world + self.rank
