"""Readers inside someone else's program: no process-wide setting changes, and short data is a bad file.

A decoded image has exactly the size its header declares: a file whose pixel data end early
is one ``ReadError`` line, never an image with rows of zeros, whatever the program set for
Pillow (``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``), the warnings filters or OpenCV's log.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import cv2
import nibabel
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image, ImageFile
from pydicom.encaps import encapsulate, generate_frames

import imagenorm
from imagenorm.errors import ReadError
from imagenorm.readers import ReadOptions, read_image

DICOM = Path(pydicom.__file__).parent / "data" / "test_files"
PILLOW_DEFAULT_LIMIT = 89_478_485  # Image.MAX_IMAGE_PIXELS as Pillow ships it
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


# ---------------------------------------------------------------- PNG files built chunk by chunk


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _scanlines(pixels: np.ndarray, bit_depth: int) -> bytes:
    """Rows of ``pixels`` (H, W[, C]) as PNG scanlines: filter byte 0, then the packed samples."""
    rows = pixels.reshape(pixels.shape[0], -1)
    if bit_depth == 16:
        packed = rows.astype(">u2").view(np.uint8).reshape(len(rows), -1)
    elif bit_depth == 1:
        packed = np.packbits(rows.astype(np.uint8), axis=1)
    else:
        packed = rows.astype(np.uint8)
    return b"".join(b"\0" + row.tobytes() for row in packed)


def png_bytes(pixels: np.ndarray, bit_depth: int, colour_type: int, *, declared_height: int | None = None,
              interlaced: bool = False, keep: float = 1.0) -> bytes:
    """A PNG of ``pixels`` whose complete zlib stream holds only the first ``keep`` of its data.

    ``declared_height`` puts another height in IHDR than the rows written.
    """
    height, width = pixels.shape[:2]
    if interlaced:
        passes = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
        raw = b"".join(_scanlines(p, bit_depth) for p in passes if p.shape[0] and p.shape[1])
    else:
        raw = _scanlines(pixels, bit_depth)
    raw = raw[: int(len(raw) * keep)]
    header = struct.pack(">IIBBBBB", width, declared_height or height, bit_depth, colour_type, 0, 0, int(interlaced))
    palette = _chunk(b"PLTE", bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))) if colour_type == 3 else b""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + palette + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


# (bit depth, colour type, samples per pixel); 16-bit colour is decoded by OpenCV
PNG_KINDS = {
    "gray1": (1, 0, 1), "gray8": (8, 0, 1), "gray16": (16, 0, 1), "gray_alpha8": (8, 4, 2),
    "rgb8": (8, 2, 3), "rgba8": (8, 6, 4), "palette8": (8, 3, 1), "rgb16": (16, 2, 3), "rgba16": (16, 6, 4),
}


def png_pixels(rng: np.random.Generator, kind: str, height: int = 64, width: int = 16) -> np.ndarray:
    bit_depth, _, samples = PNG_KINDS[kind]
    shape = (height, width) if samples == 1 else (height, width, samples)
    return rng.integers(1, 1 << bit_depth, shape, endpoint=False).astype(np.uint16 if bit_depth == 16 else np.uint8)


# ---------------------------------------------------------------- 1. no process-wide state changes


def _process_settings() -> dict:
    return {
        "MAX_IMAGE_PIXELS": Image.MAX_IMAGE_PIXELS,
        "LOAD_TRUNCATED_IMAGES": ImageFile.LOAD_TRUNCATED_IMAGES,
        "warnings.filters": list(warnings.filters),
        "opencv log level": cv2.utils.logging.getLogLevel(),
    }


def _mixed_folder(folder: Path, rng: np.random.Generator) -> None:
    """One image per reader path that touches Pillow or OpenCV, and one bad PGM."""
    folder.mkdir()
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    for name in ("a.png", "b.jpg", "c.gif", "d.bmp", "e.webp", "f.ppm"):
        Image.fromarray(rgb).save(folder / name)
    (folder / "g.png").write_bytes(png_bytes(png_pixels(rng, "rgb16", 24, 20), 16, 2))  # OpenCV
    (folder / "h.pgm").write_bytes(b"P5\n20 24\n255\n" + bytes(100))  # cut short: OpenCV fails


class TestProcessState:
    def test_reading_changes_no_process_setting(self, tmp_path, rng):
        _mixed_folder(tmp_path / "images", rng)
        before = _process_settings()
        stats = imagenorm.compute_stats(tmp_path / "images", max_pixels=10**9, on_error="skip", mixed_depth="scale")
        assert stats.files == 7 and [s["path"].endswith("h.pgm") for s in stats.to_dict()["skipped"]] == [True]
        assert _process_settings() == before

    def test_the_programs_own_pillow_guard_still_works_after_reading(self, tmp_path, rng):
        _mixed_folder(tmp_path / "images", rng)
        imagenorm.compute_stats(tmp_path / "images", max_pixels=10**9, on_error="skip", mixed_depth="scale")
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)  # 10^10 pixels, no data
        (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b""))
        with pytest.raises(Image.DecompressionBombError):
            Image.open(tmp_path / "bomb.png")

    def test_image_above_pillows_default_limit_decodes_when_max_pixels_allows(self, tmp_path):
        side = 9_460  # 89,491,600 pixels: just above Pillow's default limit; all zero, 90 kB on disk
        Image.new("L", (side, side)).save(tmp_path / "large.png")
        assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_LIMIT
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = imagenorm.compute_stats(tmp_path / "large.png", max_pixels=side * side)
        assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
        assert stats.pooled.count == side * side and stats.pooled.max == 0
        assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_LIMIT

    @pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.gif", "a.bmp", "a.pgm"])
    def test_a_stricter_pillow_limit_of_the_program_is_not_ours(self, tmp_path, rng, monkeypatch, name):
        Image.fromarray(rng.integers(0, 256, (100, 100), dtype=np.uint8)).save(tmp_path / name)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # the program's own guard: 10,000 pixels is 10x it
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be an error here
            assert read_image(tmp_path / name).pixels.shape == (1, 100, 100)
        assert Image.MAX_IMAGE_PIXELS == 1_000

    def test_max_pixels_refuses_before_decoding_even_without_pillows_guard(self, tmp_path, monkeypatch):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
        (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                                            + _chunk(b"IDAT", zlib.compress(bytes(64))) + _chunk(b"IEND", b""))
        with pytest.raises(ReadError, match=r"10,000,000,000 pixels exceed the limit of 89,478,485"):
            read_image(tmp_path / "bomb.png")
        with pytest.raises(ReadError, match=r"exceed the limit of 1,000"):
            read_image(tmp_path / "bomb.png", ReadOptions(max_pixels=1_000))


# ---------------------------------------------------------------- 2. short data is a bad file: PNG


class TestShortPng:
    @pytest.mark.parametrize("kind", list(PNG_KINDS))
    def test_complete_stream_with_fewer_rows_than_ihdr(self, tmp_path, rng, kind):
        bit_depth, colour_type, _ = PNG_KINDS[kind]
        pixels = png_pixels(rng, kind, height=37)
        (tmp_path / "short.png").write_bytes(png_bytes(pixels, bit_depth, colour_type, declared_height=64))
        with pytest.raises(ReadError, match=r"short\.png: pixel data end after 37 of 64 rows$"):
            read_image(tmp_path / "short.png")

    @pytest.mark.parametrize("kind", list(PNG_KINDS))
    def test_the_same_image_complete_reads_exactly(self, tmp_path, rng, kind):
        bit_depth, colour_type, _ = PNG_KINDS[kind]
        pixels = png_pixels(rng, kind)
        pixels[-5:] = 0  # black last rows are data, not missing rows
        (tmp_path / "full.png").write_bytes(png_bytes(pixels, bit_depth, colour_type))
        image = read_image(tmp_path / "full.png", ReadOptions(alpha="keep"))
        if kind == "palette8":
            expected = np.repeat(pixels[None], 3, axis=0)  # the palette maps index i to grey (i, i, i)
        elif kind == "gray1":
            expected = pixels[None] * np.uint8(255)
        else:
            expected = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
        np.testing.assert_array_equal(image.pixels, expected)

    def test_interlaced_stream_that_ends_early(self, tmp_path, rng):
        pixels = png_pixels(rng, "gray8", height=20, width=13)
        (tmp_path / "short.png").write_bytes(png_bytes(pixels, 8, 0, interlaced=True, keep=0.8))
        with pytest.raises(ReadError, match=r"pixel data end after [\d,]+ of [\d,]+ bytes \(interlaced\)$"):
            read_image(tmp_path / "short.png")

    def test_complete_interlaced_png_reads_exactly(self, tmp_path, rng):
        pixels = png_pixels(rng, "rgb8", height=20, width=13)
        (tmp_path / "full.png").write_bytes(png_bytes(pixels, 8, 2, interlaced=True))
        np.testing.assert_array_equal(read_image(tmp_path / "full.png").pixels, np.moveaxis(pixels, -1, 0))

    @pytest.mark.parametrize("rows", [64, 37])
    def test_last_row_in_any_colour_is_judged_exactly(self, tmp_path, rows):
        """Rows the stream never reaches are told from data by a marker colour; data in that
        very colour (183, 61, 29) are checked against the stream itself."""
        pixels = np.empty((rows, 16, 3), np.uint8)
        pixels[...] = (183, 61, 29)
        (tmp_path / "a.png").write_bytes(png_bytes(pixels, 8, 2, declared_height=64))
        if rows == 64:
            np.testing.assert_array_equal(read_image(tmp_path / "a.png").pixels, np.moveaxis(pixels, -1, 0))
        else:
            with pytest.raises(ReadError, match=r"pixel data end after 37 of 64 rows"):
                read_image(tmp_path / "a.png")

    def test_reading_many_images_in_one_process_keeps_the_check(self, tmp_path, rng):
        """Image memory Pillow reuses after a full image must not hide the missing rows of the next."""
        full, short = png_pixels(rng, "gray8"), png_pixels(rng, "gray8", height=37)
        (tmp_path / "full.png").write_bytes(png_bytes(full, 8, 0))
        (tmp_path / "short.png").write_bytes(png_bytes(short, 8, 0, declared_height=64))
        for _ in range(3):
            read_image(tmp_path / "full.png")
            with pytest.raises(ReadError, match="37 of 64 rows"):
                read_image(tmp_path / "short.png")


# ---------------------------------------------------------------- truncated files, whatever the program set


def _write(path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    if path.suffix == ".gif":
        Image.fromarray(rgb).convert("P").save(path)
    elif path.name == "progressive.jpg":
        Image.fromarray(rgb).save(path, progressive=True)
    else:
        Image.fromarray(rgb).save(path)


class TestTruncatedFiles:
    @pytest.mark.parametrize("load_truncated", [False, True])
    @pytest.mark.parametrize("name", ["a.png", "a.jpg", "progressive.jpg", "a.gif", "a.bmp"])
    def test_cut_in_half_is_an_error(self, tmp_path, rng, monkeypatch, name, load_truncated):
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)  # the program's choice
        _write(tmp_path / name, rng)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(ReadError, match=r"(truncated\)|pixel data end after \d+ of 48 rows)$"):
            read_image(tmp_path / name)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated

    @pytest.mark.parametrize("load_truncated", [False, True])
    @pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.gif", "a.bmp", "a.webp"])
    def test_complete_files_read_the_same_either_way(self, tmp_path, rng, monkeypatch, name, load_truncated):
        _write(tmp_path / name, rng)
        expected = read_image(tmp_path / name).pixels
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
        np.testing.assert_array_equal(read_image(tmp_path / name).pixels, expected)

    @pytest.mark.parametrize("magic, shape", [(b"P5", (24, 20)), (b"P6", (24, 20, 3))])
    def test_netpbm_cut_short(self, tmp_path, rng, magic, shape):
        pixels = rng.integers(0, 65536, shape, dtype=np.uint16)
        data = magic + b"\n20 24\n65535\n" + pixels.astype(">u2").tobytes()
        (tmp_path / "a.pnm").write_bytes(data[:-7])
        with pytest.raises(ReadError, match=r"a\.pnm: pixel data end after [\d,]+ of [\d,]+ bytes \(truncated\)$"):
            read_image(tmp_path / "a.pnm")

    def test_npy_cut_short(self, tmp_path, rng):
        np.save(tmp_path / "a.npy", rng.integers(0, 4096, (32, 24), dtype=np.uint16))
        data = (tmp_path / "a.npy").read_bytes()
        (tmp_path / "a.npy").write_bytes(data[:-100])
        with pytest.raises(ReadError, match=r"a\.npy: pixel data end after 1,436 of 1,536 bytes$"):
            read_image(tmp_path / "a.npy")


# ---------------------------------------------------------------- TIFF


def _patch_tag(path: Path, code: int, index: int, value: int) -> None:
    """Overwrite entry ``index`` of a SHORT or LONG array tag of the first page in place."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[code]
        form = {3: "<H", 4: "<I", 16: "<Q"}[int(tag.dtype)]
        offset = tag.valueoffset + struct.calcsize(form) * index
    data = bytearray(path.read_bytes())
    struct.pack_into(form, data, offset, value)
    path.write_bytes(bytes(data))


