"""Nyúl histogram standardization against TorchIO, on real MR volumes that ship with nibabel and dipy."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import dipy.data
import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from typer.testing import CliRunner

from conftest import write_png

import imagenorm
from imagenorm.cli import app
from imagenorm.errors import ImagenormWarning
from imagenorm.histogram_standardize import HistogramStandardize
from imagenorm.readers import read_image
from imagenorm.stats.checkpoint import Checkpoint
from imagenorm.stats.landmarks import DegenerateLandmarksError, LandmarkSpec, exact_percentiles

dipy_files = Path(dipy.data.__file__).parent / "files"
nibabel_data = Path(nib.__file__).parent / "tests" / "data"

#: Real MR volumes of several scanners, dtypes and contrasts (T1, b0, a denoised volume, noise).
REAL = [nibabel_data / "anatomical.nii", dipy_files / "aniso_vox.nii.gz", dipy_files / "S0_10slices.nii.gz",
        dipy_files / "test_piesno.nii.gz", dipy_files / "ascm_out_test.nii.gz"]
RANGE = 100.0  # TorchIO's standard range 0..100: the output's tolerance is relative to it


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> list[Path]:
    """The real volumes copied into one folder (names kept), as users have them."""
    folder = tmp_path_factory.mktemp("mri")
    copies = []
    for path in REAL:
        copy = folder / path.name
        shutil.copyfile(path, copy)
        copies.append(copy)
    return copies


def torchio_train(paths, **options) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SimpleITK falls back to nibabel for some headers
        return tio.HistogramStandardization.train([str(p) for p in paths], progress=False, **options)


def torchio_apply(path, landmarks, **subject_extra) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = tio.Subject(mri=tio.ScalarImage(path), **subject_extra)
        masking = "brain" if "brain" in subject_extra else None
        transform = tio.HistogramStandardization({"mri": landmarks}, masking_method=masking)
        return transform(subject).mri.data.numpy()[0]


def ours(path, transform, mask=None) -> np.ndarray:
    pixels = read_image(str(path)).pixels
    given = {} if mask is None else {"mask": torch.from_numpy(mask)[None, None]}
    return transform(torch.from_numpy(np.ascontiguousarray(pixels))[None], **given)[0, 0].numpy()


def assert_landmarks_equal(found: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-6 * RANGE * 1e-3)


def assert_output_equal(found: np.ndarray, expected: np.ndarray) -> None:
    assert found.shape == expected.shape and found.dtype == np.float32
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5 * RANGE)


# --- the defaults reproduce TorchIO -------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_learned_landmarks_equal_torchio(volumes, workers):
    stats = imagenorm.compute_stats(volumes, landmarks=True, workers=workers)
    transform = HistogramStandardize.from_stats(stats)
    assert_landmarks_equal(transform.standard[0].numpy(), torchio_train(volumes))
    assert stats.landmarks.names == [str(p) for p in volumes]


def test_standardized_volumes_equal_torchio(volumes):
    stats = imagenorm.compute_stats(volumes, landmarks=True)
    transform = HistogramStandardize.from_stats(stats)
    landmarks = torchio_train(volumes)
    for path in volumes:
        expected = torchio_apply(path, landmarks)
        assert_output_equal(ours(path, transform), expected)
    integer = ours(volumes[0], transform)  # int16: bit for bit, as TorchIO's float32 cast is exact there
    np.testing.assert_array_equal(integer, torchio_apply(volumes[0], landmarks))


def test_mask_files_as_torchio_mask_paths(volumes, tmp_path):
    """TorchIO's mask_path in training and masking_method at apply; ours --mask-dir and a mask per call."""
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    masks = []
    for path in volumes:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)  # the source's shape (a trailing axis of 1 kept), as TorchIO reads it
        mask = (data > np.percentile(data, 40)).astype(np.uint8)
        target = masks_dir / path.name
        nib.save(nib.Nifti1Image(mask, image.affine), target)
        masks.append(target)
    stats = imagenorm.compute_stats(volumes, landmarks=True, mask_dir=str(masks_dir))
    transform = HistogramStandardize.from_stats(stats)
    landmarks = torchio_train(volumes, mask_path=[str(m) for m in masks])
    assert_landmarks_equal(transform.standard[0].numpy(), landmarks)
    with pytest.raises(imagenorm.ImagenormError, match="mask"):
        ours(volumes[0], transform)  # measured inside mask files: each call needs its mask
    for path, mask_path in zip(volumes, masks):
        mask = read_image(str(mask_path)).pixels[0] != 0
        expected = torchio_apply(path, landmarks, brain=tio.LabelMap(mask_path))
        assert_output_equal(ours(path, transform, mask), expected)


