"""Formats read the way their specifications and value-preserving libraries say (issue 10).

Files are made the way users' tools make them (Pillow, tifffile, pydicom, nibabel, numpy, or PNG
and Netpbm bytes written by hand where no installed tool writes them), and compared with what an
independent reader gives: Pillow, OpenCV, tifffile, pydicom, or the samples written.
"""

from __future__ import annotations

import struct
import tomllib
import zlib
from pathlib import Path

import cv2
import nibabel
import numpy as np
import pydicom
import pytest
import tifffile
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import UID

import imagenorm
from imagenorm.errors import ReadError
from imagenorm.readers import ReadOptions, read_image

from conftest import channel_first

DICOM = Path(pydicom.__file__).parent / "data" / "test_files"
ENHANCED_CT = UID("1.2.840.10008.5.1.4.1.1.2.1")


# ------------------------------------------------------------------------ PNG and APNG by hand
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rows(pixels: np.ndarray, depth: int) -> bytes:
    dtype = ">u2" if depth == 16 else "u1"
    return b"".join(b"\0" + row.astype(dtype).tobytes() for row in pixels)


def write_apng(path: Path, frames: list[tuple], colour_type: int, depth: int, default: np.ndarray | None = None) -> None:
    """An (A)PNG: ``frames`` as (pixels, x, y, blend_op); ``default`` is an image that is not a frame."""
    height, width = (default if default is not None else frames[0][0]).shape[:2]
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    if len(frames) > 1 or default is not None:
        out += _chunk(b"acTL", struct.pack(">II", len(frames), 0))
    if default is not None:
        out += _chunk(b"IDAT", zlib.compress(_rows(default, depth)))
    sequence = 0
    for index, (pixels, x, y, blend) in enumerate(frames):
        if len(frames) > 1 or default is not None:
            out += _chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, pixels.shape[1], pixels.shape[0], x, y, 1, 10, 0, blend))
            sequence += 1
        data = zlib.compress(_rows(pixels, depth))
        if index == 0 and default is None:
            out += _chunk(b"IDAT", data)
        else:
            out += _chunk(b"fdAT", struct.pack(">I", sequence) + data)
            sequence += 1
    path.write_bytes(out + _chunk(b"IEND", b""))


def full_frames(arrays: list[np.ndarray]) -> list[tuple]:
    return [(array, 0, 0, 0) for array in arrays]


# ------------------------------------------------------------------------------ Netpbm by hand
def write_netpbm(path: Path, magic: str, pixels: np.ndarray, maxval: int) -> None:
    height, width = pixels.shape[:2]
    header = f"{magic}\n# written by hand\n{width} {height}\n{maxval}\n".encode()
    if magic in ("P2", "P3"):
        body = "\n".join(" ".join(map(str, row.ravel())) for row in pixels).encode() + b"\n"
    else:
        body = pixels.astype(">u2" if maxval > 255 else "u1").tobytes()
    path.write_bytes(header + body)


# --------------------------------------------------------------------------- DICOM by pydicom
def enhanced_ct(path: Path, frames: int, shared: tuple | None = None, per_frame: list[tuple] | None = None) -> np.ndarray:
    """An Enhanced CT made from CT_small.dcm: its rescale only in the functional groups.

    Returns the stored values ``(frames, H, W)``.
    """
    dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
    stored = np.stack([np.roll(dataset.pixel_array, 7 * index, axis=1) for index in range(frames)])
    dataset.PixelData = stored.tobytes()
    dataset.NumberOfFrames = frames
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    del dataset.RescaleSlope, dataset.RescaleIntercept

    def group(slope, intercept) -> Dataset:
        transformation = Dataset()
        transformation.RescaleSlope, transformation.RescaleIntercept, transformation.RescaleType = slope, intercept, "HU"
        item = Dataset()
        item.PixelValueTransformationSequence = Sequence([transformation])
        return item

    if shared is not None:
        dataset.SharedFunctionalGroupsSequence = Sequence([group(*shared)])
    if per_frame is not None:
        dataset.PerFrameFunctionalGroupsSequence = Sequence([group(*factors) for factors in per_frame])
    dataset.save_as(path)
    return stored


def pydicom_reference(path: Path, frame: int, slope, intercept) -> np.ndarray:
    """pydicom's modality values of one frame, the rescale given at the top level (where it reads it)."""
    dataset = pydicom.dcmread(path)
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    return apply_modality_lut(dataset.pixel_array[frame], dataset)


