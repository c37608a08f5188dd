"""The fast decoders (libjpeg-turbo through simplejpeg, libspng through imagecodecs) give Pillow's
samples bit for bit, take only the kinds they are proven on, and leave the rest (and every
damaged file) to the Pillow path, whose checks decide."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imagenorm.errors import ReadError
from imagenorm.readers import decode_image, jpeg, pillow, png, read_image, sniff_extension
from imagenorm.readers.base import ReadOptions, read_file

skimage_data = pytest.importorskip("skimage.data")
SKIMAGE = os.path.dirname(skimage_data.__file__)
OPTIONS = ReadOptions(alpha="keep")


def _matplotlib_sample(name: str) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return None
    path = os.path.join(matplotlib.get_data_path(), "sample_data", name)
    return path if os.path.exists(path) else None


REAL_JPEGS = [os.path.join(SKIMAGE, name) for name in ("hubble_deep_field.jpg", "retina.jpg", "rocket.jpg")]
REAL_JPEGS += [path for path in [_matplotlib_sample("grace_hopper.jpg")] if path]
REAL_PNGS = sorted(os.path.join(SKIMAGE, name) for name in os.listdir(SKIMAGE) if name.endswith(".png"))
REAL_PNGS += [path for path in [_matplotlib_sample("Minduka_Present_Blue_Pack.png"), _matplotlib_sample("logo2.png")] if path]


def pillow_image(data: bytes, name: str = "x"):
    """What the Pillow path alone decodes (the reference)."""
    header = png.png_header(data) if png.is_png(data) else None
    return pillow._decode_with_pillow(data, name, OPTIONS, header)


def assert_same_image(fast, reference) -> None:
    assert fast.pixels.dtype == reference.pixels.dtype
    assert fast.pixels.shape == reference.pixels.shape
    assert np.array_equal(fast.pixels, reference.pixels)
    assert (fast.channels, fast.palette, fast.significant_bits, fast.notes, fast.maximum) == (
        reference.channels, reference.palette, reference.significant_bits, reference.notes, reference.maximum)


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def with_adobe_marker(data: bytes, transform: int) -> bytes:
    """``data`` with an Adobe APP14 segment after SOI (transform 0: the components are RGB)."""
    body = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, transform)
    return data[:2] + b"\xff\xee" + struct.pack(">H", len(body) + 2) + body + data[2:]


def photo() -> Image.Image:
    return Image.open(REAL_JPEGS[0]).convert("RGB").crop((0, 0, 301, 257))


def jpeg_variants() -> dict[str, bytes]:
    """Every kind of JPEG the fast path accepts, encoded from a real photo."""
    image = photo()
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: the stored orientation is kept
    variants = {
        "4:2:0": jpeg_bytes(image, quality=90),
        "4:2:2": jpeg_bytes(image, subsampling=1),
        "4:4:4": jpeg_bytes(image, subsampling=0),
        "gray": jpeg_bytes(image.convert("L")),
        "progressive": jpeg_bytes(image, progressive=True),
        "progressive gray": jpeg_bytes(image.convert("L"), progressive=True),
        "restart markers": jpeg_bytes(image, restart_marker_blocks=2),
        "optimized tables": jpeg_bytes(image, optimize=True),
        "quality 100": jpeg_bytes(image, quality=100, subsampling=0),
        "odd size": jpeg_bytes(image.crop((0, 0, 17, 9))),
        "exif rotated": jpeg_bytes(image, exif=exif),
    }
    variants["adobe ycbcr"] = with_adobe_marker(variants["4:2:0"], 1)
    variants["adobe rgb"] = with_adobe_marker(variants["4:4:4"], 0)
    return variants


@pytest.mark.parametrize("path", REAL_JPEGS, ids=os.path.basename)
def test_real_jpegs_decode_as_pillow_does(path):
    data = read_file(path)
    fast = jpeg.decode_fast(data, path, OPTIONS)
    assert fast is not None, "the fast path must take an ordinary JPEG"
    assert_same_image(fast, pillow_image(data))
    assert_same_image(read_image(path, OPTIONS), pillow_image(data))


@pytest.mark.parametrize("kind", sorted(jpeg_variants()))
def test_every_accepted_jpeg_kind_is_identical_to_pillow(kind):
    data = jpeg_variants()[kind]
    fast = jpeg.decode_fast(data, "x.jpg", OPTIONS)
    assert fast is not None, f"the fast path must take {kind}"
    assert_same_image(fast, pillow_image(data))


def test_exif_orientation_is_kept_as_stored():
    image = photo()
    data = jpeg_variants()["exif rotated"]
    assert jpeg.decode_fast(data, "x.jpg", OPTIONS).pixels.shape[1:] == (image.height, image.width)


def test_mpo_gives_its_primary_picture():
    first, second = photo(), photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    data = buffer.getvalue()
    assert_same_image(jpeg.decode_fast(data, "x.mpo", OPTIONS), pillow_image(data))


def set_frame_field(data: bytes, marker: int | None = None, precision: int | None = None) -> bytes:
    """``data`` with its SOF marker or precision byte changed (the routing reads only the header)."""
    frame = data.index(b"\xff\xc0")
    changed = bytearray(data)
    if marker is not None:
        changed[frame + 1] = marker
    if precision is not None:
        changed[frame + 4] = precision
    return bytes(changed)


@pytest.mark.parametrize("why, change", [
    ("arithmetic coding", dict(marker=0xC9)),
    ("lossless", dict(marker=0xC3)),
    ("12-bit samples", dict(precision=12)),
])
def test_kinds_not_proven_identical_are_left_to_pillow(why, change):
    data = set_frame_field(jpeg_variants()["4:2:0"], **change)
    assert not jpeg.frame_header(data).fast
    assert jpeg.decode_fast(data, "x.jpg", OPTIONS) is None


def test_cmyk_goes_to_pillow_and_is_refused_as_before():
    data = jpeg_bytes(photo().convert("CMYK"))
    assert jpeg.decode_fast(data, "x.jpg", OPTIONS) is None
    with pytest.raises(ReadError, match="CMYK"):
        decode_image(data, "x.jpg")


def test_other_chroma_subsampling_is_left_to_pillow():
    frame = jpeg.JpegFrame(0xC0, 8, 10, 10, ((1, 1, 2), (2, 1, 1), (3, 1, 1)))  # 4:4:0
    assert not frame.fast
    assert jpeg.JpegFrame(0xC2, 8, 10, 10, ((1, 2, 2), (2, 1, 1), (3, 1, 1))).fast


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_jpeg_is_refused_not_filled(keep):
    data = jpeg_variants()["4:2:0"]
    cut = data[: int(len(data) * keep)]
    assert jpeg.decode_fast(cut, "x.jpg", OPTIONS) is None  # libjpeg-turbo's warning is not ignored
    with pytest.raises(ReadError, match="shard.tar:x.jpg.*truncated"):
        decode_image(cut, "shard.tar:x.jpg")


def test_jpeg_pixel_limit_is_checked_from_the_header():
    data = jpeg_variants()["4:2:0"]
    with pytest.raises(ReadError, match="exceed the limit"):
        jpeg.decode_fast(data, "x.jpg", ReadOptions(max_pixels=100))


# --- PNG ---------------------------------------------------------------------------------


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # (x0, y0, dx, dy)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _packed_rows(samples: np.ndarray, depth: int) -> list[bytes]:
    """Each row of ``samples`` ``(H, W, S)`` as PNG stores it (big-endian, bits packed), unfiltered."""
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in samples]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in samples]
    return [np.packbits(np.unpackbits(row.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - depth:].reshape(-1)).tobytes()
            for row in samples]


def make_png(samples: np.ndarray, depth: int, colour_type: int, extra: bytes = b"", interlaced: bool = False) -> bytes:
    """A PNG written byte by byte (any colour type, bit depth and Adam7 interlacing)."""
    samples = samples.reshape(samples.shape[0], samples.shape[1], -1)
    height, width = samples.shape[:2]
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row for row in _packed_rows(sub, depth))
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlaced))
    return (png.SIGNATURE + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def _palette(entries: int) -> bytes:
    return _chunk(b"PLTE", np.random.default_rng(entries).integers(0, 256, (entries, 3), np.uint8).tobytes())


PNG_KINDS = [  # (colour type, bit depth, samples per pixel, whether libspng takes it)
    (0, 1, 1, True), (0, 2, 1, True), (0, 4, 1, True), (0, 8, 1, True), (0, 16, 1, False),
    (2, 8, 3, True), (2, 16, 3, False),
    (3, 1, 1, True), (3, 2, 1, True), (3, 4, 1, True), (3, 8, 1, True),
    (4, 8, 2, False), (4, 16, 2, False),
    (6, 8, 4, True), (6, 16, 4, True),
]


@pytest.mark.parametrize("interlaced", [False, True], ids=["plain", "adam7"])
@pytest.mark.parametrize("colour_type, depth, samples, fast_kind", PNG_KINDS)
def test_every_png_colour_type_and_depth_is_identical_to_pillow(colour_type, depth, samples, fast_kind, interlaced):
    rng = np.random.default_rng(colour_type * 100 + depth)
    values = rng.integers(0, 2 ** depth, (13, 11, samples))
    extra = _palette(2 ** depth) if colour_type == 3 else b""
    data = make_png(values, depth, colour_type, extra, interlaced)
    fast = png.decode_fast(data, "x.png", OPTIONS, png.png_header(data))
    assert (fast is not None) == fast_kind
    decoded = decode_image(data, "x.png", OPTIONS)
    if depth == 16 and colour_type in (2, 4, 6):  # Pillow cuts these to 8 bits: the file's values decide
        assert decoded.pixels.dtype == np.uint16
        assert np.array_equal(decoded.pixels, values.astype(np.uint16).transpose(2, 0, 1))
    else:
        assert_same_image(decoded, pillow_image(data))
    if fast is not None:
        assert_same_image(fast, decoded)


@pytest.mark.parametrize("path", REAL_PNGS, ids=os.path.basename)
def test_real_pngs_decode_as_pillow_does(path):
    data = read_file(path)
    header = png.png_header(data)
    fast = png.decode_fast(data, path, OPTIONS, header)
    reference = pillow_image(data)
    if fast is None:  # tRNS, APNG, or a kind libspng does not take: the Pillow path is what read_image uses
        assert header.transparency or header.animated or header.bit_depth == 16 or header.colour_type == 4
    else:
        assert_same_image(fast, reference)
    assert_same_image(read_image(path, OPTIONS), reference)


def test_significant_bits_come_with_the_fast_path():
    values = np.random.default_rng(3).integers(0, 4096, (9, 9, 4))
    data = make_png(values, 16, 6, extra=_chunk(b"sBIT", bytes([12, 12, 12, 12])))
    assert png.decode_fast(data, "x.png", OPTIONS, png.png_header(data)).significant_bits == 12


@pytest.mark.parametrize("chunk", [
    _chunk(b"tRNS", struct.pack(">H", 7)),  # a gray colour key: Pillow keeps one channel
    _chunk(b"acTL", struct.pack(">II", 1, 0)),  # an APNG: every frame, not the default image
])
def test_transparency_and_animation_are_left_to_pillow(chunk):
    data = make_png(np.zeros((4, 4, 1), np.uint8), 8, 0, extra=chunk)
    assert png.decode_fast(data, "x.png", OPTIONS, png.png_header(data)) is None


def test_palette_with_transparency_still_gives_rgba():
    extra = _palette(4) + _chunk(b"tRNS", bytes([0, 255, 128]))
    data = make_png(np.random.default_rng(4).integers(0, 4, (6, 5, 1)), 8, 3, extra)
    image = decode_image(data, "x.png", OPTIONS)
    assert image.channels == ("red", "green", "blue", "alpha") and image.palette


def test_png_missing_rows_is_refused_by_the_fallback():
    """libpng refuses a stream with fewer rows than IHDR says; the Pillow path names the rows."""
    complete = make_png(np.zeros((6, 10, 1), np.uint8), 8, 0)
    header = struct.pack(">IIBBBBB", 10, 8, 8, 0, 0, 0, 0)  # declares 8 rows, holds 6
    short = complete[:8] + _chunk(b"IHDR", header) + complete[8 + 25:]
    assert png.decode_fast(short, "x.png", OPTIONS, png.png_header(short)) is None
    with pytest.raises(ReadError, match="6 of 8 rows"):
        decode_image(short, "x.png")


def test_png_truncated_file_is_refused():
    data = read_file(os.path.join(SKIMAGE, "camera.png"))
    with pytest.raises(ReadError, match="member.png"):
        decode_image(data[: len(data) // 2], "member.png")


@pytest.mark.parametrize("chunk", [b"IDAT", b"IHDR", b"tEXt", b"sBIT"])
def test_png_with_a_damaged_chunk_is_refused_whatever_decodes_it(chunk):
    """A chunk failing its CRC is damage: Pillow would read a damaged IDAT as wrong pixels, and
    libspng would drop a damaged sBIT that the header reader had believed."""
    extra = _chunk(b"tEXt", b"Comment\x00hello") + _chunk(b"sBIT", bytes([4]))
    data = bytearray(make_png(np.arange(20, dtype=np.uint8).reshape(4, 5, 1), 8, 0, extra=extra))
    crc_end = data.index(chunk) + 4 + struct.unpack(">I", data[data.index(chunk) - 4:data.index(chunk)])[0] + 4
    data[crc_end - 1] ^= 1
    with pytest.raises(ReadError, match=f"{chunk.decode()} chunk fails its CRC check"):
        decode_image(bytes(data), "x.png")


def test_corrupt_jpeg_is_refused_even_when_the_program_loads_truncated_images(monkeypatch):
    """libjpeg-turbo cannot decode it; Pillow under LOAD_TRUNCATED_IMAGES would give black."""
    from PIL import ImageFile

    data = bytearray(jpeg_variants()["4:2:0"])
    table = data.index(b"\xff\xc4")
    data[table + 5:table + 21] = b"\xff" * 16  # impossible Huffman code counts
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ReadError, match="cannot decode"):
        decode_image(bytes(data), "x.jpg")


def test_png_pixel_limit_is_checked_from_the_header():
    data = make_png(np.zeros((20, 20, 1), np.uint8), 8, 0)
    with pytest.raises(ReadError, match="exceed the limit"):
        png.decode_fast(data, "x.png", ReadOptions(max_pixels=100), png.png_header(data))


# --- bytes and paths ---------------------------------------------------------------------


@pytest.mark.parametrize("path", REAL_JPEGS[:1] + REAL_PNGS[:2], ids=os.path.basename)
@pytest.mark.parametrize("form", [bytes, bytearray, memoryview])
def test_decode_from_any_buffer_equals_read_from_path(path, form):
    assert_same_image(decode_image(form(read_file(path)), os.path.basename(path), OPTIONS), read_image(path, OPTIONS))


@pytest.mark.parametrize("path", REAL_JPEGS[:1] + REAL_PNGS[:1], ids=os.path.basename)
def test_a_name_without_extension_is_sniffed(path):
    data = read_file(path)
    assert sniff_extension(data) == os.path.splitext(path)[1]
    assert_same_image(decode_image(data, "sample-0001", OPTIONS), read_image(path, OPTIONS))


def test_unknown_bytes_are_refused_naming_them():
    with pytest.raises(ReadError, match="archive.zip:notes: not a supported image format"):
        decode_image(b"plain text", "archive.zip:notes")
    with pytest.raises(ReadError, match="empty"):
        decode_image(b"", "archive.zip:empty.png")


def test_a_path_is_opened_once(tmp_path, monkeypatch):
    """One open per file: the reader reads the bytes once and parses them in memory."""
    import builtins

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, *args, **kwargs: opened.append(file) or real_open(file, *args, **kwargs))
    read_image(str(path))
    assert opened == [str(path)]


# --- the reused output buffer ------------------------------------------------------------


def test_statistics_with_a_reused_buffer_equal_fresh_arrays(tmp_path):
    """compute_stats decodes every file into one reused buffer; the counts must equal a float64
    reference over fresh decodes of every file."""
    import imagenorm

    variants = jpeg_variants()
    for kind in ("4:2:0", "4:4:4", "progressive", "restart markers"):
        (tmp_path / f"{kind.replace(':', '')}.jpg").write_bytes(variants[kind])
    paths = sorted(str(path) for path in tmp_path.iterdir())
    values = np.concatenate([read_image(path).pixels.reshape(3, -1) for path in paths], axis=1).astype(np.float64)
    stats = imagenorm.compute_stats(paths)
    assert [channel.mean for channel in stats.channels] == pytest.approx(values.mean(axis=1), rel=1e-12)
    assert [channel.max for channel in stats.channels] == list(values.max(axis=1))


def test_a_dataset_that_keeps_what_it_decodes_is_not_overwritten(tmp_path):
    """A Dataset's own code may keep decoded arrays (a cache): it never gets the reused buffer."""
    import imagenorm

    for index, kind in enumerate(("4:2:0", "4:4:4", "gray")):
        (tmp_path / f"{index}.jpg").write_bytes(jpeg_variants()[kind])
    paths = sorted(str(path) for path in tmp_path.iterdir())[:2]

    class Caching:
        def __init__(self):
            self.kept = {}

        def __len__(self):
            return len(paths)

        def __getitem__(self, index):
            self.kept[index] = read_image(paths[index]).pixels
            return self.kept[index]

    dataset = Caching()
    imagenorm.compute_stats(dataset)
    for index, path in enumerate(paths):
        assert np.array_equal(dataset.kept[index], read_image(path).pixels)