def test_threshold_mask_as_torchio_masking_function(volumes):
    stats = imagenorm.compute_stats(volumes[:2], landmarks=True, mask="threshold:>100")
    landmarks = torchio_train(volumes[:2], masking_function=lambda tensor: tensor.numpy() > 100)
    transform = HistogramStandardize.from_stats(stats)
    assert_landmarks_equal(transform.standard[0].numpy(), landmarks)
    assert transform.mask is not None  # the recorded mask is taken over
    y = ours(volumes[0], transform)
    pixels = read_image(str(volumes[0])).pixels[0]
    image = exact_percentiles(pixels[pixels > 100], LandmarkSpec().mapped)
    standard = transform.standard[0].numpy()[LandmarkSpec().mapped_index]
    np.testing.assert_allclose(exact_percentiles(y[pixels > 100], LandmarkSpec().mapped), standard, atol=0.05)
    assert image[0] > 100


def test_background_ties_follow_torchio(tmp_path):
    """Unmasked background: many equal lowest landmarks; TorchIO's flat segments, not a division by zero."""
    rng = np.random.default_rng(3)
    paths = []
    for index in range(3):
        data = np.zeros((30, 30, 20), np.int16)
        data[5:25, 5:25, 3:17] = rng.integers(200, 900 + 100 * index, (20, 20, 14))
        path = tmp_path / f"case{index}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        paths.append(path)
    stats = imagenorm.compute_stats(paths, landmarks=True)
    transform = HistogramStandardize.from_stats(stats)
    landmarks = torchio_train(paths)
    assert_landmarks_equal(transform.standard[0].numpy(), landmarks)
    for path in paths:
        assert_output_equal(ours(path, transform), torchio_apply(path, landmarks))


# --- TorchIO's files ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npy", ".txt", ".pth"])
def test_torchio_files_round_trip(volumes, tmp_path, suffix):
    stats = imagenorm.compute_stats(volumes[:3], landmarks=True)
    transform = HistogramStandardize.from_stats(stats)
    path = tmp_path / f"landmarks{suffix}"
    values = transform.to_torchio(path, key="mri")
    back = HistogramStandardize.from_torchio(path, key="mri" if suffix == ".pth" else None)
    np.testing.assert_array_equal(back.standard.numpy(), transform.standard.numpy()) if suffix != ".txt" else \
        np.testing.assert_allclose(back.standard.numpy(), transform.standard.numpy(), rtol=1e-15)
    if suffix == ".npy":
        landmarks = {"mri": str(path)}
    elif suffix == ".pth":
        landmarks = str(path)
    else:
        return  # TorchIO writes .txt but reads .npy and .pth only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = tio.Subject(mri=tio.ScalarImage(volumes[1]))
        expected = tio.HistogramStandardization(landmarks)(subject).mri.data.numpy()[0]
    assert_output_equal(ours(volumes[1], back), expected)
    assert values.shape == (13,)


def test_from_torchio_trained_landmarks(volumes):
    landmarks = torchio_train(volumes[:2])
    transform = HistogramStandardize.from_torchio({"mri": landmarks})
    assert_output_equal(ours(volumes[2], transform), torchio_apply(volumes[2], landmarks))


def test_torchio_formats_refused_plainly(tmp_path):
    with pytest.raises(imagenorm.OptionError, match="13 values"):
        HistogramStandardize.from_torchio(np.arange(11.0))
    with pytest.raises(imagenorm.OptionError, match="several"):
        HistogramStandardize.from_torchio({"t1": np.arange(13.0), "t2": np.arange(13.0)})
    (tmp_path / "bad.pth").write_bytes(b"not a pickle")
    with pytest.raises(imagenorm.ImagenormError, match="bad.pth"):
        HistogramStandardize.from_torchio(tmp_path / "bad.pth")
    other = HistogramStandardize(np.arange(13.0), LandmarkSpec((2, 98)))
    with pytest.raises(imagenorm.OptionError, match="TorchIO maps"):
        other.to_torchio()


