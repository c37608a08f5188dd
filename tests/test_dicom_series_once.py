"""DICOM from bytes, and series read once: grouping from a tag walk of each file's first bytes,
slices decoded once and counted one at a time, no stacked copy of the volume."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

import imagenorm
from imagenorm.errors import ReadError
from imagenorm.readers import ReadOptions, dicom, read_image
from imagenorm.stats.items import SeriesItems, as_item_source

from conftest import assert_matches_reference, reference

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
GROUPING = ("SeriesInstanceUID", "SeriesDescription", "SOPInstanceUID", "InstanceNumber", "ImagePositionPatient")


def bundled(name: str) -> str:
    path = get_testdata_file(name, download=False)  # never the network
    if path is None:
        pytest.skip(f"{name} is not among pydicom's bundled test files")
    return path


def ct_series(folder: Path, count: int, bits: int = 12, size: int = 32, shift: int = 0, uid: str | None = None,
              names: list[str] | None = None) -> list[np.ndarray]:
    """CT slices made from CT_small.dcm (intercept -1024): ``bits`` 12 stores them unsigned, which
    gives int16 values (the histogram kernel's dtype); 16 stores them signed, which gives int32.
    Written in reverse patient order; returns each slice's values (C, H, W) in patient order."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    rng = np.random.default_rng([count, bits, abs(shift)])
    values = []
    for index in range(count):
        dataset = pydicom.dcmread(bundled("CT_small.dcm"))
        dataset.Rows = dataset.Columns = size
        dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = bits, bits - 1, int(bits == 16)
        dataset.SeriesInstanceUID, dataset.SOPInstanceUID = uid, generate_uid()
        dataset.InstanceNumber, dataset.ImagePositionPatient = index + 1, [0.0, 0.0, float(count - index)]
        stored = np.clip(rng.normal(1200 + 40 * index + shift, 400, (size, size)), 0, 4095).astype(np.uint16)
        dataset.PixelData = stored.astype(np.int16 if bits == 16 else np.uint16).tobytes()
        dataset.save_as(folder / (names[index] if names else f"slice_{index:03d}.dcm"))
        values.append(stored.astype(np.int64)[None] - 1024)
    return values[::-1]


def summaries(stats) -> list:
    return [*stats.channels, stats.pooled]


def same_image(a, b) -> bool:
    """Equal pixels (values and dtype) and every other property."""
    return (a.pixels.dtype == b.pixels.dtype and np.array_equal(a.pixels, b.pixels)
            and dataclasses.replace(a, pixels=None) == dataclasses.replace(b, pixels=None))


class TestDecodeFromBytes:
    @pytest.mark.parametrize("name", [
        "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "rtdose.dcm",
        "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
        "examples_palette.dcm", "liver_1frame.dcm", "MR_truncated.dcm", "rtplan.dcm", "CT_small.dcm.cut.dcm",
    ])
    def test_bytes_give_what_the_path_gives(self, name):
        """Images equal, or the same refusal; from bytes, bytearray and memoryview alike."""
        path = bundled(name)
        data = Path(path).read_bytes()
        outcomes = []
        for form in (bytes, bytearray, memoryview):
            try:
                outcomes.append(dicom.decode(form(data), path, ReadOptions()))
            except ReadError as error:
                outcomes.append(str(error))
        try:
            expected = dicom.read(path, ReadOptions())
        except ReadError as error:
            assert outcomes == [str(error)] * 3
            return
        assert all(same_image(got, expected) for got in outcomes)

    def test_palette_and_multiframe_from_bytes(self):
        palette = dicom.decode(Path(bundled("examples_palette.dcm")).read_bytes(), "p.dcm", ReadOptions())
        assert palette.palette and palette.channels[:3] == ("red", "green", "blue")
        dose = pydicom.dcmread(bundled("rtdose.dcm"))
        image = dicom.decode(Path(bundled("rtdose.dcm")).read_bytes(), "d.dcm", ReadOptions())
        assert image.pixels.shape == (1, int(dose.NumberOfFrames), int(dose.Rows), int(dose.Columns))

    def test_monochrome1_from_bytes(self, tmp_path):
        dataset = pydicom.dcmread(bundled("MR_small.dcm"))
        dataset.PhotometricInterpretation = "MONOCHROME1"
        dataset.save_as(tmp_path / "m1.dcm")
        data = (tmp_path / "m1.dcm").read_bytes()
        for policy in ("keep", "invert"):
            got = dicom.decode(data, "m1.dcm", ReadOptions(monochrome1=policy))
            assert same_image(got, dicom.read(str(tmp_path / "m1.dcm"), ReadOptions(monochrome1=policy)))
            assert any("MONOCHROME1" in note for note in got.notes)

    def test_data_cut_in_the_pixel_data_are_refused_by_name(self):
        data = Path(bundled("CT_small.dcm")).read_bytes()
        with pytest.raises(ReadError, match="cannot decode the pixel data") as caught:
            dicom.decode(data[:-1000], "archive.zip:1.2.3.dcm", ReadOptions())
        assert caught.value.path == "archive.zip:1.2.3.dcm"

    @pytest.mark.parametrize("form", [bytes, bytearray, memoryview])
    def test_data_cut_inside_compressed_pixel_data(self, form):
        """pydicom drops an element the data end inside of: the tag left behind says truncated."""
        data = Path(bundled("MR_small_RLE.dcm")).read_bytes()
        with pytest.warns(UserWarning, match="End of file"):  # pydicom's own warning
            with pytest.raises(ReadError, match=r"^archive\.zip:1\.2\.3\.dcm: the file ends inside its pixel data \(truncated\)$"):
                dicom.decode(form(data[:-3000]), "archive.zip:1.2.3.dcm", ReadOptions())

    def test_not_dicom_and_no_pixel_data(self):
        with pytest.raises(ReadError, match=r"^blob\.dcm: not a DICOM file \(no DICM preamble or file meta\)$"):
            dicom.decode(b"\x00" * 100 + b"not a DICOM object", "blob.dcm", ReadOptions())
        with pytest.raises(ReadError, match=r"^x:plan: no pixel data \(a DICOM RT Plan Storage object\)$"):
            dicom.decode(Path(bundled("rtplan.dcm")).read_bytes(), "x:plan", ReadOptions())

    def test_pixel_limit_checked_before_decoding(self, monkeypatch):
        monkeypatch.setattr(dicom, "_pixels", lambda *args: pytest.fail("decoded before the limit was checked"))
        with pytest.raises(ReadError, match="exceed the limit of 100"):
            dicom.decode(Path(bundled("CT_small.dcm")).read_bytes(), "big.dcm", ReadOptions(max_pixels=100))

    def test_missing_decoder_names_the_extra(self):
        code = (
            "import sys\n"
            "for name in ('pylibjpeg', 'openjpeg', 'libjpeg', 'gdcm', 'jpeg_ls', 'pyjpegls'): sys.modules[name] = None\n"
            "import PIL.features; PIL.features.check_codec = lambda *a, **k: False\n"
            "from imagenorm.readers import ReadOptions, dicom\n"
            f"dicom.decode(open({bundled('JPEG2000.dcm')!r}, 'rb').read(), 'zip:j2k.dcm', ReadOptions())\n"
        )
        completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert ("zip:j2k.dcm: compressed as JPEG 2000 Image Compression, and no installed decoder handles it: "
                "pip install 'imagenorm[medical]'") in completed.stderr

    def test_read_is_what_reader_for_gives(self, tmp_path):
        from imagenorm.readers import reader_for

        assert reader_for(str(tmp_path / "a.dcm")) is dicom.read


class TestGroupingTags:
    @pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the odd files
    def test_the_tag_walk_reads_what_pydicom_reads(self):
        """Every bundled file with the DICOM preamble: the same grouping values, or pydicom's error."""
        checked = 0
        for path in sorted(TEST_FILES.iterdir()):
            if not path.is_file() or path.read_bytes()[128:132] != b"DICM":
                continue
            outcomes = []
            for read in (lambda: pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(GROUPING)),
                         lambda: dicom.read_tags(str(path), GROUPING)):
                try:
                    header = read()
                    outcomes.append([repr(header.get(keyword)) for keyword in GROUPING])
                except Exception as error:  # noqa: BLE001 - pydicom's own
                    outcomes.append(type(error).__name__)
            assert outcomes[0] == outcomes[1], path.name
            checked += 1
        assert checked > 20

    def test_walks_sequences_and_a_header_longer_than_the_first_read(self, tmp_path, monkeypatch):
        dataset = pydicom.dcmread(bundled("CT_small.dcm"))
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "121311", "DCM"
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3"
        item.PurposeOfReferenceCodeSequence = Sequence([code])  # a sequence in a sequence
        dataset.ReferencedImageSequence = Sequence([item, Dataset()])
        for element, items in ((dataset["ReferencedImageSequence"], [item]), (item["PurposeOfReferenceCodeSequence"], [code])):
            element.is_undefined_length = True  # walked to its delimiters
            for each in items:
                each.is_undefined_length_sequence_item = True
        dataset.add_new(0x00091010, "OB", b"\x01" * 40000)  # a private element past the first 16 KiB
        dataset.SeriesDescription = "CT ÄÖ"
        dataset.SpecificCharacterSet = "ISO_IR 100"
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            name = tmp_path / f"{syntax.name}.dcm"
            dataset.file_meta.TransferSyntaxUID = syntax
            dataset.save_as(name)
            assert b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" in name.read_bytes() or syntax.is_implicit_VR
            expected = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=list(GROUPING))
            with monkeypatch.context() as patch:
                patch.setattr(pydicom, "dcmread", lambda *args, **kwargs: pytest.fail("left to pydicom"))
                header = dicom.read_tags(str(name), GROUPING)
            assert [header.get(k) for k in GROUPING] == [expected.get(k) for k in GROUPING]
            assert header.SeriesDescription == "CT ÄÖ"

    def test_grouping_parses_no_header_with_pydicom(self, tmp_path, monkeypatch):
        ct_series(tmp_path / "ct", 5)
        calls = []
        monkeypatch.setattr(pydicom, "dcmread", lambda *args, **kwargs: calls.append(args))
        items, _ = as_item_source(tmp_path / "ct")
        assert isinstance(items, SeriesItems) and len(items) == 1 and calls == []


