"""The fast JPEG (libjpeg-turbo) and PNG (libspng) decoders as a user meets them, on files made
by the tools users have (Pillow, OpenCV, imagecodecs, hand-made PNG chunks), against an
independent reference: Pillow's own decode, OpenCV for 16-bit colour, numpy float64 for the
statistics. Each test comes from a user trial of issue 11; its docstring says what a user
would have seen before the fix, where there was a finding.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

import imagenorm
from imagenorm import ReadError, ReadOptions, decode_image, read_image
from imagenorm.stats.summary import PERCENTILES, percentile_key

# --------------------------------------------------------------------------- helpers

KEEP = ReadOptions(alpha="keep")  # compare every channel with the reference (alpha is dropped by default)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    value = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", value & 0xFFFFFFFF)


def png_bytes(samples: np.ndarray, depth: int, colour_type: int, *, interlaced: bool = False, before=(),
              palette: bytes | None = None, after_palette=()) -> bytes:
    """A PNG written chunk by chunk: samples (H, W, samples per pixel), filter 0 on every row."""
    height, width, _ = samples.shape
    raw = b""
    for x0, y0, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        sub = samples[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub.reshape(sub.shape[0], -1):
            if depth == 16:
                packed = row.astype(">u2").tobytes()
            elif depth == 8:
                packed = row.astype(np.uint8).tobytes()
            else:
                bits = np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - depth:].ravel()
                packed = np.packbits(bits).tobytes()
            raw += b"\x00" + packed
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlaced))
    out = PNG_SIGNATURE + png_chunk(b"IHDR", header) + b"".join(before)
    if palette is not None:
        out += png_chunk(b"PLTE", palette)
    out += b"".join(after_palette)
    return out + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(height: int = 61, width: int = 83, seed: int = 0) -> np.ndarray:
    """A smooth picture with some noise, like a photo (odd sizes exercise the chroma edges)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.dstack([(x * 3) % 256, (y * 4) % 256, (x + 2 * y) % 256]).astype(np.int16)
    return np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


def pillow_pixels(data: bytes) -> np.ndarray:
    """Pillow's own samples, channel first (palette expanded as imagenorm does)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def chunks_of(data: bytes):
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        yield kind, offset, length
        offset += 12 + length


def numpy_reference(arrays: list[np.ndarray]) -> dict:
    channels = [np.concatenate([a[c].ravel() for a in arrays]).astype(np.float64) for c in range(arrays[0].shape[0])]

    def describe(values):
        return {"count": values.size, "mean": values.mean(), "std": values.std(), "min": values.min(),
                "max": values.max(), "percentiles": {percentile_key(q): np.percentile(values, q) for q in PERCENTILES}}

    return {"channels": [describe(v) for v in channels], "pooled": describe(np.concatenate(channels))}


def assert_summary(got: dict, want: dict) -> None:
    assert got["count"] == want["count"]
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
    assert got["std"] == pytest.approx(want["std"], rel=1e-12)
    assert got["min"] == want["min"] and got["max"] == want["max"]
    assert {k: float(v) for k, v in got["percentiles"].items()} == want["percentiles"]


# =========================================================================== FINDINGS (fail now)


def test_failed_png_fast_decodes_do_not_drain_the_reference_count_of_none():
    """Every PNG that libpng refuses (truncated, a CRC error, a missing checksum) costs one
    reference to ``None``: imagecodecs.png_decode's error path decrements Py_None once too
    often. On Python 3.11 None is not immortal, so a long run over damaged PNGs drives its
    count to zero and the interpreter aborts (see the next test). 2,000 truncated PNGs here."""
    buffer = io.BytesIO()
    Image.fromarray(photo(16, 16)).save(buffer, "PNG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    decode_image(buffer.getvalue(), "whole.png")  # first use: imports and caches settle
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(2000):
        with pytest.raises(ReadError):
            decode_image(truncated, "cut.png")
    gc.collect()  # exceptions and their tracebacks form cycles that hold references until collected
    # the bug cost one reference per refused file (~1,760 of 2,000); other tests' objects freed
    # meanwhile move the count by a few hundred at most
    assert sys.getrefcount(None) > before - 1000, f"None lost {before - sys.getrefcount(None)} references"


def test_a_dataset_with_many_damaged_pngs_does_not_crash_the_interpreter(tmp_path):
    """What a user sees: ``imagenorm stats folder --on-error skip`` over a folder holding 60,000
    PNGs whose last 20 bytes are missing (a partial download; Pillow reads them, libpng refuses
    them first) dies after 26 s with ``Fatal Python error: none_dealloc: deallocating None: bug
    likely caused by a refcount error in a C extension``, exit status 134 (SIGABRT) and no stats
    file; with 25,000 such files it writes the file, then aborts at exit (status 134). The old
    Pillow reader finished with status 0. Reproduced here by decoding such an 8x8 PNG 30,000
    times in a child process (~10 s)."""
    script = textwrap.dedent("""
        import io, numpy as np
        from PIL import Image
        import imagenorm
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, "PNG")
        damaged = buffer.getvalue()[:-20]   # IEND and the zlib checksum missing
        for _ in range(30000):
            try:
                imagenorm.decode_image(damaged, "a.png")
            except imagenorm.ReadError:
                pass
        print("finished")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-500:]