# --- the stats file: mergeable, and honest about degenerate images --------------------------------
def test_landmarks_merge_by_concatenation(volumes, tmp_path):
    whole = imagenorm.compute_stats(volumes[:4], landmarks=True)
    first = imagenorm.compute_stats(volumes[:2], landmarks=True)
    second = imagenorm.compute_stats(volumes[2:4], landmarks=True)
    first.save(tmp_path / "a.json")
    second.save(tmp_path / "b.json")
    merged = imagenorm.DatasetStats.load(tmp_path / "a.json").merge(imagenorm.DatasetStats.load(tmp_path / "b.json"))
    np.testing.assert_array_equal(merged.landmarks.values, whole.landmarks.values)
    assert merged.landmarks.names == whole.landmarks.names
    document = json.loads((tmp_path / "a.json").read_text())["landmarks"]
    assert document["recorded"] == list(LandmarkSpec().recorded) and len(document["images"]) == 2
    assert document["standard"]["channels"][0][0] == 0 and document["standard"]["channels"][0][-1] == 100


def test_stats_file_landmarks_are_checked(volumes, tmp_path):
    imagenorm.compute_stats(volumes[:2], landmarks=True).save(tmp_path / "s.json")
    document = json.loads((tmp_path / "s.json").read_text())
    document["landmarks"]["images"][0]["landmarks"][0][3] = -1e9  # decreasing
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(imagenorm.StatsFileError, match="decrease"):
        imagenorm.DatasetStats.load(tmp_path / "bad.json")


def test_constant_image_left_out_with_a_warning(volumes, tmp_path):
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 7, np.int16), np.eye(4)), flat)
    with pytest.warns(ImagenormWarning, match="flat.nii.gz"):
        stats = imagenorm.compute_stats([volumes[0], flat], landmarks=True)
    with pytest.warns(ImagenormWarning, match="1 image"):
        transform = HistogramStandardize.from_stats(stats)
    assert_landmarks_equal(transform.standard[0].numpy(), torchio_train([volumes[0]]))
    with pytest.warns(ImagenormWarning, match="no standard scale|no image"):
        only_flat = imagenorm.compute_stats([flat], landmarks=True)
    with pytest.raises(DegenerateLandmarksError):
        HistogramStandardize.from_stats(only_flat)


def test_stats_without_landmarks_refused(volumes):
    stats = imagenorm.compute_stats(volumes[:1])
    with pytest.raises(imagenorm.OptionError, match="--landmarks"):
        HistogramStandardize.from_stats(stats)


def test_empty_mask_at_apply_is_an_error():
    t = HistogramStandardize(np.linspace(0, 100, 13))
    with pytest.raises(imagenorm.DegenerateStatisticsError, match="no finite value"):
        t(torch.arange(100.0).reshape(1, 10, 10), mask=torch.zeros(1, 10, 10, dtype=torch.bool))


# --- the transform: paths, layouts, state -----------------------------------------------------------
def test_torch_path_equals_compiled_path():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.gamma(2.0, 300.0, (2, 3, 16, 16)).astype(np.float32))
    standard = np.sort(rng.uniform(0, 100, (3, 13)), axis=1)
    t = HistogramStandardize(standard, mask="nonzero")
    fused = t(x)
    torch_path = t(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))  # channels-last memory: torch ops
    np.testing.assert_allclose(torch_path.numpy(), fused.numpy(), rtol=1e-6, atol=1e-5)
    with torch.enable_grad():
        grad_path = t(x.clone().requires_grad_(True))
    np.testing.assert_allclose(grad_path.detach().numpy(), fused.numpy(), rtol=1e-6, atol=1e-5)


