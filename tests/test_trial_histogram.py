"""A user's trial of histogram standardization, NIfTI/TIFF output and the nnU-Net export, against
TorchIO 1.2, nibabel, tifffile and float64 numpy.

The first part holds the problems found (each test fails until it is fixed); the second part pins
behaviours verified during the trial that the other test files do not cover yet.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import dipy.data
import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from torchio.transforms.preprocessing.intensity.histogram_standardization import _normalize as torchio_normalize
from typer.testing import CliRunner

from conftest import write_png

import imagenorm
from imagenorm.cli import app
from imagenorm.histogram_standardize import HistogramStandardize
from imagenorm.masks import MaskSpec
from imagenorm.readers import read_image
from imagenorm.stats.landmarks import LandmarkSpec

dipy_files = Path(dipy.data.__file__).parent / "files"
runner = CliRunner()


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def torchio_train(paths, **options) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tio.HistogramStandardization.train([str(p) for p in paths], progress=False, **options)


def torchio_apply(path, landmarks, masking_method=None, **extra) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = tio.Subject(mri=tio.ScalarImage(path), **extra)
        return tio.HistogramStandardization({"mri": landmarks}, masking_method=masking_method)(subject).mri.data.numpy()


def save_volumes(folder: Path, arrays, name="c{}.nii.gz") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, array in enumerate(arrays):
        path = folder / name.format(index)
        nib.save(nib.Nifti1Image(array, np.eye(4), dtype=array.dtype), path)
        paths.append(path)
    return paths


def pngs_with_background(folder: Path, count: int = 3, seed: int = 3) -> list[Path]:
    """16-bit gray PNGs: a dim background (200) around a bright object; `threshold:>1000` selects the object."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = np.full((40, 50), 200, np.uint16)
        pixels[8:32, 10:40] = rng.integers(5000, 30000 + 5000 * index, (24, 30))
        path = folder / f"s{index}.png"
        write_png(path, pixels)
        paths.append(path)
    return paths


# =====================================================================================================
# Findings: each fails now, and passes once fixed
# =====================================================================================================
def test_raw_float_input_with_a_recorded_threshold_is_refused_or_equal(tmp_path):
    """16-bit PNG statistics with ``--mask threshold:>1000``: TorchIO users feed float32 raw values
    (TorchIO's images are float32). HistogramStandardize silently reads them as the [0, 1] scale,
    so the threshold becomes > 1000/65535 and takes the background in: the output looks like a
    fine 0..100 image but is 79 off (of 100) against the same pixels given as uint16.
    Standardize.from_stats refuses the same input ("float input reaches ..., pass input_scale=1");
    expected: the same refusal, or the same output as the integer input."""
    pngs_with_background(tmp_path / "png")
    stats = imagenorm.compute_stats(tmp_path / "png", landmarks=True, mask="threshold:>1000")
    transform = HistogramStandardize.from_stats(stats)
    raw = read_image(str(tmp_path / "png" / "s0.png")).pixels
    expected = transform(torch.from_numpy(raw.copy())).numpy()
    try:
        found = transform(torch.from_numpy(raw.astype(np.float32))).numpy()
    except imagenorm.ImagenormError as error:
        assert "input_scale" in str(error)
        return
    np.testing.assert_allclose(found, expected, atol=1e-3)


def test_state_dict_keeps_the_recorded_threshold_mask(tmp_path):
    """A transform from statistics measured with ``threshold:>300`` saved in a checkpoint's state_dict:
    the state records the mask only as '<callable>', so loading it into a transform built with
    another threshold is silently accepted and standardizes with the wrong voxels (36 of 100 off).
    A MaskSpec is plain data (its text): expected: the state restores ``threshold:>300``, or
    loading into a transform with another mask is refused."""
    rng = np.random.default_rng(2)
    arrays = []
    for index in range(3):
        volume = np.zeros((20, 22, 16), np.int16)
        volume[4:16, 5:18, 3:13] = rng.integers(100, 1000 + 300 * index, (12, 13, 10))
        arrays.append(volume)
    paths = save_volumes(tmp_path / "mri", arrays)
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(paths, landmarks=True, mask="threshold:>300"))
    x = torch.from_numpy(np.ascontiguousarray(read_image(str(paths[0])).pixels))[None]
    expected = transform(x)
    other = HistogramStandardize(np.zeros(13), mask=MaskSpec.parse("threshold:>5"), spatial_dims=3)
    try:
        other.load_state_dict(transform.state_dict())
    except imagenorm.ImagenormError:
        return  # refused: fine
    np.testing.assert_array_equal(other(x).numpy(), expected.numpy())


