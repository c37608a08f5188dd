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

    def save(self, measurement: Measurement, chunks_done: int, signature: "Signature", counted: int) -> None:
        """Save the merged state of the first ``chunks_done`` chunks (``counted`` items)."""
        arrays = measurement.to_arrays()
        run = {"signature": signature.run, "chunks_done": chunks_done}
        arrays["run"] = np.frombuffer(json.dumps(run).encode("utf-8"), np.uint8)
        arrays["identities"] = signature.identities[:counted]
        with atomic_write(self.path, "wb") as file:
            np.savez(file, **arrays)
        self._saved_at, self._items_since = time.monotonic(), 0

    def load(self, signature: "Signature", items) -> tuple[Measurement, int] | None:
        """(Measurement, chunks done) of an earlier run of the same command, or None.

        Raises:
            ImagenormError: not a checkpoint, one of another run, or a file it counted has
                changed since (named).
        """
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            run = json.loads(arrays.pop("run").tobytes().decode("utf-8"))
            counted = arrays.pop("identities")
            measurement, _ = Measurement.from_arrays(arrays)
        except Exception:  # a zip, npy, JSON or field error: all say the same to the user
            raise ImagenormError(f"{display_path(self.path)}: not a readable imagenorm checkpoint; remove it or "
                                 "choose another checkpoint file") from None
        if run["signature"] != signature.run:
            raise ImagenormError(f"{display_path(self.path)} is a checkpoint of another run (other files or options); "
                                 "remove it or choose another checkpoint file")
        changed = np.flatnonzero(counted != signature.identities[: counted.size])
        if changed.size:
            raise ImagenormError(f"{items.name(int(changed[0]))} changed since {display_path(self.path)} counted it "
                                 "(size or modification time); remove the checkpoint to measure afresh")
        return measurement, run["chunks_done"]

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


@dataclass(frozen=True)
class Signature:
    """What a resumed run must match: ``run`` (items, chunking, options), and per item the
    ``identities`` of its files (size and modification time), compared for counted items."""

    run: str
    identities: np.ndarray  # uint64 per item


def run_signature(job, chunks: list[tuple[int, int]]) -> Signature:
    """The :class:`Signature` of ``job`` split into ``chunks``."""
    run = hashlib.sha256()
    identities = np.zeros(len(job.items), np.uint64)
    known: dict[tuple[str, ...], int] = {}  # the members of one archive share its identity: one stat
    for index in range(len(job.items)):
        run.update(job.items.name(index).encode("utf-8", "surrogateescape") + b"\0")
        files = tuple(job.items.files(index))
        if files not in known:
            known[files] = _identity(list(files))
        identities[index] = known[files]
    described = repr((len(job.items), chunks, job.options, job.layout, job.on_error,
                      None if job.mask is None else job.mask.describe(), job.audit, job.landmarks))
    run.update(described.encode("utf-8"))
    return Signature(run.hexdigest(), identities)


def _identity(paths: list[str]) -> int:
    """64 bits of the size and modification time of ``paths``."""
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        try:
            info = os.stat(path)
            digest.update(f"{info.st_size}:{info.st_mtime_ns};".encode())
        except OSError:
            digest.update(b"missing;")
    return int.from_bytes(digest.digest(), "little")
