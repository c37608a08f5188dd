"""DICOM series grouping and slice-by-slice counting as a user meets them (a trial of issue 11),
against a float64 reference built with pydicom."""
import os
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_modality_lut  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: E402

import imagenorm  # noqa: E402
from imagenorm.errors import ReadError  # noqa: E402

PERCENTILES = [0.5, 1, 5, 25, 50, 75, 95, 99, 99.5]
_uid = iter(range(1, 10**6))


def write_ct(path, series, z, number, pixels, slope=1, intercept=-1024, syntax=ExplicitVRLittleEndian,
             sop=None, pad=0, photometric="MONOCHROME2"):
    sop = sop or f"1.2.826.0.1.{next(_uid)}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = CTImageStorage, sop, syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, sop, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = "1.2.3", series, number
    if z is not None:
        ds.ImagePositionPatient = [0, 0, z]
    if pad:  # a long private element before the grouping tags: SeriesInstanceUID beyond 16 KiB
        ds.add_new(0x00090010, "LO", "PRIV")
        ds.add_new(0x00091001, "OB", b"\0" * pad)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    data = pixels.astype(np.uint16)
    ds.PixelData = (data.byteswap() if syntax == ExplicitVRBigEndian else data).tobytes()
    ds.save_as(path, enforce_file_format=True)


def pixels(seed, high=2000):
    return np.random.default_rng(seed).integers(0, high, (16, 16))


def reference(paths):
    values = []
    for path in paths:
        ds = pydicom.dcmread(path)
        values.append(apply_modality_lut(ds.pixel_array, ds).astype(np.float64).ravel())
    return np.concatenate(values)


def check(stats, values):
    channel = stats.to_dict()["channels"][0]
    assert channel["count"] == values.size
    assert channel["mean"] == pytest.approx(values.mean(), rel=1e-12, abs=1e-9)
    assert channel["std"] == pytest.approx(values.std(), rel=1e-12)
    assert channel["min"] == values.min() and channel["max"] == values.max()
    got = [channel["percentiles"][key] for key in channel["percentiles"]]
    np.testing.assert_allclose(got, np.percentile(values, PERCENTILES), rtol=1e-12, atol=1e-9)
    return channel


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("pad", [0, 20000])
@pytest.mark.parametrize("workers", [0, 2])
def test_series_matches_reference_and_slices(tmp_path, syntax, pad, workers):
    """Verified: each syntax, SeriesInstanceUID beyond 16 KiB: one series, exact stats, same histogram as --dicom-slices."""
    paths = [str(tmp_path / f"{i}.dcm") for i in range(4)]
    for i, path in enumerate(paths):
        write_ct(path, "1.2.9.1", 2.5 * i, i + 1, pixels(i), syntax=syntax, pad=pad)
    series = imagenorm.compute_stats(str(tmp_path), workers=workers)
    slices = imagenorm.compute_stats(str(tmp_path), workers=workers, dicom_series=False)
    assert series.files == 1 and slices.files == 4
    a, b = check(series, reference(paths)), check(slices, reference(paths))
    assert a["histogram"] == b["histogram"]


def test_interleaved_series_and_repeated_instance(tmp_path):
    """Verified: two interleaved series in a folder are two items; an exact repeat counts once."""
    for i in range(6):
        write_ct(str(tmp_path / f"{i}.dcm"), "1.2.9.2" if i % 2 else "1.2.9.3", float(i), i + 1, pixels(i, 100 + 3000 * (i % 2)))
    same = pixels(99)
    write_ct(str(tmp_path / "r1.dcm"), "1.2.9.2", 9.0, 9, same, sop="1.2.9.2.99")
    write_ct(str(tmp_path / "r2.dcm"), "1.2.9.2", 9.0, 9, same, sop="1.2.9.2.99")
    stats = imagenorm.compute_stats(str(tmp_path))
    assert stats.files == 2
    check(stats, reference([str(tmp_path / f"{i}.dcm") for i in range(6)] + [str(tmp_path / "r1.dcm")]))


@pytest.mark.parametrize("series", [True, False])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_threshold_mask_matches_reference(tmp_path, series, workers):
    """Verified: --mask threshold:>-500 counts exactly the reference's foreground, both modes."""
    paths = [str(tmp_path / f"{i}.dcm") for i in range(4)]
    for i, path in enumerate(paths):
        write_ct(path, "1.2.9.4", float(i), i + 1, pixels(i), syntax=[ExplicitVRLittleEndian, ImplicitVRLittleEndian][i % 2])
    values = reference(paths)
    check(imagenorm.compute_stats(str(tmp_path), dicom_series=series, workers=workers, mask="threshold:>-500"),
          values[values > -500])


def test_monochrome1_and_missing_position(tmp_path):
    """Verified: MONOCHROME1 kept as stored and no ImagePositionPatient still group and count exactly."""
    paths = [str(tmp_path / f"{i}.dcm") for i in range(3)]
    for i, path in enumerate(paths):
        write_ct(path, "1.2.9.5", None, 0, pixels(i), intercept=0, photometric="MONOCHROME1")
    stats = imagenorm.compute_stats(str(tmp_path))
    assert stats.files == 1
    check(stats, reference(paths))


def test_decode_image_matches_read_image(tmp_path):
    """Verified: decoding the bytes gives what reading the file gives."""
    for i, syntax in enumerate([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]):
        path = str(tmp_path / f"{i}.dcm")
        write_ct(path, "1.2.9.6", float(i), i + 1, pixels(i), syntax=syntax, pad=20000 * (i == 1))
        a, b = imagenorm.read_image(path), imagenorm.decode_image(open(path, "rb").read(), path)
        assert a.pixels.dtype == b.pixels.dtype and np.array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize("second", [(0.5, -1024), (1, 0)], ids=["float-slope", "identity-rescale"])
def test_series_with_per_slice_rescale_is_measured(tmp_path, second):
    """Slices of one series whose rescale differs (one slope 0.5, or one with intercept 0: uint16
    next to int16) are modality values: the series is promoted and counts what the slices count
    (it used to fail with "its slice ... is float64, but ... is int16", and skip dropped it)."""
    paths = [str(tmp_path / "0.dcm"), str(tmp_path / "1.dcm")]
    write_ct(paths[0], "1.2.9.7", 0.0, 1, pixels(0))
    write_ct(paths[1], "1.2.9.7", 1.0, 2, pixels(1), slope=second[0], intercept=second[1])
    check(imagenorm.compute_stats(str(tmp_path), dicom_series=False), reference(paths))
    check(imagenorm.compute_stats(str(tmp_path)), reference(paths))


def test_file_without_preamble_is_read(tmp_path):
    """A file with file meta but no 128-byte preamble and DICM (as some PACS and older tools
    write; pydicom enforce_file_format=False) is read, as pydicom reads it with force=True
    (it used to be refused as 'not a DICOM file')."""
    path = str(tmp_path / "0.dcm")
    write_ct(path, "1.2.9.8", 0.0, 1, pixels(0))
    ds = pydicom.dcmread(path)
    ds.preamble = None
    ds.save_as(path, enforce_file_format=False)
    assert open(path, "rb").read(4) == b"\x02\x00\x00\x00"
    ds = pydicom.dcmread(path, force=True)
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert np.array_equal(imagenorm.read_image(path).pixels[0], expected)
