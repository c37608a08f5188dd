"""Trial of ``apply --format nifti|tiff``, ``export --to nnunet`` and recorded masks, as a user of
medical pipelines would use them (NIfTI from dcm2niix/FSL/ANTs, DICOM, OME-TIFF stacks, nnU-Net),
checked against nibabel, SimpleITK, tifffile, pydicom and float64 numpy.

The tests marked "finding" fail now and pass once the problem their docstring names is fixed;
the others pin behaviour verified during the trial that no other test covers.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
import torch
from pydicom.data import get_testdata_file

import imagenorm
from imagenorm.errors import ImagenormError, ImagenormWarning
from imagenorm.export import export, export_json, nnunet_intensity_properties
from imagenorm.masks import MaskSpec
from imagenorm.readers import read_image

PER_IMAGE = imagenorm.MethodOptions("zscore", per_image=True)


def apply(source, out: Path, options=PER_IMAGE, output_format: str = "npy", stats=None, stats_path=None, **kwargs):
    return imagenorm.apply_normalization(str(source), stats, None if stats_path is None else str(stats_path), options,
                                         str(out), output_format=output_format, **kwargs)


def rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    """A proper rotation (x, then y, then z), as scanners tilt their slices."""
    x, y, z = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(zooms=(-0.8, 0.8, 1.5)) -> np.ndarray:
    """An oblique affine with a negative determinant (LAS storage, qfac -1), as dcm2niix writes."""
    affine = np.eye(4)
    affine[:3, :3] = rotation((5, -12, 20)) @ np.diag(zooms)
    affine[:3, 3] = [90.0, -126.0, -72.0]
    return affine


def warned_about(caught, *words: str) -> bool:
    return any(all(word in str(item.message) for word in words) for item in caught)


# ------------------------------------------------------------------------------------------------
# Findings
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axes, shape", [("ZYX", (5, 8, 9)), ("ZCYX", (4, 2, 8, 9))])
def test_finding_ome_tiff_source_gives_ome_xml_that_turns_slices_into_channels(tmp_path, axes, shape):
    """Finding (silent wrong geometry). A microscopy stack named the standard way, ``stack.ome.tif``,
    is written by ``apply --format tiff`` as ``stack.ome.tiff``; from that name tifffile adds OME-XML
    of its own guess: the 5 Z slices become ``SizeC=5, SizeZ=1`` (axes ``CYX``), so Fiji, napari
    and imagenorm's own reader open a 5-channel 2-D image, not the (1, 5, 8, 9) stack the ``.npy``
    holds. Expected: the TIFF reads back as the ``.npy`` layout everywhere: no OME-XML, or
    OME-XML that says Z (and C where there are channels)."""
    (tmp_path / "src").mkdir()
    data = np.random.default_rng(0).integers(0, 4000, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "src" / "stack.ome.tif", data, metadata={"axes": axes}, ome=True)
    apply(tmp_path / "src", tmp_path / "npy")
    apply(tmp_path / "src", tmp_path / "tiff", output_format="tiff")
    expected = np.load(tmp_path / "npy" / "stack.ome.npy")
    written = next((tmp_path / "tiff").glob("stack*.tif*"))
    again = read_image(written)
    assert again.pixels.shape == expected.shape, (again.pixels.shape, again.channels)
    np.testing.assert_array_equal(again.pixels, expected)
    with tifffile.TiffFile(written) as tif:
        if tif.is_ome:  # then the OME axes must say what the pages are: Z slices
            series = tif.series[0]
            assert "Z" in series.axes and series.shape[series.axes.index("Z")] == shape[0], series.axes


def test_finding_five_d_tiff_stacks_are_normalized_as_a_batch(tmp_path):
    """Finding (silent wrong values). An OME-TIFF time-lapse ``TZCYX`` reads as one image
    ``(C, T, Z, Y, X)`` (and stats measure C as the channels), but ``apply`` hands that 5-D array
    to the transform, where 5-D means a batch ``(B, C, D, H, W)``: ``--per-image`` then
    normalizes every time point on its own (each T's mean becomes 0), and dataset statistics
    per channel are applied along T. Expected: the per-image z-score of each channel over the
    whole image, and each channel's dataset statistics on that channel, as float64 numpy gives."""
    (tmp_path / "src").mkdir()
    data = np.random.default_rng(1).integers(0, 1000, (2, 3, 2, 8, 9)).astype(np.uint16)  # T, Z, C, Y, X
    data[1] += 5000  # the second time point is brighter
    data[:, :, 1] += 20000  # channel 1 is much brighter than channel 0
    tifffile.imwrite(tmp_path / "src" / "timelapse.ome.tif", data, metadata={"axes": "TZCYX"}, ome=True)
    pixels = read_image(tmp_path / "src" / "timelapse.ome.tif").pixels.astype(np.float64)
    assert pixels.shape == (2, 2, 3, 8, 9)  # (C, T, Z, Y, X)
    apply(tmp_path / "src", tmp_path / "pi")
    per_image = np.load(tmp_path / "pi" / "timelapse.ome.npy")
    expected = np.stack([(c - c.mean()) / c.std() for c in pixels])
    np.testing.assert_allclose(per_image, expected, rtol=1e-5, atol=1e-5)

    stats = imagenorm.compute_stats(str(tmp_path / "src"))
    apply(tmp_path / "src", tmp_path / "ds", imagenorm.MethodOptions("zscore"), stats=stats)
    dataset = np.load(tmp_path / "ds" / "timelapse.ome.npy")
    expected = np.stack([(pixels[c] - stats.channels[c].mean) / stats.channels[c].std for c in range(2)])
    np.testing.assert_allclose(dataset, expected, rtol=1e-5, atol=1e-5)


def ct_series(folder: Path, count: int = 3) -> Path:
    """A CT series of ``count`` slices made from pydicom's CT_small.dcm."""
    folder.mkdir(parents=True)
    for index in range(count):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.PixelData = (dataset.pixel_array + 50 * index).astype(dataset.pixel_array.dtype).tobytes()
        dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{index}"
        dataset.ImagePositionPatient = [0.0, 0.0, float(index)]
        dataset.InstanceNumber = index + 1
        dataset.save_as(folder / f"slice_{index}.dcm")
    return folder


def test_finding_mask_dir_silently_splits_a_dicom_series_into_slices(tmp_path):
    """Finding (silent wrong per-image statistics). The README says the slices of a DICOM series
    are one image for per-image statistics; with ``--mask-dir`` (per-slice mask files at the same
    relative paths, the only layout found) the series is silently read slice by slice: 3 images,
    3 audit rows, landmarks averaged over slices, and ``apply --method histogram`` writes one file
    per slice, each standardized on its own landmarks. Expected: the series stays one image (its
    slices' masks stacked), or the user is told the series is read slice by slice."""
    series = ct_series(tmp_path / "ct")
    labels = tmp_path / "labels" / "ct"
    labels.mkdir(parents=True)
    for index in range(3):
        dataset = pydicom.dcmread(series / f"slice_{index}.dcm")
        mask = np.zeros(dataset.pixel_array.shape, dataset.pixel_array.dtype)
        mask[30:90, 40:100] = 1
        dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
        dataset.PixelData = mask.tobytes()
        dataset.save_as(labels / f"slice_{index}.dcm")
    assert imagenorm.compute_stats(str(series)).files == 1  # without masks: one volume
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = imagenorm.compute_stats(str(series), mask_dir=str(labels), landmarks=True)
    assert stats.files == 1 or warned_about(caught, "slice"), (stats.files, [str(w.message) for w in caught])


def test_finding_nonzero_word_means_two_masks(tmp_path):
    """Finding (silent wrong values on multi-channel images). ``mask="nonzero"`` recorded in a
    stats file (and ``--mask nonzero``) is "a voxel where any channel is nonzero"; the same word
    given to a transform is "this channel's value is nonzero". So
    ``HistogramStandardize.from_stats(stats, mask="nonzero")`` maps differently from
    ``from_stats(stats)`` for the same stats (here by up to 34 on the 0..100 scale), and
    ``Standardize(per_image=True, mask="nonzero")`` differs from ``apply --per-image --mask
    nonzero``. Expected: one meaning for one word (the statistics' one, "as for statistics")."""
    rng = np.random.default_rng(4)
    volumes = rng.integers(1, 1000, (3, 2, 6, 7, 8)).astype(np.int16)
    volumes[:, 0, :2] = 0  # channel 0 has a zero band where channel 1 has values
    stats = imagenorm.compute_stats(torch.from_numpy(volumes), mask="nonzero", landmarks=True)
    x = torch.from_numpy(volumes[:1])
    recorded = imagenorm.HistogramStandardize.from_stats(stats)(x)
    worded = imagenorm.HistogramStandardize.from_stats(stats, mask="nonzero")(x)
    np.testing.assert_allclose(worded.numpy(), recorded.numpy(), rtol=0, atol=1e-4)

    (tmp_path / "src").mkdir()
    volume = np.moveaxis(volumes[0], 0, -1)  # (X, Y, Z, 2): two channels of a 4-D NIfTI
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "src" / "two.nii.gz")
    apply(tmp_path / "src", tmp_path / "out", mask="nonzero")
    written = np.load(tmp_path / "out" / "two.npy")
    python = imagenorm.Standardize(per_image=True, mask="nonzero", spatial_dims=3)(torch.from_numpy(volumes[0]))
    np.testing.assert_allclose(python.numpy(), written, rtol=1e-5, atol=1e-5)