def test_each_image_of_a_batch_and_each_channel_has_its_own_landmarks():
    rng = np.random.default_rng(1)
    standard = np.linspace(0, 100, 13)
    t = HistogramStandardize(np.stack([standard, standard]))
    a = rng.normal(100, 10, (2, 20, 20)).astype(np.float32)
    b = a * np.array([3.0, 0.5], np.float32)[:, None, None] + 40  # another scanner: scaled and shifted
    out = t(torch.from_numpy(np.stack([a, b])))
    np.testing.assert_allclose(out[0].numpy(), out[1].numpy(), atol=1e-4)  # both images land on one scale
    pooled = HistogramStandardize(standard, channel_wise=False)(torch.from_numpy(np.stack([a, b])))
    assert not np.allclose(pooled[1].numpy(), out[1].numpy(), atol=1)  # image b's channels differ: pooled keeps that


def test_state_dict_round_trip(volumes):
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(volumes[:2], landmarks=True, mask="nonzero"))
    loaded = HistogramStandardize(np.zeros(13), mask=transform.mask)
    loaded.load_state_dict(transform.state_dict())
    x = torch.from_numpy(np.ascontiguousarray(read_image(str(volumes[2])).pixels))[None]
    np.testing.assert_array_equal(loaded(x).numpy(), transform(x).numpy())


def test_bad_options_are_refused():
    with pytest.raises(imagenorm.OptionError, match="13 values"):
        HistogramStandardize(np.arange(11.0))
    with pytest.raises(imagenorm.OptionError, match="increasing"):
        HistogramStandardize(np.array([0, 10, 20, 25, 30, 40, 35, 60, 70, 75, 80, 90, 100.0]))
    with pytest.raises(imagenorm.OptionError, match="cutoff"):
        LandmarkSpec((99, 1))
    with pytest.raises(imagenorm.OptionError, match="outside"):
        LandmarkSpec((10, 90), (5, 50))
    with pytest.raises(imagenorm.ImagenormError, match="channel"):
        HistogramStandardize(np.linspace(0, 100, 13))(torch.zeros(3, 4, 4))


def test_custom_landmarks_use_their_own_cutoffs(volumes):
    spec = LandmarkSpec((2.0, 98.0), (25.0, 50.0, 75.0))
    stats = imagenorm.compute_stats(volumes[:3], landmarks=spec)
    transform = HistogramStandardize.from_stats(stats, out_range=(-1, 1))
    y = ours(volumes[0], transform)
    pixels = read_image(str(volumes[0])).pixels[0]
    found = exact_percentiles(y, spec.mapped)
    np.testing.assert_allclose(found[[0, -1]], [-1, 1], atol=1e-3)  # the image's cutoffs on the range
    standard = transform.standard[0].numpy()[spec.mapped_index]
    np.testing.assert_allclose(found, standard, atol=1e-3)  # and its 25/50/75 on the standard ones
    assert pixels.dtype == np.int16