def test_png_with_a_bad_crc_in_a_text_chunk_is_refused_as_pillow_and_before(tmp_path):
    """A PNG whose tEXt chunk fails its CRC (bit rot, a buggy metadata editor) is corrupt:
    Pillow refuses it ("broken PNG file"), imagenorm before issue 11 refused it, and the same
    file with a tRNS chunk (decoded by Pillow) is still refused. The libpng fast path only warns
    ("PNG warning: tEXt: CRC error" on stderr) and measures it, so whether a damaged file is
    accepted depends on whether it has transparency. The module says a CRC mismatch goes to Pillow."""
    samples = photo(20, 30)
    bad_text = png_chunk(b"tEXt", b"Software\x00editor", crc=0x12345678)
    plain = png_bytes(samples, 8, 2, before=[bad_text])
    with_trns = png_bytes(samples, 8, 2, before=[bad_text], after_palette=[png_chunk(b"tRNS", b"\x00\x01\x00\x02\x00\x03")])
    with pytest.raises(Exception):
        np.asarray(Image.open(io.BytesIO(plain)))  # the reference refuses it
    with pytest.raises(ReadError):
        decode_image(with_trns, "b.png")  # the Pillow path of imagenorm refuses it
    path = tmp_path / "a.png"
    path.write_bytes(plain)
    with pytest.raises(ReadError):
        read_image(path)


def test_png_with_a_bad_crc_in_sbit_does_not_declare_significant_bits(tmp_path):
    """libpng discards an sBIT chunk whose CRC fails, but imagenorm still reads the declared
    bits from it and reports ``significant_bits=4`` for an 8-bit image that uses all 8
    (recorded in the stats file); before issue 11 the file was refused."""
    samples = photo(20, 30)
    data = png_bytes(samples, 8, 2, before=[png_chunk(b"sBIT", b"\x04\x04\x04", crc=1)])
    try:
        image = decode_image(data, "a.png")
    except ReadError:
        return  # refused as corrupt: fine
    assert image.significant_bits is None


def _interlaced_png() -> bytes:
    return png_bytes(photo(17, 13).astype(np.int64), 8, 2, interlaced=True)


def _gray_png_with_the_rgb_profile_pillow_kept() -> bytes:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = Image.fromarray(photo())
    rgb.info["icc_profile"] = srgb
    gray = rgb.convert("L")  # Pillow keeps the RGB profile and writes it into the gray PNG
    return encoded(gray, "PNG")


@pytest.mark.parametrize("make", [_interlaced_png, _gray_png_with_the_rgb_profile_pillow_kept],
                         ids=["interlaced", "gray-with-rgb-icc"])
