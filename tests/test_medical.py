"""DICOM, NIfTI, foreground masks, CT normalization and the per-image audit."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
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
from imagenorm.errors import ReadError
from imagenorm.readers import ReadOptions, read_image

from conftest import assert_matches_reference, reference

DICOM = Path(pydicom.__file__).parent / "data" / "test_files"
NIFTI = Path(nibabel.__file__).parent / "tests" / "data"


def ct_series(folder: Path, count: int = 4, shift: int = 0) -> list[np.ndarray]:
    """CT slices made from pydicom's CT_small.dcm (signed 16-bit, intercept -1024), values varied."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = []
    for index in range(count):
        dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
        stored = dataset.pixel_array.astype(np.int32)
        stored = np.clip(stored + 37 * index + shift, -2000, 4000).astype(np.int16)
        dataset.PixelData = stored.tobytes()
        dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{shift}.{index}"  # each slice its own instance
        dataset.ImagePositionPatient = [0.0, 0.0, float(index)]
        dataset.save_as(folder / f"slice_{index:02d}.dcm")
        expected.append(apply_modality_lut(stored, dataset).astype(np.float64)[None])
    return expected


class TestDicom:
    def test_modality_values_exact_in_hounsfield_units(self):
        dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
        image = read_image(DICOM / "CT_small.dcm")
        expected = apply_modality_lut(dataset.pixel_array, dataset)
        assert image.pixels.dtype.kind == "i" and float(dataset.RescaleIntercept) != 0
        np.testing.assert_array_equal(image.pixels[0], expected)
        assert image.spacing[:2] == (0.661468, 0.661468)

    def test_stored_values_option(self):
        dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
        stored = read_image(DICOM / "CT_small.dcm", ReadOptions(dicom_values="stored"))
        np.testing.assert_array_equal(stored.pixels[0], dataset.pixel_array)

    def test_big_endian_equals_little_endian(self):
        little = read_image(DICOM / "MR_small.dcm").pixels
        big = read_image(DICOM / "MR_small_bigendian.dcm").pixels
        np.testing.assert_array_equal(little, big)
        assert imagenorm.compute_stats(str(DICOM / "MR_small_bigendian.dcm")).pooled.mean == pytest.approx(float(little.mean()), rel=1e-12)

    def test_multiframe_rgb(self):
        image = read_image(DICOM / "SC_rgb_rle_2frame.dcm")
        assert image.pixels.shape == (3, 2, 100, 100) and image.channels == ("red", "green", "blue")

    def test_compressed_with_installed_plugin(self):
        image = read_image(DICOM / "JPEG2000.dcm")
        assert image.pixels.shape == (1, 1024, 256)

    def test_missing_pixel_data(self):
        with pytest.raises(ReadError, match=r"rtplan\.dcm: no pixel data \(a DICOM RT Plan Storage object\)"):
            read_image(DICOM / "rtplan.dcm")

    def test_truncated_pixel_data(self):
        with pytest.raises(ReadError, match=r"MR_truncated\.dcm: cannot decode the pixel data"):
            read_image(DICOM / "MR_truncated.dcm")

    def test_missing_codec_names_the_extra(self):
        code = (
            "import sys\n"
            "for name in ('pylibjpeg', 'openjpeg', 'libjpeg', 'gdcm', 'jpeg_ls', 'pyjpegls'): sys.modules[name] = None\n"
            "import PIL.features; PIL.features.check_codec = lambda *a, **k: False\n"
            "from imagenorm.readers import read_image\n"
            f"read_image({str(DICOM / 'JPEG2000.dcm')!r})\n"
        )
        completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "compressed as JPEG 2000 Image Compression, and no installed decoder handles it: pip install 'imagenorm[medical]'" in completed.stderr

    @pytest.mark.parametrize("policy", ["keep", "invert"])
    def test_monochrome1_policy(self, tmp_path, policy):
        dataset = pydicom.dcmread(DICOM / "MR_small.dcm")
        dataset.PhotometricInterpretation = "MONOCHROME1"
        dataset.save_as(tmp_path / "m1.dcm")
        image = read_image(tmp_path / "m1.dcm", ReadOptions(monochrome1=policy))
        stored = dataset.pixel_array.astype(np.int64)
        bits = int(dataset.BitsStored)
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dataset.PixelRepresentation else (0, (1 << bits) - 1)
        expected = stored if policy == "keep" else high + low - stored
        np.testing.assert_array_equal(image.pixels[0], expected)
        stats = imagenorm.compute_stats(str(tmp_path / "m1.dcm"), monochrome1=policy)
        assert any("MONOCHROME1" in note for note in stats.notes)

    def test_fractional_rescale_gives_floats(self, tmp_path):
        dataset = pydicom.dcmread(DICOM / "MR_small.dcm")
        dataset.RescaleSlope, dataset.RescaleIntercept = "0.5", "-3.25"
        dataset.save_as(tmp_path / "r.dcm")
        image = read_image(tmp_path / "r.dcm")
        np.testing.assert_array_equal(image.pixels[0], dataset.pixel_array * 0.5 - 3.25)

    def test_series_statistics_exact(self, tmp_path):
        expected = ct_series(tmp_path / "ct")
        stats = imagenorm.compute_stats(tmp_path / "ct", workers=2)
        assert stats.exact and stats.dtype == "int32"
        assert_matches_reference(stats, reference(expected))

    def test_extensionless_dicom_found(self, tmp_path):
        shutil.copy(DICOM / "MR_small.dcm", tmp_path / "IM0001")
        (tmp_path / "README").write_text("not an image")
        stats = imagenorm.compute_stats(tmp_path)
        assert stats.files == 1 and stats.ignored == 1