class TestDicomPalette:
    def test_palette_color_is_expanded_through_its_16bit_lut(self):
        dataset = pydicom.dcmread(DICOM / "examples_palette.dcm")
        expected = channel_first(apply_color_lut(dataset.pixel_array, dataset))
        for values in ("modality", "stored"):  # indices are never counted
            image = read_image(DICOM / "examples_palette.dcm", ReadOptions(dicom_values=values))
            assert image.channels == ("red", "green", "blue") and image.palette
            assert image.pixels.dtype == np.uint16  # the LUT descriptor declares 16-bit entries
            np.testing.assert_array_equal(image.pixels, expected)

    def test_8bit_lut_gives_8bit_colours(self, tmp_path):
        dataset = pydicom.dcmread(DICOM / "examples_palette.dcm")
        luts = []
        for colour in ("Red", "Green", "Blue"):
            lut = (np.frombuffer(getattr(dataset, f"{colour}PaletteColorLookupTableData"), "<u2") >> 8).astype(np.uint8)
            setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 8])
            setattr(dataset, f"{colour}PaletteColorLookupTableData", lut.tobytes())
            luts.append(lut)
        dataset.save_as(tmp_path / "p8.dcm")
        image = read_image(tmp_path / "p8.dcm")
        assert image.pixels.dtype == np.uint8 and image.palette
        np.testing.assert_array_equal(image.pixels, np.stack([lut[dataset.pixel_array] for lut in luts]))

    def test_stats_count_colours_not_indices(self):
        stats = imagenorm.compute_stats(str(DICOM / "examples_palette.dcm"))
        assert stats.channel_names == ("red", "green", "blue") and stats.palette_expanded
        dataset = pydicom.dcmread(DICOM / "examples_palette.dcm")
        colours = apply_color_lut(dataset.pixel_array, dataset).astype(np.float64)
        assert stats.mean == pytest.approx(tuple(colours.reshape(-1, 3).mean(axis=0)), rel=1e-12)


class TestEnhancedDicomRescale:
    def test_shared_pixel_value_transformation_gives_hu(self, tmp_path):
        stored = enhanced_ct(tmp_path / "e.dcm", 3, shared=(1, -1024))
        image = read_image(tmp_path / "e.dcm")
        assert image.pixels.shape == (1, 3) + stored.shape[1:]
        for frame in range(3):
            np.testing.assert_array_equal(image.pixels[0, frame], pydicom_reference(tmp_path / "e.dcm", frame, 1, -1024))
        assert imagenorm.compute_stats(str(tmp_path / "e.dcm")).pooled.mean == pytest.approx(stored.mean() - 1024, rel=1e-12)

    def test_per_frame_transformations_win_over_shared(self, tmp_path):
        factors = [(1, -1024), (2, -1000), (0.5, 7.5)]
        enhanced_ct(tmp_path / "e.dcm", 3, shared=(1, 0), per_frame=factors)
        image = read_image(tmp_path / "e.dcm")
        assert image.pixels.dtype == np.float64  # one fractional slope: float for every frame
        for frame, (slope, intercept) in enumerate(factors):
            np.testing.assert_array_equal(image.pixels[0, frame], pydicom_reference(tmp_path / "e.dcm", frame, slope, intercept))

    def test_integer_per_frame_rescale_stays_integer(self, tmp_path):
        factors = [(1, -1024), (2, -1000)]
        stored = enhanced_ct(tmp_path / "e.dcm", 2, per_frame=factors)
        image = read_image(tmp_path / "e.dcm")
        assert image.pixels.dtype.kind == "i"
        expected = [stored[frame].astype(np.int64) * slope + intercept for frame, (slope, intercept) in enumerate(factors)]
        np.testing.assert_array_equal(image.pixels[0], np.stack(expected))

    def test_stored_values_ignore_the_rescale(self, tmp_path):
        stored = enhanced_ct(tmp_path / "e.dcm", 2, shared=(1, -1024))
        np.testing.assert_array_equal(read_image(tmp_path / "e.dcm", ReadOptions(dicom_values="stored")).pixels[0], stored)


