"""Measure once, normalize the same way: read options recorded in the stats file and honoured
by check, apply and the transforms; mixed dtypes promoted where the units allow it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from pydicom.pixels import apply_modality_lut
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app
from imagenorm.readers import luminance

from conftest import assert_matches_reference, reference, write_png

DICOM = Path(pydicom.__file__).parent / "data" / "test_files"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def applied(output: Path) -> list[np.ndarray]:
    return [np.load(path) for path in sorted(output.rglob("*.npy"))]


def zscore_reference(pixels: list[np.ndarray]) -> list[np.ndarray]:
    """float64 per-channel z-score of channel-first images with the statistics of all of them."""
    ref = reference(pixels)
    mean = np.array([c["mean"] for c in ref["channels"]])
    std = np.array([c["std"] for c in ref["channels"]])
    shape = (-1,) + (1,) * (pixels[0].ndim - 1)
    return [(p.astype(np.float64) - mean.reshape(shape)) / std.reshape(shape) for p in pixels]


def assert_applied_equals(output: Path, expected: list[np.ndarray]) -> None:
    got = applied(output)
    assert len(got) == len(expected)
    for array, want in zip(got, expected):
        assert array.shape == want.shape
        np.testing.assert_allclose(array, want, rtol=2e-6, atol=2e-5)


# --- part 1: every read option travels from stats to check and apply -----------------------
def rgba_folder(folder: Path, rng) -> list[np.ndarray]:
    folder.mkdir()
    images = []
    for index in range(3):
        pixels = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
        pixels[..., 3] = rng.integers(0, 40, (10, 12))  # a dim alpha channel: very different statistics
        write_png(folder / f"{index}.png", pixels)
        images.append(np.moveaxis(pixels, -1, 0))
    return images


def test_alpha_kept_is_checked_and_applied_without_repeating_it(tmp_path, rng):
    images = rgba_folder(tmp_path / "data", rng)
    assert invoke("stats", str(tmp_path / "data"), "--alpha", "keep", "-o", str(tmp_path / "s.json")).exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text())["read_options"]["alpha"] == "keep"
    checked = invoke("check", str(tmp_path / "data"), "-s", str(tmp_path / "s.json"), "-m", "zscore")
    assert checked.exit_code == 0, checked.output
    assert "alpha" in checked.output
    result = invoke("apply", str(tmp_path / "data"), "-s", str(tmp_path / "s.json"), "-m", "zscore", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert_applied_equals(tmp_path / "out", zscore_reference(images))


def test_gray_conversion_is_applied_in_the_measured_units(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    grays = []
    for index in range(3):
        pixels = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
        write_png(folder / f"{index}.png", pixels)
        grays.append(luminance(np.moveaxis(pixels, -1, 0))[None])
    stats = imagenorm.compute_stats(folder, convert="gray")
    stats.save(tmp_path / "s.json")
    result = invoke("apply", str(folder), "-s", str(tmp_path / "s.json"), "-m", "zscore", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert_applied_equals(tmp_path / "out", zscore_reference(grays))


def test_dicom_stored_values_are_applied_as_stored_not_in_hounsfield_units(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    stored = []
    for index in range(3):
        dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
        pixels = (dataset.pixel_array.astype(np.int32) + 11 * index).astype(np.int16)
        dataset.PixelData = pixels.tobytes()
        dataset.SeriesInstanceUID = f"1.2.3.{index}"  # separate series: one image each
        dataset.save_as(folder / f"{index}.dcm")
        stored.append(pixels[None])
    assert invoke("stats", str(folder), "--dicom-values", "stored", "-o", str(tmp_path / "s.json")).exit_code == 0
    result = invoke("apply", str(folder), "-s", str(tmp_path / "s.json"), "-m", "zscore", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert_applied_equals(tmp_path / "out", zscore_reference(stored))  # in HU it would be shifted by 1024 / std


def test_monochrome1_inverted_is_checked_as_measured(tmp_path):
    folder = tmp_path / "m1"
    folder.mkdir()
    for index in range(2):
        dataset = pydicom.dcmread(DICOM / "MR_small.dcm")
        dataset.PhotometricInterpretation = "MONOCHROME1"
        dataset.SeriesInstanceUID = f"1.2.3.{index}"
        dataset.save_as(folder / f"{index}.dcm")
    stats = imagenorm.compute_stats(folder, monochrome1="invert")
    stats.save(tmp_path / "s.json")
    report = imagenorm.check_normalization(folder, imagenorm.DatasetStats.load(tmp_path / "s.json"),
                                                 imagenorm.MethodOptions("zscore"), tolerance=1e-5)
    assert report.passed and report.read_options.monochrome1 == "invert"
    kept = imagenorm.check_normalization(folder, stats, imagenorm.MethodOptions("minmax"),
                                               tolerance=1e-6)
    assert kept.passed  # inverted values stay inside the measured range exactly


def test_nifti_4d_pooled_is_read_pooled_by_check(tmp_path, rng):
    volume = rng.normal(50, 10, (6, 5, 4, 3)).astype(np.float32)
    nibabel.Nifti1Image(volume, np.eye(4)).to_filename(tmp_path / "v.nii.gz")
    assert invoke("stats", str(tmp_path / "v.nii.gz"), "--nifti-4d", "pooled", "-o", str(tmp_path / "s.json")).exit_code == 0
    checked = invoke("check", str(tmp_path / "v.nii.gz"), "-s", str(tmp_path / "s.json"), "-m", "zscore", "-t", "1e-6")
    assert checked.exit_code == 0, checked.output  # read as 3 channels it would not fit 1-channel statistics


def test_masked_zscore_maps_every_voxel_and_is_measured_on_the_foreground(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    volumes = []
    for index in range(2):
        volume = np.full((8, 7, 6), -1000, np.int16)
        volume[2:6, 2:5, 1:5] = rng.integers(-100, 300, (4, 3, 4))
        nibabel.Nifti1Image(volume, np.eye(4)).to_filename(folder / f"{index}.nii")
        volumes.append(volume)
    stats = imagenorm.compute_stats([str(folder / "0.nii"), str(folder / "1.nii")], mask="threshold:>-500")
    stats.save(tmp_path / "s.json")
    checked = invoke("check", str(folder / "0.nii"), str(folder / "1.nii"), "-s", str(tmp_path / "s.json"), "-m", "zscore",
                     "-t", "1e-6")
    assert checked.exit_code == 0, checked.output
    unmasked = imagenorm.check_normalization([str(folder / "0.nii"), str(folder / "1.nii")],
                                                   stats.replace(read_options=imagenorm.ReadOptions()),
                                                   imagenorm.MethodOptions("zscore"))
    assert not unmasked.passed  # over all voxels the background dominates: the mask matters
    out = tmp_path / "out"
    assert invoke("apply", str(folder / "0.nii"), str(folder / "1.nii"), "-s", str(tmp_path / "s.json"), "-m", "zscore",
                  "-o", str(out)).exit_code == 0
    mean, std = stats.pooled.mean, stats.pooled.std
    for array, volume in zip(applied(out), volumes):
        assert array.shape == (1,) + volume.shape  # every voxel mapped
        np.testing.assert_allclose(array[0], (volume - mean) / std, rtol=1e-5, atol=1e-5)


def test_given_option_that_conflicts_is_refused_naming_both(tmp_path, rng):
    rgba_folder(tmp_path / "data", rng)
    assert invoke("stats", str(tmp_path / "data"), "--alpha", "keep", "-o", str(tmp_path / "s.json")).exit_code == 0
    result = invoke("check", str(tmp_path / "data"), "-s", str(tmp_path / "s.json"), "-m", "zscore", "--alpha", "drop")
    assert result.exit_code == 2
    assert "--alpha drop was given" in result.output and "--alpha keep" in result.output
    assert "Error" not in result.output and "OptionConflictError" not in result.output
    same = invoke("check", str(tmp_path / "data"), "-s", str(tmp_path / "s.json"), "-m", "zscore", "--alpha", "keep")
    assert same.exit_code == 0, same.output
    with pytest.raises(imagenorm.OptionConflictError, match="alpha='drop' was given"):
        imagenorm.check_normalization(tmp_path / "data", imagenorm.DatasetStats.load(tmp_path / "s.json"),
                                            imagenorm.MethodOptions("zscore"), alpha="drop")


def test_old_stats_file_without_read_options_loads_with_the_defaults(tmp_path):
    stats = imagenorm.compute_stats(np.arange(24, dtype=np.uint8).reshape(1, 4, 6), mask="nonzero")
    document = stats.to_dict()
    del document["read_options"], document["source_dtypes"], document["units"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    loaded = imagenorm.DatasetStats.load(tmp_path / "old.json")
    assert loaded.read_options == imagenorm.ReadOptions(mask="nonzero")
    assert loaded.channels == stats.channels


# --- part 2: heterogeneous archives ---------------------------------------------------------
def ct_file(path: Path, stored: np.ndarray, bits_stored: int, uid: str) -> np.ndarray:
    dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
    dataset.BitsStored, dataset.HighBit = bits_stored, bits_stored - 1
    dataset.PixelData = stored.astype(np.int16).tobytes()
    dataset.SeriesInstanceUID = uid
    dataset.save_as(path)
    return apply_modality_lut(stored, dataset).astype(np.float64)[None]


def test_ct_folder_of_int16_and_int32_scans_is_exact(tmp_path, rng):
    folder = tmp_path / "ct"
    folder.mkdir()
    expected = [
        ct_file(folder / "a.dcm", rng.integers(-1000, 2000, (128, 128)), 12, "1.1"),  # -1024 + 12 bits: int16
        ct_file(folder / "b.dcm", rng.integers(-30000, 30000, (128, 128)), 16, "1.2"),  # 16 bits: int32
    ]
    dtypes = {imagenorm.readers.read_image(folder / name).pixels.dtype.name for name in ("a.dcm", "b.dcm")}
    assert dtypes == {"int16", "int32"}
    stats = imagenorm.compute_stats(folder)
    assert stats.exact and stats.dtype == "int32" and stats.source_dtypes == ("int16", "int32")
    assert_matches_reference(stats, reference(expected))
    assert any("int16 and int32 images measured together as int32" in note for note in stats.notes)
    in_workers = imagenorm.compute_stats(folder, workers=2)  # chunks merge int16 and int32 histograms
    assert in_workers.state == stats.state and in_workers.channels == stats.channels
    stats.save(tmp_path / "s.json")
    assert imagenorm.DatasetStats.load(tmp_path / "s.json") == imagenorm.DatasetStats.load(tmp_path / "s.json")
    transform = imagenorm.Standardize.from_stats(imagenorm.DatasetStats.load(tmp_path / "s.json"))
    for dtype in (torch.int16, torch.int32):  # both measured dtypes are raw units
        x = torch.tensor([[[-1000, 0, 1000]]], dtype=dtype)
        expected_z = (np.array([-1000, 0, 1000]) - stats.mean[0]) / stats.std[0]
        np.testing.assert_allclose(transform(x)[0, 0].numpy(), expected_z, rtol=1e-5)
    hu = torch.tensor([[[0, 200]]], dtype=torch.uint8)  # physical units: any integer container holds HU
    np.testing.assert_allclose(transform(hu)[0, 0].numpy(), (np.array([0, 200]) - stats.mean[0]) / stats.std[0], rtol=1e-5)


def test_mr_folder_of_uint16_and_a_fractional_rescale_is_float64(tmp_path):
    folder = tmp_path / "mr"
    folder.mkdir()
    expected = []
    for index, slope in enumerate((None, None, "0.5")):
        dataset = pydicom.dcmread(DICOM / "MR_small.dcm")
        dataset.PixelRepresentation = 0  # unsigned: uint16
        dataset.SeriesInstanceUID = f"2.{index}"
        if slope is not None:
            dataset.RescaleSlope, dataset.RescaleIntercept = slope, "3"
        dataset.save_as(folder / f"{index}.dcm")
        expected.append(apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)[None])
    stats = imagenorm.compute_stats(folder)
    assert stats.dtype == "float64" and stats.source_dtypes == ("float64", "uint16") and not stats.exact
    assert_matches_reference(stats, reference(expected))


def test_nifti_float32_next_to_float64_is_float64(tmp_path, rng):
    expected = []
    for index, dtype in enumerate((np.float32, np.float64)):
        volume = rng.normal(0.1, 3.0, (9, 8, 7)).astype(dtype)
        nibabel.Nifti1Image(volume, np.eye(4)).to_filename(tmp_path / f"{index}.nii")
        expected.append(volume.astype(np.float64)[None])
    stats = imagenorm.compute_stats(tmp_path)
    assert stats.dtype == "float64" and stats.source_dtypes == ("float32", "float64")
    assert_matches_reference(stats, reference(expected))


def eight_and_sixteen_bit(folder: Path, rng) -> list[np.ndarray]:
    folder.mkdir()
    eight = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    sixteen = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    write_png(folder / "a8.png", eight)
    write_png(folder / "b16.png", sixteen)
    return [eight[None], sixteen[None]]


def test_8_and_16_bit_png_refuse_unless_scaled(tmp_path, rng):
    images = eight_and_sixteen_bit(tmp_path / "mixed", rng)
    with pytest.raises(imagenorm.ReadError, match="b16.png: has uint16 raw values, but .*a8.png has uint8 raw values: raw values of different bit depths"):
        imagenorm.compute_stats(tmp_path / "mixed")
    result = invoke("stats", str(tmp_path / "mixed"))
    assert result.exit_code == 1 and "--mixed-depth scale" in result.output and "mixed_depth" not in result.output
    stats = imagenorm.compute_stats(tmp_path / "mixed", mixed_depth="scale")
    assert stats.dtype == "float64" and stats.value_scale == 1.0 and stats.raw_input_dtypes == ()
    scaled = [images[0] / 255.0, images[1] / 65535.0]
    assert_matches_reference(stats, reference(scaled))
    transform = imagenorm.Standardize.from_stats(stats)
    for image in images:  # each integer dtype divided by its own maximum
        x = torch.from_numpy(image.astype(np.int32 if image.dtype == np.uint16 else image.dtype))
        if image.dtype == np.uint16:
            x = torch.from_numpy(image)
        want = (image / float(np.iinfo(image.dtype).max) - stats.mean[0]) / stats.std[0]
        np.testing.assert_allclose(transform(x).numpy(), want, rtol=1e-5, atol=1e-5)
    assert stats.merge(stats).read_options.mixed_depth == "scale"


def test_merge_of_different_read_options_is_refused():
    data = np.arange(24, dtype=np.uint8).reshape(1, 4, 6)
    with pytest.raises(imagenorm.ImagenormError, match="mask='nonzero'"):
        imagenorm.compute_stats(data, mask="nonzero").merge(imagenorm.compute_stats(data))


# --- part 4: a good guest -----------------------------------------------------------------
@pytest.mark.parametrize("options, allowed", [
    ({"on_error": "skp"}, "'fail', 'skip'"),
    ({"mask": "nonzer"}, "'nonzero'"),
    ({"alpha": "kep"}, "'drop', 'keep'"),
    ({"float_percentiles": "exakt"}, "'exact', 'histogram'"),
    ({"mixed_depth": "scaled"}, "'fail', 'scale'"),
    ({"nifti4d": "pooled"}, "read options are"),
])
def test_typos_are_errors_listing_the_choices_before_any_file_is_read(tmp_path, options, allowed):
    with pytest.raises(imagenorm.OptionError) as raised:
        imagenorm.compute_stats(tmp_path / "does-not-exist", **options)
    assert allowed in str(raised.value)


def test_stats_compare_by_value(tmp_path, rng):
    for data in (rng.integers(0, 256, (3, 4, 5), dtype=np.uint8), rng.normal(size=(3, 4, 5)).astype(np.float32)):
        stats = imagenorm.compute_stats(data)
        stats.save(tmp_path / "s.json")
        assert imagenorm.DatasetStats.load(tmp_path / "s.json") == imagenorm.DatasetStats.load(tmp_path / "s.json")
        assert stats == imagenorm.compute_stats(data)
        assert stats != imagenorm.compute_stats(data[:, :2])


def test_apply_runs_on_the_item_runner_workers_skip_and_series(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(5):
        write_png(folder / f"{index}.png", rng.integers(0, 65536, (7, 6), dtype=np.uint16))
    series = folder / "series"
    series.mkdir()
    for index in range(3):  # one DICOM series of three slices: one volume
        dataset = pydicom.dcmread(DICOM / "MR_small.dcm")
        dataset.PixelRepresentation = 0
        dataset.InstanceNumber = index + 1
        dataset.ImagePositionPatient = [0, 0, index]
        dataset.save_as(series / f"slice{index}.dcm")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    pngs = sorted(str(p) for p in folder.glob("[0-9].png"))
    stats = imagenorm.compute_stats(pngs)
    stats.save(tmp_path / "s.json")
    options = imagenorm.MethodOptions("zscore")
    one = imagenorm.apply_normalization(folder / "[0-9b]*.png", stats, str(tmp_path / "s.json"), options,
                                              str(tmp_path / "one"), on_error="skip")
    two = imagenorm.apply_normalization(folder / "[0-9b]*.png", stats, str(tmp_path / "s.json"), options,
                                              str(tmp_path / "two"), on_error="skip", workers=2)
    assert (one.written, two.written) == (5, 5)
    assert [s["path"] for s in two.skipped] == [str(folder / "broken.png")]
    for a, b in zip(applied(tmp_path / "one"), applied(tmp_path / "two")):
        assert np.array_equal(a, b)
    volume = imagenorm.apply_normalization(series, None, None, imagenorm.MethodOptions("zscore", per_image=True),
                                                 str(tmp_path / "volume"))
    [written] = applied(tmp_path / "volume")
    assert volume.written == 1 and written.shape == (1, 3, 64, 64)
    assert abs(written.mean()) < 1e-5 and abs(written.std() - 1) < 1e-4  # one volume, not three slices


def test_no_process_wide_state_changes(tmp_path, rng, monkeypatch):
    import os
    import warnings

    from PIL import Image

    write_png(tmp_path / "a.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    limit, filters, threads = Image.MAX_IMAGE_PIXELS, list(warnings.filters), torch.get_num_threads()

    def no_umask(mask):
        raise AssertionError("os.umask changes the mode of every file other threads create meanwhile")

    monkeypatch.setattr(os, "umask", no_umask)
    stats = imagenorm.compute_stats(tmp_path, max_pixels=10**10, workers=0)
    stats.save(tmp_path / "s.json")
    imagenorm.Standardize.from_stats(stats)(torch.zeros((4, 3, 64, 64), dtype=torch.uint8))
    assert (Image.MAX_IMAGE_PIXELS, warnings.filters, torch.get_num_threads()) == (limit, filters, threads)


def test_mixed_depth_scale_never_scales_physical_units(tmp_path, rng):
    """Found by trying it: scale used to divide HU by 32767 (a z-scored CT slice came out constant)."""
    folder = tmp_path / "ct"
    folder.mkdir()
    expected = [
        ct_file(folder / "a.dcm", rng.integers(-1000, 2000, (128, 128)), 12, "1.1"),
        ct_file(folder / "b.dcm", rng.integers(-30000, 30000, (128, 128)), 16, "1.2"),
    ]
    scaled = imagenorm.compute_stats(folder, mixed_depth="scale")
    assert scaled.dtype == "int32" and scaled.exact
    assert_matches_reference(scaled, reference(expected))
    write_png(folder / "photo.png", rng.integers(0, 256, (128, 128), dtype=np.uint8))
    for policy in ("fail", "scale"):  # HU next to raw pixel values: never, not even scaled
        with pytest.raises(imagenorm.ReadError, match="physical units .* and raw pixel values do not share units"):
            imagenorm.compute_stats(folder, mixed_depth=policy)


def test_integer_and_float_images_merge_exactly_in_any_order(tmp_path, rng):
    """Found by trying it: an int32 histogram turned into moments by E[x²] - E[x]² lost 0.2% of the std."""
    a = (50_000_000 + rng.integers(-10, 10, (8, 8, 8))).astype(np.int32)
    b = 50_000_000 + rng.standard_normal((8, 8, 8)) * 3
    nibabel.Nifti1Image(a, np.eye(4)).to_filename(tmp_path / "a.nii.gz")
    nibabel.Nifti1Image(b, np.eye(4)).to_filename(tmp_path / "b.nii.gz")
    want = np.concatenate([a.ravel(), b.ravel()]).astype(np.float64)
    for order in ([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"], [tmp_path / "b.nii.gz", tmp_path / "a.nii.gz"]):
        stats = imagenorm.compute_stats([str(p) for p in order])
        # mean/std ~ 1e7: each part's float64 mean holds 1e-16 relative, so the merge ~1e-11
        assert stats.pooled.std == pytest.approx(want.std(), rel=1e-10)
        assert stats.pooled.mean == pytest.approx(want.mean(), rel=1e-15)


def test_old_stats_files_say_what_they_can_and_take_the_rest_from_the_user(tmp_path, rng):
    """Found by trying it: an old file was taken for default options and the right flag was refused."""
    folder = tmp_path / "m1"
    folder.mkdir()
    dataset = pydicom.dcmread(DICOM / "MR_small.dcm")
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.save_as(folder / "a.dcm")
    document = imagenorm.compute_stats(folder, monochrome1="invert").to_dict()
    del document["read_options"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    old = imagenorm.DatasetStats.load(tmp_path / "old.json")
    assert old.reading().monochrome1 == "invert"  # from its notes
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    write_png(rgb / "a.png", rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    document = imagenorm.compute_stats(rgb, convert="gray").to_dict()
    del document["read_options"]
    (tmp_path / "old_gray.json").write_text(json.dumps(document))
    result = invoke("check", str(rgb), "-s", str(tmp_path / "old_gray.json"), "-m", "zscore", "--convert", "gray", "-t", "1e-5")
    assert result.exit_code == 0, result.output


def test_a_test_set_brings_its_own_mask_folder(tmp_path, rng):
    """Found by trying it: the training masks were used for a test set's files of the same names."""
    def make(root: Path, offset: int) -> None:
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        volume = np.full((6, 6, 4), -1000, np.int16)
        volume[1:5, 1:5, 1:3] = rng.integers(0, 100, (4, 4, 2)) + offset
        mask = (volume > -500).astype(np.uint8)
        nibabel.Nifti1Image(volume, np.eye(4)).to_filename(root / "images" / "p1.nii")
        nibabel.Nifti1Image(mask, np.eye(4)).to_filename(root / "masks" / "p1.nii")

    make(tmp_path / "train", 0)
    make(tmp_path / "test", 0)
    stats = imagenorm.compute_stats(tmp_path / "train" / "images", mask_dir=tmp_path / "train" / "masks")
    report = imagenorm.check_normalization(tmp_path / "test" / "images", stats, imagenorm.MethodOptions("zscore"),
                                           mask_dir=tmp_path / "test" / "masks", tolerance=1.0)
    assert report.read_options.mask_dir == str(tmp_path / "test" / "masks")
    with pytest.raises(imagenorm.OptionError):  # another kind of mask is still another measurement
        imagenorm.check_normalization(tmp_path / "test" / "images", stats, imagenorm.MethodOptions("zscore"), mask="nonzero")


