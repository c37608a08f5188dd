"""One exception family: the CLI turns each into one line and exit status 1."""

from __future__ import annotations

import os


class ImagenormError(Exception):
    """Base class of every error imagenorm raises on purpose."""


class ImagenormWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. fewer shards than workers)."""


def warn(message: str) -> None:
    """Issue an :class:`ImagenormWarning` at the caller's line outside imagenorm (the frame that
    called into the library), whatever the depth of the call inside it."""
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)  # 1 is this function; 2 its caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, ImagenormWarning, stacklevel=level)


class ReadError(ImagenormError):
    """A file could not be read as an image; names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{display_path(self.path)}: {reason}")

    def __reduce__(self):  # keeps path and reason across process boundaries
        return (type(self), (self.path, self.reason))


class EmptyDatasetError(ImagenormError):
    """No image was found, or every image was skipped."""


class InputError(ImagenormError, ValueError):
    """A tensor or array does not fit what a function takes (shape, channels, dtype, mask)."""


class OutputError(ImagenormError):
    """An output path cannot be written (missing folder, a folder, a FIFO, no permission)."""


class StatsFileError(ImagenormError):
    """A stats file is missing, malformed or of another schema."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def display_path(path: str | os.PathLike) -> str:
    """A path as printable text, with bytes that are not UTF-8 escaped (never raises)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
