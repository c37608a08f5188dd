"""``apply --format npy|nifti|tiff``: NIfTI copies keep their source's header, TIFF copies read
back as the ``.npy`` copy, names, manifest and refusals."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
import tarfile
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import tifffile
from typer.testing import CliRunner

import imagenorm
from imagenorm import writers
from imagenorm.cli import app
from imagenorm.errors import ImagenormError, ReadError
from imagenorm.options import OptionError
from imagenorm.readers import RGB, ReadOptions, read_image

from conftest import random_image, write_png

NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
DIPY_DATA = Path(importlib.util.find_spec("dipy").origin).parent / "data" / "files"  # found, not imported (slow)
DICOM = Path(pydicom.__file__).parent / "data" / "test_files"
REAL_VOLUMES = [NIBABEL_DATA / "anatomical.nii", NIBABEL_DATA / "example4d.nii.gz",  # big-endian; 4-D, 2 extensions
                NIBABEL_DATA / "example_nifti2.nii.gz", DIPY_DATA / "aniso_vox.nii.gz",
                DIPY_DATA / "S0_10slices.nii.gz"]  # 4-D of one volume, sform only (qform code 0)
#: Every header field that must come through unchanged (the geometry, units, timing, description).
KEPT_FIELDS = ("dim", "pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
               "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units", "dim_info", "slice_code",
               "slice_start", "slice_end", "slice_duration", "toffset", "descrip")
PER_IMAGE = imagenorm.MethodOptions("zscore", per_image=True)
runner = CliRunner()


def apply(source, out: Path, output_format: str, **kwargs) -> imagenorm.apply.ApplyReport:
    return imagenorm.apply_normalization(source, None, None, PER_IMAGE, str(out), output_format=output_format, **kwargs)


def our_layout(data: np.ndarray, nifti_4d: str = "channels") -> np.ndarray:
    """NIfTI voxels in imagenorm's channel-first layout (what the reader documents), for comparisons."""
    if data.ndim <= 3:
        return data[None]
    volumes = np.moveaxis(data.reshape(data.shape[:3] + (-1,)), -1, 0)
    return volumes.reshape((1, -1) + data.shape[1:3]) if nifti_4d == "pooled" else volumes


def raw_header(path: Path):
    """The header as stored (nibabel's loaded header hides scl_slope/scl_inter in its data proxy)."""
    kind = nibabel.Nifti2Header if isinstance(nibabel.load(path).header, nibabel.Nifti2Header) else nibabel.Nifti1Header
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as file:
        return kind.from_fileobj(file)


def assert_nifti_copy(source: Path, written: Path, npy: Path, nifti_4d: str = "channels") -> None:
    """``written`` keeps ``source``'s header and geometry, holds float32 unscaled data, and its
    voxels in imagenorm's layout are the ``.npy`` copy bit for bit."""
    original, copy = nibabel.load(source), nibabel.load(written)
    assert type(copy) is type(original)  # NIfTI-2 stays NIfTI-2
    assert copy.shape == original.shape and copy.get_data_dtype() == np.float32
    np.testing.assert_array_equal(copy.affine, original.affine)
    for coded in ("get_sform", "get_qform"):
        matrix, code = getattr(copy.header, coded)(coded=True)
        want_matrix, want_code = getattr(original.header, coded)(coded=True)
        assert code == want_code and (matrix is None) == (want_matrix is None)
        if matrix is not None:
            np.testing.assert_array_equal(matrix, want_matrix)
    assert copy.header.get_xyzt_units() == original.header.get_xyzt_units()
    assert copy.header.get_zooms() == original.header.get_zooms()
    assert extensions(copy) == extensions(original)
    stored, before = raw_header(written), raw_header(source)
    for name in KEPT_FIELDS:
        np.testing.assert_array_equal(stored[name], before[name], err_msg=name)
    assert (float(stored["scl_slope"]), float(stored["scl_inter"])) == (1.0, 0.0)
    assert float(stored["cal_min"]) == float(stored["cal_max"]) == 0.0 and int(stored["intent_code"]) == 0
    voxels = np.asarray(copy.dataobj)
    assert voxels.dtype == np.float32  # unscaled: nibabel hands back the stored floats
    expected = np.load(npy)
    np.testing.assert_array_equal(our_layout(voxels, nifti_4d), expected)
    again = read_image(written, ReadOptions(nifti_4d=nifti_4d))
    assert again.pixels.dtype == np.float32
    np.testing.assert_array_equal(again.pixels, expected)