def test_conflict_messages_use_the_command_lines_words(tmp_path, rng):
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    write_png(rgb / "a.png", rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    assert invoke("stats", str(rgb), "-o", str(tmp_path / "s.json")).exit_code == 0
    converted = invoke("check", str(rgb), "-s", str(tmp_path / "s.json"), "-m", "zscore", "--convert", "gray")
    assert converted.exit_code == 2 and "was measured with no --convert" in converted.output and "None" not in converted.output
    slices = invoke("check", str(rgb), "-s", str(tmp_path / "s.json"), "-m", "zscore", "--dicom-slices")
    assert slices.exit_code == 2 and "--dicom-slices was given" in slices.output and "measured with --dicom-series" in slices.output
    spelled = imagenorm.ReadOptions(mask="threshold: > -500.0")
    assert spelled == imagenorm.ReadOptions(mask="threshold:>-500")


def test_transforms_from_hu_statistics_take_float_hu_and_volumes(tmp_path, rng):
    """Found by trying it: float HU were read as the [0, 1] scale (off by 6.65e9), and a NIfTI
    volume from ImageFolderDataset was taken for a batch of slices."""
    folder = tmp_path / "ct"
    folder.mkdir()
    ct_file(folder / "a.dcm", rng.integers(-1000, 2000, (128, 128)), 12, "1.1")
    ct_file(folder / "b.dcm", rng.integers(-30000, 30000, (128, 128)), 16, "1.2")
    stats = imagenorm.compute_stats(folder)
    z = imagenorm.Standardize.from_stats(stats)
    hu = torch.tensor([[[-1000.0, 0.0, 1000.0]]], dtype=torch.float64)
    np.testing.assert_allclose(z(hu)[0, 0].numpy(), (hu[0, 0].numpy() - stats.mean[0]) / stats.std[0], rtol=1e-6)
    volumes = tmp_path / "nii"
    volumes.mkdir()
    for index in range(2):
        nibabel.Nifti1Image(rng.normal(100, 20, (9, 8, 7)).astype(np.float32), np.eye(4)).to_filename(volumes / f"{index}.nii")
    stats = imagenorm.compute_stats(volumes)
    assert stats.spatial_dims == 3
    dataset = imagenorm.ImageFolderDataset(volumes, stats=stats)
    volume = dataset[0]
    assert volume.shape == (1, 9, 8, 7)
    out = imagenorm.Standardize.from_stats(stats)(volume)  # one volume, one channel: not 9 channels of a batch
    np.testing.assert_allclose(out.numpy(), (volume.double().numpy() - stats.mean[0]) / stats.std[0], rtol=1e-5, atol=1e-5)
