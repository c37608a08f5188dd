"""Data where it lives: tar shards, zip, parquet/Arrow, save_to_disk, URLs and datasets objects
measure exactly as the same images in a folder (issue 12)."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import os
import shutil
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app
from imagenorm.containers import Selection, container_items
from imagenorm.errors import ImagenormWarning
from imagenorm.stats.accumulate import plan_chunks
from imagenorm.stats.distributed import ShardItems

from conftest import assert_matches_reference, channel_first, random_image, reference, write_png

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")
SKIMAGE = Path(pytest.importorskip("skimage").__file__).parent / "data"
runner = CliRunner()


def stats_dict(stats) -> dict:
    document = stats.to_dict()
    for key in ("created_at", "between_images", "ignored_non_images", "hidden_skipped"):
        document.pop(key, None)
    return document


@pytest.fixture(scope="module")
def rgb16(tmp_path_factory) -> Path:
    """Nine 16-bit RGB PNGs of three sizes (Pillow would read them as 8 bits)."""
    folder = tmp_path_factory.mktemp("rgb16")
    rng = np.random.default_rng(12)
    for index in range(9):
        write_png(folder / f"{index:03d}.png", random_image(rng, "uint16", (7 + index % 3, 9, 3)))
    return folder


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def write_shards(folder: Path, files: list[Path], per_shard: int, extension: str = "png", extra: dict | None = None) -> str:
    folder.mkdir(exist_ok=True)
    with wds.ShardWriter(str(folder / "train-%06d.tar"), maxcount=per_shard, verbose=0) as writer:
        for path in files:
            writer.write({"__key__": path.stem, extension: path.read_bytes(), "cls": b"1", **(extra or {})})
    count = len(list(folder.glob("train-*.tar")))
    return str(folder / f"train-{{000000..{count - 1:06d}}}.tar")


def hf_dataset(files: list[Path]):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": path.read_bytes(), "path": path.name} for path in files], "label": list(range(len(files)))}
    return datasets.Dataset.from_dict(rows, features=features)


# -- exactness: every container measures as the folder -------------------------------------------

def test_tar_shards_equal_the_folder_and_numpy(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "shards", pngs(rgb16), per_shard=4)
    folder = imagenorm.compute_stats(rgb16)
    pixels = [channel_first(__import__("cv2").imread(str(p), -1)[..., ::-1]) for p in pngs(rgb16)]
    for workers in (0, 2):
        stats = imagenorm.compute_stats(pattern, workers=workers)
        assert stats.dtype == "uint16" and stats.files == 9
        assert stats_dict(stats) == stats_dict(folder)
        assert_matches_reference(stats, reference(pixels))


def test_glob_gzip_and_tgz_shards(tmp_path, rgb16):
    write_shards(tmp_path / "shards", pngs(rgb16), per_shard=3)
    folder = stats_dict(imagenorm.compute_stats(rgb16))
    assert stats_dict(imagenorm.compute_stats(str(tmp_path / "shards" / "*.tar"), workers=2)) == folder
    for index, shard in enumerate(sorted((tmp_path / "shards").glob("*.tar"))):
        suffix = ".tar.gz" if index % 2 else ".tgz"
        (tmp_path / f"z{index}{suffix}").write_bytes(gzip.compress(shard.read_bytes()))
    assert stats_dict(imagenorm.compute_stats(sorted(map(str, tmp_path.glob("z*"))), workers=2)) == folder


def test_zip_members_sorted_hidden_and_other_files_passed_over(tmp_path, rgb16):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in reversed(pngs(rgb16)):  # written in reverse: read sorted by name
            zipped.write(path, f"sub/{path.name}")
        zipped.writestr("__MACOSX/sub/._000.png", b"junk")
        zipped.writestr("sub/.DS_Store", b"junk")
        zipped.writestr("README.txt", b"hello")
    items = container_items([str(archive)])
    assert [items.name(i).split(":")[1] for i in range(len(items))] == [f"sub/{p.name}" for p in pngs(rgb16)]
    assert (items.hidden, items.ignored) == (2, 1)
    stats = imagenorm.compute_stats(archive, workers=2)
    assert stats_dict(stats) == stats_dict(imagenorm.compute_stats(rgb16))
    assert stats.to_dict()["hidden_skipped"] == 2 and stats.to_dict()["ignored_non_images"] == 1


def test_parquet_row_groups_are_units_and_measure_as_the_folder(tmp_path, rgb16):
    import pyarrow.parquet as pq

    dataset = hf_dataset(pngs(rgb16))
    pq.write_table(dataset.data.table, tmp_path / "train-00000-of-00001.parquet", row_group_size=2)
    source = str(tmp_path / "train-*.parquet")
    items = container_items([source])
    assert items.units() == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    for workers in (0, 2):
        assert stats_dict(imagenorm.compute_stats(source, workers=workers)) == stats_dict(imagenorm.compute_stats(rgb16))


def test_save_to_disk_dataset_and_dataset_dict_splits(tmp_path, rgb16):
    files = pngs(rgb16)
    hf_dataset(files).save_to_disk(str(tmp_path / "saved"), num_shards=3)
    datasets.DatasetDict({"train": hf_dataset(files[:5]), "test": hf_dataset(files[5:])}).save_to_disk(str(tmp_path / "dict"))
    assert stats_dict(imagenorm.compute_stats(tmp_path / "saved", workers=2)) == stats_dict(imagenorm.compute_stats(rgb16))
    assert imagenorm.compute_stats(tmp_path / "dict").files == 5  # train by default
    assert stats_dict(imagenorm.compute_stats(tmp_path / "dict", split="test")) == stats_dict(imagenorm.compute_stats(files[5:]))
    with pytest.raises(imagenorm.OptionError, match="no split 'valid'; splits: train, test"):
        imagenorm.compute_stats(tmp_path / "dict", split="valid")


def test_hub_snapshot_parquet_files_of_several_splits(tmp_path, rgb16):
    files = pngs(rgb16)
    (tmp_path / "data").mkdir()
    hf_dataset(files[:6]).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    hf_dataset(files[6:]).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    source = str(tmp_path / "data" / "*.parquet")
    assert imagenorm.compute_stats(source).files == 6
    assert imagenorm.compute_stats(source, split="test").files == 3


def test_datasets_objects_map_style_dict_and_streamed(tmp_path, rgb16):
    files = pngs(rgb16)
    dataset = hf_dataset(files)
    expected = stats_dict(imagenorm.compute_stats(rgb16))
    assert stats_dict(imagenorm.compute_stats(dataset, workers=2)) == expected
    assert stats_dict(imagenorm.compute_stats(datasets.DatasetDict({"train": dataset}))) == expected
    dataset.to_parquet(str(tmp_path / "t.parquet"))
    streamed = datasets.load_dataset("parquet", data_files=str(tmp_path / "t.parquet"), split="train", streaming=True)
    for workers in (0, 2):
        assert stats_dict(imagenorm.compute_stats(streamed, workers=workers)) == expected
    with pytest.raises(imagenorm.OptionError, match="checkpoint"):
        imagenorm.compute_stats(streamed, checkpoint=tmp_path / "c.ckpt")


def test_a_pillow_decoded_image_column_still_reads_16_bits(rgb16):
    dataset = hf_dataset(pngs(rgb16))  # decode=True: datasets would hand out 8-bit PIL images
    stats = imagenorm.compute_stats(dataset)
    assert stats.dtype == "uint16" and stats.pooled.max > 255


# -- choosing the images --------------------------------------------------------------------------

def test_webdataset_member_choice(tmp_path, rgb16):
    files = pngs(rgb16)[:4]
    extra = {"seg.png": files[0].read_bytes()}
    pattern = write_shards(tmp_path / "s", files, per_shard=2, extension="jpg.png", extra=extra)
    with pytest.raises(imagenorm.OptionError, match="several images .*member="):
        imagenorm.compute_stats(pattern)
    seg = imagenorm.compute_stats(pattern, member="seg.png")
    copies = tmp_path / "copies"
    copies.mkdir()
    for index in range(4):
        shutil.copy(files[0], copies / f"{index}.png")
    assert seg.files == 4 and stats_dict(seg) == stats_dict(imagenorm.compute_stats(copies))
    assert stats_dict(imagenorm.compute_stats(pattern, member="jpg.png")) == stats_dict(imagenorm.compute_stats(files))


def test_samples_in_folders_keep_their_key(tmp_path, rgb16):
    import tarfile

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as archive:
        for folder in ("a", "b"):  # the same base name in two folders: two samples
            archive.add(pngs(rgb16)[0], f"{folder}/x.png")
    items = container_items([str(shard)])
    assert [items.name(i).split(":")[1] for i in range(len(items))] == ["a/x.png", "b/x.png"]


def test_column_choice(tmp_path, rgb16):
    files = pngs(rgb16)[:2]
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(), "label": datasets.Value("int64")})
    cells = [{"bytes": path.read_bytes(), "path": path.name} for path in files]
    datasets.Dataset.from_dict({"image": cells, "mask": cells, "label": [0, 1]}, features=features).to_parquet(
        str(tmp_path / "two.parquet"))
    with pytest.raises(imagenorm.OptionError, match=r"several image columns \(image, mask\)"):
        imagenorm.compute_stats(tmp_path / "two.parquet")
    with pytest.raises(imagenorm.OptionError, match="column 'label' holds int64, not images; image columns: image, mask"):
        imagenorm.compute_stats(tmp_path / "two.parquet", column="label")
    with pytest.raises(imagenorm.OptionError, match="no column 'img'"):
        imagenorm.compute_stats(tmp_path / "two.parquet", column="img")
    assert imagenorm.compute_stats(tmp_path / "two.parquet", column="mask").files == 2
    with pytest.raises(imagenorm.OptionError, match="applies to tar shards"):
        imagenorm.compute_stats(tmp_path / "two.parquet", column="image", member="png")
    with pytest.raises(imagenorm.OptionError, match="applies to tar, zip, parquet"):
        imagenorm.compute_stats(pngs(rgb16), column="image")


def test_rows_with_only_a_path_are_read_relative_to_the_dataset(tmp_path, rgb16):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "images").mkdir()
    shutil.copy(pngs(rgb16)[0], tmp_path / "images" / "a.png")
    features = datasets.Features({"image": datasets.Image()})
    cells = pa.array([{"bytes": None, "path": "images/a.png"}], type=features.arrow_schema.field("image").type)
    table = pa.table({"image": cells}).replace_schema_metadata(features.arrow_schema.metadata)
    pq.write_table(table, tmp_path / "train.parquet")
    assert stats_dict(imagenorm.compute_stats(tmp_path / "train.parquet")) == stats_dict(imagenorm.compute_stats(pngs(rgb16)[:1]))


# -- bad input: one line naming the container and the member --------------------------------------

def test_truncated_shard_names_shard_and_skip_lists_it(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=9)
    shard = tmp_path / "s" / "train-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(imagenorm.ReadError, match=r"train-000000\.tar:.*truncated"):
        imagenorm.compute_stats(pattern)
    stats = imagenorm.compute_stats(pattern, on_error="skip")
    assert 0 < stats.files < 9 and stats.skipped and all("train-000000.tar:" in entry["path"] for entry in stats.skipped)


def test_bad_member_crc_and_null_cell_are_named(tmp_path, rgb16):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.write(pngs(rgb16)[0], "a.png")
        zipped.write(pngs(rgb16)[1], "b.png")
    data = bytearray(archive.read_bytes())
    data[data.index(b"IDAT", data.index(b"b.png")) + 10] ^= 0xFF  # b.png's pixels, stored: the zip CRC fails
    archive.write_bytes(bytes(data))
    with pytest.raises(imagenorm.ReadError, match=r"a\.zip:b\.png: cannot be extracted.*CRC"):
        imagenorm.compute_stats(archive)
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features({"image": datasets.Image()})
    cells = pa.array([{"bytes": pngs(rgb16)[0].read_bytes(), "path": None}, None], type=features.arrow_schema.field("image").type)
    pq.write_table(pa.table({"image": cells}).replace_schema_metadata(features.arrow_schema.metadata), tmp_path / "n.parquet")
    stats = imagenorm.compute_stats(tmp_path / "n.parquet", on_error="skip")
    assert stats.files == 1 and stats.skipped[0]["path"].endswith("n.parquet:row 1") and "null" in stats.skipped[0]["reason"]


def test_cli_one_line_errors_and_stats_file(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=4)
    result = runner.invoke(app, ["stats", pattern, "-o", str(tmp_path / "s.json"), "-w", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s.json").read_text())["files"] == 9
    result = runner.invoke(app, ["stats", str(tmp_path / "s" / "missing-{0..1}.tar")])
    assert result.exit_code == 1 and "missing-0.tar: no such file" in result.output and "Traceback" not in result.output
    (tmp_path / "d").mkdir()
    datasets.DatasetDict({"train": hf_dataset(pngs(rgb16)[:1])}).save_to_disk(str(tmp_path / "d" / "saved"))
    result = runner.invoke(app, ["stats", str(tmp_path / "d" / "saved"), "--split", "test"])
    assert result.exit_code == 2 and "--split" in result.output and "splits: train" in result.output
    result = runner.invoke(app, ["stats", str(tmp_path / "s")])
    assert result.exit_code == 1 and "holds 3 .tar file(s)" in result.output


# -- parallel and distributed by shard ------------------------------------------------------------

def test_workers_take_whole_shards_and_fewer_shards_than_workers_is_said(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=3)
    items = container_items([pattern])
    assert plan_chunks(items, 2) == [(0, 3), (3, 6), (6, 9)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain local shard splits for free: nothing to say
        chunks = plan_chunks(items, 4)
    assert sorted(index for start, stop in chunks for index in range(start, stop)) == list(range(9)) and len(chunks) >= 4
    for index, shard in enumerate(sorted((tmp_path / "s").glob("*.tar"))):
        (tmp_path / f"z{index}.tgz").write_bytes(gzip.compress(shard.read_bytes()))
    compressed = container_items([str(tmp_path / "z*.tgz")])
    assert plan_chunks(compressed, 3) == [(0, 3), (3, 6), (6, 9)]
    with pytest.warns(ImagenormWarning, match="3 shard.*each worker reads a compressed"):
        chunks = plan_chunks(compressed, 6)
    assert chunks == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7), (7, 9)]  # 2 pieces per shard: each worker has one


def test_ranks_take_whole_shards_none_twice_none_missed(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=2)  # 5 shards
    items = container_items([pattern])
    shards = [ShardItems(items, rank, 2) for rank in range(2)]
    assert [list(shard.indices) for shard in shards] == [[0, 1, 4, 5, 8], [2, 3, 6, 7]]
    assert shards[0].units() == [(0, 2), (2, 4), (4, 5)]
    with pytest.warns(ImagenormWarning, match="rank"):
        ShardItems(container_items([str(tmp_path / "s" / "train-000004.tar")]), 1, 2)


def test_torchrun_over_tar_shards_equals_one_process(tmp_path, rgb16):
    from test_distributed import results, run, single_process, without_float_noise

    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=2)
    run("spawn", 2, "stats", pattern, tmp_path / "out")
    documents = results(tmp_path / "out", 2)
    expected = without_float_noise(single_process(pattern))
    assert len(documents) == 2 and all(without_float_noise(document) == expected for document in documents), documents


# -- remote: a real HTTP server on 127.0.0.1 ------------------------------------------------------

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (as S3, the Hub and nginx do); ``fail`` first
    requests of each file fail with 503 (a flaky network)."""

    failures: dict = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        left = self.failures.get(self.path, 0)
        if left:
            self.failures[self.path] = left - 1
            self.send_error(503)
            return
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = Path(path).read_bytes()
        span = self.headers.get("Range")
        if span:
            start, end = span.removeprefix("bytes=").split("-")
            start, end = int(start), min(int(end or len(data) - 1), len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start:end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(RangeHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    RangeHandler.failures.clear()


def test_remote_shards_zip_parquet_and_single_images(server, rgb16):
    pytest.importorskip("aiohttp")
    root, url = server
    pattern = write_shards(root / "shards", pngs(rgb16), per_shard=4)
    shutil.copy(pngs(rgb16)[0], root / "one.png")
    hf_dataset(pngs(rgb16)).to_parquet(str(root / "train.parquet"))
    expected = stats_dict(imagenorm.compute_stats(rgb16))
    remote = pattern.replace(str(root), url)
    assert stats_dict(imagenorm.compute_stats(remote, workers=2)) == expected
    assert stats_dict(imagenorm.compute_stats(f"{url}/train.parquet")) == expected
    assert stats_dict(imagenorm.compute_stats(f"{url}/one.png")) == stats_dict(imagenorm.compute_stats(pngs(rgb16)[:1]))


def test_remote_errors_are_retried_then_named(server, rgb16, monkeypatch):
    pytest.importorskip("aiohttp")
    from imagenorm.containers import storage

    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    root, url = server
    shutil.copy(pngs(rgb16)[0], root / "one.png")
    RangeHandler.failures["/one.png"] = 2  # two failures, then it works
    assert imagenorm.compute_stats(f"{url}/one.png").files == 1
    with pytest.raises(imagenorm.ReadError, match=r"^http://127\.0\.0\.1:\d+/gone\.tar: not found$"):
        imagenorm.compute_stats(f"{url}/gone.tar")
    RangeHandler.failures["/flaky.png"] = 100
    shutil.copy(pngs(rgb16)[0], root / "flaky.png")
    with pytest.raises(imagenorm.ReadError, match=r"flaky\.png: cannot be read after 4 attempts"):
        imagenorm.compute_stats(f"{url}/flaky.png")


def test_a_server_without_ranges_still_reads_exactly(tmp_path, rgb16):
    pytest.importorskip("aiohttp")
    root = tmp_path / "www"
    pattern = write_shards(root, pngs(rgb16), per_shard=5)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))  # ignores Range
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        remote = pattern.replace(str(root), f"http://127.0.0.1:{httpd.server_port}")
        assert stats_dict(imagenorm.compute_stats(remote)) == stats_dict(imagenorm.compute_stats(rgb16))
    finally:
        httpd.shutdown()