def extensions(image) -> list[tuple[int, bytes]]:
    return [(extension.get_code(), extension.get_content()) for extension in image.header.extensions]


def copy_of(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, folder / source.name))


def output_file(out: Path, name: str) -> Path:
    manifest = json.loads((out / "imagenorm-manifest.json").read_text())
    assert name in manifest["files"], sorted(manifest["files"])
    return out / name


class TestNifti:
    @pytest.mark.parametrize("volume", REAL_VOLUMES, ids=lambda path: path.name)
    def test_real_volumes_keep_their_header_and_equal_the_npy_copy(self, volume, tmp_path):
        source = copy_of(volume, tmp_path / "src")
        before = source.read_bytes()
        assert apply(source, tmp_path / "npy", "npy").written == 1
        assert apply(source, tmp_path / "nifti", "nifti").written == 1
        stem = volume.name.split(".")[0]
        assert_nifti_copy(source, output_file(tmp_path / "nifti", f"{stem}.nii.gz"), tmp_path / "npy" / f"{stem}.npy")
        assert source.read_bytes() == before
        if volume.name == "example4d.nii.gz":
            assert len(extensions(nibabel.load(source))) == 2  # kept (compared above)

    def test_scaled_big_endian_int16_sform_4_qform_1_units_slice_timing_extension(self, tmp_path, rng):
        raw = rng.integers(-1000, 3000, (9, 7, 5)).astype(np.int16)
        image = nibabel.Nifti1Image(raw, None, header=nibabel.Nifti1Header(endianness=">"))
        image.header.extensions.append(nibabel.nifti1.Nifti1Extension("comment", b"site 3, protocol B"))
        image.set_qform(np.diag([1.5, 2.0, 2.5, 1.0]), code=1)
        sform = np.array([[0.0, -1.5, 0.1, 30.0], [2.0, 0.0, 0.0, -20.0], [0.0, 0.2, 2.5, 10.0], [0, 0, 0, 1]])
        image.set_sform(sform, code=4)
        header = image.header
        header.set_xyzt_units("mm", "sec")
        header.set_dim_info(freq=0, phase=1, slice=2)
        header["slice_code"], header["slice_start"], header["slice_end"] = 1, 0, 4
        header.set_slice_duration(0.4)
        header.set_intent("z score")
        header["cal_min"], header["cal_max"], header["descrip"] = -1000, 3000, b"scanner A"
        header.set_slope_inter(0.5, -100.0)
        (tmp_path / "src").mkdir()
        nibabel.save(image, tmp_path / "src" / "scan.nii")
        np.testing.assert_array_equal(read_image(tmp_path / "src" / "scan.nii").pixels[0], raw * 0.5 - 100.0)  # scaled
        assert raw_header(tmp_path / "src" / "scan.nii").endianness == ">"
        apply(tmp_path / "src", tmp_path / "npy", "npy")
        apply(tmp_path / "src", tmp_path / "nifti", "nifti")
        written = output_file(tmp_path / "nifti", "scan.nii.gz")  # .nii becomes .nii.gz
        assert_nifti_copy(tmp_path / "src" / "scan.nii", written, tmp_path / "npy" / "scan.npy")
        copy = nibabel.load(written)
        assert copy.header.get_sform(coded=True)[1] == 4 and copy.header.get_qform(coded=True)[1] == 1
        np.testing.assert_allclose(copy.affine, sform, rtol=0, atol=1e-6)  # the sform wins (stored as float32)
        assert copy.header.get_xyzt_units() == ("mm", "sec") and copy.header.get_dim_info() == (0, 1, 2)
        assert copy.header.get_slice_duration() == pytest.approx(0.4)
        assert copy.header["descrip"] == b"scanner A" and extensions(copy) == [(6, b"site 3, protocol B")]
        assert raw_header(written).endianness == "<"  # the common byte order
        values = np.load(tmp_path / "npy" / "scan.npy")[0].astype(np.float64)
        assert abs(values.mean()) < 1e-5 and values.std() == pytest.approx(1, abs=1e-5)  # normalized, not raw

    @pytest.mark.parametrize("nifti_4d", ["channels", "pooled"])
    def test_4d_and_5d_go_back_to_the_source_axes(self, nifti_4d, tmp_path, rng):
        (tmp_path / "src").mkdir()
        for name, shape in (("four", (6, 5, 4, 3)), ("five", (5, 4, 3, 2, 3))):
            image = nibabel.Nifti1Image(rng.normal(100, 20, shape).astype(np.float32), np.diag([2.0, 3.0, 4.0, 1.0]))
            image.header.set_xyzt_units("mm", "msec")
            image.header.set_zooms((2.0, 3.0, 4.0, 0.7) + (1.0,) * (len(shape) - 4))
            nibabel.save(image, tmp_path / "src" / f"{name}.nii.gz")
        apply(tmp_path / "src", tmp_path / "npy", "npy", nifti_4d=nifti_4d)
        apply(tmp_path / "src", tmp_path / "nifti", "nifti", nifti_4d=nifti_4d, workers=2)  # written in workers
        for name, channels in (("four", 3), ("five", 6)):
            npy = tmp_path / "npy" / f"{name}.npy"
            assert np.load(npy).shape[0] == (1 if nifti_4d == "pooled" else channels)
            assert_nifti_copy(tmp_path / "src" / f"{name}.nii.gz", tmp_path / "nifti" / f"{name}.nii.gz", npy, nifti_4d)

    def test_refused_up_front_with_one_line_naming_the_file(self, tmp_path, rng):
        pngs = tmp_path / "pngs"
        pngs.mkdir()
        write_png(pngs / "a.png", random_image(rng, "uint16", (6, 5)))
        with pytest.raises(OptionError, match=r"a\.png: NIfTI output copies each source's NIfTI header, and this is "
                                              r"not a NIfTI file"):
            apply(pngs, tmp_path / "out", "nifti")
        assert not (tmp_path / "out").exists()  # refused before anything was written

        colours = tmp_path / "rgb"
        colours.mkdir()
        rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        nibabel.save(nibabel.Nifti1Image(rgb, np.eye(4)), colours / "colour.nii.gz")
        with pytest.raises(OptionError, match=r"colour\.nii\.gz: an RGB NIfTI volume \(3 colours per voxel\)") as error:
            apply(colours, tmp_path / "out", "nifti")
        assert "\n" not in str(error.value)
        assert apply(colours, tmp_path / "as-npy", "npy").written == 1  # other formats take it

    def test_archive_members_and_dicom_series_are_refused(self, tmp_path):
        shard = tmp_path / "shard.tar"
        with tarfile.open(shard, "w") as tar:
            tar.add(NIBABEL_DATA / "example4d.nii.gz", arcname="scan.nii.gz")
        with pytest.raises(OptionError, match=r"shard\.tar:scan\.nii\.gz: .* this is a member of an archive or table"):
            apply(str(shard), tmp_path / "out", "nifti")
        series = dicom_series(tmp_path / "ct", 3)
        with pytest.raises(OptionError, match=r"\(series .*, 3 files\): .* not a NIfTI file"):
            apply(series, tmp_path / "out", "nifti")
        assert not (tmp_path / "out").exists()

    def test_without_nibabel_the_extra_is_named(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now fails
        with pytest.raises(ImagenormError, match=r"needs nibabel: pip install 'imagenorm\[medical\]'"):
            writers.check_nifti_source("a.nii", str(NIBABEL_DATA / "anatomical.nii"))

    def test_pixels_that_do_not_fit_the_source_are_refused(self, tmp_path):
        with pytest.raises(ReadError, match=r"its normalized pixels \(3, 33, 41, 25\) do not have the layout "
                                            r"\(1, 33, 41, 25\) of its NIfTI shape \(33, 41, 25\)"):
            writers.write_nifti(str(tmp_path / "x.nii.gz"), np.zeros((3, 33, 41, 25)),
                                str(NIBABEL_DATA / "anatomical.nii"))
        assert list(tmp_path.iterdir()) == []

    def test_an_interrupted_write_leaves_no_file(self, tmp_path, monkeypatch):
        source = copy_of(NIBABEL_DATA / "anatomical.nii", tmp_path / "src")

        def fail_half_way(image, stream):
            stream.write(b"\0" * 1000)
            raise RuntimeError("killed")

        monkeypatch.setattr(nibabel.Nifti1Image, "to_stream", fail_half_way)
        with pytest.raises(RuntimeError, match="killed"):
            apply(source, tmp_path / "out", "nifti")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["imagenorm-manifest.json"]


def dicom_series(folder: Path, count: int) -> Path:
    """A CT series of ``count`` slices made from pydicom's CT_small.dcm."""
    folder.mkdir(parents=True)
    for index in range(count):
        dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
        dataset.PixelData = (dataset.pixel_array + 50 * index).astype(dataset.pixel_array.dtype).tobytes()
        dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{index}"
        dataset.ImagePositionPatient = [0.0, 0.0, float(index)]
        dataset.save_as(folder / f"slice_{index}.dcm")
    return folder


def assert_tiff_copy(written: Path, npy: Path, channels: tuple[str, ...] | None = None) -> np.ndarray:
    """``written`` is float32 TIFF whose pixels, read with tifffile and with imagenorm's reader,
    are the ``.npy`` copy bit for bit (and, where given, imagenorm reads these channel names)."""
    expected = np.load(npy)
    stored = tifffile.imread(written)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, expected[0] if expected.shape[0] == 1 else np.moveaxis(expected, 0, -1))
    again = read_image(written)
    np.testing.assert_array_equal(again.pixels, expected)
    assert len(again.channels) == expected.shape[0]
    if channels is not None:
        assert again.channels == channels
    return expected


