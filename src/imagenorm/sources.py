"""Turn what the user names into an ordered list of image files; :class:`ItemSource`, what
every source becomes (files, container members, dataset rows).

A source is an image file, a folder (searched recursively in sorted order, following
links but never the same folder twice), a glob pattern, a ``.txt`` file listing one
path per line (UTF-8, a byte-order mark ignored; lists may name lists, never
themselves), or a list of any of these.

Hidden files and folders below a named folder (names starting with ``.``: macOS
``._name.png`` and ``.DS_Store``, ``.ipynb_checkpoints/``, ``.git/``) are skipped unread
and counted, each once. A named folder, glob or list that yields no image is an error
naming it, even next to others that do; a named file that is not an image is counted
as ignored (as the files of a shell-expanded ``data/*`` are).

Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for name in ("b.png", "a.png", "notes.md", "._a.png"):
    ...     open(os.path.join(root, name), "wb").close()
    >>> found = find_images(root)
    >>> [os.path.basename(p) for p in found.paths], found.ignored, found.hidden
    (['a.png', 'b.png'], 1, 1)
"""

from __future__ import annotations

import bisect
import glob
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

from .errors import EmptyDatasetError, ImagenormError, display_path
from .readers import DecodedImage, ReadOptions, is_image_path

PathSource = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
_GLOB_CHARACTERS = set("*?[")
_Identity = tuple[int, int]  # (device, inode)


@dataclass
class FoundImages:
    """Image paths in order; how many files were passed over as not images, and how many
    hidden files and folders were skipped unread."""

    paths: list[str] = field(default_factory=list)
    ignored: int = 0
    hidden: int = 0


class ItemSource:
    """Indexable images with names."""

    hidden: int = 0  # hidden files and folders skipped while the items were found (set by as_item_source)
    only_decodes: bool = False  # load() runs imagenorm's readers and nothing else: no code that could keep
    # a decoded array, so a loop done with each image may have them decode into a ReusedBuffer

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

    def slices(self, index: int, options: ReadOptions) -> Any:
        """Item ``index`` as slices decoded one at a time (a DICOM series:
        :class:`~imagenorm.stats.items.SeriesSlices`), or None: load it whole."""
        return None

    def global_index(self, index: int) -> int:
        """The item's place in the whole dataset (a shard maps its own indices)."""
        return index

    def units(self) -> list[tuple[int, int]] | None:
        """Ranges of items best read together, in order (a tar shard, a parquet row group), or None."""
        return None

    def read_whole(self, index: int) -> bool:
        """Whether item ``index``'s unit is best read by one worker: a part of it costs as much as
        all of it (a parquet row group; a compressed or remote shard, read front to back)."""
        return False


class Offsets:
    """Consecutive parts (files of an archive set, row groups, item sources) numbered as one:
    ``locate(index)`` gives the part and the index within it.

    Example:
        >>> parts = Offsets([3, 0, 2])
        >>> len(parts), parts.locate(4), parts.starts
        (5, (2, 1), [0, 3, 3, 5])
    """

    def __init__(self, sizes) -> None:
        self.starts = [0, *itertools.accumulate(int(size) for size in sizes)]

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(part, index within it) of item ``index``.

        Raises:
            IndexError: outside ``0..len-1``.
        """
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect.bisect_right(self.starts, index) - 1
        return part, index - self.starts[part]


class StreamSource:
    """Images without a length, read in order (a streamed Hugging Face dataset): measured block
    by block as they arrive; ranks take their part with :meth:`shard`."""

    hidden = 0
    only_decodes = True

    def blocks(self, size: int = 64) -> "Iterator[ItemSource]":
        """The images in order, ``size`` at a time, each block an ItemSource whose
        ``global_index`` places its items in the whole stream."""
        raise NotImplementedError

    def shard(self, rank: int, world: int) -> "StreamSource":
        """Rank ``rank``'s part of the stream (of ``world`` ranks); no image in two parts."""
        raise NotImplementedError