# -- check, apply and the datasets ----------------------------------------------------------------

def test_check_and_apply_on_shards(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=4)
    stats = imagenorm.compute_stats(pattern)
    options = imagenorm.MethodOptions("zscore")
    assert imagenorm.check_normalization(pattern, stats, options, workers=2).passed
    before = {path: path.read_bytes() for path in (tmp_path / "s").iterdir()}
    report = imagenorm.apply_normalization(pattern, stats, None, options, str(tmp_path / "out"), workers=2)
    assert report.written == 9
    written = np.load(tmp_path / "out" / "train-000001" / "004.npy")
    transform = imagenorm.Standardize.from_stats(stats)
    expected = transform(torch.from_numpy(imagenorm.read_image(pngs(rgb16)[4]).pixels.copy())).numpy()
    np.testing.assert_allclose(written, expected, rtol=1e-6)
    assert {path: path.read_bytes() for path in (tmp_path / "s").iterdir()} == before


def test_container_dataset_and_normalize_dataset(tmp_path, rgb16):
    dataset = imagenorm.ContainerDataset(hf_dataset(pngs(rgb16)))
    assert len(dataset) == 9 and dataset[3].dtype == torch.uint16
    assert torch.equal(dataset[3], torch.from_numpy(imagenorm.read_image(pngs(rgb16)[3]).pixels.copy()))
    stats = imagenorm.compute_stats(dataset.items)
    normalized = imagenorm.normalize_dataset(dataset, imagenorm.Standardize.from_stats(stats), cache="memory")
    assert normalized[3].dtype == torch.float32
    zipped = tmp_path / "a.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in pngs(rgb16):
            archive.write(path, path.name)
    assert torch.equal(imagenorm.ContainerDataset(zipped)[8], dataset[8])


