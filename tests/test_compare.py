"""Exact drift between two stats files (issue 13): checked against scipy over every pixel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app
from imagenorm.compare import PSI_EPSILON, compare_stats

stats_module = pytest.importorskip("scipy.stats")
runner = CliRunner()


def reference_psi(reference: np.ndarray, other: np.ndarray) -> float:
    """PSI over the reference's decile bins (values up to each decile), from the pixels."""
    ordered = np.sort(reference)
    edges = [ordered[int(np.ceil(q / 10 * ordered.size)) - 1] for q in range(1, 10)]
    share = lambda values: np.diff(np.concatenate([[0], [np.mean(values <= e) for e in edges], [1]]))  # noqa: E731
    expected, actual = np.maximum(share(reference), PSI_EPSILON), np.maximum(share(other), PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
def test_integer_drift_is_exact(rng, dtype):
    info = np.iinfo(dtype)
    low, high = max(info.min, -3000), min(info.max, 3000)
    first = rng.integers(low, high, (4, 3, 20, 25)).astype(dtype)
    second = np.clip(rng.integers(low, high, (5, 3, 18, 21)) * 0.8 + 40, low, high).astype(dtype)
    drift = compare_stats(imagenorm.compute_stats(first), imagenorm.compute_stats(second))
    for index, channel in enumerate([*drift.channels, drift.pooled]):
        a = (first[:, index] if index < 3 else first.transpose(1, 0, 2, 3)).ravel().astype(np.float64)
        b = (second[:, index] if index < 3 else second.transpose(1, 0, 2, 3)).ravel().astype(np.float64)
        assert channel.wasserstein_raw == pytest.approx(stats_module.wasserstein_distance(a, b), rel=1e-12)
        assert channel.ks == pytest.approx(stats_module.ks_2samp(a, b).statistic, rel=1e-12, abs=1e-15)
        assert channel.wasserstein == pytest.approx(channel.wasserstein_raw / a.std(), rel=1e-9)
        assert channel.mean_shift == pytest.approx(b.mean() - a.mean(), rel=1e-9)
        assert channel.std_ratio == pytest.approx(b.std() / a.std(), rel=1e-9)
        assert channel.psi == pytest.approx(reference_psi(a, b), rel=1e-9)
        assert channel.wasserstein_raw_error == channel.ks_error == 0


def test_float_drift_is_within_its_stated_error(rng):
    first = rng.normal(0, 1, (6, 3, 30, 30)).astype(np.float32)
    second = rng.normal(0.15, 1.2, (6, 3, 30, 30)).astype(np.float32)
    drift = imagenorm.compute_stats(first).compare(imagenorm.compute_stats(second))
    for index, channel in enumerate([*drift.channels, drift.pooled]):
        a = (first[:, index] if index < 3 else first).ravel().astype(np.float64)
        b = (second[:, index] if index < 3 else second).ravel().astype(np.float64)
        assert abs(channel.wasserstein_raw - stats_module.wasserstein_distance(a, b)) <= channel.wasserstein_raw_error
        assert abs(channel.ks - stats_module.ks_2samp(a, b).statistic) <= channel.ks_error
        assert 0 < channel.wasserstein_raw_error < 0.1 and 0 < channel.ks_error < 0.05


def test_same_data_do_not_drift_and_a_shift_does(rng):
    data = rng.integers(0, 256, (3, 3, 40, 40), dtype=np.uint8)
    stats = imagenorm.compute_stats(data)
    same = stats.compare(imagenorm.compute_stats(data.copy()))
    assert not same.drift and all(c.wasserstein == 0 and c.ks == 0 and c.psi == 0 for c in same.channels)
    brighter = data.copy()
    brighter[:, 1] = np.clip(brighter[:, 1].astype(int) + 40, 0, 255)
    drift = stats.compare(imagenorm.compute_stats(brighter))
    assert drift.drift and drift.drifting == ["green", "pooled"]
    assert not stats.compare(imagenorm.compute_stats(brighter), max_wasserstein=1.0, max_ks=1.0).drift


def test_different_dtypes_compare_in_the_unit_scale_and_other_units_are_refused(rng):
    sixteen = rng.integers(0, 65536, (2, 1, 30, 30)).astype(np.uint16)
    eight = (sixteen // 257).astype(np.uint8)
    drift = compare_stats(imagenorm.compute_stats(sixteen), imagenorm.compute_stats(eight))
    assert drift.scale == "[0, 1]" and drift.channels[0].wasserstein_raw < 1 / 255 and not drift.drift
    assert "compared in the [0, 1] scale" in drift.notes[0]
    with pytest.raises(imagenorm.ImagenormError, match="cannot compare channels"):
        compare_stats(imagenorm.compute_stats(sixteen), imagenorm.compute_stats(np.repeat(sixteen, 3, axis=1)))
    hounsfield = imagenorm.compute_stats(rng.integers(-1000, 2000, (2, 1, 9, 9)).astype(np.int32))
    with pytest.raises(imagenorm.ImagenormError, match="share no unit"):
        compare_stats(hounsfield, imagenorm.compute_stats(eight))
    with pytest.raises(imagenorm.OptionError, match="max_ks"):
        compare_stats(hounsfield, hounsfield, max_ks=-1)


def test_constant_reference_and_float_stats_without_histograms(rng):
    flat = imagenorm.compute_stats(np.full((1, 1, 4, 4), 7, np.uint8))
    drift = flat.compare(imagenorm.compute_stats(np.full((1, 1, 4, 4), 9, np.uint8)))
    channel = drift.channels[0]
    assert channel.wasserstein is None and channel.std_ratio is None and channel.wasserstein_raw == 2 and drift.drift
    assert not flat.compare(flat).drift
    moments_only = imagenorm.compute_stats(rng.normal(size=(2, 1, 5, 5)).astype(np.float32), percentiles=False)
    with pytest.raises(imagenorm.ImagenormError, match="no histogram"):
        moments_only.compare(moments_only)


def test_cli_exit_status_table_and_json(tmp_path, rng):
    data = rng.integers(0, 4096, (3, 3, 20, 20)).astype(np.uint16)
    imagenorm.compute_stats(data).save(tmp_path / "train.json")
    imagenorm.compute_stats(data[:2]).save(tmp_path / "same.json")
    imagenorm.compute_stats((data * 1.5).astype(np.uint16)).save(tmp_path / "test.json")
    result = runner.invoke(app, ["compare", str(tmp_path / "train.json"), str(tmp_path / "same.json")])
    assert result.exit_code == 0 and "no drift" in result.output
    result = runner.invoke(app, ["compare", str(tmp_path / "train.json"), str(tmp_path / "test.json")])
    assert result.exit_code == 1 and "drift in red, green, blue, pooled" in result.output
    result = runner.invoke(app, ["compare", str(tmp_path / "train.json"), str(tmp_path / "test.json"), "--json"])
    document = json.loads(result.stdout)
    assert result.exit_code == 1 and document["drift"] is True
    assert [c["name"] for c in document["channels"]] == ["red", "green", "blue"] and document["pooled"]["name"] == "pooled"
    keys = {"name", "mean_shift", "std_ratio", "wasserstein", "wasserstein_raw", "ks", "psi", "drift"}
    assert keys <= set(document["channels"][0]) and keys <= set(document["pooled"])
    loaded = imagenorm.DatasetStats.load(tmp_path / "train.json").compare(imagenorm.DatasetStats.load(tmp_path / "test.json"))
    assert loaded.to_dict() == compare_stats(imagenorm.compute_stats(data), imagenorm.compute_stats((data * 1.5).astype(np.uint16))).to_dict()
    result = runner.invoke(app, ["compare", str(tmp_path / "train.json"), str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "missing.json" in result.output and "Traceback" not in result.output


def test_scales_float_widths_signed_integers_and_floats_outside_the_unit_range(rng):
    pixels = rng.integers(0, 256, (2, 1, 16, 16)).astype(np.uint8)
    as_float = imagenorm.compute_stats(pixels.astype(np.float32))  # 0..255 in float: no [0, 1] scale
    with pytest.raises(imagenorm.ImagenormError, match=r"not in the \[0, 1\] scale"):
        compare_stats(imagenorm.compute_stats(pixels), as_float)
    unit = imagenorm.compute_stats((pixels / 255).astype(np.float32))
    assert compare_stats(imagenorm.compute_stats(pixels), unit).scale == "[0, 1]"
    wide = compare_stats(unit, imagenorm.compute_stats((pixels / 255).astype(np.float64)))
    assert wide.scale == "raw" and "compared as they are" in wide.notes[0]
    with pytest.raises(imagenorm.ImagenormError, match="int16 values have no"):
        compare_stats(imagenorm.compute_stats(pixels.astype(np.int16)), imagenorm.compute_stats(pixels))
    with pytest.raises(imagenorm.OptionError, match="must be a DatasetStats"):
        compare_stats(pixels, unit)


def test_a_16_bit_dataset_against_its_own_copy_is_exactly_no_drift(rng):
    data = rng.integers(0, 65536, (2, 3, 64, 64)).astype(np.uint16)
    drift = imagenorm.compute_stats(data).compare(imagenorm.compute_stats(data.copy()))
    assert not drift.drift and all(c.ks == 0 and c.wasserstein_raw == 0 for c in [*drift.channels, drift.pooled])


def test_lazy_kernels_compile_once_across_threads_and_pickle():
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from imagenorm.compiled import kernel

    @kernel()
    def add_one(x):
        return x + 1

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(add_one, range(8))) == list(range(1, 9))
    assert add_one.compiled() is add_one.compiled()
    import imagenorm.fused as fused

    assert pickle.loads(pickle.dumps(fused._planes)) is fused._planes
