"""Bytes of a local file or of any fsspec URL, read at an offset, in any process.

:class:`Storage` names one file (a path or a URL) and reads byte ranges of it with
:meth:`Storage.read_at`. Local files are read with ``os.pread`` (no shared file position, so
a handle inherited by a forked worker is safe). Remote objects (``http(s)://`` with
``imagenorm[remote]``; ``s3://``, ``gs://``, ``hf://`` with their fsspec backend) are read in
blocks of :data:`BLOCK` bytes, so that reading members one after another streams the object
without downloading it whole; a failed read is retried :data:`RETRIES` times before one
error names the URL. Handles are opened lazily and never cross a process boundary.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.bin")
    >>> _ = open(path, "wb").write(b"0123456789")
    >>> storage = Storage(path)
    >>> bytes(storage.read_at(3, 4)), storage.size
    (b'3456', 10)
"""

from __future__ import annotations

import io
import os
import re
import time

from ..errors import ImagenormError, ReadError, display_path, first_line

BLOCK = 8 << 20  # bytes fetched per remote request: members in order stream in large reads
RETRIES = 3  # further attempts after a failed remote read (waits 0.5, 1 and 2 s)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(text)) and not text.lower().startswith("file://")


def expand_braces(pattern: str) -> list[str]:
    """``train-{000..002}.tar`` -> three names, as ``braceexpand`` (WebDataset's rule) does;
    a name without braces is itself."""
    if "{" not in pattern:
        return [pattern]
    from braceexpand import braceexpand

    try:
        return list(braceexpand(pattern))
    except Exception as error:  # an unbalanced brace
        raise ImagenormError(f"{display_path(pattern)}: cannot expand its braces ({error})") from None


def remote_filesystem(url: str):
    """(fsspec filesystem, path) for ``url``; a clear error where fsspec or the backend is missing."""
    try:
        import fsspec
    except ImportError:
        raise ImagenormError(f"{url}: reading URLs needs fsspec: pip install 'imagenorm[remote]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        hint = "pip install 'imagenorm[remote]'" if url.lower().startswith(("http://", "https://")) else \
            "install the fsspec backend of its scheme (s3fs, gcsfs, huggingface_hub, ...)"
        raise ImagenormError(f"{url}: no fsspec backend for this URL: {hint} ({first_line(error)})") from None


class Storage:
    """One file to read byte ranges from: a local path or an fsspec URL."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.remote = is_url(location)
        self._pid = None
        self._handle = None  # a file descriptor, or (filesystem, path)
        self._size: int | None = None
        self._block: tuple[int, bytes] = (0, b"")  # remote: the last block read

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None, "_handle": None, "_block": (0, b"")}

    @property
    def name(self) -> str:
        return self.location if self.remote else display_path(self.location)

    @property
    def size(self) -> int:
        if self._size is None:
            self._open()
        return self._size

    def close(self) -> None:
        """Release the handle (it is opened again on the next read)."""
        handle, self._handle, self._block = self._handle, None, (0, b"")
        if isinstance(handle, int) and self._pid == os.getpid():
            try:
                os.close(handle)
            except OSError:
                pass

    def read_at(self, offset: int, size: int) -> bytes | memoryview:
        """``size`` bytes from ``offset``; fewer only where the file ends."""
        self._open()
        if not self.remote:
            return os.pread(self._handle, size, offset)
        start, block = self._block
        if not (start <= offset and offset + size <= start + len(block)):
            start, block = self._block = self._fetch(offset, min(self._size, offset + max(size, BLOCK)))
        return memoryview(block)[offset - start:offset - start + size]

    def file(self, buffered: bool = True) -> io.RawIOBase:
        """A seekable, read-only file object over the bytes (for zipfile, tarfile, pyarrow)."""
        raw = _RangeFile(self)
        return io.BufferedReader(raw, buffer_size=1 << 16) if buffered else raw

    def _open(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            return
        self._pid, self._block = os.getpid(), (0, b"")
        if not self.remote:
            try:
                self._handle = os.open(self.location, os.O_RDONLY)
                self._size = os.fstat(self._handle).st_size
            except OSError as error:
                raise ReadError(self.location, error.strerror or str(error)) from None
            return
        filesystem, path = remote_filesystem(self.location)
        self._handle = (filesystem, path)
        if self._size is None:
            self._size = self._retrying(lambda: int(filesystem.size(path)))

    def _fetch(self, start: int, end: int) -> tuple[int, bytes]:
        """(start, bytes) of a block holding bytes ``start..end-1``. A server that ignores ranges
        sends the whole object: that is kept as the block (read once, held in memory)."""
        filesystem, path = self._handle
        data = self._retrying(lambda: filesystem.cat_file(path, start=start, end=end))
        if len(data) == self._size:  # the whole object came
            return 0, data
        if len(data) != end - start:
            raise ReadError(self.location, f"the server sent {len(data)} bytes for bytes {start}..{end - 1}")
        return start, data

    def _retrying(self, call):
        """``call()``, tried again after a transient failure (a lost connection, a timeout, a 5xx,
        408 or 429 answer); a missing object or any other answer fails at once."""
        for attempt in range(RETRIES + 1):
            try:
                return call()
            except FileNotFoundError:
                raise ReadError(self.location, "not found") from None
            except Exception as error:  # network errors come in many types
                if not _transient(error):
                    raise ReadError(self.location, f"cannot be read: {first_line(error)}") from None
                if attempt == RETRIES:
                    raise ReadError(self.location, f"cannot be read after {RETRIES + 1} attempts: "
                                                   f"{first_line(error)}") from None
                time.sleep(0.5 * 2 ** attempt)


def _transient(error: Exception) -> bool:
    """Whether trying again may help: HTTP 5xx, 408 and 429, and errors of the connection."""
    status = getattr(error, "status", None) or getattr(error, "code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return not isinstance(error, (TypeError, ValueError, KeyError, AttributeError, PermissionError, NotImplementedError))


class _RangeFile(io.RawIOBase):
    """A raw, seekable file over :meth:`Storage.read_at`."""

    def __init__(self, storage: Storage) -> None:
        self.storage, self.position = storage, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.storage.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        data = self.storage.read_at(self.position, min(len(buffer), max(0, self.storage.size - self.position)))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

