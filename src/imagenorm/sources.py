"""Turn what the user names into an ordered list of image files.

A source is an image file, a folder (searched recursively in sorted order, following
links but never the same folder twice), a glob pattern, a ``.txt`` file listing one
path per line, or a list of any of these.

Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> for name in ("b.png", "a.png", "notes.md"):
    ...     open(os.path.join(root, name), "wb").close()
    >>> found = find_images(root)
    >>> [os.path.basename(p) for p in found.paths], found.ignored
    (['a.png', 'b.png'], 1)
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

from .errors import EmptyDatasetError, ImagenormError, display_path
from .readers import is_image_path

PathSource = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]
_GLOB_CHARACTERS = set("*?[")


@dataclass
class FoundImages:
    """Image paths in order, and how many files were passed over as not images."""

    paths: list[str] = field(default_factory=list)
    ignored: int = 0


def find_images(source: PathSource) -> FoundImages:
    """Resolve ``source`` to image paths, each once, in a stable order.

    Raises:
        ImagenormError: a named path does not exist.
        EmptyDatasetError: no image was found.
    """
    found = FoundImages()
    seen: set[tuple[int, int]] = set()
    for item in _as_list(source):
        for path, is_image in _expand(os.fspath(item)):
            if not is_image:
                found.ignored += 1
                continue
            key = _file_identity(path)
            if key in seen:
                continue
            if key is not None:  # a missing file is kept, each time: its reader reports it
                seen.add(key)
            found.paths.append(path)
    if not found.paths:
        names = ", ".join(display_path(os.fspath(s)) for s in _as_list(source))
        raise EmptyDatasetError(f"no images found under {names}")
    return found


def _file_identity(path: str) -> tuple[int, int] | None:
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


def _expand(item: str) -> Iterable[tuple[str, bool]]:
    """Yield (path, is_image) for one named item."""
    if os.path.isdir(item):
        yield from _walk(item)
    elif os.path.isfile(item) and item.lower().endswith(".txt"):
        yield from _read_list(item)
    elif os.path.exists(item) or os.path.islink(item):
        yield item, is_image_path(item)
    elif _GLOB_CHARACTERS & set(item):
        for match in sorted(glob.glob(item, recursive=True)):
            if os.path.isdir(match):
                yield from _walk(match)
            else:
                yield match, is_image_path(match)
    else:
        raise ImagenormError(f"{display_path(item)}: no such file or folder")


def _walk(root: str) -> Iterable[tuple[str, bool]]:
    """Files below ``root`` in sorted order; each folder entered once (symlink loops end)."""
    visited: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:
            subfolders[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        subfolders.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            yield path, is_image_path(path)


def _read_list(list_file: str) -> Iterable[tuple[str, bool]]:
    """Paths listed one per line (blank lines and ``#`` comments skipped), relative to the list."""
    base = os.path.dirname(os.path.abspath(list_file))
    with open(list_file, encoding="utf-8", errors="surrogateescape") as file:
        for line in file:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            path = os.path.join(base, entry)
            if os.path.exists(path) or _GLOB_CHARACTERS & set(entry):
                yield from _expand(path)
            else:  # reported by the reader, so that --on-error skip can list it
                yield path, True


def source_root(paths: list[str], source: PathSource) -> str:
    """The folder a source's tree hangs from: the named folder, or the common parent of the files."""
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return os.path.abspath(source)
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
