"""The stats file contract: schema, round trip, exact merge, validation, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import imagenorm
from imagenorm import atomic
from imagenorm.errors import StatsFileError

from conftest import random_image

REQUIRED = ["schema", "created_by", "dtype", "value_scale", "files", "skipped", "channels", "pooled"]
PERCENTILE_KEYS = ["0.5", "1", "5", "25", "50", "75", "95", "99", "99.5"]


@pytest.fixture
def halves(rng):
    first = [random_image(rng, "uint16", (3, 11, 13)) for _ in range(3)]
    second = [random_image(rng, "uint16", (3, 11, 13)) for _ in range(4)]
    return first, second


def test_contract_fields(tmp_path, halves):
    stats = imagenorm.compute_stats(halves[0])
    stats.save(tmp_path / "s.json")
    document = json.loads((tmp_path / "s.json").read_text())
    for key in REQUIRED:
        assert key in document
    assert document["schema"] == "imagenorm.stats/1"
    assert document["created_by"].startswith("imagenorm ")
    assert document["dtype"] == "uint16" and document["value_scale"] == 65535
    for entry in document["channels"] + [document["pooled"]]:
        assert list(entry["percentiles"]) == PERCENTILE_KEYS
        for key in ("count", "mean", "std", "min", "max"):
            assert key in entry
    histogram = document["channels"][0]["histogram"]
    assert sum(histogram["counts"]) == document["channels"][0]["count"]
    assert histogram["first_value"] == document["channels"][0]["min"]


def test_round_trip_and_exact_merge_of_loaded_files(tmp_path, halves):
    first, second = halves
    imagenorm.compute_stats(first).save(tmp_path / "a.json")
    imagenorm.compute_stats(second).save(tmp_path / "b.json")
    merged = imagenorm.DatasetStats.load(tmp_path / "a.json").merge(imagenorm.DatasetStats.load(tmp_path / "b.json"))
    whole = imagenorm.compute_stats(first + second)
    assert merged.channels == whole.channels and merged.pooled == whole.pooled
    assert merged.files == 7


def test_float_round_trip_keeps_numbers(tmp_path, rng):
    stats = imagenorm.compute_stats([random_image(rng, "float32", (2, 9, 9)) for _ in range(3)])
    stats.save(tmp_path / "f.json")
    loaded = imagenorm.DatasetStats.load(tmp_path / "f.json")
    for got, want in zip(loaded.channels + [loaded.pooled], stats.channels + [stats.pooled]):
        assert got.mean == want.mean and got.min == want.min and got.percentiles == want.percentiles
        assert got.std == pytest.approx(want.std, rel=1e-15)
    assert "percentile_max_error" in json.loads((tmp_path / "f.json").read_text())


def test_merge_refuses_other_layouts(rng):
    a = imagenorm.compute_stats([random_image(rng, "uint8", (3, 4, 4))])
    b = imagenorm.compute_stats([random_image(rng, "uint16", (3, 4, 4))])
    with pytest.raises(imagenorm.ImagenormError, match="cannot merge statistics of uint8"):
        a.merge(b)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(schema="other/2"), "schema is 'other/2'"),
        (lambda d: d.pop("channels"), "missing field 'channels'"),
        (lambda d: d["pooled"].update(mean="high"), "'pooled.mean' should be"),
        (lambda d: d["channels"][0].pop("histogram"), r"missing field 'channels\[0\].histogram'"),
        (lambda d: d["channels"][0]["histogram"].update(first_value=70000), "does not fit dtype uint16"),
        (lambda d: d.update(dtype="banana"), "not a numpy dtype"),
    ],
)
def test_validation_names_what_is_wrong(tmp_path, halves, change, message):
    document = imagenorm.compute_stats(halves[0]).to_dict()
    change(document)
    (tmp_path / "s.json").write_text(json.dumps(document))
    with pytest.raises(StatsFileError, match=message):
        imagenorm.DatasetStats.load(tmp_path / "s.json")


def test_not_json(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(StatsFileError, match="not a valid JSON stats file"):
        imagenorm.DatasetStats.load(tmp_path / "s.json")


def test_failed_write_keeps_the_old_file(tmp_path, halves, monkeypatch):
    target = tmp_path / "s.json"
    imagenorm.compute_stats(halves[0]).save(target)
    before = target.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        imagenorm.compute_stats(halves[1]).save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_between_image_spread_recorded_and_merged(tmp_path, rng):
    dark = [random_image(rng, "uint8", (1, 8, 8)) // 4 for _ in range(3)]
    bright = [(random_image(rng, "uint8", (1, 8, 8)) // 4 + 150).astype(np.uint8) for _ in range(2)]
    stats = imagenorm.compute_stats(dark + bright, workers=2)
    means = np.array([image.mean() for image in dark + bright])
    stds = np.array([image.std() for image in dark + bright])
    document = stats.to_dict()["between_images"]
    assert document["images"] == 5
    entry = document["channels"][0]
    assert entry["mean_of_means"] == pytest.approx(means.mean(), rel=1e-12)
    assert entry["std_of_means"] == pytest.approx(means.std(), rel=1e-12)
    assert entry["mean_of_stds"] == pytest.approx(stds.mean(), rel=1e-12)
    assert entry["std_of_stds"] == pytest.approx(stds.std(), rel=1e-12)
    imagenorm.compute_stats(dark).save(tmp_path / "a.json")
    imagenorm.compute_stats(bright).save(tmp_path / "b.json")
    merged = imagenorm.DatasetStats.load(tmp_path / "a.json").merge(imagenorm.DatasetStats.load(tmp_path / "b.json"))
    assert merged.to_dict()["between_images"]["channels"][0]["std_of_means"] == pytest.approx(means.std(), rel=1e-9)
