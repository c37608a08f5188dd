"""Images in a column of parquet or Arrow files (Hugging Face datasets as they are on disk).

Hugging Face's ``Image`` feature is an Arrow struct ``{bytes: binary, path: string}``; the
features are JSON in the schema metadata under ``huggingface``. The image column is the one
column of that feature (or, without the metadata, the one struct of those two fields), or the
column named by ``column`` (a plain binary column too). A cell with only ``path`` is read
from that file, relative to the dataset's folder. Files are read with pyarrow one row group
(parquet) or one file (Arrow, memory-mapped) at a time.
"""

from __future__ import annotations

import json
import os
from typing import Callable


from ..errors import ImagenormError, ReadError, display_path, first_line
from ..options import OptionError
from ..readers import image_extension, sniff_extension
from ..sources import Offsets
from .archives import Container
from .storage import Storage

TABLE_SUFFIXES = (".parquet", ".arrow")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ImagenormError("reading parquet and Arrow files needs pyarrow: pip install 'imagenorm[hf]'") from None
    return pyarrow


def image_columns(schema) -> list[str]:
    """The columns holding images: Hugging Face ``Image`` features, else ``{bytes, path}`` structs."""
    features = hf_features(schema)
    if features is not None:
        return [name for name, feature in features.items() if isinstance(feature, dict) and feature.get("_type") == "Image"
                and name in schema.names]
    return [field.name for field in schema if _is_image_struct(field.type)]


def hf_features(schema) -> dict | None:
    """The ``features`` Hugging Face recorded in the schema metadata, or None."""
    metadata = schema.metadata or {}
    if b"huggingface" not in metadata:
        return None
    try:
        features = json.loads(metadata[b"huggingface"]).get("info", {}).get("features")
    except (ValueError, AttributeError):
        return None
    return features if isinstance(features, dict) else None


def _is_image_struct(kind) -> bool:
    pa = _pyarrow()
    if not pa.types.is_struct(kind):
        return False
    names = {kind.field(i).name: kind.field(i).type for i in range(kind.num_fields)}
    return "bytes" in names and _is_binary(names["bytes"]) and "path" in names


def _is_binary(kind) -> bool:
    pa = _pyarrow()
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def choose_column(schema, column: str | None, where: str) -> str:
    """The image column of ``schema``: ``column`` if given (checked), else the only one.

    Raises:
        OptionError: see :func:`pick_column`.
    """
    def holds(name: str) -> str | None:
        kind = schema.field(name).type
        return None if _is_image_struct(kind) or _is_binary(kind) else f"{kind}, not images"

    return pick_column(where, list(schema.names), image_columns(schema), column, holds)


def pick_column(where: str, columns: list[str], images: list[str], column: str | None,
                refusal: Callable[[str], str | None]) -> str:
    """``column`` if it exists and holds images (``refusal(column)`` says why not, for a column
    that is not one of ``images``), else the only image column.

    Raises:
        OptionError: the column is missing or holds no images, or there are several image
            columns or none (listing them, or every column).
    """
    if column is not None:
        if column not in columns:
            raise OptionError(f"{where}: no column {column!r}; columns: {', '.join(columns)}")
        why = None if column in images else refusal(column)
        if why is not None:
            listed = f"image columns: {', '.join(images)}" if images else "it has no image column"
            raise OptionError(f"{where}: column {column!r} holds {why}; {listed}")
        return column
    if len(images) == 1:
        return images[0]
    if images:
        raise OptionError(f"{where}: several image columns ({', '.join(images)}); choose one with column=")
    raise OptionError(f"{where}: no image column (columns: {', '.join(columns)}); name the column of images with column=")