def test_finding_complex_nifti_is_an_internal_error(tmp_path):
    """Finding (crash, unclear). A complex-valued NIfTI (MR phase/complex reconstructions) makes
    ``imagenorm stats`` print "internal error: Failed in nopython mode pipeline ... Cannot cast
    complex64 to float64 ... please report it" (compute_stats raises numba's error), where
    ``apply`` says in one line that complex values are not pixel values. Expected: a ReadError
    naming the file (so ``on_error="skip"`` can skip it)."""
    (tmp_path / "src").mkdir()
    values = np.random.default_rng(0).normal(size=(4, 5, 6)) + 1j * np.random.default_rng(1).normal(size=(4, 5, 6))
    nibabel.save(nibabel.Nifti1Image(values.astype(np.complex64), np.eye(4)), tmp_path / "src" / "phase.nii.gz")
    with pytest.raises(imagenorm.ReadError, match=r"phase\.nii\.gz.*complex"):
        imagenorm.compute_stats(str(tmp_path / "src"))
    nibabel.save(nibabel.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4)), tmp_path / "src" / "real.nii.gz")
    skipped = imagenorm.compute_stats(str(tmp_path / "src"), on_error="skip")
    assert skipped.files == 1 and "phase.nii.gz" in skipped.skipped[0]["path"]


