"""``imagenorm export --to nnunet``: nnU-Net v2's foreground intensity properties, exact.

The reference is float64 numpy over every foreground voxel, read independently of imagenorm
(pydicom and nibabel directly); the key names and their order are nnU-Net v2's own
(fingerprint_extractor.py builds mean, median, std, min, max, percentile_99_5, percentile_00_5).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

import imagenorm
from imagenorm import DatasetStats, ImagenormError, OptionError
from imagenorm.cli import app
from imagenorm.errors import ImagenormWarning
from imagenorm.export import NNUNET_KEY, export, nnunet_caveats, nnunet_intensity_properties

NNUNET_ORDER = ["mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5"]
ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
CT_SMALL = get_testdata_file("CT_small.dcm")

runner = CliRunner()


def reference(values: np.ndarray) -> dict[str, float]:
    """nnU-Net's formulas over every foreground voxel, in float64 (no sampling)."""
    values = np.asarray(values, np.float64).ravel()
    return {"mean": values.mean(), "median": np.median(values), "std": values.std(ddof=0), "min": values.min(),
            "max": values.max(), "percentile_99_5": np.percentile(values, 99.5),
            "percentile_00_5": np.percentile(values, 0.5)}


def assert_properties(got: dict[str, float], want: dict[str, float], *, exact_percentiles: bool = True) -> None:
    assert list(got) == NNUNET_ORDER
    assert all(type(value) is float for value in got.values())
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
    assert got["std"] == pytest.approx(want["std"], rel=1e-9)
    assert (got["min"], got["max"]) == (want["min"], want["max"])
    for key in ("median", "percentile_99_5", "percentile_00_5"):
        if exact_percentiles:
            assert got[key] == want[key], key
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-12), key


def quietly(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImagenormWarning)
        return function(*args)


def imagenorm_warnings(function, *args) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args)
    return result, [str(w.message) for w in caught if issubclass(w.category, ImagenormWarning)]


def ct_hu() -> np.ndarray:
    dataset = pydicom.dcmread(CT_SMALL)
    return dataset.pixel_array.astype(np.float64) * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)