class TableFile(Container):
    """The images of one column of a parquet file (``units``: its row groups) or Arrow file."""

    def __init__(self, storage: Storage, column: str | None, root: str) -> None:
        super().__init__(storage)
        self.root = root  # where cells with only a path are looked up
        self.parquet = storage.location.lower().split("?", 1)[0].endswith(".parquet")
        self.read_whole = self.parquet or storage.remote  # a parquet row group is read whole
        self._cache = None  # (pid, row group, column array)
        self._batches = None  # Arrow: (pid, the column of every record batch)
        self._parquet = None  # (pid, ParquetFile): its footer parsed once
        schema, rows = self._schema()
        self.column = choose_column(schema, column, self.name)
        self._groups = Offsets(rows)  # row groups (parquet) or record batches (Arrow)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None, "_batches": None, "_parquet": None}

    def release(self) -> None:
        self._cache = self._batches = self._parquet = None
        super().release()

    def units(self) -> list[tuple[int, int]]:
        starts = self._groups.starts
        return [(start, stop) for start, stop in zip(starts, starts[1:]) if stop > start]

    def __len__(self) -> int:
        return len(self._groups)

    def member_name(self, position: int) -> str:
        return f"row {position}"

    def member_key(self, position: int) -> str:
        return f"row-{position:08d}"

    def read(self, position: int) -> tuple[bytes | memoryview, str]:
        group, row = self._groups.locate(position)
        column = self._group(group)
        cell = column[row]
        name = self.item_name(position)
        if not cell.is_valid:
            raise ReadError(name, f"the {self.column!r} cell is null")
        if hasattr(cell, "as_buffer"):  # a binary column
            return _checked(cell.as_buffer(), name), ""
        values = {key: value for key, value in cell.items()}
        data, path = values.get("bytes"), values.get("path")
        if data is not None and data.is_valid:
            extension = image_extension(path.as_py()) if path is not None and path.is_valid else ""
            data = _checked(data.as_buffer(), name)
            return data, sniff_extension(data) or extension
        if path is None or not path.is_valid:
            raise ReadError(name, f"the {self.column!r} image has neither bytes nor a path")
        return self._read_path(path.as_py(), name)

    def _read_path(self, path: str, name: str) -> tuple[bytes, str]:
        """A cell's file: an absolute path as it is, a relative one in the dataset's folder, then
        beside the file holding the cell (never the current directory)."""
        folders = [] if self.storage.remote else [self.root, os.path.dirname(self.storage.location)]
        candidates = [path] if os.path.isabs(path) else [os.path.join(folder, path) for folder in folders if folder]
        for candidate in candidates:
            if os.path.isfile(candidate):
                try:
                    with open(candidate, "rb") as file:
                        return file.read(), image_extension(candidate)
                except OSError as error:
                    raise ReadError(name, f"its image {display_path(candidate)}: {error.strerror or error}") from None
        raise ReadError(name, f"its image is the file {display_path(path)}, which is not found "
                              f"(looked in {display_path(self.root)})")

    def _schema(self):
        pa = _pyarrow()
        try:
            if self.parquet:
                metadata = pa.parquet.ParquetFile(self._source()).metadata
                rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
                return metadata.schema.to_arrow_schema(), rows
            reader = self._arrow_reader()
            return reader.schema, [batch.num_rows for batch in reader]
        except (pa.ArrowException, OSError, ValueError) as error:
            raise ReadError(self.storage.location, f"not a readable {'parquet' if self.parquet else 'Arrow'} file: "
                                                   f"{first_line(error)}") from None

    def _source(self):
        return self.storage.file() if self.storage.remote else self.storage.location

    def _arrow_reader(self):
        """Hugging Face writes the Arrow IPC stream format; the file format is read too."""
        pa = _pyarrow()
        source = self.storage.file() if self.storage.remote else pa.memory_map(self.storage.location)
        try:
            return pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            return _FileBatches(reader)

    def _group(self, group: int):
        """The image column of one row group (parquet) or record batch (Arrow), cached per process."""
        if self._cache is not None and self._cache[:2] == (os.getpid(), group):
            return self._cache[2]
        if not self.parquet and self._batches is not None and self._batches[0] == os.getpid():
            self._cache = (os.getpid(), group, self._batches[1][group])
            return self._cache[2]
        pa = _pyarrow()
        try:
            if self.parquet:
                if self._parquet is None or self._parquet[0] != os.getpid():
                    self._parquet = (os.getpid(), pa.parquet.ParquetFile(self._source()))
                table = self._parquet[1].read_row_group(group, columns=[self.column])
                column = table.column(0).combine_chunks()
            else:  # every batch at once: memory-mapped, so no copy (a remote file is read whole)
                batches = list(self._arrow_reader())
                index = batches[0].schema.get_field_index(self.column)
                self._batches = (os.getpid(), [batch.column(index) for batch in batches])
                column = self._batches[1][group]
        except (pa.ArrowException, OSError, ValueError, StopIteration) as error:
            raise ReadError(f"{self.name}:row group {group}", f"cannot be read: {first_line(error)}") from None
        self._cache = (os.getpid(), group, column)
        return column


