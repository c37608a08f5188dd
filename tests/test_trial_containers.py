"""Trial of issue 12 ("data where it lives"): tar/zip/parquet/Arrow/URL sources.

Each test makes its own data. Tests marked "finding" fail on the code as tried and pass
once the bug is fixed; the others pin behaviours verified to be right (16-bit exactness
against a float64 numpy reference, worker equality, one-line errors).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import zipfile

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app
from imagenorm.errors import ImagenormError
from imagenorm.options import OptionError

from conftest import assert_matches_reference, reference

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def png16(rgb: np.ndarray) -> bytes:
    """16-bit PNG bytes (RGB given in RGB order; OpenCV stores it correctly)."""
    pixels = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels))
    assert ok
    return data.tobytes()


def chw(hwc: np.ndarray) -> np.ndarray:
    return hwc[None] if hwc.ndim == 2 else np.moveaxis(hwc, -1, 0)


def images16(n: int, seed: int = 0, rgb: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (lambda i: (9 + i, 11, 3)) if rgb else (lambda i: (9 + i, 11))
    return [rng.integers(0, 65536, shape(i), dtype=np.uint16) for i in range(n)]


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture
def http_root(tmp_path):
    """A folder served by ``python -m http.server`` on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield root, base
    finally:
        server.terminate()
        server.wait(10)


# ---------------------------------------------------------------------------------------------
# Verified behaviours (pass now)
# ---------------------------------------------------------------------------------------------

def test_ok_webdataset_shards_16bit_rgb_exact_and_workers_equal(tmp_path):
    import webdataset as wds

    images = images16(5)
    pattern = str(tmp_path / "train-%03d.tar")
    with wds.ShardWriter(pattern, maxcount=2, verbose=0) as writer:
        for i, image in enumerate(images):
            writer.write({"__key__": f"sub/s{i}", "png": png16(image), "cls": b"1"})
    source = str(tmp_path / "train-{000..002}.tar")
    serial = imagenorm.compute_stats(source)
    assert serial.dtype == "uint16" and serial.files == 5
    assert_matches_reference(serial, reference([chw(i) for i in images]))
    parallel = imagenorm.compute_stats(source, workers=2)
    assert parallel.channels == serial.channels and parallel.pooled == serial.pooled


def test_ok_zip_and_tgz_16bit_exact_equal_to_folder(tmp_path):
    images = images16(4, seed=1)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{i}.png").write_bytes(png16(image))
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        for i in range(4):
            archive.write(folder / f"{i}.png", f"imgs/{i}.png")
        archive.writestr("__MACOSX/imgs/._0.png", b"junk")
    with tarfile.open(tmp_path / "a.tgz", "w:gz") as archive:
        for i in range(4):
            archive.add(folder / f"{i}.png", arcname=f"{i}.png")
    plain = imagenorm.compute_stats(str(folder))
    for name in ("a.zip", "a.tgz"):
        for workers in (0, 2):
            got = imagenorm.compute_stats(str(tmp_path / name), workers=workers)
            assert got.dtype == "uint16" and got.files == 4
            assert_matches_reference(got, reference([chw(i) for i in images]))
            assert got.channels == plain.channels and got.pooled == plain.pooled


def test_ok_parquet_from_datasets_16bit_exact_row_groups_and_workers(tmp_path):
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    images = images16(5, seed=2)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png16(image))
        paths.append(str(path))
    dataset = datasets.Dataset.from_dict({"image": paths, "label": list(range(5))}).cast_column("image", datasets.Image())
    pq.write_table(dataset.data.table, tmp_path / "rg.parquet", row_group_size=2)
    ref = reference([chw(i) for i in images])
    for workers in (0, 2):
        got = imagenorm.compute_stats(str(tmp_path / "rg.parquet"), workers=workers)
        assert got.dtype == "uint16"
        assert_matches_reference(got, ref)
    got = imagenorm.compute_stats(dataset)  # the Dataset object: 16 bits kept (not Pillow's 8)
    assert got.dtype == "uint16"
    assert_matches_reference(got, ref)