class TestDicomMessages:
    def test_a_file_that_is_not_dicom(self, tmp_path):
        (tmp_path / "notes.dcm").write_text("patient notes, not an image\n" * 20)
        with pytest.raises(ReadError) as caught:
            read_image(tmp_path / "notes.dcm")
        assert caught.value.reason == "not a DICOM file (no DICM preamble or file meta)"
        assert "force" not in str(caught.value)

    def test_sop_class_named_from_the_file_meta(self, tmp_path):
        dataset = pydicom.dcmread(DICOM / "rtplan.dcm")
        del dataset.SOPClassUID
        dataset.save_as(tmp_path / "plan.dcm")
        with pytest.raises(ReadError, match=r"plan\.dcm: no pixel data \(a DICOM RT Plan Storage object\)$"):
            read_image(tmp_path / "plan.dcm")

    def test_series_grouping_lives_in_one_place(self):
        from imagenorm.readers import dicom

        assert not hasattr(dicom, "series_header")


# -------------------------------------------------------------------------------------- TIFF
class TestTiffExtraSamples:
    def test_unspecified_extra_sample_is_a_channel(self, tmp_path, rng):
        pixels = rng.integers(0, 65536, (8, 9, 4), dtype=np.uint16)  # RGB + near infrared
        tifffile.imwrite(tmp_path / "rgbn.tif", pixels, photometric="rgb", extrasamples=[0])
        for alpha in ("drop", "keep"):
            image = read_image(tmp_path / "rgbn.tif", ReadOptions(alpha=alpha))
            assert image.channels == ("red", "green", "blue", "channel3")
            np.testing.assert_array_equal(image.pixels, channel_first(pixels))

    @pytest.mark.parametrize("kind", [1, 2])  # associated, unassociated alpha
    def test_alpha_extra_samples_are_alpha(self, tmp_path, rng, kind):
        pixels = rng.integers(0, 256, (8, 9, 4), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "rgba.tif", pixels, photometric="rgb", extrasamples=[kind])
        assert read_image(tmp_path / "rgba.tif").channels == ("red", "green", "blue")
        kept = read_image(tmp_path / "rgba.tif", ReadOptions(alpha="keep"))
        assert kept.channels == ("red", "green", "blue", "alpha")
        np.testing.assert_array_equal(kept.pixels, channel_first(pixels))

    def test_alpha_then_data_sample(self, tmp_path, rng):
        pixels = rng.integers(0, 256, (8, 9, 5), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="rgb", extrasamples=[2, 0])
        dropped = read_image(tmp_path / "a.tif")
        assert dropped.channels == ("red", "green", "blue", "channel4")
        np.testing.assert_array_equal(dropped.pixels, channel_first(pixels[..., [0, 1, 2, 4]]))

    def test_three_gray_samples_are_not_rgb(self, tmp_path, rng):
        pixels = rng.integers(0, 256, (3, 8, 9), dtype=np.uint8)  # e.g. three fluorescence channels
        tifffile.imwrite(tmp_path / "ms.tif", pixels, photometric="minisblack", planarconfig="separate")
        image = read_image(tmp_path / "ms.tif")
        assert image.channels == ("channel0", "channel1", "channel2")
        np.testing.assert_array_equal(image.pixels, pixels)


class TestTiffPages:
    def test_pages_of_different_dtypes_are_refused(self, tmp_path, rng):
        with tifffile.TiffWriter(tmp_path / "mixed.tif") as tif:
            tif.write(rng.integers(0, 256, (5, 6), dtype=np.uint8))
            tif.write(rng.integers(0, 65536, (5, 6), dtype=np.uint16))
        with pytest.raises(ReadError, match=r"mixed\.tif: its pages have different dtypes: uint8 \(page 1\), uint16 \(page 2\)"):
            read_image(tmp_path / "mixed.tif")

    def test_palette_tiff_is_expanded_as_pillow_does(self, tmp_path, rng):
        image = Image.fromarray(rng.integers(0, 16, (8, 9), dtype=np.uint8), "P")
        image.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tolist())
        image.save(tmp_path / "p.tif")
        decoded = read_image(tmp_path / "p.tif")
        assert decoded.palette and decoded.channels == ("red", "green", "blue") and decoded.pixels.dtype == np.uint8
        np.testing.assert_array_equal(decoded.pixels, channel_first(np.asarray(Image.open(tmp_path / "p.tif").convert("RGB"))))

    def test_cmyk_tiff_is_refused(self, tmp_path, rng):
        Image.fromarray(rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)).convert("CMYK").save(tmp_path / "c.tif")
        with pytest.raises(ReadError, match=r"c\.tif: CMYK .*convert them to RGB first"):
            read_image(tmp_path / "c.tif")