class _FileBatches:
    """The record batches of an Arrow IPC file, iterable like a stream reader."""

    def __init__(self, reader) -> None:
        self.reader, self.schema = reader, reader.schema

    def __iter__(self):
        return (self.reader.get_batch(i) for i in range(self.reader.num_record_batches))


def _checked(buffer, name: str) -> memoryview:
    if buffer is None or buffer.size == 0:
        raise ReadError(name, "the image bytes are empty")
    return memoryview(buffer)



# -- Hugging Face ``save_to_disk`` folders and Hub snapshots --------------------------------------

def saved_dataset_files(folder: str, split: str | None) -> tuple[list[str], str]:
    """The Arrow files of a ``save_to_disk`` folder (a ``DatasetDict``: of ``split``, default
    ``"train"``), in order, and the folder of the split.

    Raises:
        ImagenormError: the split is missing (listing the splits), or the folder is damaged.
    """
    dict_file = os.path.join(folder, "dataset_dict.json")
    if os.path.isfile(dict_file):
        splits = _json(dict_file).get("splits") or sorted(
            name for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name, "state.json")))
        chosen = split or "train"
        if chosen not in splits:
            raise OptionError(f"{display_path(folder)}: no split {chosen!r}; splits: {', '.join(splits)} "
                                 "(choose one with split=)")
        folder = os.path.join(folder, chosen)
    elif split is not None:
        raise OptionError(f"{display_path(folder)}: a single dataset without splits; split={split!r} does not apply")
    state = _json(os.path.join(folder, "state.json"))
    names = [entry.get("filename") for entry in state.get("_data_files", [])]
    if not names or not all(isinstance(name, str) for name in names):
        names = sorted(name for name in os.listdir(folder) if name.endswith(".arrow"))
    return [os.path.join(folder, name) for name in names], folder


def is_saved_dataset(folder: str) -> bool:
    """Whether ``folder`` was written by ``datasets``' ``save_to_disk`` (a Dataset or DatasetDict)."""
    return os.path.isfile(os.path.join(folder, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(folder, "state.json")) and os.path.isfile(os.path.join(folder, "dataset_info.json")))


#: The words Hugging Face's data-file patterns take as split names (``datasets.data_files``).
SPLIT_WORDS = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval", "evaluation")


def split_of(path: str) -> str:
    """The split a Hub parquet file's name or folder says, as Hugging Face's patterns read it,
    or "": ``data/train-00000-of-00003.parquet`` -> ``train``, ``test.parquet`` -> ``test``,
    ``default/validation/0000.parquet`` -> ``validation``, ``my-photos.parquet`` -> ""."""
    path = path.split("?", 1)[0]
    stem = os.path.basename(path).split(".")[0].lower()
    for word in SPLIT_WORDS:
        if stem == word or (stem.startswith(word) and stem[len(word)] in "-_0123456789"):
            return word
    folder = os.path.basename(os.path.dirname(path)).lower()
    return folder if folder in SPLIT_WORDS else ""


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except (OSError, ValueError) as error:
        raise ImagenormError(f"{display_path(path)}: cannot be read as JSON ({error})") from None
    if not isinstance(document, dict):
        raise ImagenormError(f"{display_path(path)}: expected a JSON object")
    return document
