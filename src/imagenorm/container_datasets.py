"""Datasets over data where it lives: tar shards, zip archives, parquet/Arrow, Hugging Face datasets.

- :class:`ContainerDataset`: map-style, one item per image of zip members, parquet/Arrow
  rows, a ``save_to_disk`` folder, a ``datasets.Dataset`` or tar shards (indexed once); use it
  with :func:`~imagenorm.normalize_dataset` (in memory or on the fly) as a folder dataset.
- :class:`ShardStreamDataset`: an ``IterableDataset`` that streams tar shards front to back,
  split between ranks and DataLoader workers by shard, as WebDataset splits them.
- :func:`wds_decoder` and :func:`hf_transform`: imagenorm's readers (bit depth kept) inside a
  WebDataset pipeline (``.decode(...)``) or ``dataset.with_transform(...)``.

Example:
    >>> import io, os, tempfile, zipfile, numpy as np, imagenorm
    >>> path = os.path.join(tempfile.mkdtemp(), "scans.zip")
    >>> with zipfile.ZipFile(path, "w") as archive:
    ...     for name in ("a.npy", "b.npy"):
    ...         data = io.BytesIO(); np.save(data, np.full((2, 2), 7, np.uint16))
    ...         archive.writestr(name, data.getvalue())
    >>> images = ContainerDataset(path)
    >>> len(images), images[1].dtype, images.names[1].endswith("scans.zip:b.npy")
    (2, torch.uint16, True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from .containers import Selection, shard_locations
from .containers.archives import TAR_DAMAGE, sample_image, split_key, tar_infos, tar_stream
from .containers.storage import Storage
from .datasets import resolve_read_options
from .errors import ImagenormError, ReadError, warn
from .options import ReadOptions, check_choice
from .readers import DecodedImage, decode_image, image_extension
from .sources import StreamSource

if TYPE_CHECKING:
    from .stats import DatasetStats

__all__ = ["ContainerDataset", "ShardStreamDataset", "wds_decoder", "hf_transform"]


def _tensor(image: DecodedImage) -> torch.Tensor:
    pixels = image.pixels
    if not (pixels.flags.writeable and pixels.flags.c_contiguous):
        pixels = np.array(pixels, order="C")  # decoders may hand out read-only buffers
    return torch.from_numpy(pixels)


class ContainerDataset(Dataset):
    """The images of container sources, map-style, as channel-first tensors of their own dtype.

    Args:
        source: tar shards (braces expand), zip archives, parquet/Arrow files or globs, a
            ``save_to_disk`` folder, URLs, or a ``datasets.Dataset``/``DatasetDict``.
        column, member, split: which images (see :func:`~imagenorm.compute_stats`).
        transform: applied to each image tensor (e.g. a :class:`~imagenorm.Standardize`).
        stats, read_options, **given: how to read, as for
            :class:`~imagenorm.ImageFolderDataset` (default: as ``stats`` were measured).

    Attributes:
        read_options: how every image is read. names: ``shard.tar:key.png``-style names.
    """

    def __init__(self, source: Any, *, column: str | None = None, member: str | None = None, split: str | None = None,
                 transform: Callable[[torch.Tensor], Any] | None = None, stats: DatasetStats | None = None,
                 read_options: ReadOptions | None = None, **given: Any) -> None:
        from .stats.items import as_item_source

        self.read_options = resolve_read_options(stats, read_options, **given)
        self.items, _ = as_item_source(source, False, Selection(column, member, split))
        if isinstance(self.items, StreamSource):
            raise ImagenormError("a streamed dataset has no length: iterate it with with_transform(hf_transform(...))")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> list[str]:
        return [self.items.name(index) for index in range(len(self.items))]

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` as read (dtype kept), before the transform."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        return _tensor(self.items.load(index % len(self), self.read_options))

    def __getitem__(self, index: int):
        image = self.load(index)
        return image if self.transform is None else self.transform(image)


class ShardStreamDataset(IterableDataset):
    """WebDataset tar shards streamed front to back, one image per sample.

    Shards are split first between torch.distributed ranks, then between DataLoader
    workers: rank ``r`` of ``R`` with worker ``w`` of ``W`` reads shards ``r + R * (w + W * k)``
    (a warning says when some rank or worker would get none). The rank is the process group's
    where it is initialized, else the one the dataset was made in (so spawned DataLoader
    workers, which have no group, keep it), else torchrun's ``RANK``/``WORLD_SIZE``. Each
    sample's image is chosen as for ``imagenorm stats`` (``member``; a sample that cannot give
    one is an error), decoded with bit depth kept, then ``transform``.

    Args:
        shards: tar paths or URLs; braces (``train-{000..099}.tar``) and globs expand.
        member: the image member of each sample by extension (default: its only image).
        transform, stats, read_options, **given: as for :class:`ContainerDataset`.
        keys: yield ``(image, key)`` instead of images.
        on_error: ``"fail"`` raises at a bad member; ``"skip"`` warns and goes on.
    """

    def __init__(self, shards: Any, *, member: str | None = None, transform: Callable[[torch.Tensor], Any] | None = None,
                 stats: DatasetStats | None = None, read_options: ReadOptions | None = None, keys: bool = False,
                 on_error: str = "fail", **given: Any) -> None:
        self.read_options = resolve_read_options(stats, read_options, **given)
        self.member = Selection(member=member).member
        self.on_error = check_choice("on_error", on_error)
        self.shards = shard_locations(shards)
        self.transform, self.keys = transform, keys
        self.rank, self.world = _rank()  # here, in the process that has the group: spawned workers have none

    def assigned(self) -> list[str]:
        """The shards this rank and DataLoader worker read."""
        rank, world = _rank() if _in_group() else (self.rank, self.world)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        readers = world * workers
        if len(self.shards) < readers:
            warn(f"{len(self.shards)} shard(s) for {world} rank(s) x {workers} worker(s): "
                          f"{readers - len(self.shards)} reader(s) get no shard")
        return self.shards[rank + world * worker::readers]

    def __iter__(self) -> Iterator:
        for shard in self.assigned():
            for item in _samples(shard, self.member):
                if isinstance(item, ReadError):
                    if self.on_error == "fail":
                        raise item
                    warn(f"skipped {item}")
                    continue
                key, name, data = item
                try:
                    image = _tensor(decode_image(data, name, self.read_options))
                except ReadError as error:
                    if self.on_error == "fail":
                        raise
                    warn(f"skipped {error}")
                    continue
                if self.transform is not None:
                    image = self.transform(image)
                yield (image, key) if self.keys else image


def _in_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _rank() -> tuple[int, int]:
    """(rank, world size): of the process group, else of torchrun's environment, else (0, 1)."""
    import os

    import torch.distributed as dist

    if _in_group():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _samples(location: str, member: str | None) -> Iterator[tuple[str, str, bytes] | ReadError]:
    """(key, name, bytes) of each sample's image, reading the shard once, front to back; a
    sample that cannot give one, or the damage that ends the shard, as a ReadError (after the
    samples before it)."""
    storage = Storage(location)
    key, infos, data = None, [], {}
    try:
        stream = tar_stream(storage)
        for info in tar_infos(stream):
            this, extension = split_key(info.name)
            if this != key:
                yield from _chosen(storage.name, key, infos, data, member)
                key, infos, data = this, [], {}
            infos.append(info)
            if (extension.lower() == member.lower()) if member is not None else image_extension(info.name):
                stream.seek(info.offset_data)  # forward: tarfile goes on from its own offset
                data[info.name] = stream.read(info.size)
        yield from _chosen(storage.name, key, infos, data, member)
    except TAR_DAMAGE as error:
        if isinstance(error, ReadError) and error.path:
            yield error
        else:
            yield ReadError(storage.name, f"the shard is damaged or truncated: {getattr(error, 'reason', None) or error}")
    finally:
        storage.close()


