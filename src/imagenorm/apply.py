"""Write a normalized float32 copy of a dataset: one file per image, mirroring the tree.

Each image becomes a ``.npy``, a NIfTI file with its NIfTI source's header (``.nii.gz``) or a
TIFF (``.tiff``), as :mod:`imagenorm.writers` describes.

Images are read as the statistics were measured (their recorded read options), on the same
item runner as ``compute_stats`` (worker processes, ``on_error="skip"``, a DICOM series as
one volume). Each file is written atomically (temporary file, then rename); a manifest
records the output format, the method, its parameters, the read options and the stats file's
SHA-256, so an interrupted run resumes where it stopped and a run with other settings refuses
to mix into the same folder. Sources are only read; writing inside the source tree is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from torch import nn

from .atomic import atomic_write
from .errors import ImagenormError, OutputError, ReadError, display_path
from .containers import ContainerItems, Selection
from .masks import MaskSpec
from .methods import MethodOptions, build_transform, item_mask, normalize_pixels, read_options_for
from .options import OptionError, ReadOptions, check_choice
from .readers import image_extension
from .sources import PathSource, named_folders, source_root
from .stats.accumulate import map_chunks, plan_chunks
from .stats.items import FileItems, ItemSource, as_item_source
from .stats.result import DatasetStats
from .version import __version__
from .writers import SUFFIXES, check_nifti_source, write_image

MANIFEST = "imagenorm-manifest.json"
SCHEMA = "imagenorm.apply/1"


@dataclass
class ApplyReport:
    written: int = 0
    resumed: int = 0  # already written by an earlier, interrupted run
    skipped: list[dict[str, str]] = field(default_factory=list)
    output: str = ""


def output_names(keys: list[str], root: str, suffix: str = ".npy") -> list[str]:
    """``a/b.png`` -> ``a/b.npy``, ``scan.nii.gz`` -> ``scan.npy``, a UID-named DICOM file
    ``1.2.840.5`` -> ``1.2.840.5.npy`` (or another ``suffix``: ``.tiff``, ``.nii.gz``); two
    sources that would share a name are an error."""
    names, seen = [], {}
    for key in keys:
        relative = os.path.relpath(os.path.abspath(key), root)
        name = relative[: len(relative) - len(image_extension(relative))] + suffix
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


@dataclass
class WriteNormalized:
    """Normalize items ``start..stop-1`` and save them (what each worker runs on its chunks).

    Returns the indices written and resumed, the skipped items, and the error that stopped
    the chunk under ``on_error="fail"`` (so that what was written before it is recorded).
    """

    items: ItemSource
    transform: nn.Module
    options: ReadOptions
    targets: list[str]
    on_error: str
    done: frozenset[int] = frozenset()
    output_format: str = "npy"
    mask: MaskSpec | None = None  # each image's foreground, for a transform that takes it per call

    def __call__(self, start: int, stop: int):
        written, resumed, skipped = [], [], []
        for index in range(start, stop):
            if index in self.done:
                resumed.append(index)
                continue
            try:
                self._write(index)
            except ReadError as error:
                if self.on_error == "fail":
                    return written, resumed, skipped, error
                skipped.append({"path": self.items.name(index), "reason": error.reason})
                continue
            written.append(index)
        return written, resumed, skipped, None

    def _write(self, index: int) -> None:
        image = self.items.load(index, self.options)
        try:
            foreground = item_mask(self.transform, self.mask, image.pixels, self.items.path(index) or "", image.channels)
            normalized = normalize_pixels(self.transform, image.pixels, foreground)
        except ImagenormError as error:
            raise ReadError(self.items.name(index), str(error)) from None
        write_image(self.targets[index], normalized, self.output_format, name=self.items.name(index),
                    channels=image.channels, source=self.items.path(index), nifti_4d=self.options.nifti_4d)


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
    column: str | None = None,
    member: str | None = None,
    split: str | None = None,
    output_format: str = "npy",
    **given: Any,
) -> ApplyReport:
    """Normalize every image of ``source`` with ``options`` and save float32 files under ``output``:
    ``.npy``, ``.nii.gz`` (``output_format="nifti"``: NIfTI sources on disk, their header kept)
    or ``.tiff`` (see :mod:`imagenorm.writers`).

    Images are read with the stats' recorded read options (``given`` may repeat them, never
    change them); a foreground mask decides per-image statistics only: every voxel is written.
    An earlier run into ``output`` with the same settings resumes: a file it wrote counts as
    done while its source is unchanged (size and modification time).
    """
    check_choice("on_error", on_error)
    check_choice("output_format", output_format)
    if os.path.exists(output) and not os.path.isdir(output):
        raise OutputError(f"{display_path(output)}: exists and is not a folder; choose an output folder")
    reading = read_options_for(stats, read_options, **given)
    if not _named_by_path(source):
        raise OptionError(f"apply writes a copy of files, archives or shards named by path, not of a "
                          f"{type(source).__name__}; normalize it with normalize_dataset(...) or hf_transform(...)")
    items, _ = as_item_source(source, reading.groups_series, Selection(column, member, split))
    if output_format == "nifti":
        for index in range(len(items)):
            check_nifti_source(items.name(index), items.path(index))
    keys = [items.key(index) for index in range(len(items))]
    root = items.root() if isinstance(items, ContainerItems) else source_root(keys, source)
    refuse_inside(output, _source_folders(items, root, source))
    names = output_names(keys, root, SUFFIXES[output_format])
    uses_mask = options.per_image or options.method == "histogram"  # each image's own statistics or landmarks
    mask = MaskSpec.from_options(reading, root if isinstance(items, FileItems) else None) if uses_mask else None
    transform = build_transform(stats, options, mask=mask)
    manifest = _open_manifest(output, _settings(options, reading, stats_path, root, output_format))
    _write_json(os.path.join(output, MANIFEST), manifest)  # the settings first: any later stop resumes
    stated: dict[str, str] = {}  # the members of one archive share its identity: one stat
    masks = mask if mask is not None and mask.kind == "folder" else None  # a changed mask file redoes its image
    sources = [{"source": display_path(os.path.relpath(os.path.abspath(key), root)),
                "identity": _identity(items.files(index) + ([masks.mask_file(items.path(index))] if masks else []), stated)}
               for index, key in enumerate(keys)]
    targets = [os.path.join(output, name) for name in names]
    _refuse_outside(output, targets, keys)
    done = frozenset(index for index, name in enumerate(names)
                     if manifest["files"].get(name) == sources[index] and os.path.exists(targets[index]))
    work = WriteNormalized(items, transform, reading, targets, on_error, done, output_format, mask)
    report = ApplyReport(output=output)
    for (written, resumed, skipped, failure), size in map_chunks(work, plan_chunks(items, workers), workers):
        for index in written + resumed:
            manifest["files"][names[index]] = sources[index]
        report.written, report.resumed = report.written + len(written), report.resumed + len(resumed)
        report.skipped += skipped
        if written or failure is not None:
            _write_json(os.path.join(output, MANIFEST), manifest)
        if failure is not None:
            raise failure
        if progress is not None:
            progress(size)
    manifest["skipped"] = report.skipped
    _write_json(os.path.join(output, MANIFEST), manifest)
    return report


def _settings(options: MethodOptions, reading: ReadOptions, stats_path: str | None, root: str,
              output_format: str) -> dict:
    """What a copy is made with; a resumed run must match it exactly."""
    return _as_json({
        "format": output_format,
        "method": asdict(options),
        "description": options.describe(),
        "read_options": reading.to_dict(),
        "source_root": display_path(root),
        "stats_file": None if stats_path is None else display_path(os.path.abspath(stats_path)),
        "stats_sha256": None if stats_path is None else _sha256(stats_path),
    })


def _refuse_outside(output: str, targets: list[str], keys: list[str]) -> None:
    """No target may lie outside ``output`` (an archive member named ``../x`` or ``/x``)."""
    inside = os.path.abspath(output)
    for target, key in zip(targets, keys):
        if os.path.commonpath([inside, os.path.abspath(target)]) != inside:
            raise ImagenormError(f"{display_path(key)} would be written outside {display_path(output)}")


def _named_by_path(source: Any) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return True
    return isinstance(source, (list, tuple)) and bool(source) and all(isinstance(item, (str, os.PathLike)) for item in source)


def _source_folders(items: ItemSource, root: str, source: PathSource) -> list[str]:
    """The folders writing into is refused: the source tree; for archives, parquet and Arrow
    files only a named dataset folder (a copy beside a shard touches no source)."""
    if isinstance(items, ContainerItems):
        named = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        return [os.fspath(item) for item in named if isinstance(item, (str, os.PathLike)) and os.path.isdir(item)]
    return [root, *named_folders(source)]


def _identity(paths: list[str], stated: dict[str, str]) -> str:
    """Size and modification time of every file behind an item (each file stated once)."""
    for path in paths:
        if path not in stated:
            try:
                info = os.stat(path)
                stated[path] = f"{info.st_size}:{info.st_mtime_ns}"
            except OSError:
                stated[path] = "missing"
    return ";".join(stated[path] for path in paths)


def _open_manifest(output: str, settings: dict) -> dict:
    """The manifest of an earlier run with the same settings (to resume), or a new one."""
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, MANIFEST)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as file:
                manifest = json.load(file)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise OutputError(f"{display_path(path)}: not a readable imagenorm manifest ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA or not isinstance(manifest.get("files"), dict):
            raise ImagenormError(f"{display_path(output)}: {MANIFEST} is not an imagenorm apply manifest")
        manifest.setdefault("format", "npy")  # written before there was a choice
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
    return {"schema": SCHEMA, "created_by": f"imagenorm {__version__}", **settings, "files": {}}


def _remove_temporary_files(output: str) -> None:
    """The half-written files of a killed run (the atomic writes' temporaries)."""
    for folder, _, names in os.walk(output):
        for name in names:
            if name.startswith(".imagenorm-") and name.endswith(".tmp"):
                os.unlink(os.path.join(folder, name))


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