class TestTiff:
    def test_gray_16_bit(self, tmp_path, rng):
        (tmp_path / "src" / "a").mkdir(parents=True)
        tifffile.imwrite(tmp_path / "src" / "a" / "b.tif", random_image(rng, "uint16", (20, 30)))
        apply(tmp_path / "src", tmp_path / "npy", "npy")
        apply(tmp_path / "src", tmp_path / "tiff", "tiff")
        written = output_file(tmp_path / "tiff", "a/b.tiff")
        assert assert_tiff_copy(written, tmp_path / "npy" / "a" / "b.npy", ("gray",)).shape == (1, 20, 30)
        with tifffile.TiffFile(written) as tif:
            assert len(tif.pages) == 1 and tif.pages[0].samplesperpixel == 1

    def test_rgb_16_bit(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        tifffile.imwrite(tmp_path / "src" / "colour.tif", random_image(rng, "uint16", (12, 14, 3)), photometric="rgb")
        apply(tmp_path / "src", tmp_path / "npy", "npy")
        apply(tmp_path / "src", tmp_path / "tiff", "tiff")
        written = output_file(tmp_path / "tiff", "colour.tiff")
        expected = assert_tiff_copy(written, tmp_path / "npy" / "colour.npy", RGB)
        assert expected.shape == (3, 12, 14) and not np.array_equal(expected[0], expected[1])  # channels kept apart
        with tifffile.TiffFile(written) as tif:
            assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB

    def test_multi_page_stack_keeps_its_pages(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        tifffile.imwrite(tmp_path / "src" / "stack.tif", random_image(rng, "uint16", (5, 9, 11)))
        apply(tmp_path / "src", tmp_path / "npy", "npy")
        apply(tmp_path / "src", tmp_path / "tiff", "tiff")
        written = output_file(tmp_path / "tiff", "stack.tiff")
        assert assert_tiff_copy(written, tmp_path / "npy" / "stack.npy", ("gray",)).shape == (1, 5, 9, 11)
        with tifffile.TiffFile(written) as tif:
            assert len(tif.pages) == 5

    def test_kept_alpha_is_a_channel_of_its_own(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        write_png(tmp_path / "src" / "rgba.png", random_image(rng, "uint8", (8, 9, 4)))
        apply(tmp_path / "src", tmp_path / "npy", "npy", alpha="keep")
        apply(tmp_path / "src", tmp_path / "tiff", "tiff", alpha="keep")
        # normalized "alpha" holds values, not opacity: read back whatever the alpha option says
        expected = assert_tiff_copy(tmp_path / "tiff" / "rgba.tiff", tmp_path / "npy" / "rgba.npy", RGB + ("channel3",))
        assert expected.shape == (4, 8, 9)

    @pytest.mark.parametrize("nifti_4d", ["channels", "pooled"])
    def test_nifti_volumes_are_pages_of_the_npy_layout(self, nifti_4d, tmp_path):
        source = copy_of(NIBABEL_DATA / "example4d.nii.gz", tmp_path / "src")
        apply(source, tmp_path / "npy", "npy", nifti_4d=nifti_4d)
        apply(source, tmp_path / "tiff", "tiff", nifti_4d=nifti_4d)
        channels = ("channel0", "channel1") if nifti_4d == "channels" else ("gray",)
        expected = assert_tiff_copy(tmp_path / "tiff" / "example4d.tiff", tmp_path / "npy" / "example4d.npy", channels)
        with tifffile.TiffFile(tmp_path / "tiff" / "example4d.tiff") as tif:
            assert len(tif.pages) == expected.shape[1]  # one page per index of the first voxel axis

    def test_dicom_series_is_a_page_per_slice(self, tmp_path):
        series = dicom_series(tmp_path / "ct", 3)
        apply(series, tmp_path / "npy", "npy")
        apply(series, tmp_path / "tiff", "tiff")
        expected = assert_tiff_copy(tmp_path / "tiff" / "slice_0.tiff", tmp_path / "npy" / "slice_0.npy", ("gray",))
        assert expected.shape == (1, 3, 128, 128)
        with tifffile.TiffFile(tmp_path / "tiff" / "slice_0.tiff") as tif:
            assert len(tif.pages) == 3

    def test_archive_members_are_written(self, tmp_path):
        shard = tmp_path / "shard.tar"
        with tarfile.open(shard, "w") as tar:
            tar.add(NIBABEL_DATA / "anatomical.nii", arcname="scans/anatomical.nii")
        apply(str(shard), tmp_path / "npy", "npy")
        apply(str(shard), tmp_path / "tiff", "tiff")
        assert_tiff_copy(output_file(tmp_path / "tiff", "shard/scans/anatomical.tiff"),
                         tmp_path / "npy" / "shard" / "scans" / "anatomical.npy", ("gray",))

    def test_pixels_with_one_spatial_axis_are_a_data_error(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        with tifffile.TiffWriter(tmp_path / "src" / "mixed.tif") as tif:  # two series of different shapes: (1, N)
            tif.write(random_image(rng, "uint16", (4, 5)))
            tif.write(random_image(rng, "uint16", (3, 7)))
        tifffile.imwrite(tmp_path / "src" / "plain.tif", random_image(rng, "uint16", (4, 5)))
        with pytest.raises(ReadError, match=r"mixed\.tif: its pixels \(1, 41\) have one spatial axis"):
            apply(tmp_path / "src", tmp_path / "out", "tiff")
        report = apply(tmp_path / "src", tmp_path / "skip", "tiff", on_error="skip")
        assert report.written == 1 and [Path(s["path"]).name for s in report.skipped] == ["mixed.tif"]


class TestNamesAndManifest:
    def test_output_names_per_format(self, tmp_path):
        keys = [str(tmp_path / "a" / "b.png"), str(tmp_path / "scan.nii.gz"), str(tmp_path / "t.nii"),
                str(tmp_path / "1.2.840.5")]
        assert imagenorm.apply.output_names(keys, str(tmp_path), ".tiff") == ["a/b.tiff", "scan.tiff", "t.tiff",
                                                                               "1.2.840.5.tiff"]
        assert imagenorm.apply.output_names(keys, str(tmp_path), ".nii.gz")[1:3] == ["scan.nii.gz", "t.nii.gz"]

    def test_collisions_are_refused(self, tmp_path):
        (tmp_path / "src").mkdir()
        shutil.copy(NIBABEL_DATA / "anatomical.nii", tmp_path / "src" / "scan.nii")
        shutil.copy(NIBABEL_DATA / "standard.nii.gz", tmp_path / "src" / "scan.nii.gz")
        with pytest.raises(ImagenormError, match=r"scan\.nii\.gz and .*scan\.nii would both be written as "
                                                 r"scan\.nii\.gz"):
            apply(tmp_path / "src", tmp_path / "out", "nifti")

    def test_manifest_records_the_format_resumes_and_refuses_another(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        for index in range(3):
            tifffile.imwrite(tmp_path / "src" / f"{index}.tif", random_image(rng, "uint16", (6, 7)))
        before = {p: p.read_bytes() for p in (tmp_path / "src").iterdir()}
        out = tmp_path / "out"
        assert apply(tmp_path / "src", out, "tiff").written == 3
        manifest = json.loads((out / "imagenorm-manifest.json").read_text())
        assert manifest["format"] == "tiff" and sorted(manifest["files"]) == ["0.tiff", "1.tiff", "2.tiff"]
        (out / "1.tiff").unlink()  # as if interrupted
        report = apply(tmp_path / "src", out, "tiff")
        assert (report.written, report.resumed) == (1, 2)
        with pytest.raises(ImagenormError, match=r"holds a copy made with other settings \(format 'tiff' there, "
                                                 r"'npy' now\)"):
            apply(tmp_path / "src", out, "npy")
        assert sorted(p.name for p in out.iterdir()) == ["0.tiff", "1.tiff", "2.tiff", "imagenorm-manifest.json"]
        assert {p: p.read_bytes() for p in (tmp_path / "src").iterdir()} == before

    def test_a_manifest_without_format_is_an_npy_copy(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        tifffile.imwrite(tmp_path / "src" / "a.tif", random_image(rng, "uint16", (6, 7)))
        apply(tmp_path / "src", tmp_path / "out", "npy")
        path = tmp_path / "out" / "imagenorm-manifest.json"
        manifest = json.loads(path.read_text())
        del manifest["format"]  # as written before the choice existed
        path.write_text(json.dumps(manifest))
        assert apply(tmp_path / "src", tmp_path / "out", "npy").resumed == 1
        with pytest.raises(ImagenormError, match="format 'npy' there, 'tiff' now"):
            apply(tmp_path / "src", tmp_path / "out", "tiff")

    def test_unknown_format_is_refused(self, tmp_path):
        with pytest.raises(OptionError, match=r"output_format='png' is not one of 'npy', 'nifti', 'tiff'"):
            apply(tmp_path, tmp_path / "out", "png")


class TestCommandLine:
    def test_format_tiff_and_nifti(self, tmp_path):
        source = copy_of(NIBABEL_DATA / "anatomical.nii", tmp_path / "src")
        for output_format in ("npy", "tiff", "nifti"):
            result = runner.invoke(app, ["apply", str(source), "--per-image", "-m", "zscore", "-o",
                                         str(tmp_path / output_format), "--format", output_format, "-q"])
            assert result.exit_code == 0, result.output
            assert "1 written" in result.output
        assert_tiff_copy(tmp_path / "tiff" / "anatomical.tiff", tmp_path / "npy" / "anatomical.npy", ("gray",))
        assert_nifti_copy(source, tmp_path / "nifti" / "anatomical.nii.gz", tmp_path / "npy" / "anatomical.npy")

    def test_nifti_from_pngs_is_a_usage_error_in_one_line(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        write_png(tmp_path / "src" / "a.png", random_image(rng, "uint8", (6, 5)))
        result = runner.invoke(app, ["apply", str(tmp_path / "src"), "--per-image", "-m", "zscore", "-o",
                                     str(tmp_path / "out"), "--format", "nifti"])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'src' / 'a.png'}: NIfTI output")
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()

    def test_resume_with_another_format_is_refused(self, tmp_path, rng):
        (tmp_path / "src").mkdir()
        write_png(tmp_path / "src" / "a.png", random_image(rng, "uint8", (6, 5)))
        command = ["apply", str(tmp_path / "src"), "--per-image", "-m", "zscore", "-o", str(tmp_path / "out"), "-q"]
        assert runner.invoke(app, command + ["--format", "tiff"]).exit_code == 0
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            f"error: {tmp_path / 'out'} holds a copy made with other settings (format 'tiff' there, 'npy' now); "
            "choose another output folder"]