def _chosen(shard: str, key: str | None, infos: list, data: dict, member: str | None):
    """The sample's image as (key, name, bytes), chosen as ``imagenorm stats`` chooses it."""
    if key is None:
        return
    chosen = sample_image(shard, key, infos, member)
    if isinstance(chosen, str):
        yield ReadError(f"{shard}:{key}", chosen)
    elif chosen is not None:
        if len(data[chosen.name]) < chosen.size:
            yield ReadError(f"{shard}:{chosen.name}", f"truncated: the shard ends after {len(data[chosen.name])} of its "
                                                      f"{chosen.size} bytes")
        else:
            yield key, f"{shard}:{chosen.name}", data[chosen.name]


class wds_decoder:
    """A WebDataset decoder handler: image members become tensors of their own dtype (16-bit
    kept, unlike WebDataset's Pillow decoders); other members are left to the next handler.
    Picklable, so DataLoader workers may start by spawn.

    Example:
        >>> import numpy as np, io
        >>> data = io.BytesIO(); np.save(data, np.zeros((2, 3), np.uint16))
        >>> wds_decoder()("npy", data.getvalue()).dtype, wds_decoder()("cls", b"1")
        (torch.uint16, None)
    """

    def __init__(self, read_options: ReadOptions = ReadOptions()) -> None:
        self.read_options = read_options

    def __call__(self, key: str, data: bytes) -> torch.Tensor | None:
        extension = "." + key.rsplit(".", 1)[-1].lower()
        if not image_extension("x" + extension):
            return None
        return _tensor(decode_image(data, f"member {key}", self.read_options, extension=extension))


class hf_transform:
    """A function for ``dataset.with_transform(...)`` that decodes ``column`` with imagenorm's
    readers and applies ``transform`` to each image. Cast the column to
    ``datasets.Image(decode=False)`` first: ``datasets`` decodes with Pillow, which cuts
    16-bit RGB to 8 bits; cells that are already PIL images are taken as they are. Picklable.
    """

    def __init__(self, transform: Callable[[torch.Tensor], Any] | None = None, column: str = "image",
                 read_options: ReadOptions = ReadOptions()) -> None:
        self.transform, self.column, self.read_options = transform, column, read_options

    def __call__(self, batch: dict) -> dict:
        from .containers.hf import decode_cell

        images = []
        for index, cell in enumerate(batch[self.column]):
            encoded = isinstance(cell, dict) or cell is None
            tensor = _tensor(decode_cell(cell, f"{self.column}[{index}] of the batch", self.read_options, encoded))
            images.append(tensor if self.transform is None else self.transform(tensor))
        return {**batch, self.column: images}