class TestTiffCompression:
    def test_codecs_are_installed_with_imagenorm(self):
        project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
        assert any(requirement.startswith("imagecodecs") for requirement in project["project"]["dependencies"])

    @pytest.mark.parametrize("compression", ["lzw", "zlib", "jpeg"])
    def test_compressed_tiff_reads_as_pillow_reads_it(self, tmp_path, rng, compression):
        pixels = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "c.tif", pixels, compression=compression, photometric="rgb")
        image = read_image(tmp_path / "c.tif")
        assert image.channels == ("red", "green", "blue")
        np.testing.assert_array_equal(image.pixels, channel_first(np.asarray(Image.open(tmp_path / "c.tif"))))
        if compression != "jpeg":  # lossless
            np.testing.assert_array_equal(image.pixels, channel_first(pixels))

    def test_lzw_16bit_pages(self, tmp_path, rng):
        pages = rng.integers(0, 65536, (3, 16, 20), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "c.tif", pages, compression="lzw", photometric="minisblack")
        np.testing.assert_array_equal(read_image(tmp_path / "c.tif").pixels[0], pages)


# ------------------------------------------------------------------------------------ Netpbm
class TestNetpbm:
    @pytest.mark.parametrize("maxval", [1, 15, 100, 255])
    def test_plain_and_raw_pgm_agree_on_raw_values_and_scale(self, tmp_path, rng, maxval):
        pixels = rng.integers(0, maxval + 1, (6, 7), dtype=np.uint8)
        write_netpbm(tmp_path / "plain.pgm", "P2", pixels, maxval)
        write_netpbm(tmp_path / "raw.pgm", "P5", pixels, maxval)
        plain, raw = read_image(tmp_path / "plain.pgm"), read_image(tmp_path / "raw.pgm")
        np.testing.assert_array_equal(plain.pixels, pixels[None])
        np.testing.assert_array_equal(raw.pixels, pixels[None])
        np.testing.assert_array_equal(raw.pixels[0], cv2.imread(str(tmp_path / "raw.pgm"), cv2.IMREAD_UNCHANGED))
        for name in ("plain.pgm", "raw.pgm"):  # value_scale = maxval: the [0, 1] scale the file declares
            assert imagenorm.compute_stats(str(tmp_path / name)).value_scale == maxval

    @pytest.mark.parametrize("magic", ["P3", "P6"])
    def test_12bit_ppm_keeps_values_and_its_scale(self, tmp_path, rng, magic):
        pixels = rng.integers(0, 4096, (6, 7, 3), dtype=np.uint16)
        write_netpbm(tmp_path / "a.ppm", magic, pixels, 4095)
        image = read_image(tmp_path / "a.ppm")
        assert image.channels == ("red", "green", "blue") and image.maximum == 4095
        np.testing.assert_array_equal(image.pixels, channel_first(pixels))
        stats = imagenorm.compute_stats(str(tmp_path / "a.ppm"))
        assert stats.value_scale == 4095 and stats.significant_bits is None
        stats.save(tmp_path / "s.json")
        loaded = imagenorm.DatasetStats.load(tmp_path / "s.json")
        assert loaded.value_scale == 4095
        z = imagenorm.Standardize.from_stats(loaded)
        x = torch.from_numpy(channel_first(pixels).astype(np.float32) / 4095)  # the [0, 1] scale of this file
        np.testing.assert_allclose(z(x).numpy(), z(torch.from_numpy(channel_first(pixels).astype(np.int32)).to(torch.uint16)).numpy(),
                                   atol=1e-5)

    def test_plain_and_raw_bitmaps_agree_with_pillow(self, tmp_path, rng):
        white = rng.random((5, 11)) < 0.5
        Image.fromarray(white).save(tmp_path / "raw.pbm")  # Pillow writes P4
        ink = (~white).astype(np.uint8)  # in PBM, 1 is black
        (tmp_path / "plain.pbm").write_bytes(b"P1\n11 5\n" + b"\n".join(b"".join(b"%d" % v for v in row) for row in ink) + b"\n")
        expected = np.asarray(Image.open(tmp_path / "raw.pbm").convert("L"))
        for name in ("raw.pbm", "plain.pbm"):
            image = read_image(tmp_path / name)
            assert image.pixels.dtype == np.uint8
            np.testing.assert_array_equal(image.pixels[0], expected)

    def test_sample_above_maxval_is_refused(self, tmp_path):
        (tmp_path / "a.pgm").write_bytes(b"P2\n2 1\n100\n50 300\n")
        with pytest.raises(ReadError, match=r"a\.pgm: a sample \(300\) exceeds the file's maxval 100$"):
            read_image(tmp_path / "a.pgm")

    def test_plain_file_cut_short(self, tmp_path):
        (tmp_path / "a.pgm").write_bytes(b"P2\n3 2\n255\n1 2 3 4\n")
        with pytest.raises(ReadError, match=r"a\.pgm: pixel data end after 4 of 6 samples \(truncated\)$"):
            read_image(tmp_path / "a.pgm")