class TestSeriesReadOnce:
    @pytest.mark.parametrize("bits, dtype", [(12, "int16"), (16, "int32")])
    def test_statistics_match_the_stacked_volume_and_the_slices(self, tmp_path, bits, dtype):
        slices = ct_series(tmp_path / "ct", 6, bits=bits)
        stats = imagenorm.compute_stats(tmp_path / "ct")
        assert stats.exact and stats.dtype == dtype and stats.files == 1
        assert_matches_reference(stats, reference([np.stack(slices, axis=1)]))
        assert summaries(stats) == summaries(imagenorm.compute_stats(tmp_path / "ct", dicom_series=False))

    @pytest.mark.parametrize("workers", [0, 2])
    def test_identical_to_the_whole_volume(self, tmp_path, workers):
        """Counted slice by slice, or whole (an audit row needs the volume): the same stats file,
        spread between the series included; series of int16 and int32 values mixed."""
        ct_series(tmp_path / "exam" / "a", 4, bits=12)
        ct_series(tmp_path / "exam" / "b", 5, bits=16, shift=300)
        ct_series(tmp_path / "exam" / "c", 3, bits=12, shift=-500)
        streamed = imagenorm.compute_stats(tmp_path / "exam", workers=workers).to_dict()
        whole = imagenorm.compute_stats(tmp_path / "exam", workers=workers, audit=True).to_dict()
        for document in (streamed, whole):
            document.pop("created_at")
            document.pop("flagged", None)
        assert streamed == whole

    def test_no_volume_is_built_and_each_file_is_decoded_once(self, tmp_path, monkeypatch):
        ct_series(tmp_path / "ct", 5)
        items, _ = as_item_source(tmp_path / "ct")
        names = items.files(0)
        parsed, dcmread = Counter(), pydicom.dcmread
        monkeypatch.setattr(pydicom, "dcmread", lambda source, **kwargs: parsed.update([str(source)]) or dcmread(source, **kwargs))
        monkeypatch.setattr(SeriesItems, "load", lambda *args: pytest.fail("the whole volume was loaded"))
        stats = imagenorm.compute_stats(tmp_path / "ct")  # groups the slices again: no pydicom parse
        assert stats.files == 1
        # each slice once, and the first once more: the layout probe before counting
        assert parsed == Counter(names) + Counter([names[0]])

    def test_load_still_gives_the_whole_volume(self, tmp_path):
        slices = ct_series(tmp_path / "ct", 4, bits=16)
        items, _ = as_item_source(tmp_path / "ct")
        volume = items.load(0, ReadOptions())
        first = read_image(items.files(0)[0])
        assert volume.pixels.shape == (1, 4, 32, 32) and volume.pixels.flags.c_contiguous
        np.testing.assert_array_equal(volume.pixels, np.stack(slices, axis=1))
        assert dataclasses.replace(volume, pixels=None) == dataclasses.replace(first, pixels=None)

    def test_float_series_measured_whole(self, tmp_path):
        folder = tmp_path / "mr"
        folder.mkdir()
        expected = []
        for index in range(3):
            dataset = pydicom.dcmread(bundled("MR_small.dcm"))
            dataset.RescaleSlope, dataset.RescaleIntercept = "0.5", "-3.25"
            dataset.SOPInstanceUID, dataset.ImagePositionPatient = generate_uid(), [0.0, 0.0, float(index)]
            dataset.PixelData = (dataset.pixel_array + index).astype(dataset.pixel_array.dtype).tobytes()
            dataset.save_as(folder / f"{index}.dcm")
            expected.append((dataset.pixel_array * 0.5 - 3.25)[None])
        stats = imagenorm.compute_stats(folder)
        assert stats.dtype == "float64" and stats.files == 1
        assert_matches_reference(stats, reference([np.stack(expected, axis=1)]))


