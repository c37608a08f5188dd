"""Trial of `imagenorm compare` / `compare_stats`: drift numbers checked against scipy over all pixels."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats as sstats

import imagenorm
from imagenorm.compare import compare_stats


def _scipy(a, b) -> tuple[float, float]:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(sstats.wasserstein_distance(a, b)), float(sstats.ks_2samp(a, b).statistic)


def _psi(reference, other, eps=1e-4) -> float:
    """PSI over the reference's decile bins (-inf, q10], ..., (q90, inf); qk the smallest value whose CDF reaches k/10."""
    reference = np.sort(np.asarray(reference, np.float64).ravel())
    other = np.asarray(other, np.float64).ravel()
    n = reference.size
    edges = [reference[int(np.ceil(k * n / 10 - 1e-9)) - 1] for k in range(1, 10)]
    expected = np.diff(np.concatenate([[0.0], [np.mean(reference <= q) for q in edges], [1.0]]))
    actual = np.diff(np.concatenate([[0.0], [np.mean(other <= q) for q in edges], [1.0]]))
    expected, actual = np.maximum(expected, eps), np.maximum(actual, eps)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagenorm", "compare", *args], capture_output=True, text=True,
                          timeout=120)


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def _ct_small():
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom test data not available")
    return pydicom, path


def _write_ct(pydicom, path, folder, copies=1, intercept=None, as_hu_int16=False):
    folder.mkdir()
    for i in range(copies):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if as_hu_int16:  # the same HU values, stored signed with intercept 0 (another scanner's encoding)
                hu = (ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)).astype(np.int16)
                ds.PixelData = hu.tobytes()
                ds.PixelRepresentation = 1
                ds.RescaleIntercept = 0
            elif intercept is not None:
                ds.RescaleIntercept = intercept
            ds.SOPInstanceUID = f"{ds.SOPInstanceUID}{i}"
            ds.save_as(folder / f"{i}.dcm")


def _hu(pydicom, folder) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.concatenate([apply_modality_lut(ds.pixel_array, ds).ravel()
                               for ds in (pydicom.dcmread(p) for p in sorted(folder.iterdir()))])


# --------------------------------------------------------------------------------------------
# Bugs (each fails now)
# --------------------------------------------------------------------------------------------