# ------------------------------------------------------------------------------- JPEG and PNG
class TestMultiPictureJpeg:
    @pytest.mark.parametrize("second_shape", [(16, 24, 3), (8, 12, 3)])  # stereo partner, preview
    def test_mpo_is_its_primary_picture(self, tmp_path, rng, second_shape):
        primary = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
        second = Image.fromarray(rng.integers(0, 256, second_shape, dtype=np.uint8))
        primary.save(tmp_path / "photo.jpg", "MPO", save_all=True, append_images=[second])
        assert Image.open(tmp_path / "photo.jpg").format == "MPO"
        image = read_image(tmp_path / "photo.jpg")
        np.testing.assert_array_equal(image.pixels, channel_first(np.asarray(Image.open(tmp_path / "photo.jpg"))))
        assert imagenorm.compute_stats(str(tmp_path / "photo.jpg")).pooled.count == 16 * 24 * 3


class TestSixteenBitGrayAlphaPng:
    def test_gray_alpha_stays_gray_alpha(self, tmp_path, rng):
        pixels = rng.integers(0, 65536, (5, 6, 2), dtype=np.uint16)
        write_apng(tmp_path / "ga.png", full_frames([pixels]), colour_type=4, depth=16)
        dropped = read_image(tmp_path / "ga.png")
        kept = read_image(tmp_path / "ga.png", ReadOptions(alpha="keep"))
        assert dropped.channels == ("gray",) and kept.channels == ("gray", "alpha")
        assert kept.pixels.dtype == np.uint16
        np.testing.assert_array_equal(kept.pixels, channel_first(pixels))
        np.testing.assert_array_equal(dropped.pixels, pixels[None, ..., 0])


class TestAnimatedFrames:
    """Every frame of an animation counts, as displayed, whatever the format and depth."""

    @pytest.mark.parametrize("colour_type, samples", [(2, 3), (6, 4), (4, 2)])
    def test_16bit_apng_counts_every_frame(self, tmp_path, rng, colour_type, samples):
        frames = [rng.integers(0, 65536, (6, 7, samples), dtype=np.uint16) for _ in range(3)]
        write_apng(tmp_path / "a.png", full_frames(frames), colour_type, 16)
        image = read_image(tmp_path / "a.png", ReadOptions(alpha="keep"))
        assert image.pixels.dtype == np.uint16 and image.pixels.shape == (samples, 3, 6, 7)
        np.testing.assert_array_equal(image.pixels, np.moveaxis(np.stack(frames), -1, 0))

    @pytest.mark.parametrize("name, kwargs", [("a.png", {}), ("a.gif", {}), ("a.webp", {"lossless": True})])
    def test_8bit_animations_count_every_frame(self, tmp_path, rng, name, kwargs):
        frames = [Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)) for _ in range(3)]
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], **kwargs)
        reference = Image.open(tmp_path / name)
        expected = []
        for index in range(reference.n_frames):
            reference.seek(index)
            expected.append(np.asarray(reference.convert("RGB")))
        image = read_image(tmp_path / name)
        assert image.pixels.shape == (3, 3, 6, 7)
        np.testing.assert_array_equal(image.pixels, np.moveaxis(np.stack(expected), -1, 0))

    @pytest.mark.parametrize("depth", [8, 16])
    def test_default_image_outside_the_animation_is_not_a_frame(self, tmp_path, rng, depth):
        high = 256 if depth == 8 else 65536
        default = rng.integers(0, high, (6, 7, 3)).astype(np.uint16)
        frames = [rng.integers(0, high, (6, 7, 3)).astype(np.uint16) for _ in range(2)]
        write_apng(tmp_path / "a.png", full_frames(frames), 2, depth, default=default)
        image = read_image(tmp_path / "a.png")
        assert image.pixels.shape == (3, 2, 6, 7)
        np.testing.assert_array_equal(image.pixels, np.moveaxis(np.stack(frames), -1, 0))

    def test_16bit_frames_compose_as_8bit_ones_do(self, tmp_path, rng):
        base = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
        base[..., 3] = 255
        patch = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
        patch[..., 3] = np.where(rng.random((3, 4)) < 0.5, 0, 255)  # blend "over" with full or no cover
        write_apng(tmp_path / "a8.png", [(base, 0, 0, 0), (patch, 2, 1, 1)], 6, 8)
        write_apng(tmp_path / "a16.png", [(base * np.uint16(257), 0, 0, 0), (patch * np.uint16(257), 2, 1, 1)], 6, 16)
        eight, sixteen = (read_image(tmp_path / name, ReadOptions(alpha="keep")) for name in ("a8.png", "a16.png"))
        assert sixteen.pixels.shape == eight.pixels.shape == (4, 2, 6, 7)
        np.testing.assert_array_equal(sixteen.pixels, eight.pixels.astype(np.uint16) * 257)


