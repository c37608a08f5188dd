"""Readers keep bit depth and values, and turn bad input into one clear ReadError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imagenorm.errors import ReadError
from imagenorm.readers import ReadOptions, luminance, read_image

from conftest import channel_first, write_pillow, write_png, write_tiff


class TestBitDepth:
    def test_16bit_rgb_png_keeps_16_bits(self, tmp_path, rng):
        pixels = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
        write_png(tmp_path / "a.png", pixels)
        image = read_image(tmp_path / "a.png")
        assert image.pixels.dtype == np.uint16 and image.channels == ("red", "green", "blue")
        np.testing.assert_array_equal(image.pixels, channel_first(pixels))
        # the trap we avoid: Pillow reads the same file as 8-bit
        assert np.asarray(Image.open(tmp_path / "a.png")).dtype == np.uint8

    def test_16bit_rgba_png_alpha_dropped_or_kept(self, tmp_path, rng):
        pixels = rng.integers(0, 65536, (8, 9, 4), dtype=np.uint16)
        write_png(tmp_path / "a.png", pixels)
        dropped = read_image(tmp_path / "a.png")
        kept = read_image(tmp_path / "a.png", ReadOptions(alpha="keep"))
        np.testing.assert_array_equal(dropped.pixels, channel_first(pixels[..., :3]))
        np.testing.assert_array_equal(kept.pixels, channel_first(pixels))
        assert kept.channels[-1] == "alpha"

    def test_16bit_gray_png(self, tmp_path, rng):
        pixels = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
        write_png(tmp_path / "a.png", pixels)
        image = read_image(tmp_path / "a.png")
        assert image.channels == ("gray",)
        np.testing.assert_array_equal(image.pixels, pixels[None])

    @pytest.mark.parametrize("shape, name", [((20, 30, 3), "a.ppm"), ((20, 30), "a.pgm")])
    def test_16bit_netpbm(self, tmp_path, rng, shape, name):
        pixels = rng.integers(0, 65536, shape, dtype=np.uint16)
        write_png(tmp_path / name, pixels)
        image = read_image(tmp_path / name)
        assert image.pixels.dtype == np.uint16
        np.testing.assert_array_equal(image.pixels, channel_first(pixels))

    def test_tiff_all_pages_16bit(self, tmp_path, rng):
        pages = rng.integers(0, 65536, (5, 12, 14), dtype=np.uint16)
        write_tiff(tmp_path / "a.tif", pages)
        image = read_image(tmp_path / "a.tif")
        assert image.pixels.shape == (1, 5, 12, 14)
        np.testing.assert_array_equal(image.pixels[0], pages)

    def test_tiff_rgb_and_float(self, tmp_path, rng):
        rgb = rng.integers(0, 65536, (12, 14, 3), dtype=np.uint16)
        write_tiff(tmp_path / "rgb.tif", rgb, photometric="rgb")
        np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif").pixels, channel_first(rgb))
        floats = rng.normal(0, 1, (12, 14)).astype(np.float32)
        write_tiff(tmp_path / "f.tiff", floats)
        image = read_image(tmp_path / "f.tiff")
        assert image.pixels.dtype == np.float32
        np.testing.assert_array_equal(image.pixels[0], floats)

    @pytest.mark.parametrize(
        "shape, expected",
        [((10, 11), (1, 10, 11)), ((10, 11, 3), (3, 10, 11)), ((3, 10, 11), (3, 10, 11)), ((6, 10, 11), (1, 6, 10, 11))],
    )
    def test_npy_layouts(self, tmp_path, shape, expected):
        np.save(tmp_path / "a.npy", np.zeros(shape, np.int16))
        assert read_image(tmp_path / "a.npy").pixels.shape == expected

    def test_npy_pickle_never_loaded(self, tmp_path):
        np.save(tmp_path / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
        with pytest.raises(ReadError, match="a.npy"):
            read_image(tmp_path / "a.npy")


class TestColour:
    def test_palette_png_expanded_exactly(self, tmp_path, rng):
        indices = rng.integers(0, 16, (10, 12), dtype=np.uint8)
        palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
        image = Image.fromarray(indices, mode="P")
        image.putpalette(palette.ravel().tolist())
        image.save(tmp_path / "p.png")
        decoded = read_image(tmp_path / "p.png")
        assert decoded.palette and decoded.channels == ("red", "green", "blue")
        np.testing.assert_array_equal(decoded.pixels, channel_first(palette[indices]))

    @pytest.mark.parametrize("name, kwargs", [("a.jpg", {"quality": 90}), ("a.bmp", {}), ("a.webp", {"lossless": True})])
    def test_8bit_formats_equal_pillow(self, tmp_path, rng, name, kwargs):
        pixels = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        write_pillow(tmp_path / name, pixels, **kwargs)
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        np.testing.assert_array_equal(read_image(tmp_path / name).pixels, channel_first(expected))

    def test_gray_conversion_matches_pillow(self, tmp_path, rng):
        pixels = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(pixels).convert("L"))
        np.testing.assert_array_equal(luminance(channel_first(pixels)), expected)
        write_pillow(tmp_path / "a.png", pixels)
        image = read_image(tmp_path / "a.png", ReadOptions(convert="gray"))
        assert image.channels == ("gray",)
        np.testing.assert_array_equal(image.pixels[0], expected)

    def test_gray_to_rgb_repeats(self, tmp_path, rng):
        pixels = rng.integers(0, 256, (6, 7), dtype=np.uint8)
        write_pillow(tmp_path / "a.png", pixels)
        image = read_image(tmp_path / "a.png", ReadOptions(convert="rgb"))
        np.testing.assert_array_equal(image.pixels, np.stack([pixels] * 3))


class TestBadInput:
    def test_zero_byte_file(self, tmp_path):
        (tmp_path / "empty.png").write_bytes(b"")
        with pytest.raises(ReadError, match=r"empty\.png: empty file \(0 bytes\)"):
            read_image(tmp_path / "empty.png")

    def test_not_an_image(self, tmp_path):
        (tmp_path / "fake.jpg").write_text("hello, I am text")
        with pytest.raises(ReadError, match=r"fake\.jpg: cannot decode"):
            read_image(tmp_path / "fake.jpg")

    @pytest.mark.parametrize("name", ["a.png", "a.jpg", "a16.png", "a.ppm", "a.tif"])
    def test_truncated_files(self, tmp_path, rng, name):
        if name == "a16.png":
            write_png(tmp_path / name, rng.integers(0, 65536, (64, 64, 3), dtype=np.uint16))
        elif name == "a.ppm":
            write_png(tmp_path / name, rng.integers(0, 65536, (64, 64, 3), dtype=np.uint16))
        elif name == "a.tif":
            write_tiff(tmp_path / name, rng.integers(0, 65536, (64, 64), dtype=np.uint16))
        else:
            write_pillow(tmp_path / name, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(ReadError, match=name.replace(".", r"\.")):
            read_image(tmp_path / name)

    def test_decompression_bomb_refused_before_decoding(self, tmp_path):
        # A PNG header that claims 100,000 x 100,000 pixels, with no pixel data at all:
        # the limit must trigger first (a decoder would fail on the missing data instead).
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
        png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
        (tmp_path / "bomb.png").write_bytes(png)
        with pytest.raises(ReadError, match=r"10,000,000,000 pixels exceed the limit of 89,478,485"):
            read_image(tmp_path / "bomb.png")

    def test_max_pixels_option(self, tmp_path, rng):
        write_pillow(tmp_path / "a.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
        with pytest.raises(ReadError, match="400 pixels exceed the limit of 399"):
            read_image(tmp_path / "a.png", ReadOptions(max_pixels=399))
        assert read_image(tmp_path / "a.png", ReadOptions(max_pixels=400)).pixels.shape == (1, 20, 20)

    def test_missing_file(self, tmp_path):
        with pytest.raises(ReadError, match="no such file"):
            read_image(tmp_path / "nothing.png")

    def test_unknown_extension(self, tmp_path):
        (tmp_path / "a.xyz").write_bytes(b"123")
        with pytest.raises(ReadError, match="not a supported image format"):
            read_image(tmp_path / "a.xyz")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_significant_bits_recorded(tmp_path, rng):
    """12-bit data in a 16-bit PNG with an sBIT chunk: the 12 bits are reported."""
    import imagenorm
    from imagenorm.readers.png import png_header

    write_png(tmp_path / "a.png", rng.integers(0, 4096, (9, 9), dtype=np.uint16))
    data = (tmp_path / "a.png").read_bytes()
    ihdr_end = 8 + 8 + 13 + 4
    with_sbit = data[:ihdr_end] + _chunk(b"sBIT", bytes([12])) + data[ihdr_end:]
    (tmp_path / "a.png").write_bytes(with_sbit)
    assert png_header(with_sbit).significant_bits == 12
    stats = imagenorm.compute_stats(tmp_path)
    assert stats.significant_bits == 12
    assert stats.to_dict()["significant_bits"] == 12
    write_png(tmp_path / "b.png", rng.integers(0, 4096, (9, 9), dtype=np.uint16))  # declares nothing
    assert imagenorm.compute_stats(tmp_path).significant_bits is None