class TestNifti:
    def test_volume_matches_nibabel(self):
        stats = imagenorm.compute_stats(str(NIFTI / "anatomical.nii"))
        data = nibabel.load(NIFTI / "anatomical.nii").get_fdata()
        assert stats.exact
        assert_matches_reference(stats, reference([data[None]]))

    def test_4d_as_channels_or_pooled_and_nifti2(self):
        data = nibabel.load(NIFTI / "example4d.nii.gz").get_fdata()
        channels = imagenorm.compute_stats(str(NIFTI / "example4d.nii.gz"))
        pooled = imagenorm.compute_stats(str(NIFTI / "example4d.nii.gz"), nifti_4d="pooled")
        assert len(channels.channels) == data.shape[3] and len(pooled.channels) == 1
        assert_matches_reference(channels, reference([np.moveaxis(data, -1, 0)]))
        assert pooled.pooled.mean == pytest.approx(data.mean(), rel=1e-12)
        nifti2 = imagenorm.compute_stats(str(NIFTI / "example_nifti2.nii.gz"))
        assert nifti2.pooled.count == nibabel.load(NIFTI / "example_nifti2.nii.gz").get_fdata().size

    def test_scaling_big_endian_and_nan(self, tmp_path, rng):
        raw = rng.integers(0, 1000, (6, 7, 8)).astype(">i2")
        image = nibabel.Nifti1Image(raw, np.eye(4))
        image.header.set_slope_inter(0.25, 10.0)
        nibabel.save(image, tmp_path / "scaled.nii.gz")
        decoded = read_image(tmp_path / "scaled.nii.gz")
        np.testing.assert_array_equal(decoded.pixels[0], raw.astype(np.float64) * 0.25 + 10.0)
        floats = rng.normal(0, 1, (5, 5, 5)).astype(np.float32)
        floats[0, 0, :2] = np.nan
        nibabel.save(nibabel.Nifti1Image(floats, np.eye(4)), tmp_path / "nan.nii")
        with pytest.raises(ReadError, match=r"nan\.nii: contains 2 NaN"):
            imagenorm.compute_stats(str(tmp_path / "nan.nii"))
        assert imagenorm.compute_stats(str(tmp_path / "nan.nii"), nonfinite="ignore").nonfinite == [2]


class TestForeground:
    def test_masks_count_only_foreground_exactly(self, tmp_path, rng):
        volumes, masks = [], []
        (tmp_path / "images").mkdir()
        (tmp_path / "masks").mkdir()
        for index in range(3):
            volume = rng.integers(-1024, 2000, (6, 10, 12)).astype(np.int16)
            mask = np.zeros(volume.shape, np.uint8)
            mask[1:5, 2:8, 3:10] = 1
            nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "images" / f"case{index}.nii.gz")
            nibabel.save(nibabel.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / f"case{index}.nii.gz")
            volumes.append(volume)
            masks.append(mask.astype(bool))
        by_files = imagenorm.compute_stats(tmp_path / "images", mask_dir=str(tmp_path / "masks"), workers=2)
        assert_matches_reference(by_files, reference([v[m][None] for v, m in zip(volumes, masks)]))
        threshold = imagenorm.compute_stats(tmp_path / "images", mask="threshold:>-500")
        assert_matches_reference(threshold, reference([v[v > -500][None] for v in volumes]))
        assert threshold.to_dict()["mask"] == "threshold:>-500"
        nonzero = imagenorm.compute_stats(tmp_path / "images", mask="nonzero")
        assert_matches_reference(nonzero, reference([v[v != 0][None] for v in volumes]))

    def test_mask_errors(self, tmp_path, rng):
        (tmp_path / "images").mkdir()
        (tmp_path / "masks").mkdir()
        volume = rng.integers(0, 100, (4, 5, 6)).astype(np.int16)
        for name in ("a.nii", "b.nii", "c.nii"):
            nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "images" / name)
        nibabel.save(nibabel.Nifti1Image(np.ones((4, 5, 7), np.uint8), np.eye(4)), tmp_path / "masks" / "a.nii")
        nibabel.save(nibabel.Nifti1Image(np.ones((4, 5, 6), np.uint8), np.eye(4)), tmp_path / "masks" / "c.nii")
        with pytest.raises(ReadError, match=r"a\.nii: its mask .* has shape \(4, 5, 7\), the image \(4, 5, 6\)"):
            imagenorm.compute_stats(tmp_path / "images", mask_dir=str(tmp_path / "masks"))
        skipped = imagenorm.compute_stats(tmp_path / "images", mask_dir=str(tmp_path / "masks"), on_error="skip")
        assert [s["reason"].split(" ")[0] for s in skipped.skipped] == ["its", "no"] and skipped.files == 1
        with pytest.raises(ValueError, match="is not 'nonzero' or a threshold"):
            imagenorm.compute_stats(tmp_path / "images", mask="bright")

    def test_ct_normalize_matches_nnunet_style_reference(self, tmp_path):
        volumes = ct_series(tmp_path / "ct")
        stats = imagenorm.compute_stats(tmp_path / "ct", mask="threshold:>-500")
        foreground = np.concatenate([v[v > -500] for v in volumes])
        low, high = np.percentile(foreground, [0.5, 99.5])
        mean, std = foreground.mean(), foreground.std()
        transform = imagenorm.CTNormalize.from_stats(stats)
        for path, volume in zip(sorted((tmp_path / "ct").iterdir()), volumes):
            pixels = torch.from_numpy(read_image(path).pixels)
            expected = (np.clip(volume, low, high) - mean) / std
            np.testing.assert_allclose(transform(pixels).double().numpy(), expected, rtol=1e-6, atol=1e-6)