def test_shard_stream_splits_by_worker_each_sample_once(tmp_path, rgb16, monkeypatch):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=2)  # 5 shards
    stream = imagenorm.ShardStreamDataset(pattern, keys=True)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    keys = sorted(key for _, key in loader)
    assert keys == [path.stem for path in pngs(rgb16)]
    images = {key: image for image, key in stream}
    assert images["004"].dtype == torch.uint16
    assert torch.equal(images["004"], torch.from_numpy(imagenorm.read_image(pngs(rgb16)[4]).pixels.copy()))
    few = imagenorm.ShardStreamDataset(str(tmp_path / "s" / "train-000000.tar"))
    worker = type("WorkerInfo", (), {"id": 1, "num_workers": 2})()
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker)
    with pytest.warns(ImagenormWarning, match="1 reader"):
        assert list(few) == []  # worker 1 of 2 has no shard


def test_webdataset_pipeline_and_hf_with_transform(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=4)
    stats = imagenorm.compute_stats(pattern)
    transform = imagenorm.Standardize.from_stats(stats)
    pipeline = wds.WebDataset(pattern, shardshuffle=False, empty_check=False).decode(imagenorm.wds_decoder()).to_tuple("png", "__key__")
    outputs = {key: transform(image) for image, key in pipeline}
    expected = transform(torch.from_numpy(imagenorm.read_image(pngs(rgb16)[2]).pixels.copy()))
    assert torch.equal(outputs["002"], expected)
    dataset = hf_dataset(pngs(rgb16)).cast_column("image", datasets.Image(decode=False))
    dataset = dataset.with_transform(imagenorm.hf_transform(transform))
    assert torch.equal(dataset[2]["image"], expected)