def test_apply_resume_redoes_an_image_whose_mask_file_changed(tmp_path):
    """``apply --method histogram`` with statistics measured inside mask files (``--mask-dir``): each
    image's landmarks come from its mask file. After fixing a mask and running the same command
    into the same folder, the image counts as done (only the image file's size and mtime are
    compared) and the stale output stays: 4 of 100 off against a fresh run, silently.
    Expected: a changed mask file redoes its image, like a changed image does."""
    rng = np.random.default_rng(7)
    images, masks = tmp_path / "img", tmp_path / "mask"
    save_volumes(images, [(rng.gamma(2, 100, (20, 20, 10)) * (1 + i)).astype(np.int16) for i in range(3)])
    save_volumes(masks, [(rng.random((20, 20, 10)) < 0.4).astype(np.uint8) for _ in range(3)])
    stats = tmp_path / "s.json"
    assert invoke("stats", images, "--landmarks", "--mask-dir", masks, "-o", stats, "-q")[0] == 0
    out = tmp_path / "out"
    assert invoke("apply", images, "--stats", stats, "--method", "histogram", "-o", out, "-q")[0] == 0
    fixed = np.zeros((20, 20, 10), np.uint8)
    fixed[2:10, 2:10, 2:6] = 1
    nib.save(nib.Nifti1Image(fixed, np.eye(4)), masks / "c0.nii.gz")
    assert invoke("apply", images, "--stats", stats, "--method", "histogram", "-o", out, "-q")[0] == 0
    fresh = tmp_path / "fresh"
    assert invoke("apply", images, "--stats", stats, "--method", "histogram", "-o", fresh, "-q")[0] == 0
    np.testing.assert_array_equal(np.load(out / "c0.npy"), np.load(fresh / "c0.npy"))


def test_image_folder_dataset_gives_each_image_its_mask_file(tmp_path):
    """``ImageFolderDataset(root, stats=stats, transform=HistogramStandardize.from_stats(stats))`` with
    statistics measured inside mask files (``--mask-dir``): the dataset reads as the statistics
    were measured, yet every item fails with "give each call its mask (mask=...)" although the
    dataset knows the recorded mask folder (apply and check find each image's mask there).
    Expected: each item standardized with its own mask file, equal to ``apply``'s output."""
    from imagenorm.datasets import ImageFolderDataset

    rng = np.random.default_rng(8)
    images, masks = tmp_path / "img", tmp_path / "mask"
    save_volumes(images, [(rng.gamma(2, 100, (12, 12, 6)) * (1 + i)).astype(np.int16) for i in range(2)])
    save_volumes(masks, [(rng.random((12, 12, 6)) < 0.5).astype(np.uint8) for _ in range(2)])
    stats = imagenorm.compute_stats(images, landmarks=True, mask_dir=str(masks))
    transform = HistogramStandardize.from_stats(stats)
    dataset = ImageFolderDataset(str(images), stats=stats, transform=transform)
    item = dataset[0]
    item = item if isinstance(item, torch.Tensor) else item[0]
    mask = read_image(str(masks / "c0.nii.gz")).pixels[0] != 0
    pixels = torch.from_numpy(np.ascontiguousarray(read_image(str(images / "c0.nii.gz")).pixels))
    expected = transform(pixels[None], mask=torch.from_numpy(mask)[None, None])[0]
    np.testing.assert_array_equal(item.numpy(), expected.numpy())