def test_a_reused_buffer_serves_only_while_entered():
    from imagenorm.readers.base import ReusedBuffer

    data = jpeg_variants()["4:2:0"]
    buffer = ReusedBuffer()
    with buffer:
        first = decode_image(data, "a.jpg").pixels
        second = decode_image(data, "b.jpg").pixels
    outside = decode_image(data, "c.jpg").pixels
    assert np.shares_memory(first, second) and np.shares_memory(first, buffer.memory)
    assert not np.shares_memory(outside, buffer.memory)


# --- review and trial findings ----------------------------------------------------------


def test_pillow_here_decodes_as_the_fast_path():
    """The fast path runs only where Pillow is built on libjpeg-turbo and agrees on a check image."""
    assert jpeg.same_as_pillow()


def test_corrupt_entropy_data_is_refused_not_decoded_as_garbage():
    """A stray restart marker inside the scan: libjpeg-turbo warns "premature end of data segment"
    and Pillow would return garbage pixels without a word."""
    data = jpeg_variants()["4:4:4"]
    start = data.index(b"\xff\xda") + 200
    for offset in range(start, len(data) - 100, 331):
        damaged = data[:offset] + b"\xff\xd3\x00\x00" + data[offset + 4:]
        with pytest.raises(ReadError) as caught:
            decode_image(damaged, "x.jpg")
        if "premature end of data segment" in str(caught.value):
            assert "x.jpg: damaged: Corrupt JPEG data" in str(caught.value)
            return
    pytest.fail("no offset gave the warning")