def nnunet_case(root: Path, case: str, shape, rng, label_affine=None):
    """nnU-Net v2 layout: imagesTr/case_0000 (CT, scaled int16), imagesTr/case_0001 (float), labelsTr/case."""
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    ct = rng.integers(-1024, 2000, shape).astype(np.int16)
    image = nibabel.Nifti1Image(ct, affine)
    image.header.set_slope_inter(1.0, -24.0)
    nibabel.save(image, root / "imagesTr" / f"{case}_0000.nii.gz")
    pet = rng.gamma(2.0, 3.0, shape).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(pet, affine), root / "imagesTr" / f"{case}_0001.nii.gz")
    label = ((rng.random(shape) < 0.3) * rng.integers(1, 3, shape)).astype(np.uint8)
    nibabel.save(nibabel.Nifti1Image(label, affine if label_affine is None else label_affine),
                 root / "labelsTr" / f"{case}.nii.gz")
    return ct.astype(np.float64) - 24.0, pet.astype(np.float64), label


def test_finding_nnunet_channels_measured_together_are_pooled_silently(tmp_path):
    """Finding (missing guard, silent wrong properties). ``imagenorm stats imagesTr --mask-dir
    labelsTr`` on an nnU-Net folder with two channel files per case (``case_0000`` CT,
    ``case_0001`` PET) finds each case's label for both files and pools CT and PET into one
    channel; ``export --to nnunet`` then writes one channel "0" mixing HU and SUV without a
    word (the advice even says "one channel"). Expected: a warning (or an error) when files of
    several nnU-Net channel suffixes (_0000, _0001) are measured as one channel, naming them."""
    rng = np.random.default_rng(3)
    for case, shape in (("liver_001", (10, 9, 5)), ("liver_002", (8, 7, 4))):
        nnunet_case(tmp_path, case, shape, rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stats = imagenorm.compute_stats(str(tmp_path / "imagesTr"), mask_dir=str(tmp_path / "labelsTr"))
            nnunet_intensity_properties(stats)
        except ImagenormError as error:
            assert "0001" in str(error)
            return
    assert warned_about(caught, "0001"), [str(w.message) for w in caught]


def test_finding_mask_file_with_another_geometry_is_used_voxel_for_voxel(tmp_path):
    """Finding (silent wrong foreground). A label file with the image's shape but another affine
    (here its x axis stored reversed, as a resampling or conversion tool may write it) is applied
    voxel for voxel: the foreground statistics describe the wrong half of the image (mean 99
    where the labelled tissue has 601), with no word. nnU-Net's verify_dataset_integrity refuses
    such a case (origin/direction mismatch). Expected: a ReadError, or at least a warning naming
    the mask file, when a NIfTI mask's affine differs from its image's."""
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    image = rng.normal(100, 10, (8, 6, 4)).astype(np.float32)
    image[:4] += 500  # the labelled tissue: voxels x < 4 in the image's grid
    nibabel.save(nibabel.Nifti1Image(image, affine), tmp_path / "imagesTr" / "case_0000.nii.gz")
    label = np.zeros((8, 6, 4), np.uint8)
    label[:4] = 1
    flipped = affine.copy()
    flipped[0, 0], flipped[0, 3] = -1.0, 7.0  # the same physical voxels, x stored reversed
    nibabel.save(nibabel.Nifti1Image(label[::-1].copy(), flipped), tmp_path / "labelsTr" / "case.nii.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            imagenorm.compute_stats(str(tmp_path / "imagesTr"), mask_dir=str(tmp_path / "labelsTr"))
        except ImagenormError as error:
            assert "case.nii.gz" in str(error)
            return
    assert warned_about(caught, "case.nii.gz"), [str(w.message) for w in caught]


def test_finding_pooled_4d_volume_cannot_take_its_3d_mask(tmp_path):
    """Finding (unclear error, missing). A 4-D NIfTI (echoes, diffusion volumes) with its 3-D
    brain mask works with ``--nifti-4d channels`` (the mask covers each volume), but with
    ``--nifti-4d pooled`` it fails with "its mask ... has shape (6, 5, 4), the image (18, 5, 4)":
    a shape the file does not have (the pooled layout leaks out). Expected: the 3-D mask selects
    the same voxels in every volume of the 4th axis, as numpy's ``x[mask]`` over all volumes."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    volume = rng.normal(100, 10, (6, 5, 4, 3)).astype(np.float32)
    volume[..., 1] += 50
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "img" / "dwi.nii.gz")
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:4, 1:4, 1:3] = 1
    nibabel.save(nibabel.Nifti1Image(mask, np.eye(4)), tmp_path / "lab" / "dwi.nii.gz")
    stats = imagenorm.compute_stats(str(tmp_path / "img"), mask_dir=str(tmp_path / "lab"), nifti_4d="pooled")
    inside = volume.astype(np.float64)[mask > 0]
    assert stats.channels[0].mean == pytest.approx(inside.mean(), rel=1e-12)
    assert stats.channels[0].std == pytest.approx(inside.std(), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# Verified behaviour, not covered elsewhere
# ------------------------------------------------------------------------------------------------
def test_nifti_copies_keep_simpleitk_geometry_of_oblique_qform_only_and_sform_only_files(tmp_path):
    """What ITK-based tools (nnU-Net, ANTs, SimpleITK) see: the normalized copy of an oblique
    LAS file (qfac -1) with only a qform, one with only an sform, and one with both, has the
    source's direction, origin and spacing in SimpleITK, float32 pixels equal to the ``.npy``."""
    rng = np.random.default_rng(2)
    (tmp_path / "src").mkdir()
    affine = oblique_affine()
    raw = rng.integers(0, 4000, (10, 9, 8)).astype(np.int16)
    both = nibabel.Nifti1Image(raw, affine)
    both.set_qform(affine, code=1)
    both.set_sform(affine, code=1)
    both.header.set_slope_inter(1.0, -1024.0)
    nibabel.save(both, tmp_path / "src" / "sub-01_T1w.nii.gz")
    qform = nibabel.Nifti1Image(raw.astype(np.uint8), None)
    qform.set_qform(affine, code=2)
    qform.set_sform(None, code=0)
    nibabel.save(qform, tmp_path / "src" / "scan.v2.nii")
    sform = nibabel.Nifti1Image(rng.normal(5, 2, (10, 9, 8)), None)
    sform.set_sform(affine, code=2)
    sform.set_qform(None, code=0)
    sform.header.set_zooms((0.8, 0.8, 1.5))
    nibabel.save(sform, tmp_path / "src" / "f64.nii.gz")
    options = imagenorm.MethodOptions("minmax", per_image=True)
    apply(tmp_path / "src", tmp_path / "npy", options)
    apply(tmp_path / "src", tmp_path / "nifti", options, "nifti", workers=2)
    for source, stem in (("sub-01_T1w.nii.gz", "sub-01_T1w"), ("scan.v2.nii", "scan.v2"), ("f64.nii.gz", "f64")):
        before, after = sitk.ReadImage(str(tmp_path / "src" / source)), sitk.ReadImage(str(tmp_path / "nifti" / f"{stem}.nii.gz"))
        np.testing.assert_allclose(after.GetDirection(), before.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(after.GetOrigin(), before.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(after.GetSpacing(), before.GetSpacing(), rtol=1e-6)
        pixels = sitk.GetArrayFromImage(after)  # (z, y, x)
        assert pixels.dtype == np.float32
        np.testing.assert_array_equal(pixels.T[None], np.load(tmp_path / "npy" / f"{stem}.npy"))


@pytest.mark.parametrize("method, per_image, pooled", [
    ("zscore", False, False), ("zscore", False, True), ("minmax", False, False), ("percentile", False, False),
    ("zscore", True, False), ("minmax", True, False), ("percentile", True, False)])
def test_nifti_copies_of_mixed_dtypes_equal_float64_numpy(tmp_path, method, per_image, pooled):
    """Every method on scaled int16 (scl 0.5/-100), uint8, float64 and NIfTI-2 volumes: the
    NIfTI copy (float32, scl 1/0) equals the float64 numpy formula to 1e-6 of its range."""
    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    affine = oblique_affine((0.9, 1.1, 2.4))
    scaled = nibabel.Nifti1Image(rng.integers(-1000, 3000, (9, 7, 5)).astype(np.int16), affine)
    scaled.header.set_slope_inter(0.5, -100.0)
    nibabel.save(scaled, tmp_path / "src" / "scaled.nii.gz")
    nibabel.save(nibabel.Nifti1Image(rng.integers(0, 255, (8, 6, 4)).astype(np.uint8), affine), tmp_path / "src" / "u8.nii")
    nibabel.save(nibabel.Nifti1Image(rng.normal(0, 50, (8, 6, 4)), affine), tmp_path / "src" / "f64.nii.gz")
    nibabel.save(nibabel.Nifti2Image(rng.integers(0, 4000, (6, 6, 6)).astype(np.int16), affine), tmp_path / "src" / "n2.nii.gz")
    volumes = {path.name.split(".")[0]: nibabel.load(path).get_fdata(dtype=np.float64) for path in (tmp_path / "src").iterdir()}
    stats = None if per_image else imagenorm.compute_stats(str(tmp_path / "src"))
    apply(tmp_path / "src", tmp_path / "out", imagenorm.MethodOptions(method, per_image=per_image, pooled=pooled),
          "nifti", stats=stats)
    every = np.concatenate([v.ravel() for v in volumes.values()])

    def expected(values: np.ndarray) -> np.ndarray:
        basis = values if per_image else every
        if method == "zscore":
            return (values - basis.mean()) / basis.std()
        if method == "minmax":
            return (values - basis.min()) / (basis.max() - basis.min())
        low, high = np.percentile(basis, (0.5, 99.5))
        return np.clip((values - low) / (high - low), 0, 1)

    for stem, values in volumes.items():
        copy = nibabel.load(tmp_path / "out" / f"{stem}.nii.gz")
        assert type(copy) is (nibabel.Nifti2Image if stem == "n2" else nibabel.Nifti1Image)
        assert copy.get_data_dtype() == np.float32 and (copy.dataobj.slope, copy.dataobj.inter) == (1.0, 0.0)
        np.testing.assert_allclose(copy.affine, affine, atol=1e-5)
        want = expected(values)
        np.testing.assert_allclose(np.asarray(copy.dataobj), want, rtol=0, atol=1e-6 * np.ptp(want))


def test_recorded_masks_on_one_volume_and_one_plane_equal_numpy():
    """Per-image transforms with a recorded mask (MaskSpec) on one volume ``(C, D, H, W)``
    (``spatial_dims=3``) and on one plane ``(H, W)``: z-score, min-max and percentiles of each
    channel (or pooled) over the mask's voxels, every voxel mapped, as float64 numpy."""
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 1000, (2, 5, 6, 7)).astype(np.int16)
    volume[:, :2] = 0
    volume[1, 2:, :3] = 0  # channel 1 has zeros where channel 0 has values: "any channel" matters

    def reference(x, inside, kind, channel_wise=True):
        x = x.astype(np.float64)
        out = np.empty_like(x)
        for group in ([slice(c, c + 1) for c in range(x.shape[0])] if channel_wise else [slice(None)]):
            values = x[group][:, inside]
            if kind == "z":
                out[group] = (x[group] - values.mean()) / values.std()
            elif kind == "mm":
                out[group] = (x[group] - values.min()) / (values.max() - values.min())
            else:
                low, high = np.percentile(values, (0.5, 99.5))
                out[group] = np.clip((x[group] - low) / (high - low), 0, 1)
        return out

    kinds = ((imagenorm.Standardize, "z"), (imagenorm.MinMaxScale, "mm"), (imagenorm.PercentileScale, "p"))
    for text, inside in (("nonzero", (volume != 0).any(0)), ("threshold:>300@1", volume[1] > 300)):
        for channel_wise in (True, False):
            for cls, kind in kinds:
                y = cls(per_image=True, mask=MaskSpec.parse(text), spatial_dims=3, channel_wise=channel_wise)(
                    torch.from_numpy(volume))
                np.testing.assert_allclose(y.numpy(), reference(volume, inside, kind, channel_wise), atol=1e-6,
                                           err_msg=f"{cls.__name__} {text} channel_wise={channel_wise}")
    plane = volume[0, 3]
    for cls, kind in kinds:
        y = cls(per_image=True, mask=MaskSpec.parse("threshold:>300"))(torch.from_numpy(plane))
        np.testing.assert_allclose(y.numpy(), reference(plane[None], plane > 300, kind)[0], atol=1e-6)


def test_nnunet_export_of_a_ct_dicom_series_with_a_threshold_equals_numpy_hu(tmp_path):
    """A CT DICOM series (3 slices, HU through RescaleSlope/Intercept) measured with a body
    threshold: the exported properties are float64 numpy's over the stacked HU voxels above
    -500, with nnU-Net's keys in its order, and a warning that a threshold is not the labels."""
    series = ct_series(tmp_path / "ct")
    with pytest.warns(ImagenormWarning, match="not over the voxels nnU-Net's label files mark"):
        document = export(imagenorm.compute_stats(str(series), mask="threshold:>-500"))
    properties = json.loads(export_json(document))["foreground_intensity_properties_per_channel"]
    assert list(properties) == ["0"]
    assert list(properties["0"]) == ["mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5"]
    slices = [pydicom.dcmread(series / f"slice_{index}.dcm") for index in range(3)]
    hu = np.stack([s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
    body = hu[hu > -500]
    expected = {"mean": body.mean(), "median": np.percentile(body, 50), "std": body.std(), "min": body.min(),
                "max": body.max(), "percentile_99_5": np.percentile(body, 99.5), "percentile_00_5": np.percentile(body, 0.5)}
    for key, value in expected.items():
        assert properties["0"][key] == pytest.approx(value, rel=1e-12, abs=1e-9), key


def test_nnunet_two_channel_cases_with_scaled_ct_equal_numpy_over_labels(tmp_path):
    """nnU-Net layout, two cases of different sizes, CT with scl_inter -24 and a float second
    channel, labels 0/1/2: one stats file per channel file, exported in order, equals numpy over
    the voxels where labels > 0 for every property."""
    rng = np.random.default_rng(3)
    cases = [nnunet_case(tmp_path, case, shape, rng) for case, shape in (("liver_001", (12, 10, 6)), ("liver_002", (8, 9, 5)))]
    parts = [imagenorm.compute_stats(sorted(str(p) for p in (tmp_path / "imagesTr").glob(f"*_000{channel}.nii.gz")),
                                     mask_dir=str(tmp_path / "labelsTr")) for channel in (0, 1)]
    properties = nnunet_intensity_properties(parts)
    for channel in (0, 1):
        values = np.concatenate([case[channel][case[2] > 0] for case in cases])
        expected = {"mean": values.mean(), "median": np.percentile(values, 50), "std": values.std(),
                    "min": values.min(), "max": values.max(), "percentile_99_5": np.percentile(values, 99.5),
                    "percentile_00_5": np.percentile(values, 0.5)}
        for key, value in expected.items():
            assert properties[str(channel)][key] == pytest.approx(value, rel=1e-12, abs=1e-9), (channel, key)


@pytest.mark.parametrize("name", ["SC_rgb_rle_16bit_2frame.dcm", "rtdose.dcm"])
def test_multi_frame_dicom_as_tiff_reads_back_as_the_npy(tmp_path, name):
    """Multi-frame DICOM (16-bit RGB, 2 frames; a 15-frame RT dose grid) written with
    ``--format tiff``: a page per frame, and tifffile and imagenorm's reader give the ``.npy``."""
    (tmp_path / "src").mkdir()
    shutil.copy(get_testdata_file(name), tmp_path / "src" / name)
    apply(tmp_path / "src", tmp_path / "npy")
    apply(tmp_path / "src", tmp_path / "tiff", output_format="tiff")
    stem = name[: -len(".dcm")]
    expected = np.load(tmp_path / "npy" / f"{stem}.npy")
    stored = tifffile.imread(tmp_path / "tiff" / f"{stem}.tiff")
    np.testing.assert_array_equal(stored, expected[0] if expected.shape[0] == 1 else np.moveaxis(expected, 0, -1))
    np.testing.assert_array_equal(read_image(tmp_path / "tiff" / f"{stem}.tiff").pixels, expected)
    with tifffile.TiffFile(tmp_path / "tiff" / f"{stem}.tiff") as tif:
        assert len(tif.pages) == expected.shape[1]



# =====================================================================================================
# Found by the review of the fixes above
# =====================================================================================================
def test_a_mask_per_volume_is_not_tiled_for_pooled_volumes(tmp_path):
    """A 4-D mask (one per volume) for a 4-D NIfTI under nifti_4d="pooled": each volume keeps its own
    mask, never their union tiled; the numbers equal numpy over the per-volume masks."""
    rng = np.random.default_rng(3)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    data = rng.integers(0, 200, (6, 5, 4, 3)).astype(np.int16)
    masks = (rng.random((6, 5, 4, 3)) < 0.3).astype(np.uint8)
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), tmp_path / "img" / "dwi.nii.gz")
    nibabel.save(nibabel.Nifti1Image(masks, np.eye(4)), tmp_path / "lab" / "dwi.nii.gz")
    try:
        stats = imagenorm.compute_stats(str(tmp_path / "img"), mask_dir=str(tmp_path / "lab"), nifti_4d="pooled")
    except ImagenormError as error:
        assert "mask" in str(error)
        return
    inside = data[masks > 0].astype(np.float64)
    assert stats.channels[0].count == inside.size and stats.channels[0].mean == pytest.approx(inside.mean())


@pytest.mark.parametrize("folder, names, masks", [
    ("images", ("frame_0001", "frame_0002", "frame_0003"), ("frame_0001", "frame_0002", "frame_0003")),
    ("imagesTr", ("a_0000", "b_0001"), ("a", "b")),
])
def test_ordinary_numbered_files_are_not_nnunet_channels(tmp_path, folder, names, masks):
    """Numbered frames outside nnU-Net's folders, or two cases of one channel each in imagesTr
    (labels a and b): measured as before, not refused as channels of one case."""
    rng = np.random.default_rng(4)
    (tmp_path / folder).mkdir()
    (tmp_path / "masks").mkdir()
    for name, mask in zip(names, masks):
        np.save(tmp_path / folder / f"{name}.npy", rng.integers(0, 100, (1, 6, 7)).astype(np.uint8))
        np.save(tmp_path / "masks" / f"{mask}.npy", (rng.random((1, 6, 7)) < 0.5).astype(np.uint8))
    stats = imagenorm.compute_stats(str(tmp_path / folder), mask_dir=str(tmp_path / "masks"))
    assert stats.files == len(names)


def test_an_empty_volume_is_written_not_an_internal_error(tmp_path):
    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "empty.npy", np.zeros((1, 4, 4, 0), np.float32))
    np.save(tmp_path / "src" / "full.npy", np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4))
    report = apply(tmp_path / "src", tmp_path / "out")
    assert report.written == 2 and np.load(tmp_path / "out" / "empty.npy").shape == (1, 4, 4, 0)


@pytest.mark.parametrize("shape", [(3, 6, 7), (2, 3, 6, 7)])
def test_the_word_nonzero_is_any_channel_against_numpy(shape):
    """mask="nonzero" on (C, H, W) and (B, C, H, W) with zeros that differ per channel: each image's
    statistics come from the pixels where any of its channels is nonzero (as --mask nonzero)."""
    rng = np.random.default_rng(5)
    x = rng.integers(1, 100, shape).astype(np.float64)
    x[rng.random(shape) < 0.4] = 0
    batch = x if len(shape) == 4 else x[None]
    found = imagenorm.Standardize(per_image=True, mask="nonzero")(torch.from_numpy(x)).numpy()
    found = found if len(shape) == 4 else found[None]
    for image, result in zip(batch, found):
        inside = (image != 0).any(axis=0)
        for channel in range(image.shape[0]):
            values = image[channel][inside]
            np.testing.assert_allclose(result[channel], (image[channel] - values.mean()) / values.std(), rtol=1e-5)


def test_dataset_and_apply_agree_on_a_five_d_stack(tmp_path):
    """A (C, T, Z, Y, X) TIFF stack through ImageFolderDataset and through apply: one image, the same output."""
    rng = np.random.default_rng(6)
    (tmp_path / "src").mkdir()
    stack = (rng.normal(0, 1, (2, 3, 2, 8, 9)) + np.arange(2)[:, None, None, None, None]).astype(np.float32)
    tifffile.imwrite(tmp_path / "src" / "s.tif", np.moveaxis(stack, 0, 2), imagej=True, metadata={"axes": "TZCYX"})
    pixels = read_image(str(tmp_path / "src" / "s.tif")).pixels
    assert pixels.ndim == 5
    apply(tmp_path / "src", tmp_path / "out")
    transform = imagenorm.Standardize(per_image=True)
    item = imagenorm.ImageFolderDataset(str(tmp_path / "src"), transform=transform)[0]
    np.testing.assert_allclose(item.numpy(), np.load(tmp_path / "out" / "s.npy"), rtol=1e-6, atol=1e-6)


def test_one_dicom_file_per_folder_with_mask_files_says_nothing(tmp_path):
    """Radiographs, one DICOM file per series: nothing is split, so no slice warning."""
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "img" / "a.dcm")
    shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / "msk" / "a.dcm")  # its nonzero pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imagenorm.compute_stats(str(tmp_path / "img"), mask_dir=str(tmp_path / "msk"))
    assert not warned_about(caught, "slice"), [str(w.message) for w in caught]


def test_a_named_threshold_channel_on_an_input_without_channels_is_refused():
    with pytest.raises(imagenorm.OptionError, match="green"):
        imagenorm.Standardize(per_image=True, mask=MaskSpec.parse("threshold:>5@green"))(torch.ones(4, 5))