def test_float_pooled_with_a_constant_channel_stays_within_its_error_bound():
    """A float channel holding one value is a step; pooled (a mixture with binned channels) must
    keep the step instead of spreading it linearly over the preceding knot interval."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (3, 60, 70)).astype(np.float32)
    b = rng.normal(0.05, 1.1, (3, 60, 70)).astype(np.float32)
    a[1] = 0.5
    b[1] = 0.5
    comparison = compare_stats(imagenorm.compute_stats(a), imagenorm.compute_stats(b))
    wasserstein, ks = _scipy(a, b)
    pooled = comparison.pooled
    assert abs(pooled.wasserstein_raw - wasserstein) <= pooled.wasserstein_raw_error
    assert abs(pooled.ks - ks) <= pooled.ks_error, (pooled.ks, ks, pooled.ks_error)
    assert abs(pooled.psi - _psi(a, b)) < 0.1, (pooled.psi, _psi(a, b))  # 0.008; now 0.618
    assert not comparison.pooled.drift  # true ks ~0.03, wasserstein ~0.05 stds


def test_float_psi_decile_is_the_smallest_value_across_empty_bins():
    """Reference with a gap (empty histogram bins) around its median: q50 is the end of the lower
    cluster, not somewhere inside the empty run (np.interp over a flat CDF)."""
    rng = np.random.default_rng(0)
    reference = np.concatenate([rng.uniform(0, 10, 5000), rng.uniform(90, 100, 5000)]).astype(np.float32)
    other = np.concatenate([rng.uniform(8.5, 9.5, 3000), rng.uniform(30, 70, 4000),
                            rng.uniform(94.5, 95.5, 3000)]).astype(np.float32)
    reference, other = reference.reshape(1, 100, 100), other.reshape(1, 100, 100)
    drift = compare_stats(imagenorm.compute_stats(reference), imagenorm.compute_stats(other)).channels[0]
    assert drift.psi == pytest.approx(_psi(reference, other), abs=0.05)  # 5.686; now 6.908


def test_ct_same_hu_in_int16_and_int32_files_is_compared_in_hu(tmp_path):
    """Scanner A stores unsigned pixels with intercept -1024 (modality values int32), scanner B the
    same HU signed with intercept 0 (int16): both are HU, as merge agrees; compare refuses them."""
    pydicom, path = _ct_small()
    _write_ct(pydicom, path, tmp_path / "a")
    _write_ct(pydicom, path, tmp_path / "b", as_hu_int16=True)
    a, b = imagenorm.compute_stats(tmp_path / "a"), imagenorm.compute_stats(tmp_path / "b")
    assert a.merge(b).pooled.count == 2 * a.pooled.count  # merging accepts them as one unit
    comparison = a.compare(b)
    assert comparison.scale == "raw"
    assert comparison.channels[0].wasserstein_raw == 0.0 and comparison.channels[0].ks == 0.0
    assert not comparison.drift


def test_nifti_int16_and_float32_volumes_are_compared_in_physical_units(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    data = rng.integers(-100, 1000, (16, 16, 8))
    for name, dtype, shift in (("a", np.int16, 0), ("b", np.float32, 5)):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image((data + shift).astype(dtype), np.eye(4)), tmp_path / name / "v.nii.gz")
    comparison = imagenorm.compute_stats(tmp_path / "a").compare(imagenorm.compute_stats(tmp_path / "b"))
    wasserstein, ks = _scipy(data, data + 5)
    assert comparison.scale == "raw"
    assert comparison.channels[0].wasserstein_raw == pytest.approx(wasserstein, abs=comparison.channels[0].wasserstein_raw_error + 1e-9)


def test_cli_json_with_infinite_threshold_is_not_an_internal_error(tmp_path):
    """`--max-wasserstein inf` (only KS decides) is accepted by the parser, then --json crashes."""
    rng = np.random.default_rng(2)
    imagenorm.compute_stats(rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)).save(tmp_path / "a.json")
    imagenorm.compute_stats(rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)).save(tmp_path / "b.json")
    done = _cli(str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", "--max-wasserstein", "inf")
    assert "internal error" not in done.stderr
    assert done.returncode in (0, 1, 2)
    if done.returncode != 2:
        _strict_json(done.stdout)


def test_ks_equal_to_max_ks_is_not_drift():
    """KS is exactly 3/10 (scipy: 0.3); drift means strictly greater than --max-ks 0.3."""
    a = np.array([0, 0, 0, 0, 5, 5, 5, 5, 5, 5], np.uint8).reshape(1, 2, 5)
    b = np.array([0, 5, 5, 5, 5, 5, 5, 5, 5, 5], np.uint8).reshape(1, 2, 5)
    assert _scipy(a, b)[1] == 0.3
    comparison = compare_stats(imagenorm.compute_stats(a), imagenorm.compute_stats(b), max_ks=0.3, max_wasserstein=100)
    assert not comparison.drift, comparison.channels[0].ks


# --------------------------------------------------------------------------------------------
# Verified behaviours (pass now)
# --------------------------------------------------------------------------------------------

def test_uint8_rgb_exact_against_scipy_and_symmetric():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 30, 40), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-5, 20, a.shape), 0, 255).astype(np.uint8)
    sa, sb = imagenorm.compute_stats(a), imagenorm.compute_stats(b)
    forward, backward = sa.compare(sb), sb.compare(sa)
    for i, (f, r) in enumerate(zip([*forward.channels, forward.pooled], [*backward.channels, backward.pooled])):
        x, y = (a[i], b[i]) if i < 3 else (a, b)
        wasserstein, ks = _scipy(x, y)
        assert f.wasserstein_raw == pytest.approx(wasserstein, abs=1e-12) and f.ks == pytest.approx(ks, abs=1e-12)
        assert r.wasserstein_raw == pytest.approx(wasserstein, abs=1e-12) and r.ks == pytest.approx(ks, abs=1e-12)
        assert f.psi == pytest.approx(_psi(x, y), abs=1e-12) and r.psi == pytest.approx(_psi(y, x), abs=1e-12)
        assert f.wasserstein_raw_error == 0 and f.ks_error == 0
        assert f.wasserstein == pytest.approx(wasserstein / np.asarray(x, np.float64).std(), rel=1e-12)


def test_8_and_16_bit_in_unit_scale_exact():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (1, 30, 40), dtype=np.uint8)
    b = (rng.integers(0, 256, (1, 30, 40)) * 257 + rng.integers(0, 200, (1, 30, 40))).astype(np.uint16)
    comparison = imagenorm.compute_stats(a).compare(imagenorm.compute_stats(b))
    wasserstein, ks = _scipy(a / 255.0, b / 65535.0)
    drift = comparison.channels[0]
    assert comparison.scale == "[0, 1]"
    assert drift.wasserstein_raw == pytest.approx(wasserstein, abs=1e-12) and drift.ks == pytest.approx(ks, abs=1e-12)
    # 8-bit k and 16-bit 257k are the same [0, 1] value: no drift at all
    same = imagenorm.compute_stats(a).compare(imagenorm.compute_stats(a.astype(np.uint16) * 257))
    assert same.channels[0].wasserstein_raw == 0 and same.channels[0].ks == 0 and not same.drift


def test_ct_shifted_intercept_from_stats_files_exact(tmp_path):
    pydicom, path = _ct_small()
    _write_ct(pydicom, path, tmp_path / "a", copies=2)
    _write_ct(pydicom, path, tmp_path / "b", copies=2, intercept=-994)
    for name in "ab":
        imagenorm.compute_stats(tmp_path / name).save(tmp_path / f"{name}.json")
    done = _cli(str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    assert done.returncode == 1, done.stderr
    document = _strict_json(done.stdout)
    a, b = _hu(pydicom, tmp_path / "a"), _hu(pydicom, tmp_path / "b")
    wasserstein, ks = _scipy(a, b)
    gray = document["channels"][0]
    assert gray["wasserstein_raw"] == pytest.approx(30.0, abs=1e-9) == wasserstein
    assert gray["ks"] == pytest.approx(ks, abs=1e-12) and gray["psi"] == pytest.approx(_psi(a, b), abs=1e-12)
    assert document["drift"] is True and document["scale"] == "raw"


def test_nonzero_mask_compares_foreground_only():
    rng = np.random.default_rng(3)
    a = (rng.integers(1, 200, (1, 20, 30)) * (rng.random((1, 20, 30)) > 0.5)).astype(np.uint8)
    b = (np.clip(a.astype(int) + 10, 0, 255) * (rng.random((1, 20, 30)) > 0.3)).astype(np.uint8)
    drift = imagenorm.compute_stats(a, mask="nonzero").compare(imagenorm.compute_stats(b, mask="nonzero")).channels[0]
    wasserstein, ks = _scipy(a[a != 0], b[b != 0])
    assert drift.wasserstein_raw == pytest.approx(wasserstein, abs=1e-12) and drift.ks == pytest.approx(ks, abs=1e-12)


def test_merged_reference_equals_whole():
    rng = np.random.default_rng(5)
    a1 = rng.integers(0, 100, (1, 10, 10), dtype=np.uint8)
    a2 = rng.integers(50, 256, (1, 10, 12), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 7, 9), dtype=np.uint8)
    merged = imagenorm.compute_stats(a1).merge(imagenorm.compute_stats(a2))
    drift = merged.compare(imagenorm.compute_stats(b)).channels[0]
    whole = np.concatenate([a1.ravel(), a2.ravel()])
    wasserstein, ks = _scipy(whole, b)
    assert drift.wasserstein_raw == pytest.approx(wasserstein, abs=1e-12) and drift.ks == pytest.approx(ks, abs=1e-12)
    assert drift.psi == pytest.approx(_psi(whole, b), abs=1e-12)


def test_no_overlap_and_one_pixel():
    a = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    drift = imagenorm.compute_stats(a).compare(imagenorm.compute_stats(a + 200)).channels[0]
    assert drift.ks == 1.0 and drift.wasserstein_raw == pytest.approx(200.0, abs=1e-12)
    one = imagenorm.compute_stats(np.array([[[5]]], np.uint8)).compare(imagenorm.compute_stats(np.array([[[9]]], np.uint8)))
    assert one.channels[0].ks == 1.0 and one.channels[0].wasserstein_raw == 4.0 and one.channels[0].wasserstein is None
    assert one.drift


def test_float_within_reported_error_bounds():
    rng = np.random.default_rng(1)
    a = rng.normal(100, 20, (1, 60, 70)).astype(np.float32)
    b = rng.normal(102, 25, (1, 50, 60)).astype(np.float32)
    drift = imagenorm.compute_stats(a).compare(imagenorm.compute_stats(b)).channels[0]
    wasserstein, ks = _scipy(a, b)
    assert 0 < drift.wasserstein_raw_error and abs(drift.wasserstein_raw - wasserstein) <= drift.wasserstein_raw_error
    assert 0 < drift.ks_error and abs(drift.ks - ks) <= drift.ks_error


def test_cli_constant_reference_json_strict_and_errors(tmp_path):
    imagenorm.compute_stats(np.full((1, 3, 3), 7, np.uint8)).save(tmp_path / "c7.json")
    imagenorm.compute_stats(np.full((1, 3, 3), 9, np.uint8)).save(tmp_path / "c9.json")
    done = _cli(str(tmp_path / "c7.json"), str(tmp_path / "c9.json"), "--json")
    assert done.returncode == 1
    document = _strict_json(done.stdout)
    assert document["channels"][0]["wasserstein"] is None and document["channels"][0]["ks"] == 1.0
    assert _cli(str(tmp_path / "c7.json"), str(tmp_path / "c7.json")).returncode == 0
    missing = _cli(str(tmp_path / "c7.json"), str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "x.json").write_text("not json")
    bad = _cli(str(tmp_path / "x.json"), str(tmp_path / "c7.json"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    imagenorm.compute_stats(np.random.default_rng(0).random((1, 4, 4)).astype(np.float32),
                            percentiles=False).save(tmp_path / "f.json")
    nohist = _cli(str(tmp_path / "f.json"), str(tmp_path / "f.json"))
    assert nohist.returncode == 1 and "histogram" in nohist.stderr and "Traceback" not in nohist.stderr
    assert _cli(str(tmp_path / "c7.json"), str(tmp_path / "c9.json"), "--max-ks", "2").returncode == 2
