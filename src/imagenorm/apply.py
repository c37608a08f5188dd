"""Write a normalized float32 copy of a dataset: one ``.npy`` per image, mirroring the tree.

Each file is written atomically (temporary file, then rename); a manifest records the
method, its parameters and the stats file's SHA-256, so an interrupted run resumes
where it stopped and a run with other settings refuses to mix into the same folder.
Sources are only read; writing inside the source tree is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import __version__
from .atomic import atomic_write
from .datasets import ImageFolderDataset
from .errors import ImagenormError, ReadError, display_path
from .methods import MethodOptions, build_transform
from .sources import PathSource, source_root

MANIFEST = "imagenorm-manifest.json"
SCHEMA = "imagenorm.apply/1"


@dataclass
class ApplyReport:
    written: int = 0
    resumed: int = 0  # already written by an earlier, interrupted run
    skipped: list[dict[str, str]] = field(default_factory=list)
    output: str = ""


def output_names(paths: list[str], root: str) -> list[str]:
    """``a/b.png`` -> ``a/b.npy``; two sources that would share a name are an error."""
    names, seen = [], {}
    for path in paths:
        name = os.path.splitext(os.path.relpath(os.path.abspath(path), root))[0] + ".npy"
        if name in seen:
            raise ImagenormError(f"{display_path(path)} and {display_path(seen[name])} would both be written as {display_path(name)}")
        seen[name] = path
        names.append(name)
    return names


def refuse_inside(output: str, root: str) -> None:
    out, src = os.path.realpath(output), os.path.realpath(root)
    if out == src or os.path.commonpath([out, src]) == src:
        raise ImagenormError(f"refusing to write inside the source tree {display_path(root)}; choose an output folder outside it")


def apply_normalization(
    source: PathSource,
    stats,
    stats_path: str | None,
    options: MethodOptions,
    output: str,
    *,
    on_error: str = "fail",
    progress: Callable[[int], None] | None = None,
) -> ApplyReport:
    """Normalize every image of ``source`` with ``options`` and save float32 ``.npy`` files under ``output``."""
    transform = build_transform(stats, options)
    dataset = ImageFolderDataset(source, labels=False)
    root = source_root(dataset.paths, source)
    refuse_inside(output, root)
    names = output_names(dataset.paths, root)
    settings = _as_json({
        "method": asdict(options),
        "description": options.describe(),
        "stats_file": None if stats_path is None else display_path(os.path.abspath(stats_path)),
        "stats_sha256": None if stats_path is None else _sha256(stats_path),
    })
    os.makedirs(output, exist_ok=True)
    manifest = _open_manifest(output, settings, root)
    report = ApplyReport(output=output)
    for index, (path, name) in enumerate(zip(dataset.paths, names)):
        target = os.path.join(output, name)
        if name in manifest["files"] and os.path.exists(target):
            report.resumed += 1
        else:
            try:
                normalized = transform(dataset.load(index))
            except ReadError as error:
                if on_error == "fail":
                    raise
                report.skipped.append({"path": display_path(path), "reason": error.reason})
                continue
            except (ValueError, ImagenormError) as error:
                raise ImagenormError(f"{display_path(path)}: {error}") from None
            _save_atomic(target, normalized.numpy())
            manifest["files"][name] = display_path(os.path.relpath(os.path.abspath(path), root))
            report.written += 1
            if report.written % 100 == 0:
                _write_json(os.path.join(output, MANIFEST), manifest)
        if progress is not None:
            progress(1)
    manifest["skipped"] = report.skipped
    _write_json(os.path.join(output, MANIFEST), manifest)
    return report


def _open_manifest(output: str, settings: dict, root: str) -> dict:
    """The manifest of an earlier run with the same settings (to resume), or a new one."""
    path = os.path.join(output, MANIFEST)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
        earlier = {key: manifest.get(key) for key in settings}
        if manifest.get("schema") != SCHEMA or earlier != settings:
            raise ImagenormError(
                f"{display_path(output)} holds a copy made with other settings ({manifest.get('description')}, "
                f"stats {manifest.get('stats_file')}); choose another output folder"
            )
        return manifest
    if os.listdir(output):
        raise ImagenormError(f"{display_path(output)} is not empty and holds no imagenorm manifest; choose an empty folder")
    return {"schema": SCHEMA, "created_by": f"imagenorm {__version__}", **settings,
            "source_root": display_path(root), "files": {}}


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