class TestShortTiff:
    def test_single_strip_with_too_small_byte_count(self, tmp_path, rng):
        tifffile.imwrite(tmp_path / "a.tif", rng.integers(1, 65536, (64, 48), dtype=np.uint16), rowsperstrip=64)
        _patch_tag(tmp_path / "a.tif", 279, 0, 3072)  # StripByteCounts: half the page
        with pytest.raises(ReadError, match=r"page 1: pixel data end after 3,072 of 6,144 bytes$"):
            read_image(tmp_path / "a.tif")

    @pytest.mark.parametrize("tile", [None, (16, 16)])
    def test_strip_or_tile_without_data(self, tmp_path, rng, tile):
        pixels = rng.integers(1, 65536, (64, 48), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "a.tif", pixels, rowsperstrip=8, tile=tile)
        code, kind, count = (324, "tile", 12) if tile else (273, "strip", 8)  # TileOffsets / StripOffsets
        _patch_tag(tmp_path / "a.tif", code, count - 1, 0)  # tifffile would fill it with zeros
        with pytest.raises(ReadError, match=rf"page 1: {kind} {count} of {count} has no data$"):
            read_image(tmp_path / "a.tif")

    @pytest.mark.parametrize("kind", ["plain", "imagej", "shaped"])
    def test_multipage_file_cut_short(self, tmp_path, rng, kind):
        stack = rng.integers(1, 65536, (10, 64, 48), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "a.tif", stack, imagej=kind == "imagej", metadata=None if kind == "plain" else {})
        np.testing.assert_array_equal(read_image(tmp_path / "a.tif").pixels.reshape(stack.shape), stack)
        data = (tmp_path / "a.tif").read_bytes()
        (tmp_path / "a.tif").write_bytes(data[: len(data) * 2 // 3])  # tifffile reads only the first page
        with pytest.raises(ReadError, match=r"the file ends after page 1, inside the pages it declares \(truncated\)$"):
            read_image(tmp_path / "a.tif")

    def test_imagej_stack_in_one_block_cut_short(self, tmp_path, rng):
        stack = rng.integers(1, 65536, (10, 64, 48), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "a.tif", stack, imagej=True, truncate=True)  # one IFD, images after it
        data = (tmp_path / "a.tif").read_bytes()
        (tmp_path / "a.tif").write_bytes(data[:-4 * 6144 - 10])
        with pytest.raises(ReadError, match=r"pixel data end after 5 of 10 images \(ImageJ stack\)$"):
            read_image(tmp_path / "a.tif")


# ---------------------------------------------------------------- DICOM


def _reencapsulated(name: str, edit) -> pydicom.Dataset:
    dataset = pydicom.dcmread(DICOM / name)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(dataset.PixelData, number_of_frames=count))
    dataset.PixelData = encapsulate(edit(frames))
    return dataset


class TestShortDicom:
    @pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm"])
    def test_jpeg_frame_cut_short(self, tmp_path, name):
        """pylibjpeg fills the rest of such a frame without a word."""
        _reencapsulated(name, lambda frames: [frames[0][: len(frames[0]) * 9 // 10]]).save_as(tmp_path / "a.dcm")
        with pytest.raises(ReadError, match=r"frame 1 of 1 ends early: its JPEG data have no end marker$"):
            read_image(tmp_path / "a.dcm")

    def test_complete_jpeg_frames_still_read(self, tmp_path):
        _reencapsulated("SC_rgb_jpeg_dcmtk.dcm", lambda frames: frames).save_as(tmp_path / "a.dcm")
        assert read_image(tmp_path / "a.dcm").pixels.shape == (3, 100, 100)

    def test_frame_missing(self, tmp_path):
        _reencapsulated("SC_rgb_rle_2frame.dcm", lambda frames: frames[:1]).save_as(tmp_path / "a.dcm")
        with pytest.raises(ReadError, match=r"pixel data end after 1 of 2 frames$"):
            read_image(tmp_path / "a.dcm")

    def test_file_cut_inside_compressed_pixel_data(self, tmp_path):
        data = (DICOM / "MR_small_RLE.dcm").read_bytes()
        (tmp_path / "a.dcm").write_bytes(data[:-3000])
        with pytest.warns(UserWarning, match="End of file"):  # pydicom's own warning
            with pytest.raises(ReadError, match=r"the file ends inside its pixel data \(truncated\)$"):
                read_image(tmp_path / "a.dcm")

    def test_native_pixel_data_shorter_than_declared(self, tmp_path):
        dataset = pydicom.dcmread(DICOM / "CT_small.dcm")
        dataset.PixelData = dataset.PixelData[:16384]
        dataset.save_as(tmp_path / "a.dcm")
        with pytest.raises(ReadError, match=r"less than expected \(16384 vs 32768 bytes\)"):
            read_image(tmp_path / "a.dcm")


# ---------------------------------------------------------------- NIfTI


class TestShortNifti:
    @pytest.mark.parametrize("name, cut, message", [
        ("a.nii", 1, r"a\.nii: voxel data end after 5,119 of 5,120 bytes$"),
        ("a.nii.gz", 20, r"a\.nii\.gz: cannot decode: Compressed file ended"),
    ])
    def test_cut_short(self, tmp_path, rng, name, cut, message):
        volume = nibabel.Nifti1Image(rng.integers(0, 3000, (20, 16, 8), dtype=np.int16), np.eye(4))
        volume.to_filename(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[:-cut])
        with pytest.raises(ReadError, match=message):
            read_image(tmp_path / name)