def test_shard_stream_refuses_a_cut_header_and_reads_links_and_gzip_named_tar(tmp_path, rgb16):
    import tarfile

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as archive:
        archive.add(pngs(rgb16)[0], "a.png")
        archive.add(pngs(rgb16)[1], "b.png")
    whole = shard.read_bytes()
    (tmp_path / "z.tar").write_bytes(gzip.compress(whole))  # gzip, named .tar
    assert len(list(imagenorm.ShardStreamDataset(str(tmp_path / "z.tar")))) == 2
    with tarfile.open(shard) as archive:
        second_header = archive.getmember("b.png").offset
    shard.write_bytes(whole[:second_header + 100])  # cut inside b.png's header
    with pytest.raises(imagenorm.ReadError, match=r"s\.tar: the shard is damaged or truncated"):
        list(imagenorm.ShardStreamDataset(str(shard)))
    with pytest.raises(imagenorm.ReadError, match=r"s\.tar:\(after 1 samples\): the shard is damaged"):
        imagenorm.compute_stats(shard)


def test_checkpointed_run_over_shards_equals_a_plain_one(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16), per_shard=3)
    saver = imagenorm.stats.checkpoint.Checkpoint(str(tmp_path / "run.ckpt"), every_items=1, every_seconds=0)
    stats = imagenorm.compute_stats(pattern, checkpoint=saver)
    assert stats_dict(stats) == stats_dict(imagenorm.compute_stats(pattern)) and not (tmp_path / "run.ckpt").exists()