# --- the command line -------------------------------------------------------------------------------
def test_cli_stats_apply_check_histogram(volumes, tmp_path):
    runner = CliRunner()
    stats = tmp_path / "mri.json"
    folder = volumes[0].parent
    result = runner.invoke(app, ["stats", str(folder), "--landmarks", "-o", str(stats), "-q"])
    assert result.exit_code == 0, result.output
    assert "histogram landmarks (TorchIO's" in result.output
    result = runner.invoke(app, ["apply", str(folder), "--stats", str(stats), "--method", "histogram",
                                 "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    landmarks = torchio_train(sorted(volumes))
    for path in volumes:
        name = path.name.split(".")[0] + ".npy"
        written = np.load(tmp_path / "out" / name)[0]
        assert_output_equal(written, torchio_apply(path, landmarks))
    manifest = json.loads((tmp_path / "out" / "imagenorm-manifest.json").read_text())
    assert manifest["method"]["method"] == "histogram" and manifest["method"]["out_range"] == [0.0, 100.0]
    result = runner.invoke(app, ["check", str(folder), "--stats", str(stats), "--method", "histogram"])
    assert result.exit_code == 1, result.output  # values ~0.1 apart by less than eps=1e-5: flat segments, named
    assert "landmarks on the standard" in result.output and "test_piesno.nii.gz" in result.output
    first = tmp_path / "first"
    first.mkdir()
    for path in volumes[:3]:
        shutil.copyfile(path, first / path.name)
    assert runner.invoke(app, ["stats", str(first), "--landmarks", "-o", str(stats), "-q"]).exit_code == 0
    result = runner.invoke(app, ["check", str(first), "--stats", str(stats), "--method", "histogram"])
    assert result.exit_code == 0, result.output


def test_cli_check_histogram_misses_where_landmarks_tie(tmp_path):
    """Trained on tissue only, checked on volumes half background, unmasked: their lowest landmarks
    tie and cannot land on the standard ones (a miss, exit 1); inside the recorded mask they do."""
    rng = np.random.default_rng(5)
    train, test = tmp_path / "train", tmp_path / "test"
    for folder, background in ((train, 0), (test, 5)):
        folder.mkdir()
        for index in range(2):
            data = np.zeros((20, 20, 10), np.int16)
            data[:, :, background:] = rng.integers(100, 1000, (20, 20, 10 - background))
            nib.save(nib.Nifti1Image(data, np.eye(4)), folder / f"c{index}.nii.gz")
    runner = CliRunner()
    stats, masked = tmp_path / "s.json", tmp_path / "masked.json"
    assert runner.invoke(app, ["stats", str(train), "--landmarks", "-o", str(stats), "-q"]).exit_code == 0
    result = runner.invoke(app, ["check", str(test), "--stats", str(stats), "--method", "histogram"])
    assert result.exit_code == 1, result.output
    assert "the farthest landmark" in result.output
    assert runner.invoke(app, ["stats", str(train), "--landmarks", "--mask", "nonzero", "-o", str(masked), "-q"]).exit_code == 0
    result = runner.invoke(app, ["check", str(test), "--stats", str(masked), "--method", "histogram"])
    assert result.exit_code == 0, result.output


def test_cli_histogram_usage_errors(volumes, tmp_path):
    runner = CliRunner()
    plain = tmp_path / "plain.json"
    assert runner.invoke(app, ["stats", str(volumes[0]), "-o", str(plain), "-q"]).exit_code == 0
    result = runner.invoke(app, ["check", str(volumes[0]), "--stats", str(plain), "--method", "histogram"])
    assert result.exit_code == 2 and "--landmarks" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["check", str(volumes[0]), "--stats", str(plain), "--method", "histogram", "--per-image"])
    assert result.exit_code == 2 and "per-image" in result.output.replace("per_image", "per-image")


def test_in_a_dataloader_with_workers(volumes):
    """The transform pickles (spawned DataLoader workers) and gives the same volumes there."""
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(volumes[:2], landmarks=True, mask="nonzero"))
    images = [torch.from_numpy(np.ascontiguousarray(read_image(str(p)).pixels))[None] for p in volumes[:2]]
    expected = [transform(x) for x in images]
    loader = torch.utils.data.DataLoader(images, batch_size=None, num_workers=2,
                                         multiprocessing_context="spawn", collate_fn=transform)
    for found, want in zip(loader, expected):
        np.testing.assert_array_equal(found.numpy(), want.numpy())


def interrupted_run(tmp_path, **options):
    """200 uint16 images and the checkpoint of a run stopped after its second chunk (a Ctrl-C)."""
    rng = np.random.default_rng(7)
    data = tmp_path / "data"
    data.mkdir()
    for index in range(200):  # chunks of 64 images: a checkpoint after each
        np.save(data / f"{index:03d}.npy", rng.integers(0, 4000, (1, 6, 7)).astype(np.uint16))
    checkpoint = str(tmp_path / "run.ckpt")
    seen = []

    def interrupt(done):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1), progress=interrupt, **options)
    return data, checkpoint


