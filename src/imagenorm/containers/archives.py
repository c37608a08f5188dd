"""Images inside tar shards (WebDataset), zip archives, or one object behind a URL.

Each class indexes its file once (member names, offsets) and then reads one member's bytes
at a time, in any process. A damaged archive is indexed as far as it can be read; what is
left becomes a member that fails with the reason, so ``on_error="skip"`` lists it.

WebDataset: a sample is the run of consecutive members sharing a key (the member name up to
the first dot of its base name, folders included); its image is the member with an image
extension, or the one ``member`` names by its extension (``"seg.png"``).
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..errors import ReadError
from ..options import OptionError
from ..readers import image_extension, sniff_extension
from ..sources import is_hidden
from .storage import Storage

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ZIP_SUFFIXES = (".zip",)


@dataclass
class Member:
    """One image inside a container: its name, and where its bytes are (or why they cannot be read)."""

    name: str
    offset: int = 0
    size: int = 0
    error: str | None = None


@dataclass
class Container:
    """Images inside one file; ``read(position)`` gives one image's bytes and format extension."""

    storage: Storage
    members: list[Member] = field(default_factory=list)
    ignored: int = 0  # members passed over as not images
    hidden: int = 0  # hidden members (a name part starting with '.', __MACOSX) skipped
    read_whole = False  # a part of a unit costs as much as all of it (see ItemSource.read_whole)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def name(self) -> str:
        return self.storage.name

    def member_name(self, position: int) -> str:
        return self.members[position].name

    def units(self) -> list[tuple[int, int]]:
        """Ranges of members best read by one worker, in order (the whole file by default)."""
        return [(0, len(self))] if len(self) else []

    def read(self, position: int) -> tuple[bytes | memoryview, str]:
        """The bytes of member ``position`` and the extension of its format ("" if its name has none).

        Raises:
            ReadError: naming ``container:member`` and why.
        """
        member = self.members[position]
        if member.error is not None:
            raise ReadError(self.item_name(position), member.error)
        return self._bytes(position), image_extension(member.name)

    def item_name(self, position: int) -> str:
        return f"{self.name}:{self.member_name(position)}"

    def member_key(self, position: int) -> str:
        """The member as a relative path (what ``apply`` writes it as): never absolute, never
        above its container (``/a/b.png`` -> ``a/b.png``)."""
        parts = [part for part in self.member_name(position).replace("\\", "/").split("/") if part not in ("", ".", "..")]
        return "/".join(part.split(":")[-1] if index == 0 else part for index, part in enumerate(parts)) or "member"

    def release(self) -> None:
        """Drop open handles and caches (they are made again when needed)."""
        self.storage.close()

    def _bytes(self, position: int) -> bytes | memoryview:
        member = self.members[position]
        data = self.storage.read_at(member.offset, member.size)
        if len(data) < member.size:
            raise ReadError(f"{self.name}:{member.name}", f"truncated: the file ends after {len(data)} of its {member.size} bytes")
        return data


def is_hidden_member(name: str) -> bool:
    """A member below a hidden folder or named like one (``._a.png``, ``__MACOSX/...``)."""
    return any(is_hidden(part) or part == "__MACOSX" for part in name.split("/") if part not in ("", "."))


