"""Write a normalized float32 copy of a dataset: one ``.npy`` per image, mirroring the tree.

Images are read as the statistics were measured (their recorded read options), on the same
item runner as ``compute_stats`` (worker processes, ``on_error="skip"``, a DICOM series as
one volume). Each file is written atomically (temporary file, then rename); a manifest
records the method, its parameters, the read options and the stats file's SHA-256, so an
interrupted run resumes where it stopped and a run with other settings refuses to mix into
the same folder. Sources are only read; writing inside the source tree is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from torch import nn

from .atomic import atomic_write
from .errors import ImagenormError, OutputError, ReadError, display_path
from .methods import MethodOptions, build_transform, normalize_pixels, read_options_for
from .options import ReadOptions, check_choice
from .sources import PathSource, source_root
from .stats.accumulate import chunk_ranges, map_chunks
from .stats.items import ItemSource, as_item_source
from .stats.result import DatasetStats
from .version import __version__

MANIFEST = "imagenorm-manifest.json"
SCHEMA = "imagenorm.apply/1"


@dataclass
class ApplyReport:
    written: int = 0
    resumed: int = 0  # already written by an earlier, interrupted run
    skipped: list[dict[str, str]] = field(default_factory=list)
    output: str = ""


def output_names(keys: list[str], root: str) -> list[str]:
    """``a/b.png`` -> ``a/b.npy``; two sources that would share a name are an error."""
    names, seen = [], {}
    for key in keys:
        name = os.path.splitext(os.path.relpath(os.path.abspath(key), root))[0] + ".npy"
        if name in seen:
            raise ImagenormError(f"{display_path(key)} and {display_path(seen[name])} would both be written as {display_path(name)}")
        seen[name] = key
        names.append(name)
    return names


def refuse_inside(output: str, sources: list[str]) -> None:
    """Refuse an output folder that is, or lies inside, any of the ``sources`` folders."""
    out = os.path.realpath(output)
    for source in sources:
        src = os.path.realpath(source)
        if out == src or os.path.commonpath([out, src]) == src:
            raise ImagenormError(f"refusing to write inside the source tree {display_path(source)}; "
                                 "choose an output folder outside it")


def source_folders(source: PathSource, root: str) -> list[str]:
    """Every folder the sources name (a glob by its folder part), and the common root."""
    named = [source] if isinstance(source, (str, bytes, os.PathLike)) else list(source)
    folders = [root]
    for item in map(os.fspath, named):
        if os.path.isdir(item):
            folders.append(item)
        elif not os.path.exists(item):  # a glob: the folder before its first wildcard
            prefix = item.split("*")[0].split("?")[0].split("[")[0]
            folders.append(os.path.dirname(prefix) or ".")
    return folders


@dataclass
class WriteNormalized:
    """Normalize items ``start..stop-1`` and save them (what each worker runs on its chunks)."""

    items: ItemSource
    transform: nn.Module
    options: ReadOptions
    targets: list[str]
    on_error: str
    done: frozenset[int] = frozenset()

    def __call__(self, start: int, stop: int) -> tuple[list[int], list[int], list[dict[str, str]]]:
        written, resumed, skipped = [], [], []
        for index in range(start, stop):
            if index in self.done:
                resumed.append(index)
                continue
            try:
                image = self.items.load(index, self.options)
                try:
                    normalized = normalize_pixels(self.transform, image.pixels)
                except (ImagenormError, ValueError) as error:
                    raise ReadError(self.items.name(index), str(error)) from None
            except ReadError as error:
                if self.on_error == "fail":
                    raise
                skipped.append({"path": self.items.name(index), "reason": error.reason})
                continue
            _save_atomic(self.targets[index], normalized)
            written.append(index)
        return written, resumed, skipped


def apply_normalization(
    source: PathSource,
    stats: DatasetStats | None,
    stats_path: str | None,
    options: MethodOptions,
    output: str,
    *,
    on_error: str = "fail",
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    read_options: ReadOptions | None = None,
    **given: Any,
) -> ApplyReport:
    """Normalize every image of ``source`` with ``options`` and save float32 ``.npy`` files under ``output``.

    Images are read with the stats' recorded read options (``given`` may repeat them, never
    change them); a foreground mask decides per-image statistics only: every voxel is written.
    """
    check_choice("on_error", on_error)
    if os.path.exists(output) and not os.path.isdir(output):
        raise OutputError(f"{display_path(output)}: exists and is not a folder; choose an output folder")
    reading = read_options_for(stats, read_options, **given)
    items, _ = as_item_source(source, dicom_series=reading.dicom_series)
    keys = [items.key(index) for index in range(len(items))]
    root = source_root(keys, source)
    refuse_inside(output, source_folders(source, root))
    names = output_names(keys, root)
    mask = None
    if options.per_image and reading.mask is not None:
        from .masks import MaskSpec

        mask = MaskSpec.parse(reading.mask)
    transform = build_transform(stats, options, mask=mask)
    settings = _as_json({
        "method": asdict(options),
        "description": options.describe(),
        "read_options": reading.to_dict(),
        "stats_file": None if stats_path is None else display_path(os.path.abspath(stats_path)),
        "stats_sha256": None if stats_path is None else _sha256(stats_path),
    })
    os.makedirs(output, exist_ok=True)
    manifest = _open_manifest(output, settings, root)
    _write_json(os.path.join(output, MANIFEST), manifest)  # the settings first: any later stop resumes
    targets = [os.path.join(output, name) for name in names]
    # Every output file is complete (written atomically) and was made with these settings (the
    # manifest says so before the first one is written): whatever exists is done, whenever the
    # earlier run was killed.
    done = frozenset(index for index, target in enumerate(targets) if os.path.exists(target))
    work = WriteNormalized(items, transform, reading, targets, on_error, done)
    report = ApplyReport(output=output)
    for (written, resumed, skipped), size in map_chunks(work, list(chunk_ranges(len(items), workers)), workers):
        for index in written + resumed:
            manifest["files"][names[index]] = display_path(os.path.relpath(os.path.abspath(keys[index]), root))
        report.written += len(written)
        report.resumed += len(resumed)
        report.skipped += skipped
        if written:
            _write_json(os.path.join(output, MANIFEST), manifest)
        if progress is not None:
            progress(size)
    manifest["skipped"] = report.skipped
    _write_json(os.path.join(output, MANIFEST), manifest)
    return report


def _open_manifest(output: str, settings: dict, root: str) -> dict:
    """The manifest of an earlier run with the same settings (to resume), or a new one."""
    path = os.path.join(output, MANIFEST)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
        if manifest.get("schema") != SCHEMA:
            raise ImagenormError(f"{display_path(output)}: {MANIFEST} is not an imagenorm apply manifest")
        differ = [key for key in settings if manifest.get(key) != settings[key]]
        if differ == ["stats_sha256"]:
            raise ImagenormError(f"{display_path(output)} was made with another version of the stats file "
                                 f"{settings['stats_file']} (its content changed); choose another output folder")
        if differ:
            what = ", ".join(f"{key} {manifest.get(key)!r} there, {settings[key]!r} now" for key in differ
                             if key not in ("description", "stats_sha256"))
            raise ImagenormError(f"{display_path(output)} holds a copy made with other settings ({what}); "
                                 "choose another output folder")
        _remove_temporary_files(output)
        return manifest
    if os.listdir(output):
        raise ImagenormError(f"{display_path(output)} is not empty and holds no imagenorm manifest; choose an empty folder")
    return {"schema": SCHEMA, "created_by": f"imagenorm {__version__}", **settings,
            "source_root": display_path(root), "files": {}}


def _remove_temporary_files(output: str) -> None:
    """The half-written files of a killed run (the atomic writes' temporaries)."""
    for folder, _, names in os.walk(output):
        for name in names:
            if name.startswith(".imagenorm-") and name.endswith(".tmp"):
                os.unlink(os.path.join(folder, name))


def _save_atomic(target: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with atomic_write(target, "wb") as file:
        np.save(file, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)


def _write_json(path: str, document: dict) -> None:
    with atomic_write(path) as file:
        json.dump(document, file, indent=1)


def _as_json(document: dict) -> dict:
    """The document as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(document))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
