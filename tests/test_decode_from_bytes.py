"""Netpbm, TIFF, ``.npy`` and NIfTI decode bytes exactly as they read files.

For every kind of file, ``decode(read_file(p), p, options)`` must give what ``read(p, options)``
gives, every field of the DecodedImage (pixels byte for byte, dtype with its byte order); from a
``memoryview`` and a ``bytearray`` too. Data cut short are refused naming the name given, for the
reason a cut file is refused; the pixel limit is checked from the header, before any pixel is read.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import mmap
import struct
from pathlib import Path
from typing import Callable

import nibabel
import numpy as np
import pytest
import tifffile

from imagenorm.errors import ReadError
from imagenorm.readers import netpbm, nifti, numpy_file, tiff
from imagenorm.readers.base import DecodedImage, ReadOptions, read_file

NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
NAME = "shard.tar:0001"  # what an archive member is named by


def assert_same(got: DecodedImage, want: DecodedImage) -> None:
    """Every field equal; pixels in the same dtype (byte order included), shape and bytes."""
    for field in dataclasses.fields(DecodedImage):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if field.name == "pixels":
            assert (a.dtype.str, a.shape) == (b.dtype.str, b.shape)
            assert a.tobytes() == b.tobytes()
        else:
            assert a == b, field.name


# ------------------------------------------------------------------------------------ writers
def _netpbm(magic: str, shape: tuple[int, ...], maxval: int) -> Callable[[Path, np.random.Generator], None]:
    def write(path: Path, rng: np.random.Generator) -> None:
        pixels = rng.integers(0, maxval + 1, shape)
        height, width = shape[:2]
        header = f"{magic}\n# a comment\n{width} {height}\n" + ("" if magic in "P1 P4" else f"{maxval}\n")
        if magic == "P1":
            body = "\n".join(" ".join(map(str, row)) for row in pixels).encode()
        elif magic == "P4":
            body = np.packbits(pixels.astype(np.uint8), axis=1).tobytes()
        elif magic in ("P2", "P3"):
            body = "\n".join(" ".join(map(str, row.ravel())) for row in pixels).encode() + b"\n"
        else:
            body = pixels.astype(">u2" if maxval > 255 else "u1").tobytes()
        path.write_bytes(header.encode() + body)
    return write


def _tiff(make: Callable[[np.random.Generator], np.ndarray], **kwargs) -> Callable[[Path, np.random.Generator], None]:
    def write(path: Path, rng: np.random.Generator) -> None:
        tifffile.imwrite(path, make(rng), **kwargs)
    return write


def _tiff_series_of_two_shapes(path: Path, rng: np.random.Generator) -> None:
    with tifffile.TiffWriter(path) as tif:
        tif.write(rng.integers(0, 65536, (16, 12), dtype=np.uint16))
        tif.write(rng.integers(0, 65536, (9, 7), dtype=np.uint16))


def _palette_tiff(path: Path, rng: np.random.Generator) -> None:
    colormap = (rng.integers(0, 256, (3, 256)) * 257).astype(np.uint16)
    tifffile.imwrite(path, rng.integers(0, 256, (20, 16), dtype=np.uint8), photometric="palette", colormap=colormap)


def _npy(make: Callable[[np.random.Generator], np.ndarray], version: tuple[int, int] | None = None):
    def write(path: Path, rng: np.random.Generator) -> None:
        with open(path, "wb") as file:
            np.lib.format.write_array(file, make(rng), version=version)
    return write


def _nifti(kind, make: Callable[[np.random.Generator], np.ndarray], slope: float | None = None):
    def write(path: Path, rng: np.random.Generator) -> None:
        image = kind(make(rng), np.diag([0.5, 0.75, 2.0, 1.0]))
        if slope is not None:
            image.header.set_slope_inter(slope, -100.0)
        nibabel.save(image, path)
    return write


def _copy(name: str):
    def write(path: Path, rng: np.random.Generator) -> None:
        path.write_bytes((NIBABEL_DATA / name).read_bytes())
    return write


def _bytes(shape: tuple[int, ...]) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: rng.integers(0, 256, shape, dtype=np.uint8)


def _rgb24(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8).view([("R", "u1"), ("G", "u1"), ("B", "u1")])[..., 0]


CASES = {
    # Netpbm: plain and raw, bitmaps, 8 and 16 bits, a declared maximum below the dtype's
    "p1.pbm": (netpbm, _netpbm("P1", (9, 13), 1)),
    "p4.pbm": (netpbm, _netpbm("P4", (9, 13), 1)),
    "p2.pgm": (netpbm, _netpbm("P2", (9, 13), 4095)),
    "p5-8bit.pgm": (netpbm, _netpbm("P5", (9, 13), 255)),
    "p5-100.pgm": (netpbm, _netpbm("P5", (9, 13), 100)),
    "p5-16bit.pgm": (netpbm, _netpbm("P5", (9, 13), 65535)),
    "p3.ppm": (netpbm, _netpbm("P3", (9, 13, 3), 1000)),
    "p6-8bit.ppm": (netpbm, _netpbm("P6", (9, 13, 3), 255)),
    "p6-12bit.pnm": (netpbm, _netpbm("P6", (9, 13, 3), 4095)),
    # TIFF: pages, colours, floats, byte order, compression, tiles, palettes, bits, ImageJ, series
    "pages-uint16.tif": (tiff, _tiff(lambda rng: rng.integers(0, 65536, (3, 16, 12), dtype=np.uint16), photometric="minisblack")),
    "rgb-lzw.tif": (tiff, _tiff(_bytes((16, 12, 3)), photometric="rgb", compression="lzw")),
    "rgba.tiff": (tiff, _tiff(_bytes((16, 12, 4)), photometric="rgb", extrasamples=[2])),
    "rgb-jpeg.tif": (tiff, _tiff(_bytes((16, 16, 3)), photometric="rgb", compression="jpeg")),
    "float-tiled.tif": (tiff, _tiff(lambda rng: rng.normal(size=(32, 48)).astype(np.float32), tile=(16, 16))),
    "big-endian.tif": (tiff, _tiff(lambda rng: rng.integers(-3000, 3000, (16, 12), dtype=np.int16), byteorder=">")),
    "deflate-planar.tif": (tiff, _tiff(lambda rng: rng.integers(0, 65536, (3, 16, 12), dtype=np.uint16), photometric="minisblack",
                                       planarconfig="separate", compression="zlib")),
    "bilevel.tif": (tiff, _tiff(lambda rng: rng.integers(0, 2, (16, 12)).astype(bool))),
    "miniswhite.tif": (tiff, _tiff(lambda rng: rng.integers(0, 256, (16, 12), dtype=np.uint8), photometric="miniswhite")),
    "palette.tif": (tiff, _palette_tiff),
    "imagej.tif": (tiff, _tiff(lambda rng: rng.integers(0, 65536, (4, 2, 16, 12), dtype=np.uint16), imagej=True,
                               metadata={"axes": "ZCYX"})),
    "two-shapes.tif": (tiff, _tiff_series_of_two_shapes),
    # .npy: every layout, bool, byte order, Fortran order, header version 2.0
    "gray.npy": (numpy_file, _npy(lambda rng: rng.integers(0, 65536, (16, 12), dtype=np.uint16))),
    "channel-last.npy": (numpy_file, _npy(lambda rng: rng.integers(0, 256, (16, 12, 3), dtype=np.uint8))),
    "channel-first.npy": (numpy_file, _npy(lambda rng: rng.normal(size=(4, 16, 12)).astype(np.float32))),
    "volume.npy": (numpy_file, _npy(lambda rng: rng.integers(-3000, 3000, (5, 16, 12), dtype=np.int16))),
    "4d.npy": (numpy_file, _npy(lambda rng: rng.integers(0, 256, (2, 5, 16, 12), dtype=np.uint8))),
    "bool.npy": (numpy_file, _npy(lambda rng: rng.integers(0, 2, (16, 12)).astype(bool))),
    "big-endian.npy": (numpy_file, _npy(lambda rng: rng.integers(0, 65536, (16, 12)).astype(">u2"))),
    "fortran.npy": (numpy_file, _npy(lambda rng: np.asfortranarray(rng.normal(size=(16, 12, 3))))),
    "version2.npy": (numpy_file, _npy(lambda rng: rng.integers(0, 256, (16, 12), dtype=np.uint8), version=(2, 0))),
    # NIfTI-1 and NIfTI-2, .nii and .nii.gz: nibabel's own files and made ones
    "anatomical.nii": (nifti, _copy("anatomical.nii")),  # big-endian int16
    "functional.nii": (nifti, _copy("functional.nii")),  # 4-D, scaled
    "reoriented_anat_moved.nii": (nifti, _copy("reoriented_anat_moved.nii")),  # big-endian float32
    "example4d.nii.gz": (nifti, _copy("example4d.nii.gz")),
    "example_nifti2.nii.gz": (nifti, _copy("example_nifti2.nii.gz")),
    "standard.nii.gz": (nifti, _copy("standard.nii.gz")),
    "nifti2.nii": (nifti, _nifti(nibabel.Nifti2Image, lambda rng: rng.integers(0, 3000, (6, 5, 4, 3), dtype=np.int16))),
    "nifti2-scaled.nii.gz": (nifti, _nifti(nibabel.Nifti2Image, lambda rng: rng.integers(0, 3000, (6, 5, 4), dtype=np.int16),
                                           slope=0.5)),
    "scaled.nii": (nifti, _nifti(nibabel.Nifti1Image, lambda rng: rng.integers(0, 3000, (6, 5, 4), dtype=np.uint16), 2.0)),
    "float-4d.nii.gz": (nifti, _nifti(nibabel.Nifti1Image, lambda rng: rng.normal(size=(6, 5, 4, 2)).astype(np.float32))),
    "rgb24.nii": (nifti, _nifti(nibabel.Nifti1Image, _rgb24)),
}
# Cases whose module reads a path by another route than decode(read_file(path)): for Netpbm the
# two are one function, so comparing them proves nothing (its values are checked in test_reader_formats)
READ_OTHERWISE = [case for case, (module, _) in CASES.items() if module is not netpbm]
OPTIONS = [ReadOptions(), ReadOptions(nifti_4d="pooled", max_pixels=10**6, alpha="keep", convert="gray")]


@pytest.fixture
def write(tmp_path, rng):
    """``write(case)``: the file of ``case`` in tmp_path, and its module."""
    def make(case: str) -> tuple[str, object]:
        module, writer = CASES[case]
        path = tmp_path / case
        writer(path, rng)
        return str(path), module
    return make


# ------------------------------------------------------------------------------- the same image
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "pooled"])
@pytest.mark.parametrize("case", READ_OTHERWISE)
def test_decode_gives_what_read_gives(write, case, options):
    path, module = write(case)
    assert_same(module.decode(read_file(path), path, options), module.read(path, options))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("wrap", [memoryview, bytearray, lambda data: memoryview(b"tar header" + data)[10:]],
                         ids=["memoryview", "bytearray", "memoryview-slice"])
def test_decode_takes_any_bytes_like(write, case, wrap):
    path, module = write(case)
    assert_same(module.decode(wrap(read_file(path)), f"{NAME}-{case}", ReadOptions()), module.read(path, ReadOptions()))


@pytest.mark.parametrize("case", ["p5-8bit.pgm", "p6-8bit.ppm", "gray.npy", "channel-last.npy", "rgba.tiff", "rgb24.nii",
                                  "nifti2.nii"])
def test_pixels_do_not_change_with_the_callers_buffer(write, case):
    path, module = write(case)
    buffer = bytearray(read_file(path))
    image = module.decode(buffer, NAME, ReadOptions())
    buffer[:] = bytes(len(buffer))
    assert_same(image, module.read(path, ReadOptions()))


def test_options_reach_decode(write):
    path, _ = write("example4d.nii.gz")
    channels = nifti.decode(read_file(path), NAME, ReadOptions())
    pooled = nifti.decode(read_file(path), NAME, ReadOptions(nifti_4d="pooled"))
    assert (channels.pixels.shape, pooled.pixels.shape) == ((2, 128, 96, 24), (1, 256, 96, 24))
    assert (channels.channels, pooled.channels) == (("channel0", "channel1"), ("gray",))


def test_gzip_is_known_by_its_first_bytes(write):
    path, _ = write("example4d.nii.gz")
    assert_same(nifti.decode(read_file(path), f"{NAME}.nii", ReadOptions()), nifti.read(path, ReadOptions()))


def test_files_stay_memory_mapped(write):
    for case in ("volume.npy", "anatomical.nii", "nifti2.nii"):
        path, module = write(case)
        assert _mapped(module.read(path, ReadOptions()).pixels), case
        assert not _mapped(module.decode(read_file(path), path, ReadOptions()).pixels), case


def _mapped(array: np.ndarray) -> bool:
    while array is not None:
        if isinstance(getattr(array, "_mmap", None), mmap.mmap):
            return True
        array = array.base if isinstance(array, np.ndarray) else None
    return False


# ------------------------------------------------------------------------------ data cut short
CUTS = [
    ("p5-16bit.pgm", -7, r"pixel data end after 227 of 234 bytes \(truncated\)"),
    ("p6-8bit.ppm", -1, r"pixel data end after 350 of 351 bytes \(truncated\)"),
    ("p2.pgm", -40, r"pixel data end after [\d,]+ of 117 samples \(truncated\)"),
    ("p4.pbm", -2, r"pixel data end after 16 of 18 bytes \(truncated\)"),
    ("p5-8bit.pgm", 7, r"cannot decode: its Netpbm header is incomplete or malformed"),
    ("pages-uint16.tif", 0.6, r"the file ends after page 1, inside the pages it declares \(truncated\)"),
    ("gray.npy", -100, r"pixel data end after 284 of 384 bytes"),
    ("gray.npy", 40, r"cannot decode: EOF: reading array header, expected 118 bytes got 30"),
    ("scaled.nii", -1, r"voxel data end after 239 of 240 bytes"),
    ("nifti2.nii", -10, r"voxel data end after 710 of 720 bytes"),
    ("scaled.nii", 300, r"the data end after 300 of the 348 bytes of its NIfTI-1 header \(truncated\)"),
    ("nifti2.nii", 500, r"the data end after 500 of the 540 bytes of its NIfTI-2 header \(truncated\)"),
    ("example4d.nii.gz", -20, r"cannot decode: Compressed file ended before the end-of-stream marker was reached"),
]


def _cut(data: bytes, at: float) -> bytes:
    return data[: int(len(data) * at)] if isinstance(at, float) else data[:at]


@pytest.mark.parametrize("case, at, reason", CUTS)
def test_data_cut_short_are_refused_naming_the_name(write, tmp_path, case, at, reason):
    path, module = write(case)
    data = _cut(read_file(path), at)
    name = f"{NAME}-{case}"
    with pytest.raises(ReadError, match=reason + "$") as decoded:
        module.decode(data, name, ReadOptions())
    assert decoded.value.path == name and str(decoded.value).startswith(f"{name}: ")
    if case not in READ_OTHERWISE:
        return
    Path(path).write_bytes(data)
    with pytest.raises(ReadError) as read:  # the file cut alike is refused for the same reason
        module.read(path, ReadOptions())
    assert read.value.reason == decoded.value.reason


def test_imagej_stack_cut_short(rng):
    stack = rng.integers(1, 65536, (10, 64, 48), dtype=np.uint16)
    data = _tiff_bytes(stack, imagej=True, truncate=True)  # one IFD, the images after it
    with pytest.raises(ReadError, match=r"^shard\.tar:0001: pixel data end after 5 of 10 images \(ImageJ stack\)$"):
        tiff.decode(data[:-4 * 6144 - 10], NAME, ReadOptions())


def _tiff_bytes(pixels: np.ndarray, **kwargs) -> bytes:
    stream = io.BytesIO()
    tifffile.imwrite(stream, pixels, **kwargs)
    return stream.getvalue()


# ---------------------------------------------------------------------------------- pixel limit
LIMITS = [("p3.ppm", 9 * 13), ("p4.pbm", 9 * 13), ("pages-uint16.tif", 3 * 16 * 12), ("channel-last.npy", 16 * 12),
          ("4d.npy", 5 * 16 * 12), ("imagej.tif", 4 * 16 * 12), ("functional.nii", 17 * 21 * 3 * 20),
          ("example_nifti2.nii.gz", 32 * 20 * 12 * 2), ("rgb24.nii", 6 * 5 * 4)]


@pytest.mark.parametrize("case, pixels", LIMITS)
def test_pixel_limit_holds_for_bytes(write, case, pixels):
    path, module = write(case)
    data = read_file(path)
    assert module.decode(data, NAME, ReadOptions(max_pixels=pixels)).pixels.size >= pixels
    with pytest.raises(ReadError, match=rf"^{NAME}: {pixels:,} pixels exceed the limit of {pixels - 1:,} "):
        module.decode(data, NAME, ReadOptions(max_pixels=pixels - 1))


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    return stream.getvalue()


def _nifti_header(kind, shape: tuple[int, ...]) -> bytes:
    header = kind.header_class()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    return header.binaryblock + b"\0" * (int(header["vox_offset"]) - header.sizeof_hdr)


def _tiff_declaring(width: int, height: int) -> bytes:
    """An 8x8 TIFF whose header declares width x height pixels (its data are 64 bytes)."""
    data = bytearray(_tiff_bytes(np.zeros((8, 8), np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        for code, value in ((256, width), (257, height)):
            struct.pack_into("<H" if int(tags[code].dtype) == 3 else "<I", data, tags[code].valueoffset, value)
    return bytes(data)


HEADERS_ONLY = [
    (netpbm, b"P5\n60000 60000\n255\n", 60000 * 60000),
    (tiff, _tiff_declaring(60000, 60000), 60000 * 60000),
    (numpy_file, _npy_header((60000, 60000, 3), "|u1"), 60000 * 60000),
    (nifti, _nifti_header(nibabel.Nifti1Image, (2000, 2000, 100)), 2000 * 2000 * 100),
    (nifti, _nifti_header(nibabel.Nifti2Image, (2000, 2000, 100, 2)), 2000 * 2000 * 100 * 2),
    (nifti, gzip.compress(_nifti_header(nibabel.Nifti1Image, (2000, 2000, 100))), 2000 * 2000 * 100),
]


@pytest.mark.parametrize("module, data, pixels", HEADERS_ONLY, ids=["netpbm", "tiff", "npy", "nifti1", "nifti2", "nifti-gz"])
def test_pixel_limit_is_checked_from_the_header(module, data, pixels):
    """Data that hold no pixel at all are refused for the limit, not for their length: the header decided."""
    with pytest.raises(ReadError, match=rf"^{NAME}: {pixels:,} pixels exceed the limit of 89,478,485 "):
        module.decode(data, NAME, ReadOptions())


# ----------------------------------------------------------------------- TIFF pages in other files
def _ome_pair(folder: Path, rng: np.random.Generator) -> np.ndarray:
    """A two-file OME-TIFF: a.ome.tif holds the first plane and names b.ome.tif for the second."""
    planes = rng.integers(1, 65536, (2, 6, 8), dtype=np.uint16)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="urn:uuid:a">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
        'SizeX="8" SizeY="6" SizeZ="2" SizeC="1" SizeT="1"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        '<TiffData IFD="0" FirstZ="0" PlaneCount="1"><UUID FileName="a.ome.tif">urn:uuid:a</UUID></TiffData>'
        '<TiffData IFD="0" FirstZ="1" PlaneCount="1"><UUID FileName="b.ome.tif">urn:uuid:b</UUID></TiffData>'
        "</Pixels></Image></OME>"
    )
    tifffile.imwrite(folder / "a.ome.tif", planes[0], description=xml, metadata=None)
    tifffile.imwrite(folder / "b.ome.tif", planes[1], metadata=None)
    return planes


def test_pages_in_other_files_are_read_from_a_path_and_refused_from_bytes(tmp_path, rng):
    planes = _ome_pair(tmp_path, rng)
    path = str(tmp_path / "a.ome.tif")
    np.testing.assert_array_equal(tiff.read(path, ReadOptions()).pixels, planes[None])
    refusal = r"page 2 of 2 of a series is in another file, not found \(a multi-file OME-TIFF"
    with pytest.raises(ReadError, match=rf"^{NAME}: {refusal}"):
        tiff.decode(read_file(path), NAME, ReadOptions())  # tifffile alone would read the page as zeros
    (tmp_path / "b.ome.tif").unlink()
    with pytest.raises(ReadError, match=refusal):
        tiff.read(path, ReadOptions())