class TestSeriesChecksKept:
    def test_repeats_counted_once_with_the_note(self, tmp_path):
        slices = ct_series(tmp_path / "ct", 3)
        shutil.copy(tmp_path / "ct" / "slice_001.dcm", tmp_path / "ct" / "slice_001b.dcm")
        stats = imagenorm.compute_stats(tmp_path / "ct")
        assert_matches_reference(stats, reference([np.stack(slices, axis=1)]))
        [note] = [note for note in stats.notes if "repeat" in note]
        assert note.endswith(f"1 file(s) repeat an instance (same SOPInstanceUID and pixels) and were counted once: "
                             f"{tmp_path / 'ct' / 'slice_001b.dcm'} repeats {tmp_path / 'ct' / 'slice_001.dcm'}")

    def test_repeat_with_other_pixels_names_both(self, tmp_path):
        ct_series(tmp_path / "ct", 3)
        dataset = pydicom.dcmread(tmp_path / "ct" / "slice_001.dcm")
        dataset.PixelData = (dataset.pixel_array + 1).tobytes()
        dataset.save_as(tmp_path / "ct" / "slice_001b.dcm")
        with pytest.raises(ReadError, match=r"slice_001b\.dcm and .*slice_001\.dcm are the same instance "
                                            r"\(SOPInstanceUID [0-9.]+\) with different pixels"):
            imagenorm.compute_stats(tmp_path / "ct")

    def test_mismatched_slice_named(self, tmp_path):
        ct_series(tmp_path / "ct", 3, uid="1.2.3.4")
        ct_series(tmp_path / "ct", 1, uid="1.2.3.4", size=16, names=["odd.dcm"])
        with pytest.raises(ReadError, match=r"\(series 1\.2\.3\.4, 4 files\): its slice .*slice_00[0-2]\.dcm is "
                                            r"32x32 int16 \(gray\), but .*odd\.dcm is 16x16 int16 \(gray\)"):
            imagenorm.compute_stats(tmp_path / "ct")

    def test_a_bad_slice_leaves_the_counts_untouched(self, tmp_path):
        good = ct_series(tmp_path / "exam" / "good", 3)
        ct_series(tmp_path / "exam" / "bad", 4, shift=200)
        data = (tmp_path / "exam" / "bad" / "slice_000.dcm").read_bytes()  # the last slice in patient order
        (tmp_path / "exam" / "bad" / "slice_000.dcm").write_bytes(data[:-500])
        stats = imagenorm.compute_stats(tmp_path / "exam", on_error="skip")
        assert stats.files == 1 and len(stats.skipped) == 1
        assert "(file 4 of 4)" in stats.skipped[0]["reason"]
        assert_matches_reference(stats, reference([np.stack(good, axis=1)]))
