"""Data where it lives: images inside tar shards, zip archives, parquet/Arrow files and URLs.

A named source is a container source when it is a URL, a file ending in ``.tar``,
``.tar.gz``, ``.tgz``, ``.zip``, ``.parquet`` or ``.arrow`` (braces expand as WebDataset's
do: ``train-{000..099}.tar``; globs match), or a folder written by ``datasets``'
``save_to_disk``. :func:`container_items` indexes each file once and gives a
:class:`ContainerItems`: one item per image, named ``shard.tar:key.jpg`` or
``file.parquet:row 17``, decoded by the same readers as files, with ``units`` (a shard, a
row group) that workers and ranks take whole.

Example:
    >>> import io, os, tarfile, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "shard-000.tar")
    >>> with tarfile.open(path, "w") as shard:
    ...     for key in ("a", "b"):
    ...         data = io.BytesIO(); np.save(data, np.full((2, 2), 7, np.uint16))
    ...         info = tarfile.TarInfo(f"{key}.npy"); info.size = len(data.getvalue())
    ...         shard.addfile(info, io.BytesIO(data.getvalue()))
    >>> items = container_items([path])
    >>> len(items), items.name(1).endswith("shard-000.tar:b.npy"), items.units()
    (2, True, [(0, 2)])
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

from ..errors import EmptyDatasetError, ImagenormError, ReadError, display_path, warn
from ..options import OptionError
from ..readers import DecodedImage, ReadOptions, decode_image
from ..sources import _GLOB_CHARACTERS, ItemSource, Offsets, file_identity
from .archives import TAR_SUFFIXES, ZIP_SUFFIXES, Container, RemoteObject, TarShard, Unreadable, ZipArchive
from .storage import Storage, expand_braces, is_url, remote_filesystem
from .tables import TABLE_SUFFIXES, TableFile, is_saved_dataset, saved_dataset_files, split_of

CONTAINER_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES + TABLE_SUFFIXES
OPEN = 4  # containers a process keeps open (handles, a parquet row group, a zip directory)
_GLOB = _GLOB_CHARACTERS


@dataclass(frozen=True)
class Selection:
    """Which images of a container source to read.

    Args:
        column: the image column of parquet/Arrow data (default: the only one).
        member: the member of each WebDataset sample, by extension (``"jpg"``, ``"seg.png"``;
            default: the sample's only image).
        split: the split of a ``DatasetDict`` folder or Hub snapshot (default ``"train"``).
    """

    column: str | None = None
    member: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        for name in ("column", "member", "split"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise OptionError(f"{name} must be a non-empty string, got {value!r}")
        if self.member is not None:
            object.__setattr__(self, "member", self.member.lstrip("."))


def is_container_source(item: str) -> bool:
    """Whether a named source is read by this package (see the module docstring)."""
    if is_url(item):
        return True
    if os.path.isdir(item):
        return is_saved_dataset(item)
    if os.path.exists(item):
        return _is_container_file(item)
    names = expand_braces(item) if "{" in item else [item]
    return any(_is_container_file(name) for name in names) or any(
        _is_container_file(match) for name in names if _GLOB & set(name) for match in glob.glob(name, recursive=True))


def _is_container_file(path: str) -> bool:
    return path.lower().endswith(CONTAINER_SUFFIXES)


def container_items(named: list[str], selection: Selection = Selection(), seen: set[str] | None = None) -> "ContainerItems":
    """Index every container the named sources hold (each file once, in order; ``seen``: the
    files and URLs already taken, by :func:`identity`, shared with other runs of sources).

    Raises:
        ImagenormError: a named file, URL or split is missing, or a choice is ambiguous.
        EmptyDatasetError: a named source holds no image.
    """
    containers, seen = [], set() if seen is None else seen
    for item in named:
        found = _open_named(item, selection)
        fresh = [container for container in found if identity(container.storage.location) not in seen]
        seen.update(identity(container.storage.location) for container in fresh)
        if not any(len(container) for container in found) and not any(c.hidden for c in found):
            raise EmptyDatasetError(f"no images found in {display_path(item)}" + _passed_over(found))
        containers += fresh
    _check_applies(selection, containers)
    return ContainerItems(containers)


def _check_applies(selection: Selection, containers: list[Container]) -> None:
    """``member`` needs a tar shard, ``column`` a parquet or Arrow file among the sources."""
    if selection.member is not None and not any(isinstance(c, TarShard) for c in containers):
        raise OptionError(f"member={selection.member!r} applies to tar shards; the sources have none")
    if selection.column is not None and not any(isinstance(c, TableFile) for c in containers):
        raise OptionError(f"column={selection.column!r} applies to parquet and Arrow files; the sources have none")


def identity(location: str) -> object:
    """What makes two named files one: a local file's (device, inode), as folder scans take it
    (links of any kind are one file), else its real path; a URL as it is."""
    return location if is_url(location) else (file_identity(location) or os.path.realpath(location))


def _passed_over(containers: list[Container]) -> str:
    ignored = sum(container.ignored for container in containers)
    return f" ({ignored} member(s) that are not images)" if ignored else ""


def _open_named(item: str, selection: Selection) -> list[Container]:
    if os.path.isdir(item):
        if selection.member is not None:
            raise OptionError(f"member={selection.member!r} applies to tar shards, not to {display_path(item)}")
        files, root = saved_dataset_files(item, selection.split)
        return [_container(path, selection, root) for path in files]
    locations = _locations(item)
    return [_container(location, selection, _root(item)) for location in _of_split(locations, selection.split, item)]


def shard_locations(named: Any) -> list[str]:
    """The files or URLs that named shards stand for (braces and globs expanded), in order."""
    named = [named] if isinstance(named, (str, os.PathLike)) else list(named)
    locations = [location for item in named for location in _locations(os.fspath(item))]
    if not locations:
        raise EmptyDatasetError("no shard named")
    unique = {}
    for location in locations:  # one file named two ways is one shard
        unique.setdefault(identity(location), location)
    return list(unique.values())


def _locations(item: str) -> list[str]:
    """Braces, then globs, expanded; each local file checked to exist."""
    locations = []
    for name in expand_braces(item):
        if is_url(name):
            locations += _remote_glob(name) if _GLOB & set(name.split("://", 1)[1].split("?", 1)[0]) else [name]
        elif _GLOB & set(name) and not os.path.exists(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                raise EmptyDatasetError(f"no file matches {display_path(name)}")
            locations += [match for match in matches if os.path.isfile(match)]
        elif os.path.isfile(name):
            locations.append(name)
        else:
            raise ImagenormError(f"{display_path(name)}: no such file" + (f" (from {display_path(item)})" if name != item else ""))
    return locations


def _of_split(locations: list[str], split: str | None, item: str) -> list[str]:
    """Parquet files of several splits (a Hub snapshot's ``data/*.parquet``): those of ``split``
    (default ``"train"``); other files as they are."""
    tables = [location for location in locations if location.lower().split("?", 1)[0].endswith(".parquet")]
    splits = sorted({split_of(location) for location in tables} - {""})
    if split is not None and not splits:
        raise OptionError(f"split={split!r} applies to sources with splits (a save_to_disk DatasetDict folder, Hub "
                          f"files named by split: train-00000-of-00001.*); {display_path(item)} has none")
    if len(splits) <= 1 and split is None:
        return locations
    chosen = split or "train"
    if chosen not in splits:
        raise OptionError(f"{display_path(item)}: no parquet file of split {chosen!r}; splits: {', '.join(splits)} "
                          "(choose one with split=)")
    kept = [location for location in locations if location not in tables or split_of(location) == chosen]
    others = [name for name in splits if name != chosen]
    if others or len(kept) < len(locations):
        warn(f"{display_path(item)}: measuring split {chosen!r}; {len(locations) - len(kept)} parquet file(s) "
                      f"of other splits ({', '.join(others) or 'none named'}) left out")
    return kept


def _root(item: str) -> str:
    """The folder a named source hangs from (a glob's folder before its first wildcard; none for
    a URL)."""
    if is_url(item):
        return ""
    cut = min([item.index(c) for c in _GLOB | {"{"} if c in item] or [len(item)])
    folder = os.path.dirname(item[:cut]) or "."
    return os.path.dirname(folder) if os.path.basename(folder) == "data" else folder


def _remote_glob(url: str) -> list[str]:
    filesystem, path = remote_filesystem(url)
    try:
        matches = sorted(filesystem.glob(path))
    except Exception as error:
        raise ImagenormError(f"{url}: cannot list the matching objects ({error})") from None
    if not matches:
        raise EmptyDatasetError(f"no object matches {url}")
    protocol = url.split("://", 1)[0]
    return [match if "://" in match else f"{protocol}://{match}" for match in matches]


def _container(location: str, selection: Selection, root: str) -> Container:
    """Index one file; a file that cannot be opened becomes one member that fails with the reason."""
    storage = Storage(location)
    lower = location.lower().split("?", 1)[0]
    kind = (TarShard if lower.endswith(TAR_SUFFIXES) else ZipArchive if lower.endswith(ZIP_SUFFIXES) else
            TableFile if lower.endswith(TABLE_SUFFIXES) else RemoteObject if storage.remote else None)
    if kind is None:
        raise ImagenormError(f"{display_path(location)}: not a tar, zip, parquet or Arrow file")
    try:
        storage.size  # a missing file or object fails here
        container = (kind(storage, selection.member) if kind is TarShard else
                     kind(storage, selection.column, root) if kind is TableFile else kind(storage))
    except ReadError as error:
        container = Unreadable(storage, error.reason)
    container.release()  # thousands of shards: no file stays open until it is read
    return container


def _stem(container: Container) -> str:
    """A container's path (a URL's host and path) without its suffix."""
    location = container.storage.location.split("://", 1)[-1].split("?", 1)[0]
    return next((location[:-len(suffix)] for suffix in CONTAINER_SUFFIXES if location.lower().endswith(suffix)), location)


class ContainerItems(ItemSource):
    """The images of several containers, in order: item ``i`` is one member of one container."""

    only_decodes = True

    def __init__(self, containers: list[Container]) -> None:
        self.containers = containers
        self.offsets = Offsets(len(container) for container in containers)
        self.ignored = sum(container.ignored for container in containers)
        self.hidden = sum(container.hidden for container in containers)
        self._open: list[Container] = []  # the containers read last, most recent last

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": []}

    def __len__(self) -> int:
        return len(self.offsets)

    def locate(self, index: int) -> tuple[Container, int]:
        """(container, member position) of item ``index``."""
        number, position = self.offsets.locate(index)
        return self.containers[number], position

    def name(self, index: int) -> str:
        container, position = self.locate(index)
        return container.item_name(position)

    def key(self, index: int) -> str:
        """The container's path without its suffix, then the member: what ``apply`` mirrors
        (``shards/train-000.tar`` member ``a/1.png`` -> ``shards/train-000/a/1.png``)."""
        container, position = self.locate(index)
        return os.path.join(_stem(container), container.member_key(position))

    def files(self, index: int) -> list[str]:
        container, _ = self.locate(index)
        return [] if container.storage.remote else [container.storage.location]

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        container, position = self.locate(index)
        self._keep_open(container)
        data, extension = container.read(position)
        return decode_image(data, container.item_name(position), options, extension=extension)

    def _keep_open(self, container: Container) -> None:
        """At most :data:`OPEN` containers keep their handles and caches in a process."""
        if self._open and self._open[-1] is container:
            return
        if container in self._open:
            self._open.remove(container)
        self._open.append(container)
        if len(self._open) > OPEN:
            self._open.pop(0).release()

    def units(self) -> list[tuple[int, int]]:
        return [(start + first, start + stop) for container, start in zip(self.containers, self.offsets.starts)
                for first, stop in container.units()]

    def read_whole(self, index: int) -> bool:
        return self.locate(index)[0].read_whole

    def root(self) -> str:
        """The folder the keys hang from: the common folder of the containers (so that a copy
        keeps each container's name and its members' folders)."""
        return os.path.commonpath([os.path.dirname(os.path.abspath(_stem(c))) for c in self.containers] or [os.getcwd()])