def test_decoding_a_valid_png_logs_no_warning(make, caplog):
    """Every interlaced PNG logs "PNG warning: Interlace handling should be turned on when using
    png_read_image" (imagecodecs calls png_read_image without png_set_interlace_handling), and
    every gray PNG that Pillow saved with the photo's RGB ICC profile logs "PNG warning: iCCP:
    profile 'ICC Profile': 'RGB ': RGB color space not permitted on grayscale PNG", through the
    ``imagecodecs`` logger at WARNING. Without logging configured Python prints each to stderr:
    ``imagenorm stats`` over 100,000 such files prints 100,000 lines (seen: 60 lines for a folder
    of 60 interlaced PNGs). The old reader was silent; imagenorm silences OpenCV's log for the
    same reason."""
    data = make()
    with caplog.at_level(logging.WARNING):
        image = decode_image(data, "a.png")
    assert np.array_equal(image.pixels, pillow_pixels(data))
    assert [record.getMessage() for record in caplog.records] == []


def test_cli_stats_over_interlaced_pngs_prints_only_its_report(tmp_path):
    """The same seen from the command line: stderr of ``imagenorm stats`` holds one
    "PNG warning: ..." line per interlaced PNG."""
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(5):
        (folder / f"{index}.png").write_bytes(png_bytes(photo(17, 13, seed=index).astype(np.int64), 8, 2, interlaced=True))
    done = subprocess.run([sys.executable, "-m", "imagenorm", "stats", str(folder), "-o", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert "PNG warning" not in done.stderr + done.stdout, done.stderr


def test_png_cut_inside_its_header_says_truncated_not_a_struct_error(tmp_path):
    """A PNG cut within its first 29 bytes (a failed download, a zero-padded copy) is reported
    as "cannot decode: unpack requires a buffer of 13 bytes": Python's struct module speaking,
    not a reason a user can act on. Before issue 11 it read "not an image, or an unknown or
    corrupt format" or "Truncated File Read"."""
    data = encoded(Image.fromarray(photo()), "PNG")[:24]
    (tmp_path / "a.png").write_bytes(data)
    for attempt in (lambda: decode_image(data, "a.png"), lambda: read_image(tmp_path / "a.png")):
        with pytest.raises(ReadError) as caught:
            attempt()
        assert "unpack" not in str(caught.value)
        assert "truncated" in str(caught.value).lower() or "corrupt" in str(caught.value).lower()


@pytest.mark.parametrize("name", ["photo.jfif", "anim.apng", "download"])
def test_read_image_reads_what_decode_image_reads(tmp_path, name):
    """``decode_image(data, "photo.jfif")`` decodes the JPEG (the name's extension is unknown, so the
    bytes are sniffed), but ``read_image("photo.jfif")`` says "not a supported image format (.jfif)"
    and ``imagenorm stats`` ignores such files as "not images". .jfif is what Chrome and Windows
    save JPEGs as; .apng is the APNG extension; a file without extension is a plain download.
    decode_image promises that every guarantee of read_image holds: the two disagree."""
    data = encoded(Image.fromarray(photo()), "JPEG") if name != "anim.apng" else encoded(
        Image.fromarray(photo()), "PNG", save_all=True, append_images=[Image.fromarray(photo(seed=1))])
    path = tmp_path / name
    path.write_bytes(data)
    from_bytes = decode_image(data, name)
    from_path = read_image(path)
    assert np.array_equal(from_path.pixels, from_bytes.pixels)


def _progressive_jpeg() -> bytes:
    return encoded(Image.fromarray(photo(64, 96)), "JPEG", quality=90, progressive=True)


def test_corrupt_jpeg_is_refused_even_when_the_program_set_load_truncated_images(monkeypatch):
    """Training scripts very often set ``ImageFile.LOAD_TRUNCATED_IMAGES = True``. A JPEG with one
    corrupt byte in its Huffman table is refused by default ("broken data stream"), but with the
    flag set imagenorm returns an all-black image (every sample 0) and ``stats`` averages it in.
    The fast path hands every file libjpeg-turbo warns about to Pillow, whose verdict then hangs
    on that process-wide flag (pre-existing, but now the designed route for every damaged JPEG)."""
    data = bytearray(_progressive_jpeg())
    data[data.find(b"\xff\xc4") + 5] ^= 0x55
    with pytest.raises(ReadError):
        decode_image(bytes(data), "a.jpg")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ReadError):
        decode_image(bytes(data), "a.jpg")


def wrong_decodes(original: bytes, reference: np.ndarray, positions, flip: int) -> list[tuple[int, int]]:
    """(position, samples wrong) for each copy of ``original`` with the byte at ``position``
    XORed with ``flip`` that decodes without an error to pixels other than ``reference``."""
    wrong = []
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= flip
        try:
            pixels = decode_image(bytes(damaged), "a.png").pixels
        except ReadError:
            continue
        if not np.array_equal(pixels, reference):
            wrong.append((position, int((pixels != reference).sum())))
    return wrong


def test_corrupt_png_is_refused_even_when_the_program_set_load_truncated_images(monkeypatch):
    """Same for PNG: a Pillow-written PNG with one flipped byte in its IDAT data (libpng refuses
    it: CRC error) is refused by default, but with ``LOAD_TRUNCATED_IMAGES = True`` imagenorm
    returns some of them with their lower rows garbage. Every 40th byte of the IDAT data is
    flipped in turn; whatever is returned must be the original pixels."""
    original = encoded(Image.fromarray(photo(83, 97)), "PNG")
    reference = pillow_pixels(original)
    kind, offset, length = next(c for c in chunks_of(original) if c[0] == b"IDAT")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    wrong = wrong_decodes(original, reference, range(offset + 8, offset + 8 + length, 40), flip=0x04)
    assert not wrong, f"{len(wrong)} corrupt files returned (position, samples wrong): {wrong[:5]}"


@pytest.mark.parametrize("writer", ["pillow", "opencv"])
def test_bit_rot_in_png_pixel_data_is_never_returned_as_pixels(writer):
    """One flipped bit near the end of a PNG's IDAT data (bit rot; the chunk CRC no longer matches)
    is often accepted with wrong pixels: libpng notices (CRC error, or "IDAT: incorrect data check"
    when the zlib checksum sits in a later IDAT), but imagenorm then falls back to Pillow, which
    checks neither. Here every third byte of the last 300 is flipped in turn; any decode that
    returns pixels must return the original ones. Pre-existing in Pillow, but the fast decoder
    had the evidence in hand."""
    samples = photo(96, 128)
    original = encoded(Image.fromarray(samples), "PNG") if writer == "pillow" else cv2.imencode(".png", samples[..., ::-1])[1].tobytes()
    reference = pillow_pixels(original)  # Pillow, not the code under test
    idat = [(offset, length) for kind, offset, length in chunks_of(original) if kind == b"IDAT"]
    end = idat[-1][0] + 8 + idat[-1][1]
    wrong = wrong_decodes(original, reference, range(end - 300, end, 3), flip=0x10)
    assert not wrong, f"{len(wrong)} damaged files gave wrong pixels (position, samples wrong): {wrong[:5]}"


# =========================================================================== VERIFIED (pass now)


JPEG_OPTIONS = [
    dict(quality=q, subsampling=s, progressive=p, optimize=o)
    for q in (10, 75, 95, 100) for s in (0, 1, 2) for p in (False, True) for o in (False, True)
] + [dict(quality=75, restart_marker_blocks=3), dict(quality=90, restart_marker_rows=1, progressive=True)]


@pytest.mark.parametrize("size", [(61, 83), (1, 1), (1, 129), (131, 1)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_pillow_jpegs_of_every_option_decode_as_pillow_does(tmp_path, mode, size):
    """Pillow's quality/subsampling/progressive/optimize/restart options, gray and colour, odd and
    one-pixel sizes: read_image, decode_image (bytes, and a name without extension) equal Pillow."""
    image = Image.fromarray(photo(*size)).convert(mode)
    for index, options in enumerate(JPEG_OPTIONS):
        if mode == "L":
            options = {k: v for k, v in options.items() if k != "subsampling"}
        data = encoded(image, "JPEG", **options)
        path = tmp_path / f"{index}.jpg"
        path.write_bytes(data)
        want = pillow_pixels(data)
        assert np.array_equal(read_image(path).pixels, want), options
        assert np.array_equal(decode_image(data, "blob").pixels, want), options


@pytest.mark.parametrize("sampling", [0x111111, 0x211111, 0x221111, 0x411111, 0x121111])
@pytest.mark.parametrize("progressive", [0, 1])
def test_opencv_jpegs_of_every_chroma_sampling_decode_as_pillow_does(sampling, progressive):
    """cv2.imencode at 4:4:4, 4:2:2, 4:2:0 (fast path) and 4:1:1, 4:4:0 (left to Pillow)."""
    bgr = photo(77, 101)[..., ::-1]
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_PROGRESSIVE, progressive,
                                          cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling, cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert np.array_equal(decode_image(data.tobytes(), "a.jpg").pixels, pillow_pixels(data.tobytes()))


def test_jpeg_extras_decode_as_pillow_does():
    """ICC profile (spanning several APP2 segments), every EXIF orientation (kept as stored), an MPO's
    primary picture, a JPEG thumbnail inside APP1, fill bytes, trailing garbage, two JPEGs concatenated."""
    image = Image.fromarray(photo())
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plain = encoded(image, "JPEG", quality=80)
    thumb = encoded(image.resize((20, 15)), "JPEG")
    app1 = b"Exif\x00\x00" + thumb
    cases = [encoded(image, "JPEG", icc_profile=srgb + bytes(150_000)),
             encoded(image, "MPO", save_all=True, append_images=[image.rotate(90)]),
             plain[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + plain[2:],
             plain[:2] + b"\xff\xff\xff" + plain[2:], plain + b"garbage" * 50, plain + thumb]
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases.append(encoded(image, "JPEG", exif=exif.tobytes()))
    for data in cases:
        assert np.array_equal(decode_image(data, "a.jpg").pixels, pillow_pixels(data))


@pytest.mark.parametrize("progressive", [False, True])
def test_damaged_jpegs_are_refused_or_decoded_exactly_as_pillow_does(tmp_path, progressive):
    """Cut at every 1/30th, the last 1-16 bytes gone, single bytes replaced in the entropy data:
    whenever imagenorm returns pixels they are Pillow's, and whatever Pillow refuses imagenorm
    refuses too (with a ReadError); bytes and path agree."""
    data = encoded(Image.fromarray(photo(64, 96)), "JPEG", quality=90, progressive=progressive)
    rng = np.random.default_rng(3)
    start = data.find(b"\xff\xda") + 20
    cases = [data[: len(data) * i // 30] for i in range(1, 30)] + [data[:-k] for k in (1, 2, 3, 4, 8, 16)]
    for position in rng.integers(start, len(data) - 2, 60):
        damaged = bytearray(data)
        damaged[position] = 0xFF if damaged[position] != 0xFF else 0x00
        cases.append(bytes(damaged))
    for index, case in enumerate(cases):
        path = tmp_path / f"{index}.jpg"
        path.write_bytes(case)
        try:
            want = pillow_pixels(case)
        except Exception:
            want = None
        try:
            got = decode_image(case, "a.jpg").pixels
        except ReadError:
            got = None
        if got is not None:
            assert want is not None and np.array_equal(got, want), index
        elif want is not None:
            pass  # imagenorm is allowed to be stricter than Pillow
        try:
            by_path = read_image(path).pixels
        except ReadError:
            by_path = None
        assert (by_path is None) == (got is None) and (got is None or np.array_equal(by_path, got))


def test_opencv_and_pillow_pngs_decode_as_the_references_do():
    """OpenCV PNGs at every compression level and strategy, 8/16-bit gray, BGR, BGRA, bilevel;
    Pillow PNGs in L/LA/RGB/RGBA/P/1/I;16 and 1/2/4-bit palettes: equal to Pillow (8 bits) and to
    cv2.IMREAD_UNCHANGED (16-bit colour)."""
    rgb = photo(83, 97)
    bgr = rgb[..., ::-1].copy()
    wide = (rgb.astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 257, rgb.shape)).astype(np.uint16)
    for level in (0, 3, 9):
        for strategy in range(5):
            data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy])[1].tobytes()
            assert np.array_equal(decode_image(data, "a.png").pixels, pillow_pixels(data))
    for array in (bgr[..., 0], np.dstack([bgr, rgb[..., :1]])):
        data = cv2.imencode(".png", array)[1].tobytes()
        assert np.array_equal(decode_image(data, "a.png", KEEP).pixels, pillow_pixels(data))
    data = cv2.imencode(".png", (bgr[..., 0] > 128).astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])[1].tobytes()
    assert np.array_equal(decode_image(data, "a.png").pixels, pillow_pixels(data))
    for array in (wide[..., 0], wide[..., ::-1], np.dstack([wide[..., ::-1], wide[..., :1]])):
        data = cv2.imencode(".png", array)[1].tobytes()
        want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if want.ndim == 3:
            want = want[..., [2, 1, 0, 3][: want.shape[2]]]
        want = want[None] if want.ndim == 2 else want.transpose(2, 0, 1)
        assert np.array_equal(decode_image(data, "a.png", KEEP).pixels, want)
    image = Image.fromarray(rgb)
    for mode in ("L", "LA", "RGB", "RGBA", "P", "1"):
        for options in ({"compress_level": 0}, {"compress_level": 9}, {"optimize": True}):
            data = encoded(image.convert(mode), "PNG", **options)
            assert np.array_equal(decode_image(data, "a.png", KEEP).pixels, pillow_pixels(data)), (mode, options)
    for bits in (1, 2, 4):
        data = encoded(image.quantize(2 ** bits), "PNG", bits=bits)
        assert np.array_equal(decode_image(data, "a.png").pixels, pillow_pixels(data))


@pytest.mark.parametrize("colour_type,depths", [(0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)), (4, (8, 16)), (6, (8, 16))])
def test_hand_made_pngs_with_chunks_decode_as_pillow_does(colour_type, depths):
    """Every colour type and depth, interlaced or not, with gAMA/cHRM/pHYs/tEXt/zTXt/private chunks
    and sBIT before IDAT, and a palette index beyond a short PLTE: equal to Pillow (16-bit colour to
    OpenCV)."""
    rng = np.random.default_rng(colour_type)
    spp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    extras = [png_chunk(b"gAMA", struct.pack(">I", 45455)), png_chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
              png_chunk(b"tEXt", b"Comment\x00hi"), png_chunk(b"zTXt", b"Raw\x00\x00" + zlib.compress(b"x" * 999)),
              png_chunk(b"prVt", b"private")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for depth in depths:
            for interlaced in (False, True):
                high = 7 if colour_type == 3 else 1 << depth
                samples = rng.integers(0, high, (19, 23, spp))
                if colour_type == 3:
                    samples[0, 0, 0] = min(200, (1 << depth) - 1)  # beyond the 7-entry palette
                palette = bytes(rng.integers(0, 256, 21, dtype=np.uint8)) if colour_type == 3 else None
                data = png_bytes(samples, depth, colour_type, interlaced=interlaced, before=extras, palette=palette)
                got = decode_image(data, "a.png", KEEP).pixels
                if depth == 16 and colour_type in (2, 6, 4):
                    want = samples.astype(np.uint16).transpose(2, 0, 1)
                else:
                    want = pillow_pixels(data)
                assert np.array_equal(got, want), (depth, interlaced)


def test_decode_from_any_buffer_equals_read_from_path(tmp_path):
    """bytes, bytearray, a memoryview slice of a larger buffer, a name without extension, and the
    wrong extension (a PNG named .jpg, a JPEG named .png): all equal read_image."""
    files = {"a.png": encoded(Image.fromarray(photo()).quantize(33), "PNG"),
             "b.jpg": encoded(Image.fromarray(photo()), "JPEG", progressive=True),
             "png_named.jpg": encoded(Image.fromarray(photo()), "PNG"),
             "jpeg_named.png": encoded(Image.fromarray(photo()).convert("L"), "JPEG")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        want = read_image(tmp_path / name)
        for buffer, label in ((data, name), (bytearray(data), name), (memoryview(b"xx" + data + b"yy")[2:-2], name), (data, "blob")):
            got = decode_image(buffer, label)
            assert np.array_equal(got.pixels, want.pixels) and got.channels == want.channels
        assert np.array_equal(want.pixels, pillow_pixels(data))


@pytest.fixture
def mixed_dataset(tmp_path):
    """JPEGs (Pillow, OpenCV at several samplings, progressive), PNGs (palette, interlaced, OpenCV),
    an MPO and files with the wrong extension; with their Pillow-decoded reference arrays."""
    folder = tmp_path / "data"
    folder.mkdir()
    arrays = []
    for index in range(12):
        rgb = photo(40 + index, 50 + 3 * index, seed=index)
        image = Image.fromarray(rgb)
        kinds = [encoded(image, "JPEG", quality=60 + 3 * index, subsampling=index % 3, progressive=bool(index % 2)),
                 cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, (0x111111, 0x221111, 0x411111)[index % 3]])[1].tobytes(),
                 encoded(image.quantize(64), "PNG"),
                 png_bytes(rgb.astype(np.int64), 8, 2, interlaced=True),
                 cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()]
        for kind, data in enumerate(kinds):
            suffix = (".jpg", ".jpeg", ".png", ".png", ".jpg")[kind]  # the last: a PNG named .jpg
            (folder / f"{index:02d}_{kind}{suffix}").write_bytes(data)
            arrays.append(pillow_pixels(data))
    mpo = encoded(Image.fromarray(photo(30, 30)), "MPO", save_all=True, append_images=[Image.fromarray(photo(30, 30, seed=9))])
    (folder / "stereo.mpo").write_bytes(mpo)
    arrays.append(pillow_pixels(mpo))
    return folder, numpy_reference(arrays)


@pytest.mark.parametrize("workers", [0, 2])
def test_compute_stats_matches_numpy_float64_over_every_pixel(mixed_dataset, workers):
    folder, want = mixed_dataset
    stats = imagenorm.compute_stats(str(folder), workers=workers)
    for got, expected in zip([*stats.channels, stats.pooled], [*want["channels"], want["pooled"]]):
        assert_summary({"count": got.count, "mean": got.mean, "std": got.std, "min": got.min, "max": got.max,
                        "percentiles": got.percentiles}, expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_stats_file_matches_numpy_float64(mixed_dataset, tmp_path, workers):
    folder, want = mixed_dataset
    output = tmp_path / "s.json"
    done = subprocess.run([sys.executable, "-m", "imagenorm", "stats", str(folder), "-o", str(output), "--workers", str(workers)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = json.loads(output.read_text())
    assert saved["files"] == 61
    for got, expected in zip([*saved["channels"], saved["pooled"]], [*want["channels"], want["pooled"]]):
        assert_summary(got, expected)


def test_cli_lists_each_bad_file_with_skip_and_stops_with_one_line_without(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    jpeg = encoded(Image.fromarray(photo()), "JPEG")
    png = encoded(Image.fromarray(photo()), "PNG")
    (folder / "good.jpg").write_bytes(jpeg)
    (folder / "good.png").write_bytes(png)
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    (folder / "noise.png").write_bytes(np.random.default_rng(0).bytes(3000))
    skip = subprocess.run([sys.executable, "-m", "imagenorm", "stats", str(folder), "--on-error", "skip", "-o", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300)
    assert skip.returncode == 0, skip.stderr
    skipped = {Path(row["path"]).name: row["reason"] for row in json.loads((tmp_path / "s.json").read_text())["skipped"]}
    assert set(skipped) == {"cut.jpg", "cut.png", "noise.png"}
    assert "truncated" in skipped["cut.jpg"] and "truncated" in skipped["cut.png"]
    for workers in ("0", "2"):
        fail = subprocess.run([sys.executable, "-m", "imagenorm", "stats", str(folder), "--workers", workers, "-o", str(tmp_path / "f.json")],
                              capture_output=True, text=True, timeout=300)
        lines = [line for line in fail.stderr.splitlines() if line.strip()]
        assert fail.returncode == 1 and "Traceback" not in fail.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and "cut.jpg" in lines[0], fail.stderr


@pytest.mark.parametrize("load_truncated", [False, True])
def test_truncated_jpeg_and_png_are_refused_whatever_load_truncated_images_says(monkeypatch, load_truncated):
    """Cut at every 1/25th (and just before the end of the pixel data): refused, with the flag or without."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    image = Image.fromarray(photo(64, 96))
    for data, name in ((encoded(image, "JPEG"), "a.jpg"), (encoded(image, "JPEG", progressive=True), "a.jpg"),
                       (encoded(image, "PNG"), "a.png"), (encoded(image.convert("L"), "PNG"), "a.png"),
                       (png_bytes(photo(64, 96).astype(np.int64), 8, 2, interlaced=True), "a.png")):
        idat_end = len(data) - 60  # inside the last rows of the zlib stream / the scan
        for cut in [len(data) * i // 25 for i in range(1, 25)] + [idat_end]:
            with pytest.raises(ReadError):
                decode_image(data[:cut], name)


def test_decoding_changes_no_process_wide_state():
    """Pillow's MAX_IMAGE_PIXELS and LOAD_TRUNCATED_IMAGES, the warnings filters and OpenCV's log level
    are the program's: decoding good and damaged JPEG/PNG (including the OpenCV 16-bit path) leaves them."""
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters), cv2.utils.logging.getLogLevel())
    jpeg = encoded(Image.fromarray(photo()), "JPEG")
    png16 = cv2.imencode(".png", photo().astype(np.uint16) * 257)[1].tobytes()
    trns16 = png_bytes(photo().astype(np.int64) * 257, 16, 2, after_palette=[png_chunk(b"tRNS", bytes(6))])
    for data, name in ((jpeg, "a.jpg"), (jpeg[:-100], "a.jpg"), (png16, "a.png"), (trns16, "a.png"), (trns16[:-40], "a.png")):
        try:
            decode_image(data, name)
        except ReadError:
            pass
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters), cv2.utils.logging.getLogLevel())


def test_garbage_and_cut_bytes_raise_only_read_error():
    """Random bytes, format signatures followed by noise, and JPEG/PNG/GIF/BMP/WebP/TIFF/npy/PGM
    bytes cut at every 1/20th or with three random bytes replaced, under a known extension or none:
    decode_image raises nothing but ReadError."""
    rng = np.random.default_rng(7)
    image = Image.fromarray(photo(37, 41))
    samples = {".jpg": encoded(image, "JPEG"), ".png": encoded(image, "PNG"), ".gif": encoded(image, "GIF"),
               ".bmp": encoded(image, "BMP"), ".webp": encoded(image, "WEBP", lossless=True),
               ".pgm": b"P5 41 37 255\n" + photo(37, 41)[..., 0].tobytes(),
               ".png ": png_bytes(photo(17, 13).astype(np.int64), 8, 2, interlaced=True)}
    buffer = io.BytesIO()
    np.save(buffer, photo())
    samples[".npy"] = buffer.getvalue()
    cases = []
    for extension, data in samples.items():
        extension = extension.strip()
        for i in range(1, 20):
            cases += [(data[: len(data) * i // 20], "x" + extension), (data[: len(data) * i // 20], "noext")]
        for _ in range(40):
            damaged = bytearray(data)
            for _ in range(3):
                damaged[int(rng.integers(len(data)))] = int(rng.integers(256))
            cases.append((bytes(damaged), "x" + extension))
    for _ in range(60):
        noise = rng.bytes(int(rng.integers(1, 2000)))
        for magic in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"\x93NUMPY", b"P5 "):
            cases += [(magic + noise, "m"), (magic + noise, "m.png"), (magic + noise, "m.jpg")]
    refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for data, name in cases:
            try:
                decode_image(data, name)
            except ReadError:
                refused += 1
    assert refused > len(cases) // 2  # most of these are damaged beyond reading: they must be refused, not read
