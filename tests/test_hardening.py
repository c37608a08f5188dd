"""Hardening (issue 10): writers, output paths, resumable apply, the paste-ready line, kernels
without a cache folder."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app

from conftest import write_png


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def data(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(4):
        write_png(folder / f"{index}.png", rng.integers(0, 256, (6, 5), dtype=np.uint8))
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_character_device_is_written_through_not_replaced(data, tmp_path):
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    for option in ("-o", "--audit"):
        result = invoke("stats", data, option, device)
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_fifo_is_refused_before_any_work(data, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = invoke("stats", data, "-o", fifo)
    assert result.exit_code == 1 and result.output.strip() == f"error: {fifo}: not a regular file; give a file name"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_link_keeps_pointing_at_the_replaced_file(data, tmp_path):
    (tmp_path / "real.json").write_text("old")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    assert invoke("stats", data, "-o", tmp_path / "link.json").exit_code == 0
    assert os.path.islink(tmp_path / "link.json")
    assert json.loads((tmp_path / "real.json").read_text())["files"] == 4


@pytest.mark.parametrize("target, reason", [("missing/s.json", "no such folder"), (".", "is a folder")])
def test_output_paths_are_checked_before_the_first_image(data, tmp_path, target, reason):
    (data / "broken.png").write_bytes(b"not a png")  # reading first would fail on this file instead
    result = invoke("stats", data, "-o", tmp_path / target)
    assert result.exit_code == 1 and reason in result.output and "broken.png" not in result.output
    assert ".imagenorm-" not in result.output


def test_checkpoint_path_checked_before_work(data, tmp_path):
    with pytest.raises(imagenorm.ImagenormError, match="no such folder"):
        imagenorm.compute_stats(data, checkpoint=tmp_path / "missing" / "run.ckpt")


def test_apply_refuses_an_output_inside_any_source_folder(tmp_path, rng):
    images = tmp_path / "vB" / "images"
    images.mkdir(parents=True)
    write_png(images / "a.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    result = invoke("apply", tmp_path / "vB", "-m", "zscore", "--per-image", "-o", tmp_path / "vB" / "normalized")
    assert result.exit_code == 1 and "refusing to write inside the source tree" in result.output
    assert not (tmp_path / "vB" / "normalized").exists()


def test_an_interrupted_apply_resumes_and_cleans_up(data, tmp_path):
    (data / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")  # stops the first run after 0.png and 1.png
    out = tmp_path / "out"
    first = invoke("apply", data, "-m", "zscore", "--per-image", "-o", out)
    assert first.exit_code == 1 and "2.png" in first.output
    manifest = json.loads((out / "imagenorm-manifest.json").read_text())  # the settings come first
    assert manifest["method"]["method"] == "zscore" and sorted(p.name for p in out.glob("*.npy")) == ["0.npy", "1.npy"]
    (out / ".imagenorm-stray.tmp").write_bytes(b"half")  # what a kill leaves
    (data / "2.png").unlink()
    second = invoke("apply", data, "-m", "zscore", "--per-image", "-o", out)
    assert second.exit_code == 0, second.output
    assert "1 written, 2 already there (resumed)" in second.output
    assert not (out / ".imagenorm-stray.tmp").exists()


def test_normalize_line_is_refused_without_a_unit_scale_and_keeps_small_stds():
    with pytest.raises(imagenorm.ImagenormError, match="no \\[0, 1\\] scale"):
        imagenorm.compute_stats(np.array([[[-1000, 3000]]], np.int32)).normalize_line()
    low_signal = np.array([[[1000, 1008] * 50]], np.uint16)  # std 4 raw units in 16 bits
    line = imagenorm.compute_stats(low_signal).normalize_line()
    std = float(line.split("std=[")[1].rstrip("])"))
    assert std == pytest.approx(4 / 65535, rel=1e-5)


def test_kernels_compile_without_a_cache_folder():
    """A read-only install: numba finds no place for its cache; imagenorm still imports and runs."""
    code = (
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []\n"  # no locator: what a read-only install sees
        "import numpy as np, torch, imagenorm\n"
        "stats = imagenorm.compute_stats(np.arange(16, dtype=np.uint8).reshape(1, 4, 4))\n"
        "print(stats.pooled.mean, float(imagenorm.Standardize.from_stats(stats)(torch.zeros(1, 4, 4, dtype=torch.uint8)).mean()))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[0] == "7.5"


def topics(stats, **options) -> dict[str, str]:
    from imagenorm.advice import advise

    return {advice.topic: str(advice) for advice in advise(stats, **options)}


def test_outlier_advice_is_quiet_on_a_clean_gaussian_and_speaks_for_a_hot_pixel(rng):
    clean = rng.standard_normal((1, 1000, 1000))
    assert "outliers" not in topics(imagenorm.compute_stats(clean))
    hot = clean.copy()
    hot[0, 0, 0] = 1000.0
    assert "outliers" in topics(imagenorm.compute_stats(hot))


def test_channel_advice_looks_at_stds_too(rng):
    same_means = np.stack([rng.normal(0.5, 0.01, (100, 100)), rng.normal(0.5, 0.12, (100, 100)),
                           rng.normal(0.5, 0.05, (100, 100))])
    assert "per-channel statistics" in topics(imagenorm.compute_stats(same_means))["channels"]
    alike = rng.normal(0.5, 0.1, (3, 100, 100))
    assert "pooled statistics would do" in topics(imagenorm.compute_stats(alike))["channels"]


def test_memory_advice_counts_every_voxel_of_a_masked_volume():
    volume = np.zeros((1, 100, 100, 100), np.int16)
    volume[0, :10] = 500  # a 10% foreground
    stats = imagenorm.compute_stats(volume, mask="nonzero")
    assert stats.pooled.count == 100_000
    advice = topics(stats, memory_bytes=8_000_000)["memory"]  # 4 MB of float32 output: half of it
    assert "on the fly" in advice and "50.0%" in advice


@pytest.mark.parametrize("scaled_up", [False, True])
def test_significant_bits_advice_follows_the_values(tmp_path, rng, scaled_up):
    """A spec-compliant 12-bit PNG holds its values scaled up to 16 bits: no 'divide by 4095'."""
    import struct
    import zlib

    values = rng.integers(0, 4096, (9, 9), dtype=np.uint16)
    write_png(tmp_path / "a.png", values * 16 + values // 256 if scaled_up else values)  # PNG's left-bit replication
    data = (tmp_path / "a.png").read_bytes()
    chunk = struct.pack(">I", 1) + b"sBIT" + bytes([12]) + struct.pack(">I", zlib.crc32(b"sBIT" + bytes([12])))
    (tmp_path / "a.png").write_bytes(data[:33] + chunk + data[33:])
    output = invoke("stats", tmp_path / "a.png").output
    assert "declare 12 significant bits" in output
    assert ("divide by 4095" in output) is not scaled_up
    assert ("scaled up to the container's range" in output) is scaled_up


@pytest.mark.parametrize("change, message", [
    (lambda d: d["channels"][0].update(std=-1.0), "negative std"),
    (lambda d: d["channels"][0].update(min=300, max=200), "which no data have"),
    (lambda d: d["pooled"].update(mean=float("nan")), "not a finite number"),
    (lambda d: d["channels"][0].update(mean=d["channels"][0]["mean"] + 1), "but its histogram gives"),
    (lambda d: d["channels"][0].update(count=d["channels"][0]["count"] - 1), "but its histogram gives"),
])
def test_a_stats_file_is_validated_as_data(tmp_path, rng, change, message):
    document = imagenorm.compute_stats(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)).to_dict()
    change(document)
    (tmp_path / "s.json").write_text(json.dumps(document))
    with pytest.raises(imagenorm.StatsFileError, match=message):
        imagenorm.DatasetStats.load(tmp_path / "s.json")
    result = invoke("show", tmp_path / "s.json")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "s.json" in result.output


def test_every_image_refused_says_why(data):
    with pytest.raises(imagenorm.EmptyDatasetError, match="the first: .*0.png: 30 pixels exceed the limit of 10"):
        imagenorm.compute_stats(data, max_pixels=10, on_error="skip")


def test_merged_float_stats_show_no_nan_percentiles(tmp_path, rng):
    a = imagenorm.compute_stats(rng.normal(size=(1, 8, 8)))
    merged = a.merge(imagenorm.compute_stats(rng.normal(size=(1, 8, 8))))
    merged.save(tmp_path / "m.json")
    result = invoke("show", tmp_path / "m.json")
    assert result.exit_code == 0 and "nan" not in result.output.lower()
    assert "whose percentiles do not merge; recompute" in result.output


def test_plot_leaves_the_users_matplotlib_alone(tmp_path, rng):
    pytest.importorskip("matplotlib")
    import matplotlib

    backend = matplotlib.get_backend()
    stats = imagenorm.compute_stats(rng.integers(0, 256, (1, 8, 8), dtype=np.uint8))
    from imagenorm.plot import plot_histograms, units_label

    plot_histograms(stats, tmp_path / "h.png")
    assert matplotlib.get_backend() == backend and (tmp_path / "h.png").stat().st_size > 1000
    assert units_label(stats) == "raw uint8 value ([0, 1] scale = raw / 255)"


def test_int32_far_apart_merges_like_one_process(tmp_path, rng):
    """Each file's int32 range fits exact bins; together they do not: the merge falls back to
    exact-merge moments, as one process does, whatever the worker count."""
    parts = [rng.integers(-2_000_000_000, -1_999_999_000, (1, 16, 16)), rng.integers(1_999_999_000, 2_000_000_000, (1, 16, 16))]
    for index, part in enumerate(parts):
        np.save(tmp_path / f"{index}.npy", part.astype(np.int32))
    values = np.concatenate([p.ravel() for p in parts]).astype(np.float64)
    for workers in (0, 2):
        stats = imagenorm.compute_stats(tmp_path, workers=workers, percentiles=False)
        assert stats.pooled.mean == pytest.approx(values.mean(), rel=1e-12)
        assert stats.pooled.std == pytest.approx(values.std(), rel=1e-12)
    a, b = (imagenorm.compute_stats(str(tmp_path / f"{i}.npy")) for i in range(2))
    assert a.merge(b).pooled.count == 512


def test_apply_keeps_the_folder_level_of_a_named_folder(tmp_path, rng):
    """Found by trying it: a folder holding one sub-folder lost that level in the copy."""
    (tmp_path / "ds" / "p").mkdir(parents=True)
    write_png(tmp_path / "ds" / "p" / "img3.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    assert invoke("apply", tmp_path / "ds", "-m", "zscore", "--per-image", "-o", tmp_path / "out").exit_code == 0
    assert (tmp_path / "out" / "p" / "img3.npy").exists()


def test_apply_never_resumes_over_another_source_or_a_changed_file(tmp_path, rng):
    """Found in review: every existing output counted as done, whatever it was made from."""
    for name, value in (("train", 10), ("test", 200)):
        (tmp_path / name).mkdir()
        write_png(tmp_path / name / "img.png", np.full((4, 4), value, np.uint8))
    stats = imagenorm.compute_stats(np.array([[[0, 255]]], np.uint8))
    stats.save(tmp_path / "s.json")
    options = imagenorm.MethodOptions("minmax")
    imagenorm.apply_normalization(tmp_path / "train", stats, str(tmp_path / "s.json"), options, str(tmp_path / "out"))
    with pytest.raises(imagenorm.ImagenormError, match="other settings .*source_root"):
        imagenorm.apply_normalization(tmp_path / "test", stats, str(tmp_path / "s.json"), options, str(tmp_path / "out"))
    write_png(tmp_path / "train" / "img.png", np.full((4, 4), 51, np.uint8))  # the source changed
    os.utime(tmp_path / "train" / "img.png", ns=(1, 1))
    report = imagenorm.apply_normalization(tmp_path / "train", stats, str(tmp_path / "s.json"), options, str(tmp_path / "out"))
    assert (report.written, report.resumed) == (1, 0)
    assert np.allclose(np.load(tmp_path / "out" / "img.npy"), 0.2)


def test_check_and_apply_take_multichannel_volumes(tmp_path, rng):
    """Found in review: (C, D, H, W) volumes were reshaped for 2-D transforms."""
    folder = tmp_path / "data"
    folder.mkdir()
    import nibabel

    for index in range(2):
        volume = np.stack([rng.normal(10, 2, (5, 6, 7)), rng.normal(1000, 50, (5, 6, 7))], axis=-1).astype(np.float32)
        nibabel.Nifti1Image(volume, np.eye(4)).to_filename(folder / f"{index}.nii")
    stats = imagenorm.compute_stats(folder)
    report = imagenorm.check_normalization(folder, stats, imagenorm.MethodOptions("zscore"), tolerance=1e-5)
    assert report.passed and report.files == 2
    imagenorm.apply_normalization(folder, stats, None, imagenorm.MethodOptions("zscore"), str(tmp_path / "out"))
    written = np.load(tmp_path / "out" / "0.npy")
    assert written.shape == (2, 5, 6, 7)
    assert abs(written[1].mean()) < 0.5 and 0.5 < written[1].std() < 1.5  # channel 1 by channel 1's numbers


def test_apply_per_image_with_a_mask_folder_is_refused_like_check(tmp_path, rng):
    folder, masks = tmp_path / "data", tmp_path / "masks"
    folder.mkdir()
    masks.mkdir()
    write_png(folder / "a.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    write_png(masks / "a.png", np.ones((4, 4), np.uint8))
    stats = imagenorm.compute_stats(folder, mask_dir=masks)
    for run in (lambda: imagenorm.apply_normalization(folder, stats, None, imagenorm.MethodOptions("zscore", per_image=True),
                                                      str(tmp_path / "out")),
                lambda: imagenorm.check_normalization(folder, stats, imagenorm.MethodOptions("zscore", per_image=True))):
        with pytest.raises(imagenorm.OptionError, match="cannot use mask files"):
            run()


def test_accumulated_volumes_keep_their_layout_and_merges_recompute_alpha(rng):
    """Found in review: the accumulator's volumes were taken for pictures; merge kept one alpha record."""
    import torch

    volume = torch.stack([torch.full((3, 4, 4), v) for v in (10.0, 100.0, 1000.0)]) + torch.randn(3, 3, 4, 4)
    accumulator = imagenorm.StatsAccumulator()
    accumulator.update(volume[None])
    stats = accumulator.compute()
    assert stats.spatial_dims == 3 and stats.measurement.voxels == 144
    assert torch.allclose(imagenorm.Standardize.from_stats(stats)(volume).mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    rgb = imagenorm.compute_stats(rng.integers(0, 256, (3, 4, 4), dtype=np.uint8))
    none, dropped = rgb.replace(alpha="none present"), rgb.replace(alpha="dropped where present")
    assert none.merge(dropped).alpha == "dropped where present" == dropped.merge(none).alpha


def test_a_threshold_on_multichannel_data_is_decided_by_one_reference_channel(tmp_path):
    """Issue 10 #6: a voxel used to count when any channel passed the threshold."""
    import torch

    pixels = torch.tensor([[[100, 0, 100]], [[0, 100, 100]]], dtype=torch.int16)  # (C=2, 1, 3)
    first = imagenorm.compute_stats(pixels, mask="threshold:>50")  # channel 0 decides: voxels 0 and 2
    assert first.pooled.count == 4 and first.channels[0].min == 100 and first.channels[1].mean == 50
    second = imagenorm.compute_stats(pixels, mask="threshold:>50@1")
    assert second.channels[0].mean == 50 and second.channels[1].min == 100
    assert second.read_options.mask == "threshold:>50@1" and second.to_dict()["mask"] == "threshold:>50@1"
    with pytest.raises(imagenorm.ReadError, match="channel 'green' is not among"):
        imagenorm.compute_stats(pixels, mask="threshold:>50@green")
    from imagenorm.masks import MaskSpec

    assert MaskSpec.parse("threshold:>50@1")(pixels).tolist() == [[[False, True, True]]]


def test_apply_names_uid_dicom_and_nifti_outputs_by_their_whole_names(tmp_path):
    """Found by trying it: '1.2.826....5648' and '....1753' were both written as '1.2.826....npy'."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder = tmp_path / "uid"
    folder.mkdir()
    for index, name in enumerate(("1.2.826.0.1.3680043.8.498.5648", "1.2.826.0.1.3680043.8.498.1753", "IM.0001")):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.SOPInstanceUID, dataset.ImagePositionPatient = f"1.2.3.{index}", [0.0, 0.0, float(index)]
        dataset.save_as(folder / name)
    result = invoke("apply", folder, "--per-image", "-m", "zscore", "--dicom-slices", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == [
        "1.2.826.0.1.3680043.8.498.1753.npy", "1.2.826.0.1.3680043.8.498.5648.npy", "IM.0001.npy"]


def test_bfloat16_tensors_are_measured_as_float32():
    import torch

    x = torch.randn(2, 2, 8, 8).to(torch.bfloat16)
    stats = imagenorm.compute_stats(x)
    values = x.float().double().numpy()
    assert stats.dtype == "float32" and stats.pooled.mean == pytest.approx(values.mean(), rel=1e-12)


def test_normalize_line_has_digits_for_a_mean_far_above_its_std(tmp_path):
    """Found by trying it: 5000s with one 5001 printed a mean that shifted pasted z-scores by 0.05."""
    values = np.full((1, 100, 100), 5000, np.uint16)
    values[0, 0, 0] = 5001
    stats = imagenorm.compute_stats(values)
    pasted_mean = float(stats.normalize_line().split("mean=[")[1].split("]")[0]) * 65535
    assert abs(pasted_mean - stats.mean[0]) < 1e-5 * stats.std[0]  # the old 6 digits missed by 1.5 stds


def test_percentile_scale_from_stats_says_how_to_give_percentiles():
    stats = imagenorm.compute_stats(np.arange(100, dtype=np.uint8).reshape(1, 10, 10))
    with pytest.raises(imagenorm.OptionError, match="percentiles=\\(low, high\\)"):
        imagenorm.PercentileScale.from_stats(stats, low=99.5, high=0.5)