def test_torchio_volume_layout_error_points_at_spatial_dims():
    """``HistogramStandardize.from_torchio(landmarks)`` then TorchIO's own tensor layout, one volume
    ``(1, X, Y, Z)`` (``subject.mri.data``): the error says "the input has 58 channel(s) ... pass
    channel_wise=False", advice that silently changes the meaning for a multi-channel volume.
    The cause is the default ``spatial_dims=2``. Expected: the message names ``spatial_dims=3``
    (or from_torchio takes TorchIO's 4-D layout as a volume)."""
    landmarks = np.linspace(0, 100, 13)
    transform = HistogramStandardize.from_torchio(landmarks)
    volume = torch.from_numpy(np.asanyarray(nib.load(dipy_files / "aniso_vox.nii.gz").dataobj))[None]  # (1, 58, 58, 24)
    try:
        transform(volume)
    except imagenorm.ImagenormError as error:
        assert "spatial_dims" in str(error), str(error)


def test_reversed_range_is_refused_by_its_name_or_mapped(tmp_path):
    """``apply --method histogram --range 100 0`` fails with "standard landmarks must be finite and
    increasing", which names nothing the user typed (min-max takes ``--range 1 0`` and inverts).
    Expected: either a decreasing standard scale (the map inverted), or an error naming the range."""
    rng = np.random.default_rng(1)
    paths = save_volumes(tmp_path / "mri", [rng.integers(0, 900, (10, 10, 6)).astype(np.int16) for _ in range(2)])
    stats = imagenorm.compute_stats(paths, landmarks=True)
    try:
        transform = HistogramStandardize.from_stats(stats, out_range=(100, 0))
    except imagenorm.ImagenormError as error:
        assert "range" in str(error), str(error)
        return
    x = torch.from_numpy(np.ascontiguousarray(read_image(str(paths[0])).pixels))[None]
    forward = HistogramStandardize.from_stats(stats)(x)
    np.testing.assert_allclose(transform(x).numpy(), 100 - forward.numpy(), atol=1e-4)