def test_ok_member_selects_seg_and_several_images_is_a_usage_error(tmp_path):
    import webdataset as wds

    rng = np.random.default_rng(3)
    segs = [rng.integers(0, 5, (6, 7), dtype=np.uint8) for _ in range(3)]
    with wds.TarWriter(str(tmp_path / "m.tar")) as writer:
        for i, seg in enumerate(segs):
            writer.write({"__key__": f"s{i}", "png": png16(images16(1, seed=i)[0]), "seg.png": png16(seg)})
    got = imagenorm.compute_stats(str(tmp_path / "m.tar"), member="seg.png")
    assert got.dtype == "uint8"
    assert_matches_reference(got, reference([chw(s) for s in segs]))
    result = invoke("stats", tmp_path / "m.tar", "-q")
    assert result.exit_code == 2
    assert "several images" in result.output and "--member" in result.output


def test_ok_damaged_members_are_one_line_errors_and_skip_lists_them(tmp_path):
    images = images16(3, seed=4)
    with zipfile.ZipFile(tmp_path / "crc.zip", "w", zipfile.ZIP_STORED) as archive:
        for i, image in enumerate(images):
            archive.writestr(f"{i}.png", png16(image))
    data = bytearray((tmp_path / "crc.zip").read_bytes())
    with zipfile.ZipFile(tmp_path / "crc.zip") as archive:
        info = archive.getinfo("1.png")
    data[info.header_offset + 30 + len("1.png") + 100] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(data))
    result = invoke("stats", tmp_path / "crc.zip", "-q")
    assert result.exit_code == 1
    assert "crc.zip:1.png" in result.output and "Traceback" not in result.output
    got = imagenorm.compute_stats(str(tmp_path / "crc.zip"), on_error="skip")
    assert [entry["path"].endswith("crc.zip:1.png") for entry in got.skipped] == [True]
    assert_matches_reference(got, reference([chw(images[0]), chw(images[2])]))


def test_ok_split_and_column_errors_list_the_choices(tmp_path):
    datasets = pytest.importorskip("datasets")
    paths = []
    for i, image in enumerate(images16(2, seed=5)):
        (tmp_path / f"{i}.png").write_bytes(png16(image))
        paths.append(str(tmp_path / f"{i}.png"))
    both = datasets.Dataset.from_dict({"a": paths, "b": paths, "t": ["x", "y"]})
    both = both.cast_column("a", datasets.Image()).cast_column("b", datasets.Image())
    both.to_parquet(str(tmp_path / "two.parquet"))
    result = invoke("stats", tmp_path / "two.parquet", "-q")
    assert result.exit_code == 2 and "a, b" in result.output
    result = invoke("stats", tmp_path / "two.parquet", "--column", "t", "-q")
    assert result.exit_code == 2 and "image columns: a, b" in result.output
    datasets.DatasetDict({"train": both, "validation": both}).save_to_disk(str(tmp_path / "dd"))
    result = invoke("stats", tmp_path / "dd", "--split", "test", "--column", "a", "-q")
    assert result.exit_code == 2 and "train, validation" in result.output


def test_ok_http_shards_equal_local_and_404_is_one_line(tmp_path, http_root):
    root, base = http_root
    images = images16(4, seed=6)
    for shard in range(2):
        with tarfile.open(root / f"s-{shard}.tar", "w") as archive:
            for i in range(2):
                add_member(archive, f"k{shard}{i}.png", png16(images[2 * shard + i]))
    local = imagenorm.compute_stats(str(root / "s-{0..1}.tar"))
    remote = imagenorm.compute_stats(base + "/s-{0..1}.tar", workers=2)
    assert remote.channels == local.channels and remote.pooled == local.pooled
    assert_matches_reference(remote, reference([chw(i) for i in images]))
    result = invoke("stats", base + "/missing.tar", "-q")
    assert result.exit_code == 1 and "missing.tar: not found" in result.output