def test_extraneous_bytes_before_the_end_are_read_as_pillow_reads_them():
    """Padding before EOI (some cameras write it) is a harmless warning: the picture is Pillow's."""
    data = jpeg_variants()["4:2:0"]
    padded = data[:-2] + b"\x00" * 7 + data[-2:]
    assert_same_image(decode_image(padded, "x.jpg", OPTIONS), pillow_image(padded))


def test_data_with_a_png_signature_but_no_ihdr_is_not_taken_for_a_png():
    data = png.SIGNATURE + _chunk(b"tEXt", b"Comment\x00hi") + b"\x00" * 40
    assert png.png_header(data) is None
    with pytest.raises(ReadError, match="x.png: cannot decode"):
        decode_image(data, "x.png")


def test_a_16_bit_rgb_png_cut_before_iend_is_refused():
    data = make_png(np.zeros((4, 4, 3), np.uint16), 16, 2)
    with pytest.raises(ReadError, match="truncated"):
        decode_image(data[:-6], "x.png")


def test_decode_image_takes_only_bytes_and_reads_wide_memoryviews_as_bytes():
    from imagenorm.errors import InputError

    data = read_file(REAL_PNGS[0])
    with pytest.raises(InputError, match="expected the image's bytes"):
        decode_image(REAL_PNGS[0], "a.png")
    padded = data + b"\x00" * (-len(data) % 2)  # chunks after IEND are never read
    wide = memoryview(np.frombuffer(padded, np.uint16))
    assert_same_image(decode_image(wide, "a.png", OPTIONS), decode_image(data, "a.png", OPTIONS))


def test_a_nested_reused_buffer_gives_the_outer_one_back():
    from imagenorm.readers.base import ReusedBuffer, output_array

    outer, inner = ReusedBuffer(), ReusedBuffer()
    with outer:
        with inner:
            assert np.shares_memory(output_array((4,), np.uint8), inner.memory)
        assert np.shares_memory(output_array((4,), np.uint8), outer.memory)
    assert output_array((4,), np.uint8) is None