def test_interrupted_landmark_run_resumes_with_every_image(tmp_path):
    """Landmarks travel in the checkpoint: a resumed run records each image once, in item order."""
    data, checkpoint = interrupted_run(tmp_path, landmarks=True)
    resumed = imagenorm.compute_stats(data, landmarks=True, checkpoint=Checkpoint(checkpoint, every_items=1))
    plain = imagenorm.compute_stats(data, landmarks=True)
    assert resumed.landmarks.names == plain.landmarks.names and len(plain.landmarks.names) == 200
    np.testing.assert_array_equal(resumed.landmarks.values, plain.landmarks.values)
    first = np.load(data / "000.npy")
    np.testing.assert_array_equal(plain.landmarks.values[0, 0], np.percentile(first, LandmarkSpec().recorded))


# --- found by the review ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_input_is_raw_values_for_eps(dtype):
    """From TorchIO's landmarks (no stats), integer input of any dtype is raw values: eps stays 1e-5."""
    from torchio.transforms.preprocessing.intensity.histogram_standardization import _normalize

    rng = np.random.default_rng(11)
    data = rng.integers(0, 120, (1, 12, 12, 6)).astype(np.int64)
    x = torch.from_numpy(data).to(dtype)
    standard = np.sort(rng.uniform(0, 100, 13))
    standard[0], standard[-1] = 0, 100
    expected = _normalize(x, standard, mask=None).numpy()
    found = HistogramStandardize.from_torchio(standard, spatial_dims=3)(x)
    np.testing.assert_allclose(found.numpy(), expected, rtol=1e-6, atol=1e-4)


def test_one_volume_and_a_batch_of_one_with_the_recorded_mask(volumes):
    """A recorded nonzero mask on (C, D, H, W) with spatial_dims=3: the same as the batch of one."""
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(volumes[:2], landmarks=True, mask="nonzero"))
    assert transform.spatial_dims == 3
    volume = torch.from_numpy(np.ascontiguousarray(read_image(str(volumes[1])).pixels))
    np.testing.assert_array_equal(transform(volume).numpy(), transform(volume[None])[0].numpy())
    threshold = HistogramStandardize.from_stats(imagenorm.compute_stats(volumes[:2], landmarks=True, mask="threshold:>50"))
    np.testing.assert_array_equal(threshold(volume).numpy(), threshold(volume[None])[0].numpy())


def test_threshold_mask_in_raw_units_for_float_input(tmp_path):
    """16-bit PNG statistics with a threshold: float input in the [0, 1] scale selects the same voxels."""
    rng = np.random.default_rng(2)
    for index in range(2):
        write_png(tmp_path / f"{index}.png", rng.integers(0, 60000, (24, 24)).astype(np.uint16))
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(tmp_path, landmarks=True, mask="threshold:>20000"))
    raw = torch.from_numpy(read_image(str(tmp_path / "0.png")).pixels.astype(np.int32))
    scaled = raw.to(torch.float32) / 65535
    np.testing.assert_allclose(transform(scaled).numpy(), transform(raw.to(torch.uint16)).numpy(), rtol=1e-5, atol=1e-4)


def test_checkpoint_of_a_run_without_landmarks_is_another_run(tmp_path):
    data, checkpoint = interrupted_run(tmp_path, landmarks=False)
    with pytest.raises(imagenorm.ImagenormError, match="another run|other"):
        imagenorm.compute_stats(data, landmarks=True, checkpoint=Checkpoint(checkpoint, every_items=1))


def test_stats_with_landmarks_compare_by_value(volumes, tmp_path):
    stats = imagenorm.compute_stats(volumes[:2], landmarks=True)
    stats.save(tmp_path / "s.json")
    loaded = imagenorm.DatasetStats.load(tmp_path / "s.json")
    assert loaded.landmarks == stats.landmarks
    assert imagenorm.compute_stats(volumes[:3], landmarks=True).landmarks != stats.landmarks


def test_other_output_dtypes_take_the_torch_path():
    t = HistogramStandardize(np.linspace(0, 100, 13), dtype=torch.float16)
    y = t(torch.arange(1001, dtype=torch.int16).reshape(1, 1, -1))
    assert y.dtype == torch.float16 and float(y[0, 0, 500]) == 50.0


def test_percentiles_that_print_alike_stay_apart():
    spec = LandmarkSpec((1, 99), (50, 50.0000001))
    assert len(exact_percentiles(np.arange(1000, dtype=np.int16), spec.recorded)) == len(spec.recorded)