def test_ok_apply_and_check_on_a_tar_leave_it_untouched(tmp_path):
    images = images16(2, seed=7)
    with tarfile.open(tmp_path / "t-000.tar", "w") as archive:
        for i, image in enumerate(images):
            add_member(archive, f"k{i}.png", png16(image))
    before = (tmp_path / "t-000.tar").read_bytes()
    assert invoke("stats", tmp_path / "t-000.tar", "-o", tmp_path / "s.json", "-q").exit_code == 0
    result = invoke("apply", tmp_path / "t-000.tar", "-s", tmp_path / "s.json", "-m", "zscore", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 2
    assert (tmp_path / "t-000.tar").read_bytes() == before
    result = invoke("check", tmp_path / "t-000.tar", "-s", tmp_path / "s.json", "-m", "zscore")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------
# Findings (fail now)
# ---------------------------------------------------------------------------------------------

def test_finding_tar_cut_inside_a_header_is_not_silently_shorter(tmp_path):
    """A shard cut off inside a member's header gives stats of fewer images, exit 0, nothing
    skipped (a cut inside a member's data is reported). The truncation must be reported."""
    images = images16(4, seed=8)
    with tarfile.open(tmp_path / "full.tar", "w", format=tarfile.USTAR_FORMAT) as archive:
        for i, image in enumerate(images):
            add_member(archive, f"{i}.png", png16(image))
    with tarfile.open(tmp_path / "full.tar") as archive:
        third = archive.getmembers()[2]
    data = (tmp_path / "full.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:third.offset + 100])  # 100 bytes of a 512-byte header
    with pytest.raises(ImagenormError):
        imagenorm.compute_stats(str(tmp_path / "cut.tar"))


def test_finding_tar_hardlink_member_is_measured_not_dropped(tmp_path):
    """GNU tar stores a second copy of a hard-linked file as a link member. imagenorm drops it
    silently (not measured, not counted as ignored); the same files as a folder count it."""
    images = images16(2, seed=9)
    with tarfile.open(tmp_path / "h.tar", "w") as archive:
        add_member(archive, "a.png", png16(images[0]))
        link = tarfile.TarInfo("b.png")
        link.type, link.linkname = tarfile.LNKTYPE, "a.png"
        archive.addfile(link)
        add_member(archive, "c.png", png16(images[1]))
    got = imagenorm.compute_stats(str(tmp_path / "h.tar"))
    assert got.files == 3
    assert_matches_reference(got, reference([chw(images[0]), chw(images[0]), chw(images[1])]))


def test_finding_zip_duplicate_member_names_not_double_counted(tmp_path):
    """Two members named a.png (zipfile 'a' mode, re-added files): both are 'measured' but each
    read gives the last one, so one image is lost and the other counted twice, silently."""
    images = images16(2, seed=10)
    with pytest.warns(UserWarning):
        with zipfile.ZipFile(tmp_path / "d.zip", "w") as archive:
            archive.writestr("a.png", png16(images[0]))
            archive.writestr("a.png", png16(images[1]))
    try:
        got = imagenorm.compute_stats(str(tmp_path / "d.zip"))
    except ImagenormError:
        return  # refusing the ambiguous archive is fine too
    assert_matches_reference(got, reference([chw(images[0]), chw(images[1])]))


def test_finding_tgz_gzip_crc_mismatch_is_reported(tmp_path):
    """A .tgz whose data no longer match the gzip CRC (bit rot) is measured with the wrong
    value: the gzip trailer is never checked, as the shard is not read to its end."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for key in range(3):
            add_member(archive, f"k{key}.npy", npy_bytes(np.full((8, 8), 100 + key, np.uint16)))
    packed = bytearray(gzip.compress(raw.getvalue(), compresslevel=0, mtime=0))
    where = packed.find(bytes([100, 0]) * 8)
    packed[where] = 200  # one pixel changed, deflate (stored) still decodes
    (tmp_path / "rot.tgz").write_bytes(bytes(packed))
    with pytest.raises(Exception):
        gzip.decompress(bytes(packed))  # gzip itself detects it
    with pytest.raises(ImagenormError):
        imagenorm.compute_stats(str(tmp_path / "rot.tgz"))


def test_finding_parquet_relative_path_is_read_from_the_dataset_not_the_cwd(tmp_path, monkeypatch):
    """A cell with only a relative path is documented as read relative to the dataset's
    folder; a file of the same name under the current directory is read instead, silently."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = images16(1, seed=11)[0]
    (tmp_path / "ds" / "img").mkdir(parents=True)
    (tmp_path / "ds" / "img" / "a.png").write_bytes(png16(image))
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": None, "path": "img/a.png"}], type=kind)})
    meta = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "ds" / "x.parquet")
    (tmp_path / "elsewhere" / "img").mkdir(parents=True)
    (tmp_path / "elsewhere" / "img" / "a.png").write_bytes(png16(np.zeros((3, 3, 3), np.uint16)))
    monkeypatch.chdir(tmp_path / "elsewhere")
    got = imagenorm.compute_stats(str(tmp_path / "ds" / "x.parquet"))
    assert_matches_reference(got, reference([chw(image)]))


@pytest.mark.parametrize("name", ["a.tgz", "a.parquet"])
def test_finding_url_with_query_string_is_read_by_its_path(tmp_path, http_root, name):
    """Hub/presigned URLs end in '?download=true'. The class is chosen on the path, but the
    gzip test (TarShard) and the parquet-or-Arrow test (TableFile) look at the whole URL:
    a .tgz is called 'damaged ... invalid header', a .parquet 'not a readable Arrow file'."""
    datasets = pytest.importorskip("datasets")
    root, base = http_root
    images = images16(2, seed=12)
    paths = []
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(png16(image))
        paths.append(str(tmp_path / f"{i}.png"))
    if name.endswith(".tgz"):
        with tarfile.open(root / name, "w:gz") as archive:
            for i, path in enumerate(paths):
                archive.add(path, arcname=f"{i}.png")
    else:
        datasets.Dataset.from_dict({"image": paths}).cast_column("image", datasets.Image()).to_parquet(str(root / name))
    got = imagenorm.compute_stats(f"{base}/{name}?download=true")
    assert_matches_reference(got, reference([chw(i) for i in images]))


def test_finding_gzipped_tar_named_dot_tar_is_not_called_damaged(tmp_path):
    """webdataset reads a gzip-compressed shard named .tar (tarfile 'r|*'); imagenorm says
    'the shard is damaged or truncated: invalid header'. Read it, or say it is gzip."""
    images = images16(2, seed=13)
    with tarfile.open(tmp_path / "z.tar", "w:gz") as archive:
        for i, image in enumerate(images):
            add_member(archive, f"{i}.png", png16(image))
    try:
        got = imagenorm.compute_stats(str(tmp_path / "z.tar"))
    except ImagenormError as error:
        reason = getattr(error, "reason", None) or str(error).replace(str(tmp_path), "")
        assert "gzip" in reason.lower(), str(error)
    else:
        assert_matches_reference(got, reference([chw(i) for i in images]))


def test_finding_hf_dataset_with_transform_gives_no_attribute_error(tmp_path):
    """A Dataset with a transform set (with_transform/set_transform: common for augmentation)
    crashes with AttributeError: 'numpy.ndarray' object has no attribute 'get'."""
    datasets = pytest.importorskip("datasets")
    paths = []
    for i, image in enumerate(images16(2, seed=14)):
        (tmp_path / f"{i}.png").write_bytes(png16(image))
        paths.append(str(tmp_path / f"{i}.png"))
    dataset = datasets.Dataset.from_dict({"image": paths}).cast_column("image", datasets.Image())
    dataset = dataset.with_transform(lambda batch: {"image": [np.zeros((2, 2), np.uint8) for _ in batch["image"]]})
    try:
        imagenorm.compute_stats(dataset)
    except ImagenormError:
        pass  # a clear refusal is fine; measuring the source or the transform output too


def test_finding_hf_dataset_non_image_column_is_a_choice_error_listing_image_columns(tmp_path):
    """column='label' on a Dataset fails row by row ('row 0: expected a tensor ... got int64'),
    unlike parquet, where a column choice error lists the image columns (exit 2)."""
    datasets = pytest.importorskip("datasets")
    (tmp_path / "0.png").write_bytes(png16(images16(1, seed=15)[0]))
    dataset = datasets.Dataset.from_dict({"image": [str(tmp_path / "0.png")], "label": [3]})
    dataset = dataset.cast_column("image", datasets.Image())
    with pytest.raises(OptionError, match="image"):
        imagenorm.compute_stats(dataset, column="label")


def test_finding_split_on_a_tar_is_not_a_parquet_split_error(tmp_path):
    """--split test on a tar (or a single parquet) says "no parquet file of split 'test';
    splits:  (choose one with --split)": an empty list, and about parquet for a tar."""
    with tarfile.open(tmp_path / "a.tar", "w") as archive:
        add_member(archive, "0.png", png16(images16(1, seed=16)[0]))
    result = invoke("stats", tmp_path / "a.tar", "--split", "test", "-q")
    assert result.exit_code == 2
    assert "parquet" not in result.output and "splits:  (" not in result.output, result.output


def test_finding_split_on_single_saved_dataset_is_a_usage_error(tmp_path):
    """--split on a save_to_disk Dataset (no splits) exits 1; usage errors exit 2 (as --split
    on a DatasetDict with a missing split does)."""
    datasets = pytest.importorskip("datasets")
    (tmp_path / "0.png").write_bytes(png16(images16(1, seed=17)[0]))
    dataset = datasets.Dataset.from_dict({"image": [str(tmp_path / "0.png")]}).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    result = invoke("stats", tmp_path / "saved", "--split", "test", "-q")
    assert result.exit_code == 2, result.output


def test_finding_same_container_named_twice_is_measured_once(tmp_path, monkeypatch):
    """x.tar and ./x.tar are one file: measured twice (doubled counts), while a plain image
    named twice (a.png ./a.png) is measured once."""
    images = images16(2, seed=18)
    monkeypatch.chdir(tmp_path)
    with tarfile.open("x.tar", "w") as archive:
        for i, image in enumerate(images):
            add_member(archive, f"{i}.png", png16(image))
    (tmp_path / "a.png").write_bytes(png16(images[0]))
    assert imagenorm.compute_stats(["a.png", "./a.png"]).files == 1
    got = imagenorm.compute_stats(["x.tar", "./x.tar"])
    assert got.files == 2


def test_finding_apply_on_one_container_keeps_member_folders(tmp_path):
    """apply on one folder keeps its subfolders (fd/d/a.png -> d/a.npy); on one tar or zip the
    members' common folder is dropped (t-000.tar:d/k0.png -> k0.npy; a.zip:imgs/0.png ->
    0.npy), so the layout depends on which other members happen to be there (add one sample
    under e/ and every file moves to t-000/d/...): class folders of WebDataset keys are lost."""
    images = images16(2, seed=19)
    with tarfile.open(tmp_path / "t-000.tar", "w") as archive:
        for i, image in enumerate(images):
            add_member(archive, f"d/k{i}.png", png16(image))
    result = invoke("apply", tmp_path / "t-000.tar", "-m", "minmax", "--per-image", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy"))
    assert written in (["d/k0.npy", "d/k1.npy"], ["t-000/d/k0.npy", "t-000/d/k1.npy"]), written