# -------------------------------------------------------------------------- bool, everywhere
class TestBoolRule:
    """Bool samples are uint8 0 and 255 wherever they come from: raw / 255 is the true fraction."""

    def test_every_source_of_bool_gives_the_same_statistics(self, tmp_path, rng):
        mask = rng.random((10, 12)) < 0.485
        np.save(tmp_path / "m.npy", mask)
        tifffile.imwrite(tmp_path / "m.tif", mask)
        Image.fromarray(mask).save(tmp_path / "m.png")  # mode "1"
        sources = [str(tmp_path / "m.npy"), str(tmp_path / "m.tif"), str(tmp_path / "m.png"),
                   [torch.from_numpy(mask)[None]], [mask], [Image.fromarray(mask)]]
        for source in sources:
            stats = imagenorm.compute_stats(source)
            assert stats.dtype == "uint8" and stats.value_scale == 255
            assert stats.pooled.mean / stats.value_scale == pytest.approx(mask.mean(), rel=1e-12), source
            assert stats.pooled.min == 0 and stats.pooled.max == 255

    def test_bool_npy_reads_as_0_and_255(self, tmp_path, rng):
        mask = rng.random((4, 5)) < 0.5
        np.save(tmp_path / "m.npy", mask)
        np.testing.assert_array_equal(read_image(tmp_path / "m.npy").pixels[0], mask * np.uint8(255))


# ------------------------------------------------------------- colour spaces, files and memory
class TestColourSpaces:
    @pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV"])
    def test_pil_images_in_memory_follow_the_file_rule(self, rng, mode):
        image = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).convert(mode)
        with pytest.raises(ReadError, match=rf"item 0: {mode} images are not supported .*convert them to RGB first"):
            imagenorm.compute_stats([image])

    def test_cmyk_jpeg_file_is_refused_the_same_way(self, tmp_path, rng):
        Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).convert("CMYK").save(tmp_path / "c.jpg")
        with pytest.raises(ReadError, match=r"c\.jpg: CMYK images are not supported .*convert them to RGB first"):
            read_image(tmp_path / "c.jpg")

    def test_ycbcr_jpeg_is_decoded_to_rgb(self, tmp_path, rng):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
        image = read_image(tmp_path / "a.jpg")
        assert image.channels == ("red", "green", "blue")
        np.testing.assert_array_equal(image.pixels, channel_first(np.asarray(Image.open(tmp_path / "a.jpg"))))


# ------------------------------------------------------------------------------------- NIfTI
class TestNiftiVolumes:
    @pytest.mark.parametrize("volumes, names", [(1, ("gray",)), (3, ("channel0", "channel1", "channel2"))])
    def test_4d_volumes_are_not_colours(self, tmp_path, rng, volumes, names):
        data = rng.integers(0, 4096, (5, 6, 4, volumes), dtype=np.int16)
        nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
        image = read_image(tmp_path / "v.nii.gz")
        assert image.channels == names
        np.testing.assert_array_equal(image.pixels, np.moveaxis(data, -1, 0))
        if volumes == 3:
            assert imagenorm.compute_stats(str(tmp_path / "v.nii.gz")).channel_names == names