@pytest.mark.parametrize("form", [0, 1, 2])  # ustar, GNU, pax
def test_plain_header_reader_agrees_with_tarfile(tmp_path, form):
    import tarfile
    import time

    from imagenorm.containers.archives import plain_headers, tar_stream
    from imagenorm.containers.storage import Storage

    path = tmp_path / "t.tar"
    data = os.urandom(3000)
    with tarfile.open(path, "w", format=form) as archive:
        names = ["a.png", "é/ü.jpg", "p/" * 60 + "z.png"] + ([] if form == 0 else ["d/" + "x" * 150 + ".png"])
        for name in names:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), time.time()  # a float mtime: a pax header per member
            archive.addfile(info, io.BytesIO(data))
        for name, kind, target in (("link.png", tarfile.LNKTYPE, "a.png"), ("dir", tarfile.DIRTYPE, "")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    with tarfile.open(path) as archive:
        expected = [(i.name, i.size, i.offset_data, i.type, i.linkname) for i in archive]
    found, damage = plain_headers(tar_stream(Storage(str(path))))
    assert damage is None
    assert [(i.name, i.size, i.offset_data, i.type, i.linkname) for i in found] == expected
    gzipped = tmp_path / "t.tgz"
    gzipped.write_bytes(gzip.compress(path.read_bytes()))
    assert [(i.name, i.offset_data) for i in plain_headers(tar_stream(Storage(str(gzipped))))[0]] == [e[::2][:2] for e in expected]
    with tarfile.open(tmp_path / "g.tar", "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}) as archive:
        archive.add(path, "inner.tar")  # a global pax header: left to tarfile
    assert plain_headers(tar_stream(Storage(str(tmp_path / "g.tar")))) is None
    with pytest.raises(imagenorm.EmptyDatasetError, match="1 member"):
        container_items([str(tmp_path / "g.tar")])
    assert container_items([str(path)]).units() == [(0, len(names) + 1)]  # the link is an image too


# -- review findings ----------------------------------------------------------------------------

def test_absolute_and_dotted_member_names_are_written_inside_the_output(tmp_path, rgb16):
    import tarfile

    shard = tmp_path / "src" / "s.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as archive:
        archive.add(pngs(rgb16)[0], str(tmp_path / "escaped.png"))  # an absolute member name
        archive.add(pngs(rgb16)[1], "./d/b.png")
    stats = imagenorm.compute_stats(shard)
    imagenorm.apply_normalization(str(shard), stats, None, imagenorm.MethodOptions("zscore"), str(tmp_path / "out"))
    written = sorted(str(path.relative_to(tmp_path / "out")) for path in (tmp_path / "out").rglob("*.npy"))
    assert written == ["s/d/b.npy", f"s/{str(tmp_path).strip('/')}/escaped.npy"] and not (tmp_path / "escaped.npy").exists()


def test_indexing_many_shards_leaves_no_file_open(tmp_path, rgb16):
    write_shards(tmp_path / "s", pngs(rgb16) * 4, per_shard=1)  # 36 shards
    before = len(os.listdir("/proc/self/fd"))
    items = container_items([str(tmp_path / "s" / "*.tar")])
    assert len(items) == 36 and len(os.listdir("/proc/self/fd")) == before
    for index in range(36):
        items.load(index, imagenorm.ReadOptions())
    assert len(os.listdir("/proc/self/fd")) <= before + 4  # a few recently read shards stay open


def test_a_source_named_twice_among_others_is_read_once(tmp_path, rgb16):
    shard = write_shards(tmp_path / "s", pngs(rgb16)[:2], per_shard=2).replace("{000000..000000}", "000000")
    assert imagenorm.compute_stats([shard, str(rgb16), "./" + os.path.relpath(shard)]).files == 11
    assert imagenorm.compute_stats([str(rgb16), shard, str(rgb16)]).files == 11


def test_hub_split_names_follow_huggingface_patterns(tmp_path, rgb16):
    files = pngs(rgb16)
    for name, rows in (("train.parquet", files[:4]), ("test.parquet", files[4:6]), ("my-photos.parquet", files[6:])):
        hf_dataset(rows).to_parquet(str(tmp_path / name))
    with pytest.warns(ImagenormWarning, match="measuring split 'train'; 2 parquet file"):
        assert imagenorm.compute_stats(str(tmp_path / "*.parquet")).files == 4
    (tmp_path / "test.parquet").unlink()
    assert imagenorm.compute_stats(str(tmp_path / "*.parquet")).files == 7  # one split named: every file


def test_remote_whole_object_servers_and_client_errors_are_not_retried(tmp_path, rgb16, monkeypatch):
    pytest.importorskip("aiohttp")
    from imagenorm.containers import storage

    monkeypatch.setattr(storage, "BLOCK", 512)  # many blocks per shard
    root = tmp_path / "www"
    pattern = write_shards(root, pngs(rgb16), per_shard=9)
    requests = []

    class Counting(http.server.SimpleHTTPRequestHandler):  # ignores Range: sends the whole file
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            if self.path == "/forbidden.png":
                self.send_error(403)
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        assert stats_dict(imagenorm.compute_stats(pattern.replace(str(root), url))) == stats_dict(imagenorm.compute_stats(rgb16))
        assert len(requests) <= 3  # the whole object is kept once it came, not fetched per block
        requests.clear()
        with pytest.raises(imagenorm.ReadError, match="forbidden.png: (not found|cannot be read: 403)"):
            imagenorm.compute_stats(f"{url}/forbidden.png")
        assert len(requests) <= 1  # a client error is not tried again
    finally:
        httpd.shutdown()


def test_apply_and_check_refuse_what_they_cannot_take(rgb16):
    dataset = hf_dataset(pngs(rgb16)[:2])
    stats = imagenorm.compute_stats(dataset)
    with pytest.raises(imagenorm.OptionError, match="apply writes a copy of files"):
        imagenorm.apply_normalization(dataset, stats, None, imagenorm.MethodOptions("zscore"), "unused")
    streamed = datasets.IterableDataset.from_generator(lambda: iter(dataset), features=dataset.features)
    with pytest.raises(imagenorm.OptionError, match="check needs a source with a length"):
        imagenorm.check_normalization(streamed, stats, imagenorm.MethodOptions("zscore"))


def test_stream_skips_a_damaged_shard_and_decoders_pickle(tmp_path, rgb16):
    import pickle

    write_shards(tmp_path / "s", pngs(rgb16), per_shard=3)
    (tmp_path / "s" / "train-000001.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.warns(ImagenormWarning, match="train-000001.tar: the shard is damaged"):
        keys = [key for _, key in imagenorm.ShardStreamDataset(str(tmp_path / "s" / "*.tar"), keys=True, on_error="skip")]
    assert keys == ["000", "001", "002", "006", "007", "008"]
    for decoder in (imagenorm.wds_decoder(), imagenorm.hf_transform(imagenorm.Standardize.from_stats(imagenorm.compute_stats(rgb16)))):
        assert type(pickle.loads(pickle.dumps(decoder))) is type(decoder)


def test_a_missing_url_backend_says_what_to_install(monkeypatch):
    import fsspec

    def missing(url, **options):
        raise ImportError('HTTPFileSystem requires "aiohttp" to be installed')

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(imagenorm.ImagenormError, match=r"http://host/a\.tar: .*pip install 'imagenorm\[remote\]'"):
        imagenorm.compute_stats("http://host/a.tar")
    with pytest.raises(imagenorm.ImagenormError, match="s3fs"):
        imagenorm.compute_stats("s3://bucket/a.tar")


def test_warnings_point_at_the_callers_line(tmp_path, rgb16):
    write_shards(tmp_path / "s", pngs(rgb16), per_shard=9)
    (tmp_path / "z.tgz").write_bytes(gzip.compress((tmp_path / "s" / "train-000000.tar").read_bytes()))
    with pytest.warns(ImagenormWarning) as record:
        imagenorm.compute_stats(tmp_path / "z.tgz", workers=3)
    assert record[0].filename == __file__


def test_a_shard_and_its_hard_link_are_one_shard(tmp_path, rgb16):
    pattern = write_shards(tmp_path / "s", pngs(rgb16)[:3], per_shard=3)
    shard = tmp_path / "s" / "train-000000.tar"
    os.link(shard, tmp_path / "linked.tar")
    assert imagenorm.compute_stats([str(shard), str(tmp_path / "linked.tar")]).files == 3
    assert len(imagenorm.ShardStreamDataset([pattern, str(tmp_path / "linked.tar")]).shards) == 1


def test_a_plain_bytes_path_struct_column_is_an_image_column(rgb16):
    dataset = datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": p.name} for p in pngs(rgb16)]})
    assert not isinstance(dataset.features["image"], datasets.Image)  # a struct, as from_dict makes it
    assert stats_dict(imagenorm.compute_stats(dataset)) == stats_dict(imagenorm.compute_stats(rgb16))