def find_images(source: PathSource) -> FoundImages:
    """Resolve ``source`` to image paths, each once, in a stable order.

    Raises:
        ImagenormError: a named path does not exist, or a list includes itself.
        EmptyDatasetError: a named folder, glob or list holds no image, or none was found.
    """
    named = [os.fspath(item) for item in _as_list(source)]
    finder = _Finder()
    for item in named:
        finder.add(item)
    if not finder.found.paths:
        raise EmptyDatasetError(f"no images found under {', '.join(map(display_path, named)) or 'no path'}")
    return finder.found


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (starts with ``.``)."""
    return name.startswith(".")


class _Finder:
    """Collects image paths from named items, each file once, counting what it passes over."""

    def __init__(self) -> None:
        self.found = FoundImages()
        self.matched = 0  # images met (duplicates included), to tell which named item met none
        self.images: set[_Identity] = set()
        self.passed_over: set[object] = set()  # identities, or paths where a file cannot be stat'ed
        self.open_lists: list[tuple[_Identity | None, str]] = []  # the lists being read, outermost first

    def add(self, item: str, listed_in: str | None = None) -> None:
        """Expand one named item; a folder, glob or list that yields no image is an error."""
        before, hidden = self.matched, self.found.hidden
        if os.path.isdir(item):
            self.walk(item)
        elif os.path.isfile(item) and item.lower().endswith(".txt"):
            self.read_list(item)
        elif os.path.exists(item) or os.path.islink(item):
            self.file(item)
            return
        elif _GLOB_CHARACTERS & set(item):
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    self.walk(match)
                else:
                    self.file(match)
        else:
            raise ImagenormError(f"{display_path(item)}: no such file or folder")
        if self.matched == before:
            raise EmptyDatasetError(_nothing_found(item, listed_in, self.found.hidden - hidden))

    def file(self, path: str) -> None:
        if not is_image_path(path):
            self.found.ignored += self.first_time(path)
            return
        self.matched += 1
        key = file_identity(path)
        if key in self.images:
            return
        if key is not None:  # a missing file is kept, each time: its reader reports it
            self.images.add(key)
        self.found.paths.append(path)

    def walk(self, root: str) -> None:
        """Files below ``root`` in sorted order; each folder entered once (symlink loops end)."""
        visited: set[_Identity] = set()
        for folder, subfolders, files in os.walk(root, followlinks=True):
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in visited:
                subfolders[:] = []
                continue
            visited.add((info.st_dev, info.st_ino))
            for name in [name for name in subfolders if is_hidden(name)]:
                subfolders.remove(name)
                self.found.hidden += self.first_time(os.path.join(folder, name))
            subfolders.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                if is_hidden(name):
                    self.found.hidden += self.first_time(path)
                else:
                    self.file(path)

    def read_list(self, list_file: str) -> None:
        """Paths listed one per line (blank lines and ``#`` comments skipped), relative to the list."""
        key = file_identity(list_file)
        chain = [name for identity, name in self.open_lists] + [list_file]
        if any(identity == key for identity, _ in self.open_lists):
            raise ImagenormError(f"{display_path(list_file)}: the list includes itself "
                                 f"({' -> '.join(map(display_path, chain))})")
        base = os.path.dirname(os.path.abspath(list_file))
        self.open_lists.append((key, list_file))
        with open(list_file, encoding="utf-8-sig", errors="surrogateescape") as file:
            for line in file:
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                path = os.path.join(base, entry)
                if os.path.exists(path) or _GLOB_CHARACTERS & set(entry):
                    self.add(path, listed_in=list_file)
                else:  # reported by the reader, so that on_error="skip" can list it
                    self.matched += 1
                    self.found.paths.append(path)
        self.open_lists.pop()

    def first_time(self, path: str) -> int:
        """1 the first time a passed-over file or folder is met (by identity), else 0."""
        key = file_identity(path) or os.path.abspath(path)
        if key in self.passed_over:
            return 0
        self.passed_over.add(key)
        return 1


def _nothing_found(item: str, listed_in: str | None, hidden: int) -> str:
    where = f" (listed in {display_path(listed_in)})" if listed_in else ""
    skipped = f"; {hidden} hidden file(s) or folder(s) skipped (names starting with '.')" if hidden else ""
    return f"no images found under {display_path(item)}{where}{skipped}"


def file_identity(path: str) -> _Identity | None:
    """(device, inode): the same file reached by two paths or links has one identity."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _as_list(source: PathSource) -> list:
    if isinstance(source, (str, bytes, os.PathLike)):
        return [source]
    return list(source)


def named_folders(source: PathSource) -> list[str]:
    """The folders a source names: each folder, and a glob's folder before its first wildcard."""
    folders = []
    for item in map(os.fspath, _as_list(source)):
        if os.path.isdir(item):
            folders.append(item)
        elif _GLOB_CHARACTERS & set(item) and not os.path.exists(item):
            prefix = min((item.index(c) for c in _GLOB_CHARACTERS if c in item))
            folders.append(os.path.dirname(item[:prefix]) or ".")
    return folders


def source_root(paths: list[str], source: PathSource) -> str:
    """The folder a source's tree hangs from: the named folder (the common parent of several
    named folders), or the common parent of the files."""
    named = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if named and all(isinstance(item, (str, os.PathLike)) and os.path.isdir(item) for item in named):
        return os.path.commonpath([os.path.abspath(item) for item in named])
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
