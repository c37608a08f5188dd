"""compute_stats over files and Datasets equals the float64 reference over all pixels."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imagenorm
from imagenorm.errors import EmptyDatasetError, ReadError

from conftest import assert_matches_reference, channel_first, random_image, reference, write_pillow, write_png, write_tiff

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


def make_folder(root: Path, rng, dtype, channels: int, count: int = 9) -> list[np.ndarray]:
    """Images of one dtype in nested folders, in the formats that hold that dtype."""
    pixels = []
    for index in range(count):
        shape = (int(rng.integers(9, 30)), int(rng.integers(9, 30))) + ((channels,) if channels > 1 else ())
        image = random_image(rng, dtype, shape)
        folder = root / f"part{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        if np.dtype(dtype) in (np.uint8, np.uint16) and index % 3 == 0:
            write_png(folder / f"{index}.png", image)
        elif index % 3 == 1:
            write_tiff(folder / f"{index}.tif", image, photometric="rgb" if channels == 3 else None)
        else:
            np.save(folder / f"{index}.npy", image)
        pixels.append(channel_first(image))
    return pixels


class TestExactness:
    @pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int8"])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_integer_folder_matches_reference(self, tmp_path, rng, dtype, channels):
        pixels = make_folder(tmp_path, rng, dtype, channels)
        stats = imagenorm.compute_stats(tmp_path)
        assert stats.dtype == dtype and stats.files == len(pixels) and stats.exact
        assert_matches_reference(stats, reference(pixels))

    def test_float_folder_matches_reference_exactly(self, tmp_path, rng):
        pixels = make_folder(tmp_path, rng, "float32", 3)
        stats = imagenorm.compute_stats(tmp_path, workers=2)
        assert stats.percentile_error == [0.0] * 4 and stats.percentile_method.startswith("exact")
        assert_matches_reference(stats, reference(pixels))  # percentiles included, exactly

    def test_float_histogram_percentiles_within_their_bound(self, tmp_path, rng):
        pixels = make_folder(tmp_path, rng, "float32", 3)
        stats = imagenorm.compute_stats(tmp_path, float_percentiles="histogram")
        ref = reference(pixels)
        assert_matches_reference(stats, ref, exact_percentiles=False)
        widths = stats.percentile_error
        assert all(w > 0 for w in widths)
        for row, want in enumerate(ref["channels"] + [ref["pooled"]]):
            got = (stats.channels + [stats.pooled])[row].percentiles
            for key, value in want["percentiles"].items():
                assert abs(got[key] - value) <= widths[row]

    def test_float_percentiles_exact_with_ties_and_concentrated_values(self, rng):
        images = [np.round(rng.normal(0, 1, (1, 40, 50)), 1).astype(np.float64) for _ in range(3)]
        images[1][0, :10] = 1e6  # an outlier stretches the range: most values share few bins
        stats = imagenorm.compute_stats(images)
        assert_matches_reference(stats, reference(images))

    def test_real_photographs_from_scikit_image(self):
        names = ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png"]
        paths = [SKIMAGE_DATA / name for name in names]
        stats = imagenorm.compute_stats([str(p) for p in paths])
        expected = [channel_first(np.asarray(Image.open(p).convert("RGB"))) for p in paths]
        assert_matches_reference(stats, reference(expected))

    def test_real_multipage_tiff(self):
        path = SKIMAGE_DATA / "multipage.tif"
        stats = imagenorm.compute_stats(str(path))
        import tifffile

        assert_matches_reference(stats, reference([tifffile.imread(path)[None]]))


class TestDeterminism:
    def test_workers_and_order_do_not_change_integer_results(self, tmp_path, rng):
        make_folder(tmp_path, rng, "uint16", 3, count=20)
        single = imagenorm.compute_stats(tmp_path, workers=0).to_dict()
        paths = [str(p) for p in sorted(tmp_path.rglob("*.*"))]
        random.Random(3).shuffle(paths)
        parallel = imagenorm.compute_stats(paths, workers=2).to_dict()
        spreads = []
        for document in (single, parallel):
            document.pop("created_at")
            spreads.append(document.pop("between_images"))  # float64 means of images: order rounds
        assert single == parallel
        for a, b in zip(spreads[0]["channels"], spreads[1]["channels"]):
            assert a == pytest.approx(b, rel=1e-12)

    def test_workers_float_results_agree(self, tmp_path, rng):
        make_folder(tmp_path, rng, "float64", 1, count=12)
        a = imagenorm.compute_stats(tmp_path, workers=0)
        b = imagenorm.compute_stats(tmp_path, workers=2)
        assert a.pooled.mean == pytest.approx(b.pooled.mean, rel=1e-12)
        assert a.pooled.std == pytest.approx(b.pooled.std, rel=1e-12)


class TestDatasetSources:
    def test_tensor_batch(self, rng):
        batch = torch.from_numpy(random_image(rng, "uint8", (4, 3, 10, 12)))
        stats = imagenorm.compute_stats(batch)
        assert stats.files == 4
        assert_matches_reference(stats, reference(list(batch.numpy())))

    def test_dataset_of_tuples_pil_and_arrays(self, rng):
        arrays = [random_image(rng, "uint8", (8, 9, 3)) for _ in range(3)]
        items = [(Image.fromarray(arrays[0]), 0), (arrays[1], 1), (torch.from_numpy(channel_first(arrays[2]).copy()), 2)]

        class Tiny(torch.utils.data.Dataset):
            def __len__(self):
                return len(items)

            def __getitem__(self, index):
                return items[index]

        stats = imagenorm.compute_stats(Tiny(), workers=2)
        assert_matches_reference(stats, reference([channel_first(a) for a in arrays]))

    def test_float_tensor_dataset(self, rng):
        images = [torch.rand(1, 6, 7, dtype=torch.float64) for _ in range(5)]
        stats = imagenorm.compute_stats(images)
        assert stats.value_scale == 1.0
        assert_matches_reference(stats, reference([i.numpy() for i in images]), exact_percentiles=False)


class TestBadInput:
    def test_fail_names_the_file(self, tmp_path, rng):
        make_folder(tmp_path, rng, "uint8", 1, count=4)
        (tmp_path / "part1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        with pytest.raises(ReadError, match=r"broken\.png: the data end after 18 bytes, inside the PNG header \(truncated\)"):
            imagenorm.compute_stats(tmp_path, workers=2)

    def test_skip_records_every_bad_file(self, tmp_path, rng):
        pixels = make_folder(tmp_path, rng, "uint8", 1, count=4)
        (tmp_path / "empty.png").write_bytes(b"")
        (tmp_path / "text.jpg").write_text("no")
        stats = imagenorm.compute_stats(tmp_path, on_error="skip", workers=2)
        assert [os.path.basename(s["path"]) for s in stats.skipped] == ["empty.png", "text.jpg"]
        assert stats.skipped[0]["reason"] == "empty file (0 bytes)"
        assert_matches_reference(stats, reference(pixels))

    def test_mixed_channels_is_an_error_naming_the_file(self, tmp_path, rng):
        write_pillow(tmp_path / "a.png", random_image(rng, "uint8", (5, 5, 3)))
        write_pillow(tmp_path / "b.png", random_image(rng, "uint8", (5, 5)))
        with pytest.raises(ReadError, match=r"b\.png: has 1 channel\(s\) \(gray\), but .*a\.png has 3"):
            imagenorm.compute_stats(tmp_path)
        assert imagenorm.compute_stats(tmp_path, convert="gray").channel_names == ("gray",)

    def test_empty_folder(self, tmp_path):
        (tmp_path / "readme.txt.bak").write_text("x")
        with pytest.raises(EmptyDatasetError, match="no images found under"):
            imagenorm.compute_stats(tmp_path)

    def test_all_skipped(self, tmp_path):
        (tmp_path / "a.png").write_bytes(b"")
        with pytest.raises(EmptyDatasetError):
            imagenorm.compute_stats(tmp_path, on_error="skip")

    def test_nan_policy(self, tmp_path, rng):
        good = random_image(rng, "float32", (6, 7))
        bad = good.copy()
        bad[0, :3] = np.nan
        bad[1, 0] = np.inf
        np.save(tmp_path / "a.npy", good)
        np.save(tmp_path / "b.npy", bad)
        with pytest.raises(ReadError, match=r"b\.npy: contains 3 NaN and 1 infinite values"):
            imagenorm.compute_stats(tmp_path)
        stats = imagenorm.compute_stats(tmp_path, nonfinite="ignore")
        assert stats.nonfinite == [4]
        finite = np.concatenate([good.ravel(), bad[np.isfinite(bad)]]).astype(np.float64)
        assert stats.pooled.count == finite.size
        assert stats.pooled.mean == pytest.approx(finite.mean(), rel=1e-12)
        assert stats.pooled.std == pytest.approx(finite.std(), rel=1e-12)
        skipped = imagenorm.compute_stats(tmp_path, on_error="skip")
        assert skipped.files == 1 and "NaN" in skipped.skipped[0]["reason"]

    def test_symlink_loop_ends_and_counts_each_file_once(self, tmp_path, rng):
        write_pillow(tmp_path / "a.png", random_image(rng, "uint8", (5, 5)))
        (tmp_path / "sub").mkdir()
        write_pillow(tmp_path / "sub" / "b.png", random_image(rng, "uint8", (5, 5)))
        os.symlink(tmp_path, tmp_path / "sub" / "loop")
        os.symlink(tmp_path / "a.png", tmp_path / "sub" / "alias.png")
        assert imagenorm.compute_stats(tmp_path).files == 2

    def test_non_utf8_file_name_keeps_stats_file_valid(self, tmp_path, rng):
        name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes, not UTF-8
        write_pillow(tmp_path / name, random_image(rng, "uint8", (5, 5)))
        (tmp_path / os.fsdecode(b"bad\xff.png")).write_bytes(b"")
        stats = imagenorm.compute_stats(tmp_path, on_error="skip")
        stats.save(tmp_path / "s.json")
        document = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
        assert document["skipped"][0]["path"].endswith("bad\\xff.png")
        assert stats.files == 1


class TestSources:
    def test_glob_and_list_file(self, tmp_path, rng):
        for name in ("a.png", "b.png", "c.jpg"):
            write_pillow(tmp_path / name, random_image(rng, "uint8", (5, 5, 3)))
        assert imagenorm.compute_stats(str(tmp_path / "*.png")).files == 2
        (tmp_path / "list.txt").write_text("# training split\na.png\n\nc.jpg\n")
        assert imagenorm.compute_stats(str(tmp_path / "list.txt")).files == 2

    def test_missing_listed_file_is_a_read_error(self, tmp_path, rng):
        write_pillow(tmp_path / "a.png", random_image(rng, "uint8", (5, 5)))
        (tmp_path / "list.txt").write_text("a.png\ngone.png\n")
        with pytest.raises(ReadError, match=r"gone\.png: no such file"):
            imagenorm.compute_stats(str(tmp_path / "list.txt"))
        assert imagenorm.compute_stats(str(tmp_path / "list.txt"), on_error="skip").files == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_progress_reports_every_item(tmp_path, rng, workers):
    make_folder(tmp_path, rng, "uint8", 1, count=7)
    done = []
    imagenorm.compute_stats(tmp_path, workers=workers, progress=done.append)
    assert sum(done) == 7 and all(n > 0 for n in done)


def test_accumulator_on_tensors_equals_files(rng):
    """StatsAccumulator keeps pixels on their device (CPU here); it must equal compute_stats."""
    import torch

    batches = [torch.from_numpy(random_image(rng, "int16", (3, 2, 7, 8))) for _ in range(3)]
    accumulator = imagenorm.StatsAccumulator()
    for batch in batches:
        accumulator.update(batch)
    stats = accumulator.compute()
    assert_matches_reference(stats, reference([image.numpy() for batch in batches for image in batch]))
    floats = imagenorm.StatsAccumulator()
    floats.update(torch.cat(batches).double() / 7)
    ref = reference([image.numpy() / 7 for batch in batches for image in batch])
    assert floats.compute().pooled.mean == pytest.approx(ref["pooled"]["mean"], rel=1e-12)
    with pytest.raises(ValueError, match="a batch of float64 after batches of int16"):
        accumulator.update(batches[0].double())