@pytest.fixture
def anatomical(tmp_path):
    """anatomical.nii in a folder, and a label folder marking its brighter half (labels 1 and 2)."""
    image = nibabel.load(ANATOMICAL)
    data = np.asarray(image.dataobj)
    labels = np.where(data > np.mean(data), 1, 0).astype(np.uint8)
    labels[labels.shape[0] // 2:] *= 2  # nnU-Net's foreground is every label > 0
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    nibabel.save(image, tmp_path / "images" / "brain.nii")
    nibabel.save(nibabel.Nifti1Image(labels, image.affine), tmp_path / "labels" / "brain.nii")
    return tmp_path, data, labels > 0


@pytest.fixture
def two_channels(tmp_path):
    """A 4-D NIfTI with two channels (anatomical.nii and a rescaled copy) and its label folder."""
    data = np.asarray(nibabel.load(ANATOMICAL).dataobj).astype(np.int16)
    second = (data // 3 - 200).astype(np.int16)
    labels = (data > 2000).astype(np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    nibabel.save(nibabel.Nifti1Image(np.stack([data, second], axis=-1), np.eye(4)), tmp_path / "images" / "case.nii")
    nibabel.save(nibabel.Nifti1Image(labels, np.eye(4)), tmp_path / "labels" / "case.nii")
    return tmp_path, [data[labels > 0], second[labels > 0]]


class TestProperties:
    def test_ct_with_a_threshold_equals_numpy_over_the_foreground(self):
        hu = ct_hu()
        stats = imagenorm.compute_stats(CT_SMALL, mask="threshold:>-500")
        properties = quietly(nnunet_intensity_properties, stats)
        assert list(properties) == ["0"]
        assert_properties(properties["0"], reference(hu[hu > -500]))

    def test_nifti_with_a_label_folder_equals_numpy_over_the_labelled_voxels(self, anatomical):
        root, data, foreground = anatomical
        stats = imagenorm.compute_stats(str(root / "images"), mask_dir=str(root / "labels"))
        properties, said = imagenorm_warnings(nnunet_intensity_properties, stats)
        assert said == []  # label files: nnU-Net's own foreground, nothing to warn about
        assert_properties(properties["0"], reference(data[foreground]))

    def test_two_channels_are_keyed_0_and_1_in_channel_order(self, two_channels):
        root, foregrounds = two_channels
        stats = imagenorm.compute_stats(str(root / "images"), mask_dir=str(root / "labels"))
        properties = nnunet_intensity_properties(stats)
        assert list(properties) == ["0", "1"]
        for channel, values in zip(("0", "1"), foregrounds):
            assert_properties(properties[channel], reference(values))

    def test_several_stats_files_are_channels_in_the_order_given(self, anatomical):
        root, data, foreground = anatomical
        brain = imagenorm.compute_stats(str(root / "images"), mask_dir=str(root / "labels"))
        ct = imagenorm.compute_stats(CT_SMALL, mask="threshold:>-500")
        properties = quietly(nnunet_intensity_properties, [ct, brain])
        hu = ct_hu()
        assert list(properties) == ["0", "1"]
        assert_properties(properties["0"], reference(hu[hu > -500]))
        assert_properties(properties["1"], reference(data[foreground]))

    def test_float_values_with_exact_percentiles(self, rng):
        pixels = rng.normal(100.0, 25.0, (1, 2, 40, 30)).astype(np.float32)
        stats = imagenorm.compute_stats(torch.from_numpy(pixels), mask="threshold:>90")  # (B, C, H, W)
        properties = quietly(nnunet_intensity_properties, stats)
        foreground = pixels[0, 0] > 90  # the threshold reads the first channel
        assert list(properties) == ["0", "1"]
        for channel in range(2):
            assert_properties(properties[str(channel)], reference(pixels[0, channel][foreground]),
                              exact_percentiles=False)
        assert not any("histogram" in c for c in nnunet_caveats(stats))

    def test_export_wraps_the_block_as_the_fingerprint_holds_it(self):
        stats = imagenorm.compute_stats(CT_SMALL, mask="threshold:>-500")
        document = quietly(export, stats, "nnunet")
        assert list(document) == [NNUNET_KEY] == ["foreground_intensity_properties_per_channel"]
        assert document[NNUNET_KEY] == quietly(nnunet_intensity_properties, stats)
        with pytest.raises(OptionError, match="export_to='onnx' is not one of 'nnunet'"):
            export(stats, "onnx")

    def test_a_saved_and_loaded_stats_file_gives_the_same_block(self, tmp_path):
        stats = imagenorm.compute_stats(CT_SMALL, mask="threshold:>-500")
        stats.save(tmp_path / "s.json")
        loaded = DatasetStats.load(tmp_path / "s.json")
        assert quietly(nnunet_intensity_properties, loaded) == quietly(nnunet_intensity_properties, stats)


class TestCaveats:
    def test_no_mask_is_said(self):
        stats = imagenorm.compute_stats(CT_SMALL)
        _, said = imagenorm_warnings(nnunet_intensity_properties, stats)
        assert len(said) == 1 and "every voxel (no mask= or mask_dir=)" in said[0]
        assert "label files mark > 0" in said[0]

    def test_a_threshold_is_said_to_be_not_the_labels(self):
        stats = imagenorm.compute_stats(CT_SMALL, mask="threshold:>-500")
        _, said = imagenorm_warnings(nnunet_intensity_properties, stats)
        assert len(said) == 1 and "mask='threshold:>-500'" in said[0]

    def test_stored_dicom_values_are_said(self):
        stats = imagenorm.compute_stats(CT_SMALL, dicom_values="stored", mask="threshold:>500")
        _, said = imagenorm_warnings(nnunet_intensity_properties, stats)
        assert any("dicom_values='stored'" in line and "HU" in line for line in said)

    def test_histogram_percentiles_of_float_data_are_said_with_their_error(self, rng):
        pixels = rng.normal(100.0, 25.0, (1, 1, 40, 30)).astype(np.float32)
        stats = imagenorm.compute_stats(torch.from_numpy(pixels), mask="threshold:>90", float_percentiles="histogram")
        properties, said = imagenorm_warnings(nnunet_intensity_properties, stats)
        [line] = [line for line in said if "histogram" in line]
        bound = stats.percentile_error[0]
        assert f"within {bound:.3g}" in line
        want = reference(pixels[0, 0][pixels[0, 0] > 90])
        for key in ("median", "percentile_99_5", "percentile_00_5"):
            assert abs(properties["0"][key] - want[key]) <= bound

    def test_a_stats_file_of_another_folder_is_named_in_its_warning(self, tmp_path):
        imagenorm.compute_stats(CT_SMALL).save(tmp_path / "s.json")
        _, said = imagenorm_warnings(nnunet_intensity_properties, DatasetStats.load(tmp_path / "s.json"))
        assert said[0].startswith(f"{tmp_path / 's.json'}: ")


class TestRefused:
    def test_float_statistics_without_percentiles(self, rng):
        part = imagenorm.compute_stats(torch.from_numpy(rng.normal(0, 1, (1, 1, 8, 8)).astype(np.float32)))
        merged = part.merge(part)
        with pytest.raises(ImagenormError, match="no percentiles for median"):
            nnunet_intensity_properties(merged)

    def test_a_channel_without_voxels(self, tmp_path):
        path = empty_stats_file(tmp_path)
        with pytest.raises(ImagenormError, match="no measured voxels"):
            nnunet_intensity_properties(DatasetStats.load(path))

    def test_nothing_to_export(self):
        with pytest.raises(ImagenormError, match="no statistics"):
            nnunet_intensity_properties([])


def empty_stats_file(tmp_path: Path) -> Path:
    """A valid float stats file whose channel counted no voxel (an empty mask)."""
    stats = imagenorm.compute_stats(torch.ones((1, 1, 4, 4)))
    document = stats.to_dict()
    empty = {"count": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    document["channels"][0].update(empty)
    document["pooled"].update(empty)
    document["channels"][0].pop("histogram", None)
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(document))
    return path


class TestCommandLine:
    @pytest.fixture
    def stats_file(self, anatomical):
        root, data, foreground = anatomical
        path = root / "stats.json"
        imagenorm.compute_stats(str(root / "images"), mask_dir=str(root / "labels")).save(path)
        return path, reference(data[foreground])

    def test_prints_the_block_as_json(self, stats_file):
        path, want = stats_file
        result = runner.invoke(app, ["export", str(path), "--to", "nnunet"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        document = json.loads(result.stdout)
        assert list(document) == ["foreground_intensity_properties_per_channel"]
        assert_properties(document["foreground_intensity_properties_per_channel"]["0"], want)
        assert result.stdout.startswith('{\n    "foreground_intensity_properties_per_channel": {\n        "0": {')

    def test_output_is_written_atomically(self, stats_file):
        path, want = stats_file
        target = path.parent / "out" / "fingerprint_part.json"
        target.parent.mkdir()
        target.write_text("old")
        result = runner.invoke(app, ["export", str(path), "--to", "nnunet", "-o", str(target)])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"wrote {target}"
        assert_properties(json.loads(target.read_text())[NNUNET_KEY]["0"], want)
        assert os.listdir(target.parent) == ["fingerprint_part.json"]  # no temporary file left

    def test_a_failed_export_leaves_the_output_as_it_was(self, tmp_path):
        target = tmp_path / "out.json"
        target.write_text("old")
        result = runner.invoke(app, ["export", str(empty_stats_file(tmp_path)), "--to", "nnunet", "-o", str(target)])
        assert result.exit_code == 1
        assert len(result.output.strip().splitlines()) == 1 and "no measured voxels" in result.output
        assert target.read_text() == "old"

    def test_refuses_to_overwrite_the_stats_file(self, stats_file):
        path, _ = stats_file
        before = path.read_text()
        result = runner.invoke(app, ["export", str(path), "--to", "nnunet", "-o", str(path)])
        assert result.exit_code == 2
        assert result.output.strip() == f"error: {path}: would overwrite the stats file it exports; give another file name"
        assert path.read_text() == before

    def test_no_mask_is_one_yellow_line(self, tmp_path):
        imagenorm.compute_stats(CT_SMALL).save(tmp_path / "s.json")
        result = runner.invoke(app, ["export", str(tmp_path / "s.json"), "--to", "nnunet"])
        assert result.exit_code == 0, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"warning: {tmp_path / 's.json'}: measured over every voxel")
        assert "(no --mask or --mask-dir)" in lines[0] and "--mask-dir LABELS" in lines[0]
        json.loads(result.stdout)  # the JSON on stdout stays clean

    def test_several_stats_files_give_channels_in_order(self, stats_file, tmp_path):
        path, want = stats_file
        imagenorm.compute_stats(CT_SMALL, mask="threshold:>-500").save(tmp_path / "ct.json")
        result = runner.invoke(app, ["export", str(tmp_path / "ct.json"), str(path), "--to", "nnunet"])
        assert result.exit_code == 0, result.output
        block = json.loads(result.stdout)[NNUNET_KEY]
        assert list(block) == ["0", "1"]
        assert_properties(block["1"], want)

    @pytest.mark.parametrize("make, status, message", [
        (lambda folder: folder / "missing.json", 1, "no such stats file"),
        (lambda folder: (folder / "bad.json").write_text("{") and folder / "bad.json", 1, "not a valid JSON stats file"),
        (lambda folder: folder, 1, "is a folder, not a stats file"),
    ])
    def test_bad_input_is_one_line(self, tmp_path, make, status, message):
        result = runner.invoke(app, ["export", str(make(tmp_path)), "--to", "nnunet"])
        assert result.exit_code == status
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]

    def test_an_unknown_format_or_no_format_is_a_usage_error(self, stats_file):
        path, _ = stats_file
        assert runner.invoke(app, ["export", str(path), "--to", "onnx"]).exit_code == 2
        assert runner.invoke(app, ["export", str(path)]).exit_code == 2

    def test_output_into_a_folder_is_one_line(self, stats_file, tmp_path):
        path, _ = stats_file
        result = runner.invoke(app, ["export", str(path), "--to", "nnunet", "-o", str(tmp_path)])
        assert result.exit_code == 1
        assert result.output.strip() == f"error: {tmp_path}: is a folder; give a file name"


def test_nnunet_layout_labels_without_the_channel_suffix(tmp_path):
    """imagesTr/case_0000.nii.gz and imagesTr/case_0001.nii.gz take their foreground from labelsTr/case.nii.gz."""
    image = nibabel.load(ANATOMICAL)
    data = np.asarray(image.dataobj)
    labels = (data > np.mean(data)).astype(np.uint8)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    nibabel.save(nibabel.Nifti1Image(data, image.affine), tmp_path / "imagesTr" / "brain_0000.nii.gz")
    nibabel.save(nibabel.Nifti1Image(labels, image.affine), tmp_path / "labelsTr" / "brain.nii.gz")
    stats = imagenorm.compute_stats(str(tmp_path / "imagesTr"), mask_dir=str(tmp_path / "labelsTr"))
    assert_properties(nnunet_intensity_properties(stats)["0"], reference(data[labels > 0]))
    (tmp_path / "imagesTr" / "other_0000.nii.gz").write_bytes((tmp_path / "imagesTr" / "brain_0000.nii.gz").read_bytes())
    with pytest.raises(ImagenormError, match="other_0000.nii.gz"):  # no label at all: still named
        imagenorm.compute_stats(str(tmp_path / "imagesTr"), mask_dir=str(tmp_path / "labelsTr"))
