"""Atomic file writes: a temporary file in the target's folder, flushed, then renamed over it.

A run that fails part-way leaves the previous file (if any) untouched and no partial file.
Atomic replacement is for regular files: a link is followed (its target is replaced, the
link stays), a character device such as ``/dev/null`` is written through, and anything
else (a folder, a FIFO, a socket) is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import IO, Iterator

from .errors import OutputError, display_path


def check_target(path: str | os.PathLike, *, regular: bool = False) -> None:
    """Refuse, before any work, a path that cannot take a file: its folder is missing or not
    writable, or it is a folder, FIFO or socket (or, with ``regular``, a device: a file that
    is read back, such as a checkpoint, must be a regular file).

    Raises:
        OutputError: one line naming ``path`` and why.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    name = display_path(path)
    if os.path.exists(target):
        mode = os.stat(target).st_mode
        if stat.S_ISDIR(mode):
            raise OutputError(f"{name}: is a folder; give a file name")
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) and not regular):
            raise OutputError(f"{name}: not a regular file; give a file name")
        if not os.access(target, os.W_OK):
            raise OutputError(f"{name}: permission denied")
        return
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OutputError(f"{name}: no such folder {display_path(folder)}")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{name}: the folder is not writable")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> with atomic_write(target) as file:
        ...     _ = file.write("done")
        >>> open(target).read()
        'done'
    """
    check_target(path)
    target = os.path.realpath(os.fspath(path))
    encoding = {} if "b" in mode else {"encoding": "utf-8"}
    if os.path.exists(target) and stat.S_ISCHR(os.stat(target).st_mode):  # /dev/null, a terminal: write through
        with open(target, mode, **encoding) as file:
            yield file
        return
    handle, temporary = tempfile.mkstemp(prefix=".imagenorm-", suffix=".tmp", dir=os.path.dirname(target))
    try:
        with os.fdopen(handle, mode, **encoding) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it: other threads
    creating files meanwhile would get mode 0o666); 0o022 where the system does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022