class TestSameRuleAtEveryDepth:
    @pytest.mark.parametrize("depth", [8, 16])
    def test_trns_colour_key_adds_no_alpha(self, tmp_path, rng, depth):
        pixels = rng.integers(0, 1 << depth, (4, 5, 3)).astype(np.uint16)
        key = _chunk(b"tRNS", struct.pack(">HHH", *map(int, pixels[0, 0])))
        body = _chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, depth, 2, 0, 0, 0)) + key
        (tmp_path / "k.png").write_bytes(b"\x89PNG\r\n\x1a\n" + body + _chunk(b"IDAT", zlib.compress(_rows(pixels, depth)))
                                         + _chunk(b"IEND", b""))
        image = read_image(tmp_path / "k.png", ReadOptions(alpha="keep"))
        assert image.channels == ("red", "green", "blue")
        np.testing.assert_array_equal(image.pixels, channel_first(pixels))

    @pytest.mark.parametrize("depth", [8, 16])
    def test_apng_missing_a_frame_is_refused(self, tmp_path, rng, depth):
        frames = [rng.integers(0, 1 << depth, (6, 7, 3)).astype(np.uint16) for _ in range(3)]
        write_apng(tmp_path / "a.png", full_frames(frames), 2, depth)
        data = (tmp_path / "a.png").read_bytes()
        last = data.rindex(b"fcTL") - 4  # the last frame cut out, IEND kept
        (tmp_path / "a.png").write_bytes(data[:last] + _chunk(b"IEND", b""))
        with pytest.raises(ReadError, match=r"a\.png: (frame 3 of 3 cannot be decoded|cannot decode: truncated|pixel data end after 2 of 3)"):
            read_image(tmp_path / "a.png")

    def test_rgb24_nifti_is_colour(self, tmp_path, rng):
        colours = rng.integers(0, 256, (4, 5, 3, 3), dtype=np.uint8)
        data = np.zeros((4, 5, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        for index, field in enumerate("RGB"):
            data[field] = colours[..., index]
        nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), tmp_path / "c.nii")
        image = read_image(tmp_path / "c.nii")
        assert image.channels == ("red", "green", "blue") and image.pixels.dtype == np.uint8
        np.testing.assert_array_equal(image.pixels, np.moveaxis(colours, -1, 0))


def test_netpbm_files_of_different_maxval_are_refused_unless_scaled(tmp_path, rng):
    """Found by trying it: maxval 4095 and 1000 files were pooled in raw units under value_scale 65535."""
    a = rng.integers(0, 4096, (6, 7), dtype=np.uint16)
    b = rng.integers(0, 1001, (6, 7), dtype=np.uint16)
    write_netpbm(tmp_path / "a.pgm", "P5", a, 4095)
    write_netpbm(tmp_path / "b.pgm", "P5", b, 1000)
    with pytest.raises(imagenorm.ReadError, match="b.pgm: has uint16 \\(maxval 1000\\) raw values, .* different declared maxima"):
        imagenorm.compute_stats(tmp_path)
    scaled = imagenorm.compute_stats(tmp_path, mixed_depth="scale")
    values = np.concatenate([(a / 4095).ravel(), (b / 1000).ravel()])
    assert scaled.pooled.mean == pytest.approx(values.mean(), rel=1e-12)
    assert scaled.pooled.std == pytest.approx(values.std(), rel=1e-12)


def test_mpo_extension_is_an_image(tmp_path, rng):
    from PIL import Image

    first, second = (Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(2))
    first.save(tmp_path / "m.mpo", "MPO", save_all=True, append_images=[second])
    stats = imagenorm.compute_stats(str(tmp_path / "m.mpo"))
    assert stats.pooled.count == 8 * 8 * 3  # the primary picture only


def test_stats_of_different_netpbm_maxvals_do_not_merge(tmp_path):
    """Merging two stats files is the same join as measuring together: raw values declared
    against maxval 4095 and 1000 share no scale (the merge used to give value_scale 65535)."""
    import imagenorm
    from imagenorm.errors import ImagenormError

    for name, maxval in (("a", 4095), ("b", 1000)):
        (tmp_path / name).mkdir()
        write_netpbm(tmp_path / name / "x.pgm", "P5", np.full((3, 4), 500, np.uint16), maxval)
    first, second = imagenorm.compute_stats(tmp_path / "a"), imagenorm.compute_stats(tmp_path / "b")
    assert (first.value_scale, second.value_scale) == (4095, 1000)
    with pytest.raises(ImagenormError, match="different declared maxima"):
        first.merge(second)
    assert first.merge(first).value_scale == 4095
