"""Resumable measurement: the merged first-pass state, saved atomically every so often.

A checkpoint holds the statistics of a prefix of the chunks (chunks are merged in order),
with a signature of the run (item count, names, chunking, options). The same command
started again finds it, checks the signature, skips the chunks already counted and goes
on: the result equals an uninterrupted run exactly (the same merges in the same order).
The file is an ``.npz`` of arrays plus JSON: nothing in it is executed when loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..atomic import atomic_write
from ..errors import ImagenormError, display_path
from .measurement import Measurement


@dataclass
class Checkpoint:
    """Where and how often to save; ``every_items`` or ``every_seconds``, whichever comes first."""

    path: str
    every_items: int = 1000
    every_seconds: float = 60.0
    _saved_at: float = field(default_factory=time.monotonic, repr=False)
    _items_since: int = field(default=0, repr=False)

    def due(self, items: int) -> bool:
        self._items_since += items
        return self._items_since >= self.every_items or time.monotonic() - self._saved_at >= self.every_seconds

    def save(self, measurement: Measurement, chunks_done: int, signature: tuple[str, str]) -> None:
        arrays = measurement.to_arrays()
        run = {"signature": signature[0], "contents": signature[1], "chunks_done": chunks_done}
        arrays["run"] = np.frombuffer(json.dumps(run).encode("utf-8"), np.uint8)
        with atomic_write(self.path, "wb") as file:
            np.savez(file, **arrays)
        self._saved_at, self._items_since = time.monotonic(), 0

    def load(self, signature: tuple[str, str]) -> tuple[Measurement, int] | None:
        """(Measurement, chunks done) of an earlier run of the same command, or None."""
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            run = json.loads(arrays.pop("run").tobytes().decode("utf-8"))
            measurement, _ = Measurement.from_arrays(arrays)
        except (OSError, ValueError, KeyError) as error:
            raise ImagenormError(f"{display_path(self.path)}: not a readable imagenorm checkpoint ({error})") from None
        if run["signature"] != signature[0]:
            raise ImagenormError(f"{display_path(self.path)} is a checkpoint of another run (other files or options); "
                                 "remove it or choose another checkpoint file")
        if run.get("contents") != signature[1]:
            raise ImagenormError(f"{display_path(self.path)}: files changed since this checkpoint was saved (size or "
                                 "modification time); remove it to measure them afresh")
        return measurement, run["chunks_done"]

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


def run_signature(job, chunks: list[tuple[int, int]]) -> tuple[str, str]:
    """What must match for a checkpoint to be resumed: (items, chunking and options; the size
    and modification time of every file behind the items)."""
    run, contents = hashlib.sha256(), hashlib.sha256()
    for index in range(len(job.items)):
        run.update(job.items.name(index).encode("utf-8", "surrogateescape") + b"\0")
        for path in job.items.files(index):
            try:
                info = os.stat(path)
                contents.update(f"{info.st_size}:{info.st_mtime_ns};".encode())
            except OSError:
                contents.update(b"missing;")
    described = repr((len(job.items), chunks, job.options, job.layout, job.on_error,
                      None if job.mask is None else job.mask.describe(), job.audit))
    run.update(described.encode("utf-8"))
    return run.hexdigest(), contents.hexdigest()