class TestAudit:
    def test_rows_flags_and_csv(self, tmp_path, rng):
        (tmp_path / "data").mkdir()
        for index in range(8):
            np.save(tmp_path / "data" / f"ok{index}.npy", rng.integers(900, 1100, (10, 10)).astype(np.int16))
        np.save(tmp_path / "data" / "bright.npy", rng.integers(9000, 9200, (10, 10)).astype(np.int16))
        np.save(tmp_path / "data" / "flat.npy", np.full((10, 10), 1000, np.int16))
        runner = CliRunner()
        result = runner.invoke(app, ["stats", str(tmp_path / "data"), "--audit", str(tmp_path / "audit.csv"), "-o", str(tmp_path / "s.json")])
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader(open(tmp_path / "audit.csv")))
        assert len(rows) == 10 and {"path", "shape", "dtype", "gray_mean", "gray_p99.5", "gray_nonfinite"} <= set(rows[0])
        flagged = {os.path.basename(entry["path"]): entry["reasons"] for entry in imagenorm.DatasetStats.load(tmp_path / "s.json").flagged}
        assert set(flagged) == {"bright.npy", "flat.npy"}
        assert any("robust z" in reason for reason in flagged["bright.npy"])
        assert any("constant" in reason for reason in flagged["flat.npy"])
        shown = runner.invoke(app, ["show", str(tmp_path / "s.json")])
        assert "2 image(s) flagged by the per-image audit:" in shown.output and "bright.npy" in shown.output


def test_dicom_series_is_one_image(tmp_path):
    expected = ct_series(tmp_path / "patient1", count=3)
    expected += ct_series(tmp_path / "patient2", count=2, shift=500)
    stats = imagenorm.compute_stats(tmp_path, audit=True)
    assert stats.files == 2 and len(stats.audit_rows) == 2
    assert stats.audit_rows[0]["path"].endswith("patient1 (series 1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322, 3 files)")
    assert stats.audit_rows[0]["shape"] == "3x128x128"
    assert_matches_reference(stats, reference(expected))
    assert imagenorm.compute_stats(tmp_path, dicom_series=False).files == 5


def test_cli_stats_on_dicom_folder_with_mask(tmp_path):
    ct_series(tmp_path / "ct", count=2)
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "ct"), "--mask", "threshold:>-500", "-o", str(tmp_path / "ct.json")])
    assert result.exit_code == 0, result.output
    assert "statistics over the foreground only: threshold:>-500" in result.output
    assert "no [0, 1] scale for int32 values" in result.output
    document = imagenorm.DatasetStats.load(tmp_path / "ct.json").to_dict()
    assert document["mask"] == "threshold:>-500" and document["exact"] and document["dtype"] == "int32"


def test_dicom_bits_stored_recorded_for_stored_values(tmp_path):
    dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
    dataset.PixelRepresentation, dataset.BitsStored, dataset.HighBit = 0, 12, 11
    dataset.PixelData = np.clip(dataset.pixel_array.astype(np.int32), 0, 4095).astype(np.uint16).tobytes()
    dataset.save_as(tmp_path / "u12.dcm")
    stats = imagenorm.compute_stats(str(tmp_path / "u12.dcm"), dicom_values="stored")
    assert stats.dtype == "uint16" and stats.significant_bits == 12
    assert imagenorm.compute_stats(str(tmp_path / "u12.dcm")).significant_bits is None  # HU: not raw bits