def test_torchio_pth_of_numpy_arrays(tmp_path):
    """TorchIO's documented file: torch.save({name: np.ndarray}); read without torch's allowlist changing."""
    path = tmp_path / "landmarks.pth"
    values = np.linspace(0, 100, 13)
    torch.save({"t1": values}, path)
    before = list(torch.serialization.get_safe_globals())
    np.testing.assert_array_equal(HistogramStandardize.from_torchio(path).standard[0].numpy(), values)
    assert list(torch.serialization.get_safe_globals()) == before

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"t1": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(imagenorm.ImagenormError, match="not plain"):
        HistogramStandardize.from_torchio(tmp_path / "evil.pth")


def test_four_d_channels_pooled_equals_torchio(tmp_path):
    """A 2-channel 4-D NIfTI, pooled (TorchIO's way for multi-channel images)."""
    rng = np.random.default_rng(4)
    paths = []
    for index in range(2):
        data = np.stack([rng.gamma(2, 100 + 50 * index, (10, 12, 8)), rng.gamma(3, 40, (10, 12, 8))], axis=-1)
        path = tmp_path / f"c{index}.nii.gz"
        nib.save(nib.Nifti1Image(np.rint(data).astype(np.int16), np.eye(4)), path)
        paths.append(path)
    stats = imagenorm.compute_stats(paths, landmarks=True)
    transform = HistogramStandardize.from_stats(stats, channel_wise=False)
    landmarks = torchio_train(paths)
    assert_landmarks_equal(transform.standard[0].numpy(), landmarks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = tio.Subject(mri=tio.ScalarImage(paths[0]))
        expected = tio.HistogramStandardization({"mri": landmarks})(subject).mri.data.numpy()
    volume = torch.from_numpy(np.ascontiguousarray(read_image(str(paths[0])).pixels))
    assert_output_equal(transform(volume[None])[0].numpy(), expected)


@pytest.mark.parametrize("mask", ["nonzero", "threshold:>300"])
def test_per_image_transforms_take_the_recorded_mask_on_one_volume(mask):
    """A recorded mask (MaskSpec) on one volume (C, D, H, W) with spatial_dims=3: the channel axis is
    told, not guessed from the shape, for every per-image transform as for HistogramStandardize."""
    from imagenorm.masks import MaskSpec

    rng = np.random.default_rng(9)
    volume = torch.from_numpy(rng.integers(0, 1000, (2, 6, 7, 8)).astype(np.int16))
    volume[:, :2] = 0
    spec = MaskSpec.parse(mask)
    for transform in (imagenorm.Standardize(per_image=True, mask=spec, spatial_dims=3),
                      imagenorm.PercentileScale(per_image=True, mask=spec, spatial_dims=3)):
        np.testing.assert_array_equal(transform(volume).numpy(), transform(volume[None])[0].numpy())
    plane = torch.from_numpy(rng.integers(0, 1000, (9, 10)).astype(np.int16))
    plane[:3] = 0
    inside = plane[plane > 300] if mask.startswith("threshold") else plane[plane != 0]
    y = imagenorm.Standardize(per_image=True, mask=spec)(plane)  # (H, W): no channel axis at all
    expected = (plane.double() - inside.double().mean()) / inside.double().std(unbiased=False)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_per_image_percentiles_are_numpy_exactly():
    rng = np.random.default_rng(10)
    x = torch.from_numpy(rng.normal(0, 1, (1, 1, 1001)))
    low, high = imagenorm.functional.image_statistics(x, "percentiles", q=(0.5, 99.5))
    assert (low[0, 0], high[0, 0]) == tuple(np.percentile(x.numpy(), (0.5, 99.5)))


def test_cli_landmark_options_checked_in_one_line(volumes):
    runner = CliRunner()
    result = runner.invoke(app, ["stats", str(volumes[0]), "--landmarks", "--landmark-percentiles", "50,a", "-q"])
    assert result.exit_code == 2 and "landmark percentiles must be numbers" in result.output
    result = runner.invoke(app, ["stats", str(volumes[0]), "--landmark-cutoff", "2", "98", "-q"])
    assert result.exit_code == 2 and "need --landmarks" in result.output