def test_an_image_flattened_entirely_by_eps_is_said():
    """Float volumes in small units (diffusivity in m²/s, ~1e-9): every landmark gap is below
    eps = 1e-5 raw, so every segment is flat and each volume comes out as a staircase of 10
    values (of 2,048 voxels) on 0..100, with no word (TorchIO does the same silently). The check
    command would flag it; the Python transform says nothing. Expected: a warning naming eps when
    a non-constant image has no segment left with a slope (the output may stay TorchIO's)."""
    rng = np.random.default_rng(14)
    arrays = [rng.gamma(2, 1e-9 * (1 + i), (1, 16, 16, 8)) for i in range(3)]
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(arrays, landmarks=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = transform(torch.from_numpy(arrays[0])[None])
    assert torch.unique(y).numel() < 20  # the staircase, as TorchIO
    assert any("eps" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_to_torchio_of_several_channels_needs_a_choice(tmp_path):
    """``to_torchio("landmarks.npy")`` of a per-channel transform of 4-channel volumes silently writes
    channel 0's landmarks; TorchIO then maps every channel of the 4-D image, pooled, with them:
    a different result than imagenorm's. Expected: with several channels and no ``channel=``, an
    OptionError saying to pick a channel (or channel_wise=False, TorchIO's pooled way)."""
    rng = np.random.default_rng(4)
    arrays = [np.stack([rng.gamma(2, 100 * (c + 1), (8, 8, 6)) for c in range(4)], -1).astype(np.int16) for _ in range(2)]
    stats = imagenorm.compute_stats(save_volumes(tmp_path / "dwi", arrays), landmarks=True)
    transform = HistogramStandardize.from_stats(stats)
    assert transform.standard.shape[0] == 4
    with pytest.raises(imagenorm.OptionError, match="channel"):
        transform.to_torchio(tmp_path / "landmarks.npy")
    np.testing.assert_array_equal(transform.to_torchio(channel=2), transform.standard[2].numpy())


def test_transposed_input_raises_no_torch_warning():
    """Transposed (non-contiguous) input, e.g. a NIfTI slice in another axis order, takes the torch
    path, where ``torch.bucketize`` emits torch's "input value tensor is non-contiguous, this will
    lower the performance" UserWarning from inside imagenorm. Expected: no warning for a
    supported input layout (the values are the same)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.gamma(2.0, 300.0, (2, 1, 16, 12)).astype(np.float32))
    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not transposed.is_contiguous() and torch.equal(transposed, x)
    transform = HistogramStandardize(np.linspace(0, 100, 13))
    expected = transform(x)
    torch.set_warn_always(True)  # torch says it once per process: make it say it here
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = transform(transposed)
    finally:
        torch.set_warn_always(False)
    assert not [str(w.message) for w in caught]
    np.testing.assert_allclose(found.numpy(), expected.numpy(), atol=1e-4)


def test_threshold_on_a_named_channel_is_usable_at_apply(tmp_path):
    """README: a threshold decides on "the channel named after @, e.g. threshold:>100@green".
    ``stats --landmarks --mask threshold:>50@green`` on RGB PNGs works, but ``apply`` and ``check
    --method histogram`` (and the Python transform from_stats) then fail on every image with
    "the mask's channel 'green' is not among its channels ['0', '1', '2']": the transform's mask
    knows only channel numbers. (``@1`` works.) Expected: the named channel is found, and the
    output equals the transform given the mask green > 50 explicitly."""
    rng = np.random.default_rng(15)
    (tmp_path / "rgb").mkdir()
    for index in range(3):
        write_png(tmp_path / "rgb" / f"r{index}.png", rng.integers(0, 256, (20, 24, 3)).astype(np.uint8))
    stats = tmp_path / "s.json"
    assert invoke("stats", tmp_path / "rgb", "--landmarks", "--mask", "threshold:>50@green", "-o", stats, "-q")[0] == 0
    code, output = invoke("apply", tmp_path / "rgb", "--stats", stats, "--method", "histogram", "-o", tmp_path / "o", "-q")
    assert code == 0, output
    x = torch.from_numpy(read_image(str(tmp_path / "rgb" / "r0.png")).pixels.copy())
    explicit = HistogramStandardize.from_stats(imagenorm.DatasetStats.load(stats), mask=(x[1] > 50)[None].expand_as(x))
    np.testing.assert_allclose(np.load(tmp_path / "o" / "r0.npy"), explicit(x).numpy(), atol=1e-5)


def test_merging_with_statistics_without_landmarks_says_so(tmp_path):
    """``a.merge(b)`` where only ``a`` was measured with landmarks returns statistics without any
    landmarks, silently; ``from_stats`` then says "has no landmarks; measure with 'imagenorm stats
    --landmarks'" although ``a`` was. Expected: the merge refuses (or warns) naming the landmarks."""
    rng = np.random.default_rng(3)
    paths = save_volumes(tmp_path / "mri", [rng.integers(0, 900, (8, 8, 4)).astype(np.int16) for _ in range(3)])
    with_landmarks = imagenorm.compute_stats(paths[:2], landmarks=True)
    without = imagenorm.compute_stats(paths[2:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            merged = with_landmarks.merge(without)
        except imagenorm.ImagenormError as error:
            assert "landmark" in str(error)
            return
    assert merged.landmarks is not None or any("landmark" in str(w.message) for w in caught)


# =====================================================================================================
# Verified during the trial (not covered elsewhere)
# =====================================================================================================
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_cli_stats_and_apply_equal_torchio_per_dtype(tmp_path, dtype):
    """``stats --landmarks`` and ``apply --method histogram`` against TorchIO's train and transform."""
    rng = np.random.default_rng(0)
    arrays = []
    for index in range(3):
        values = rng.gamma(3.0, 200.0, (16, 16, 10)) * (1 + 0.3 * index) + 10 * index
        if dtype == "uint8":
            values = values / values.max() * 255
        arrays.append(values.astype(dtype))
    paths = save_volumes(tmp_path / "mri", arrays)
    stats = tmp_path / "s.json"
    assert invoke("stats", tmp_path / "mri", "--landmarks", "-o", stats, "-q")[0] == 0
    landmarks = torchio_train(paths)
    transform = HistogramStandardize.from_stats(imagenorm.DatasetStats.load(stats))
    np.testing.assert_allclose(transform.standard[0].numpy(), landmarks, rtol=1e-12, atol=1e-12)
    assert invoke("apply", tmp_path / "mri", "--stats", stats, "--method", "histogram", "-o", tmp_path / "out", "-q")[0] == 0
    for path in paths:
        written = np.load(tmp_path / "out" / path.name.replace(".nii.gz", ".npy"))
        np.testing.assert_allclose(written, torchio_apply(path, landmarks), atol=1e-4)  # float64: TorchIO's float32 cast


def test_scaled_nifti_landmarks_equal_torchio(tmp_path):
    """int16 NIfTI with scl_slope/scl_inter: landmarks of the scaled values, as TorchIO reads them."""
    rng = np.random.default_rng(1)
    paths = []
    (tmp_path / "sc").mkdir()
    for index in range(3):
        image = nib.Nifti1Image(rng.integers(0, 3000, (14, 14, 8)).astype(np.int16), np.eye(4))
        image.header.set_slope_inter(0.37 + 0.1 * index, -50.0 * index)
        paths.append(tmp_path / "sc" / f"c{index}.nii")
        nib.save(image, paths[-1])
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(paths, landmarks=True))
    landmarks = torchio_train(paths)
    np.testing.assert_allclose(transform.standard[0].numpy(), landmarks, rtol=1e-6)
    y = transform(torch.from_numpy(np.ascontiguousarray(read_image(str(paths[1])).pixels))[None])[0].numpy()
    np.testing.assert_allclose(y, torchio_apply(paths[1], landmarks), atol=1e-4)


def test_nonfinite_ignored_landmarks_are_numpy_over_finite_values(tmp_path):
    """``--nonfinite ignore``: each image's landmarks over its finite voxels; NaN and ±Inf voxels stay
    NaN and ±Inf in the output; finite voxels as TorchIO maps the finite values."""
    rng = np.random.default_rng(4)
    arrays = []
    for index in range(3):
        values = rng.gamma(2, 100 + 50 * index, (12, 12, 6)).astype(np.float32)
        values[rng.random(values.shape) < 0.1] = np.nan
        arrays.append(values)
    arrays[1][0, 0, 0], arrays[1][0, 0, 1] = np.inf, -np.inf
    save_volumes(tmp_path / "nan", arrays)
    stats = imagenorm.compute_stats(tmp_path / "nan", landmarks=True, nonfinite="ignore")
    spec = LandmarkSpec()
    for array, row in zip(arrays, stats.landmarks.values):
        np.testing.assert_array_equal(row[0], np.percentile(array[np.isfinite(array)].astype(np.float64), spec.recorded))
    transform = HistogramStandardize.from_stats(stats)
    array = arrays[1]
    y = transform(torch.from_numpy(array)[None, None])[0, 0].numpy()
    finite = np.isfinite(array)
    assert np.isnan(y[np.isnan(array)]).all() and y[0, 0, 0] == np.inf and y[0, 0, 1] == -np.inf
    expected = torchio_normalize(torch.from_numpy(array[finite][None]), transform.standard[0].numpy(), None).numpy()[0]
    np.testing.assert_allclose(y[finite], expected, atol=1e-4)


def test_workers_and_four_d_channels_equal_torchio_per_channel_file(tmp_path):
    """4-D volumes as channels: each channel's standard scale equals TorchIO trained on that channel's
    3-D files, with -w 2 as with one process; ``apply --format nifti`` gives back the source's axes."""
    rng = np.random.default_rng(5)
    arrays = [np.stack([rng.gamma(2 + c, 50 * (i + 1), (8, 9, 5)) for c in range(3)], -1).astype(np.int16) for i in range(3)]
    paths = save_volumes(tmp_path / "dwi", arrays)
    one = tmp_path / "one.json"
    two = tmp_path / "two.json"
    assert invoke("stats", tmp_path / "dwi", "--landmarks", "-o", one, "-q")[0] == 0
    assert invoke("stats", tmp_path / "dwi", "--landmarks", "-w", 2, "-o", two, "-q")[0] == 0
    assert json.loads(one.read_text())["landmarks"]["images"] == json.loads(two.read_text())["landmarks"]["images"]
    transform = HistogramStandardize.from_stats(imagenorm.DatasetStats.load(one))
    for channel in range(3):
        files = save_volumes(tmp_path / f"ch{channel}", [a[..., channel] for a in arrays])
        np.testing.assert_allclose(transform.standard[channel].numpy(), torchio_train(files), rtol=1e-12)
    out = tmp_path / "nii"
    assert invoke("apply", tmp_path / "dwi", "--stats", one, "--method", "histogram", "--format", "nifti", "-o", out, "-q")[0] == 0
    written = nib.load(out / paths[0].name)
    assert written.shape == arrays[0].shape and written.get_data_dtype() == np.float32
    x = torch.from_numpy(np.ascontiguousarray(read_image(str(paths[0])).pixels))[None]
    np.testing.assert_array_equal(np.moveaxis(np.asanyarray(written.dataobj), -1, 0), transform(x)[0].numpy())


def test_nifti_4d_pooled_apply_equals_torchio(tmp_path):
    """``--nifti-4d pooled``: one standard scale over every volume, TorchIO's way, written back as 4-D NIfTI."""
    rng = np.random.default_rng(6)
    arrays = [np.stack([rng.gamma(2 + c, 40 * (i + 1), (8, 7, 5)) for c in range(3)], -1).astype(np.int16) for i in range(2)]
    paths = save_volumes(tmp_path / "dwi", arrays)
    stats = tmp_path / "p.json"
    assert invoke("stats", tmp_path / "dwi", "--landmarks", "--nifti-4d", "pooled", "-o", stats, "-q")[0] == 0
    landmarks = torchio_train(paths)
    np.testing.assert_allclose(HistogramStandardize.from_stats(imagenorm.DatasetStats.load(stats)).standard[0].numpy(),
                               landmarks, rtol=1e-12)
    out = tmp_path / "nii"
    assert invoke("apply", tmp_path / "dwi", "--stats", stats, "--method", "histogram", "--format", "nifti", "-o", out, "-q")[0] == 0
    for path in paths:
        written = np.asanyarray(nib.load(out / path.name).dataobj)
        np.testing.assert_array_equal(np.moveaxis(written, -1, 0), torchio_apply(path, landmarks))


def test_16_bit_png_nonzero_mask_equals_torchio_and_float_scale_input(tmp_path):
    """16-bit gray PNGs with ``--mask nonzero``: TorchIO's masking function; uint16 tensors and float
    input in the [0, 1] scale give the same output; a 2-D ``(H, W)`` image the same as ``(1, H, W)``."""
    rng = np.random.default_rng(10)
    (tmp_path / "png").mkdir()
    paths = []
    for index in range(3):
        pixels = np.zeros((30, 40), np.uint16)
        pixels[5:25, 5:35] = rng.gamma(2, 2000 * (index + 1), (20, 30)).clip(0, 65535).astype(np.uint16)
        paths.append(tmp_path / "png" / f"s{index}.png")
        write_png(paths[-1], pixels)
    transform = HistogramStandardize.from_stats(imagenorm.compute_stats(tmp_path / "png", landmarks=True, mask="nonzero"))
    landmarks = torchio_train(paths, masking_function=lambda x: x.numpy() != 0)
    np.testing.assert_allclose(transform.standard[0].numpy(), landmarks, rtol=1e-12)
    raw = read_image(str(paths[0])).pixels
    found = transform(torch.from_numpy(raw.copy())).numpy()
    expected = torchio_apply(paths[0], landmarks, masking_method=lambda x: x != 0)  # (1, W, H, 1)
    np.testing.assert_allclose(found[0], expected[0, :, :, 0].T, atol=1e-4)
    scaled = transform(torch.from_numpy(raw.astype(np.float32) / 65535)).numpy()
    np.testing.assert_allclose(scaled, found, atol=1e-4)
    np.testing.assert_array_equal(transform(torch.from_numpy(raw[0].copy())).numpy(), found[0])


def test_landmark_cutoff_half_percent_equals_torchio_train_cutoff(tmp_path):
    """``--landmark-cutoff 0.5 99.5`` learns TorchIO's ``train(cutoff=(0.005, 0.995))`` scale; to_torchio refuses it."""
    rng = np.random.default_rng(2)
    paths = save_volumes(tmp_path / "mri", [rng.gamma(2, 100 * (i + 1), (12, 12, 6)).astype(np.int16) for i in range(3)])
    stats = imagenorm.compute_stats(paths, landmarks=LandmarkSpec((0.5, 99.5)))
    transform = HistogramStandardize.from_stats(stats)
    np.testing.assert_allclose(transform.standard[0].numpy(), torchio_train(paths, cutoff=(0.005, 0.995)), rtol=1e-12)
    with pytest.raises(imagenorm.OptionError, match="TorchIO maps"):
        transform.to_torchio()


def test_torchio_written_files_read_back(tmp_path):
    """TorchIO's own ``train(output_path=...)`` .txt and .npy, and its documented ``{name: path}`` .pth."""
    rng = np.random.default_rng(3)
    paths = save_volumes(tmp_path / "mri", [rng.gamma(2, 100 * (i + 1), (10, 10, 6)).astype(np.int16) for i in range(2)])
    landmarks = torchio_train(paths)
    for suffix in (".txt", ".npy"):
        torchio_train(paths, output_path=tmp_path / f"l{suffix}")
        np.testing.assert_allclose(HistogramStandardize.from_torchio(tmp_path / f"l{suffix}").standard[0].numpy(),
                                   landmarks, rtol=1e-15)
    torch.save({"t1": str(tmp_path / "l.npy")}, tmp_path / "paths.pth")
    np.testing.assert_array_equal(HistogramStandardize.from_torchio(tmp_path / "paths.pth").standard[0].numpy(), landmarks)


def test_large_integer_and_float_ranges_are_exact(tmp_path):
    """int32 spanning ±2^30 and float64 log-normal values over 20 orders: landmarks equal numpy's
    float64 percentiles, outputs within float32 rounding of the exact map."""
    rng = np.random.default_rng(9)
    spec = LandmarkSpec()
    for kind, make in (("int32", lambda: rng.integers(-2 ** 30, 2 ** 30, (12, 12, 6)).astype(np.int32)),
                       ("float64", lambda: rng.lognormal(20, 5, (12, 12, 6)))):
        arrays = [make() for _ in range(2)]
        stats = imagenorm.compute_stats(save_volumes(tmp_path / kind, arrays), landmarks=True)
        for array, row in zip(arrays, stats.landmarks.values):
            np.testing.assert_array_equal(row[0], np.percentile(array.astype(np.float64), spec.recorded))
        transform = HistogramStandardize.from_stats(stats)
        y = transform(torch.from_numpy(arrays[0])[None, None])[0, 0].numpy()
        image = np.percentile(arrays[0].astype(np.float64), spec.mapped)
        inside = (arrays[0] >= image[0]) & (arrays[0] <= image[-1])
        expected = np.interp(arrays[0].astype(np.float64), image, transform.standard[0].numpy()[spec.mapped_index])
        np.testing.assert_allclose(y[inside], expected[inside], atol=1e-4)


def test_constant_image_maps_to_torchio_value():
    """A constant image (all landmarks tied) maps where TorchIO maps it (its 90th standard landmark)."""
    standard = np.array([0, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100.0])
    transform = HistogramStandardize(standard)
    for dtype in (torch.uint8, torch.int16, torch.float32, torch.float64):
        x = torch.full((1, 5, 6), 7).to(dtype)
        np.testing.assert_array_equal(transform(x).numpy(), torchio_normalize(x, standard, None).numpy())


def test_empty_mask_file_image_is_skipped_with_its_name(tmp_path):
    """A mask file with no voxel: stats leave the image out with a warning; apply fails or skips it by name."""
    rng = np.random.default_rng(8)
    images, masks = tmp_path / "img", tmp_path / "mask"
    save_volumes(images, [(rng.gamma(2, 100, (10, 10, 6)) * (1 + i)).astype(np.int16) for i in range(3)])
    save_volumes(masks, [((rng.random((10, 10, 6)) < 0.4) * (i != 1)).astype(np.uint8) for i in range(3)])
    stats = tmp_path / "s.json"
    code, output = invoke("stats", images, "--landmarks", "--mask-dir", masks, "-o", stats, "-q")
    assert code == 0
    code, output = invoke("apply", images, "--stats", stats, "--method", "histogram", "-o", tmp_path / "o", "--on-error", "skip")
    assert code == 0 and "c1.nii.gz" in output and "Traceback" not in output
    assert sorted(os.listdir(tmp_path / "o")) == ["c0.npy", "c2.npy", "imagenorm-manifest.json"]


def test_dicom_landmarks_are_modality_values(tmp_path):
    """pydicom's CT and MR files (one folder each): landmarks of HU / stored MR values, as numpy's;
    NIfTI output of DICOM is refused in one line."""
    import pydicom
    from pydicom.data import get_testdata_file

    values = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        folder = tmp_path / name[:-4]
        folder.mkdir()
        source = get_testdata_file(name)
        (folder / name).write_bytes(Path(source).read_bytes())
        dataset = pydicom.dcmread(source)
        values.append(dataset.pixel_array * float(getattr(dataset, "RescaleSlope", 1))
                      + float(getattr(dataset, "RescaleIntercept", 0)))
    stats = imagenorm.compute_stats(tmp_path, landmarks=True)
    for array, row in zip(values, stats.landmarks.values):
        np.testing.assert_array_equal(row[0], np.percentile(array, LandmarkSpec().recorded))
    stats.save(tmp_path / "s.json")
    code, output = invoke("apply", tmp_path, "--stats", tmp_path / "s.json", "--method", "histogram",
                          "--format", "nifti", "-o", tmp_path / "o")
    assert code == 2 and "not a NIfTI file" in output and "Traceback" not in output


def test_nnunet_export_of_scaled_cases_and_two_labels_equals_numpy(tmp_path):
    """nnU-Net layout, one case scaled (slope 0.5, intercept -3) and labels 1 and 2: every key exact
    against float64 numpy over labels > 0, in nnU-Net's key order."""
    rng = np.random.default_rng(6)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    foreground = []
    for index in range(3):
        image = nib.Nifti1Image(rng.integers(-1024, 2000, (12, 10, 6)).astype(np.int16), np.eye(4))
        if index == 1:
            image.header.set_slope_inter(0.5, -3.0)
        nib.save(image, tmp_path / "imagesTr" / f"case{index}_0000.nii.gz")
        labels = np.zeros((12, 10, 6), np.uint8)
        labels[2:9, 3:8, 1:5] = 1 + index % 2
        labels[4:6, 4:6, 2:4] = 2
        nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "labelsTr" / f"case{index}.nii.gz")
        foreground.append(nib.load(tmp_path / "imagesTr" / f"case{index}_0000.nii.gz").get_fdata()[labels > 0])
    values = np.concatenate(foreground)
    stats = tmp_path / "ct.json"
    assert invoke("stats", str(tmp_path / "imagesTr" / "*_0000.nii.gz"), "--mask-dir", tmp_path / "labelsTr", "-o", stats, "-q")[0] == 0
    code, output = invoke("export", stats, "--to", "nnunet", "-o", tmp_path / "fg.json")
    assert code == 0, output
    block = json.loads((tmp_path / "fg.json").read_text())["foreground_intensity_properties_per_channel"]
    assert list(block) == ["0"]
    assert list(block["0"]) == ["mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5"]
    expected = {"mean": values.mean(), "median": np.median(values), "std": values.std(), "min": values.min(),
                "max": values.max(), "percentile_99_5": np.percentile(values, 99.5),
                "percentile_00_5": np.percentile(values, 0.5)}
    for key, value in expected.items():
        assert block["0"][key] == pytest.approx(value, rel=1e-12, abs=1e-9), key