class TarShard(Container):
    """A tar file (``.tar``, ``.tar.gz``, ``.tgz``) read as WebDataset samples."""

    def __init__(self, storage: Storage, member: str | None = None) -> None:
        super().__init__(storage)
        self.compressed = bytes(storage.read_at(0, 2)) == b"\x1f\x8b"  # gzip, whatever the name says
        self.read_whole = self.compressed or storage.remote
        self._stream = None  # (pid, GzipFile) for a compressed shard
        self._index(member)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def release(self) -> None:
        self._stream = None
        super().release()

    def _index(self, wanted: str | None) -> None:
        """One pass over the headers (for a gzip shard, the whole stream, its checksum checked).
        Samples before a damaged part are kept; the damage becomes one failing member."""
        samples = []  # (key, [TarInfo...]) in order
        try:
            for info in tar_infos(self._file(), self._count_hidden, headers_first=True):
                key, _ = split_key(info.name)
                if samples and samples[-1][0] == key:
                    samples[-1][1].append(info)
                else:
                    samples.append((key, [info]))
        except TAR_DAMAGE as error:
            reason = getattr(error, "reason", None) or str(error) or type(error).__name__
            self._add_samples(samples, wanted)
            self.members.append(Member(f"(after {len(samples)} samples)",
                                       error=f"the shard is damaged or truncated: {reason}"))
            return
        self._add_samples(samples, wanted)

    def _count_hidden(self) -> None:
        self.hidden += 1

    def _add_samples(self, samples: list, wanted: str | None) -> None:
        for key, infos in samples:
            chosen = sample_image(self.name, key, infos, wanted)
            if chosen is None:  # a sample without an image; a sample's other members (labels) are its own
                self.ignored += len(infos)
                continue
            if isinstance(chosen, str):
                self.members.append(Member(key, error=chosen))
                continue
            member = Member(chosen.name, chosen.offset_data, chosen.size)
            if not self.compressed and chosen.offset_data + chosen.size > self.storage.size:
                member.error = (f"truncated: the shard ends inside this member ({self.storage.size - chosen.offset_data} "
                                f"of {chosen.size} bytes)")
            self.members.append(member)

    def _file(self):
        return tar_stream(self.storage, self.compressed)

    def _bytes(self, position: int) -> bytes | memoryview:
        if not self.compressed:
            return super()._bytes(position)
        member = self.members[position]
        if self._stream is None or self._stream[0] != os.getpid():
            self._stream = (os.getpid(), self._file())
        stream = self._stream[1]
        try:
            stream.seek(member.offset)  # forward: decompress on; backward: from the start
            data = stream.read(member.size)
        except (EOFError, zlib.error, OSError) as error:
            self._stream = None
            raise ReadError(f"{self.name}:{member.name}", f"the compressed shard is damaged: {error}") from None
        if len(data) < member.size:
            raise ReadError(f"{self.name}:{member.name}", f"truncated: the shard ends after {len(data)} of its {member.size} bytes")
        return data


def tar_stream(storage: Storage, compressed: bool | None = None):
    """A seekable stream of the tar bytes: a gzip shard decompressed (known by its first bytes);
    a plain one unbuffered (headers are read 512 bytes at a time, data skipped)."""
    if compressed is None:
        compressed = bytes(storage.read_at(0, 2)) == b"\x1f\x8b"
    return gzip.GzipFile(fileobj=storage.file(), mode="rb") if compressed else storage.file(buffered=False)


def tar_infos(stream, on_hidden: Callable[[], None] = lambda: None, *, headers_first: bool = False
              ) -> Iterator[tarfile.TarInfo]:
    """The members of the tar in ``stream`` that hold bytes, in order: links to earlier members
    resolved, hidden ones passed over (``on_hidden``). A damaged part after them raises (tarfile
    passes over a cut header in silence; see :func:`_check_end`).

    With ``headers_first``, the headers are read before the first member is given, by
    :func:`plain_headers` where the archive allows (20-50x faster than tarfile's parser).

    Raises:
        tarfile.TarError, EOFError, zlib.error, OSError, ReadError: the archive is damaged.
    """
    read = plain_headers(stream) if headers_first else None
    headers, damage = read if read is not None else (None, None)
    files: dict[str, tarfile.TarInfo] = {}
    if headers is None:
        stream.seek(0)
        headers = tarfile.open(fileobj=stream, mode="r:")
    for info in headers:
        info = _resolved(info, files)
        if info is None:
            continue
        if is_hidden_member(info.name):
            on_hidden()
            continue
        yield info
    if isinstance(headers, tarfile.TarFile):
        _check_end(stream, headers.offset)
    elif damage is not None:
        raise damage


class _Unusual(Exception):
    """A header :func:`plain_headers` leaves to tarfile."""


_ZERO_BLOCK = bytes(512)


def plain_headers(stream) -> tuple[list[tarfile.TarInfo], ReadError | None] | None:
    """Every header of a ustar, GNU or pax tar, read directly (name, size, type, link, data
    offset; pax ``path``/``size``/``linkpath`` and GNU long names applied), and what is wrong
    after them (as :func:`_check_end` finds it), or None where the archive has anything else
    (sparse files, global pax headers, base-256 sizes, a bad header checksum): tarfile then
    reads it, and decides."""
    try:
        return _plain_headers(stream)
    except (_Unusual, ValueError, IndexError, UnicodeDecodeError):
        return None


def _plain_headers(stream) -> tuple[list[tarfile.TarInfo], ReadError | None]:
    infos, offset, pending = [], 0, {}
    read = _Window(stream).read
    while True:
        header = read(offset, 512)
        if len(header) < 512 or header == _ZERO_BLOCK:
            try:
                _check_end(stream, offset)
            except (ReadError, EOFError, zlib.error, OSError) as damage:
                return infos, damage
            return infos, None
        if not _checksum_ok(header) or header[124] & 0x80:
            raise _Unusual
        size, kind = int(header[124:136].strip(b"\0 ") or b"0", 8), header[156:157]
        data = offset + 512
        offset = data + -(-size // 512) * 512
        if kind in (b"x", b"L", b"K"):
            extension = read(data, size)
            if kind == b"x":
                pending.update(_pax_records(extension))
            else:
                pending["path" if kind == b"L" else "linkpath"] = extension.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if kind not in (b"0", b"\0", b"7", b"1", b"2", b"3", b"4", b"5", b"6"):
            raise _Unusual
        name = _text(header[0:100])
        if header[257:263] == b"ustar\x00" and header[345] != 0:
            name = f"{_text(header[345:500])}/{name}"
        name = pending.pop("path", name)
        info = tarfile.TarInfo(name.rstrip("/") if kind == b"5" else name)
        info.type = tarfile.REGTYPE if kind == b"\0" else kind
        info.linkname = pending.pop("linkpath", _text(header[157:257]))
        if "size" in pending:
            size = int(pending.pop("size"))
            offset = data + -(-size // 512) * 512
        info.size, info.offset_data = size, data
        pending.clear()
        infos.append(info)


class _Window:
    """Reads of a stream served from its last 8 KiB read (a pax header, its records and the
    member's header usually lie in one)."""

    def __init__(self, stream) -> None:
        self.stream, self.start, self.data = stream, 0, b""

    def read(self, offset: int, size: int) -> bytes:
        if not (self.start <= offset and offset + size <= self.start + len(self.data)):
            self.stream.seek(offset)
            self.start, self.data = offset, self.stream.read(max(size, 8192))
        return self.data[offset - self.start:offset - self.start + size]


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = int(header[148:156].strip(b"\0 ") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(header[:148]) + 256 + sum(header[156:])


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """``"LEN key=value\\n"`` records of a pax extended header (the keys a reader needs here)."""
    records, position = {}, 0
    while position < len(data) and data[position:position + 1] != b"\0":
        length = int(data[position:data.index(b" ", position)])
        key, _, value = data[data.index(b" ", position) + 1:position + length - 1].partition(b"=")
        if key.decode() in ("path", "linkpath", "size"):
            records[key.decode()] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


TAR_DAMAGE = (tarfile.TarError, EOFError, zlib.error, OSError, ReadError)


def _resolved(info: tarfile.TarInfo, files: dict[str, tarfile.TarInfo]) -> tarfile.TarInfo | None:
    """A regular member as it is; a hard or symbolic link to an earlier member as that member's
    bytes under the link's name; anything else (folders, devices, dangling links) None."""
    if info.isfile():
        files[os.path.normpath(info.name)] = info
        return info
    if info.islnk() or info.issym():
        target = info.linkname if info.islnk() else os.path.join(os.path.dirname(info.name), info.linkname)
        found = files.get(os.path.normpath(target))
        if found is not None:
            link = tarfile.TarInfo(info.name)
            link.offset_data, link.size = found.offset_data, found.size
            return link
    return None


def _check_end(stream, offset: int) -> None:
    """After the last member only zeros may follow (the end-of-archive blocks): anything else is a
    cut or damaged header, which tarfile passes over in silence. Reading a gzip stream to its end
    checks its length and CRC."""
    stream.seek(offset)
    while chunk := stream.read(1 << 20):
        if chunk.count(0) != len(chunk):
            raise ReadError("", f"bytes after byte {offset} are not a tar header (a cut or damaged header)")


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension): ``a/b.seg.png`` -> (``a/b``, ``seg.png``)."""
    folder, base = os.path.split(name)
    stem, dot, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension


def sample_image(shard: str, key: str, infos: list, wanted: str | None):
    """The TarInfo of a WebDataset sample's image (``wanted``: by extension), None when it has
    none, or the reason (str) it cannot be chosen.

    Raises:
        OptionError: the sample has several images and ``wanted`` is None.
    """
    if wanted is not None:
        for info in infos:
            if split_key(info.name)[1].lower() == wanted.lower():
                return info
        if any(image_extension(info.name) for info in infos):
            extensions = ", ".join(split_key(info.name)[1] for info in infos)
            return f"sample {key!r} has no {wanted!r} member (it has {extensions})"
        return None
    images = [info for info in infos if image_extension(info.name)]
    if len(images) > 1:
        extensions = ", ".join(split_key(info.name)[1] for info in images)
        raise OptionError(f"{shard}: sample {key!r} has several images ({extensions}); "
                          f"choose one with member=, e.g. member={split_key(images[0].name)[1]!r}")
    return images[0] if images else None


class ZipArchive(Container):
    """A zip file: every image member, sorted by name."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.read_whole = storage.remote
        self._archive = None  # (pid, ZipFile)
        self._infos: list[zipfile.ZipInfo] = []  # one per member, in the same order
        try:
            archive = zipfile.ZipFile(storage.file())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
            reason = getattr(error, "reason", None) or str(error)
            raise ReadError(storage.location, f"not a readable zip archive: {reason}") from None
        for info in sorted(archive.infolist(), key=lambda info: info.filename):
            if info.is_dir():
                continue
            if is_hidden_member(info.filename):
                self.hidden += 1
            elif image_extension(info.filename) or (not os.path.splitext(info.filename)[1] and _dicom_member(archive, info)):
                self._infos.append(info)  # the same place as its member: two members may share a name
                self.members.append(Member(info.filename, size=info.file_size))
            else:
                self.ignored += 1
        self._archive = (os.getpid(), archive)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_archive": None}

    def release(self) -> None:
        self._archive = None
        super().release()

    def _bytes(self, position: int) -> bytes:
        member = self.members[position]
        if self._archive is None or self._archive[0] != os.getpid():
            self._archive = (os.getpid(), zipfile.ZipFile(self.storage.file()))
        try:
            return self._archive[1].read(self._infos[position])
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error, OSError) as error:
            reason = getattr(error, "reason", None) or str(error)
            raise ReadError(f"{self.name}:{member.name}", f"cannot be extracted: {reason}") from None


def _dicom_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether a member without extension starts like a DICOM file (slices named by UIDs)."""
    try:
        with archive.open(info) as member:
            return sniff_extension(member.read(1024)) == ".dcm"
    except Exception:
        return True  # read it, and let the reader say what is wrong


class Unreadable(Container):
    """A file that cannot be opened or indexed: one item that fails with the reason."""

    def __init__(self, storage: Storage, reason: str) -> None:
        super().__init__(storage, [Member("", error=reason)])

    def item_name(self, position: int) -> str:
        return self.name


class RemoteObject(Container):
    """One image file behind a URL."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage, [Member(os.path.basename(storage.location.rstrip("/")))])
        self.read_whole = True

    def item_name(self, position: int) -> str:
        return self.name

    def read(self, position: int) -> tuple[bytes | memoryview, str]:
        try:
            data = self.storage.read_at(0, self.storage.size)
        except ReadError as error:
            raise ReadError(self.name, error.reason) from None
        return data, image_extension(self.members[0].name)
