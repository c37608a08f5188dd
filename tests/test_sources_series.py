"""Finding images (hidden files, lists, globs, DICOM file names) and DICOM series as one item."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import imagenorm
from imagenorm.errors import EmptyDatasetError, ImagenormError, ReadError
from imagenorm.readers import ReadOptions, read_image
from imagenorm.sources import find_images
from imagenorm.stats.items import as_item_source

from conftest import assert_matches_reference, random_image, reference, write_png

APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(58)  # what macOS writes as ._name
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(64)


def mr_series(folder: Path, count: int, names=None, description: str | None = None, shift: int = 0) -> list[np.ndarray]:
    """Slices of one series made from pydicom's MR_small.dcm, each its own instance (SOPInstanceUID,
    InstanceNumber, position), pixels varied; returns each slice's pixels as pydicom reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[str(folder), str(description)])
    expected = []
    for index in range(count):
        dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(index)])
        dataset.InstanceNumber = index + 1
        dataset.ImagePositionPatient = [0.0, 0.0, 2.5 * index]
        if description is not None:
            dataset.SeriesDescription = description
        dataset.PixelData = (dataset.pixel_array.astype(np.int16) + 17 * index + shift).tobytes()
        name = names[index] if names else f"slice_{index:02d}.dcm"
        dataset.save_as(folder / name)
        expected.append(pydicom.dcmread(folder / name).pixel_array[None])
    return expected


def volume_reference(slices: list[np.ndarray]) -> dict:
    return reference([np.stack(slices, axis=1)])


class TestHiddenFiles:
    def test_skipped_unread_and_counted_once(self, tmp_path, rng):
        image = random_image(rng, "uint16", (9, 7))
        write_png(tmp_path / "a.png", image)
        (tmp_path / "._a.png").write_bytes(APPLE_DOUBLE)
        (tmp_path / ".DS_Store").write_bytes(DS_STORE)
        (tmp_path / ".ipynb_checkpoints").mkdir()
        write_png(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png", random_image(rng, "uint16", (9, 7)))
        found = find_images([tmp_path, tmp_path / "a.png", tmp_path])  # the same tree named twice
        assert [Path(p).name for p in found.paths] == ["a.png"]
        assert (found.hidden, found.ignored) == (3, 0)
        items, ignored = as_item_source(tmp_path)
        assert (items.hidden, ignored) == (3, 0)
        assert_matches_reference(imagenorm.compute_stats(tmp_path), reference([image[None]]))

    def test_a_named_hidden_file_is_read(self, tmp_path, rng):
        write_png(tmp_path / ".named.png", random_image(rng, "uint8", (4, 4)))
        assert find_images(tmp_path / ".named.png").paths == [str(tmp_path / ".named.png")]

    def test_a_folder_of_only_hidden_files_says_so(self, tmp_path):
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "._a.png").write_bytes(APPLE_DOUBLE)
        with pytest.raises(EmptyDatasetError, match=r"no images found under .*data; 1 hidden file\(s\) or folder"):
            find_images(tmp_path / "data")


class TestNamedSources:
    @pytest.fixture
    def pngs(self, tmp_path, rng):
        for name in ("a.png", "b.png"):
            write_png(tmp_path / name, random_image(rng, "uint8", (4, 5)))
        return tmp_path

    def test_list_with_byte_order_mark(self, pngs):
        (pngs / "list.txt").write_text("a.png\nb.png\n", encoding="utf-8-sig")  # as Windows Notepad saves
        assert [Path(p).name for p in find_images(pngs / "list.txt").paths] == ["a.png", "b.png"]

    def test_list_that_includes_itself(self, pngs):
        (pngs / "self.txt").write_text("a.png\nself.txt\n")
        with pytest.raises(ImagenormError, match=r"self\.txt: the list includes itself"):
            find_images(pngs / "self.txt")
        (pngs / "one.txt").write_text("a.png\ntwo.txt\n")
        (pngs / "two.txt").write_text("b.png\none.txt\n")
        with pytest.raises(ImagenormError, match=r"one\.txt: the list includes itself \(.*one\.txt -> .*two\.txt -> .*one\.txt\)"):
            find_images(pngs / "one.txt")

    def test_a_list_named_twice_is_no_loop(self, pngs):
        (pngs / "part.txt").write_text("a.png\n")
        (pngs / "all.txt").write_text("part.txt\npart.txt\nb.png\n")
        assert [Path(p).name for p in find_images(pngs / "all.txt").paths] == ["a.png", "b.png"]

    @pytest.mark.parametrize("empty", ["*.pgn", "empty_folder", "nothing.txt"])
    def test_a_source_without_images_is_an_error_next_to_others(self, pngs, empty):
        (pngs / "empty_folder").mkdir()
        (pngs / "nothing.txt").write_text("# no entries yet\n")
        with pytest.raises(EmptyDatasetError, match=f"no images found under .*{empty.replace('*', '[*]')}$"):
            find_images([pngs / "a.png", str(pngs / empty)])

    def test_a_listed_glob_without_images_names_the_list(self, pngs):
        (pngs / "list.txt").write_text("a.png\n*.pgn\n")
        with pytest.raises(EmptyDatasetError, match=r"no images found under .*\*\.pgn \(listed in .*list\.txt\)"):
            find_images(pngs / "list.txt")

    def test_a_named_file_that_is_not_an_image_is_counted(self, pngs):
        (pngs / "notes.md").write_text("not an image")  # as in a shell-expanded data/*
        found = find_images([pngs / "a.png", pngs / "notes.md"])
        assert len(found.paths) == 1 and found.ignored == 1


class TestDicomNames:
    @pytest.mark.parametrize("names", [
        ["1.3.46.670589.33.1.1", "1.3.46.670589.33.1.2", "1.3.46.670589.33.1.3"],  # UID-named (Philips)
        ["MR.0001.IMA", "MR.0002.IMA", "MR.0003.IMA"],  # Siemens
        ["IM0001", "IM0002", "IM0003"],
    ])
    def test_found_whatever_the_name(self, tmp_path, names):
        slices = mr_series(tmp_path / "mr", 3, names=names)
        (tmp_path / "mr" / "protocol.v1.txt").write_text("not an image")
        stats = imagenorm.compute_stats(tmp_path / "mr", audit=True)
        assert stats.files == 1 and stats.ignored == 1 and stats.audit_rows[0]["shape"] == "3x64x64"
        assert_matches_reference(stats, volume_reference(slices))

    def test_dicomdir_is_not_an_image(self, tmp_path):
        slices = mr_series(tmp_path / "mr", 2)
        shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "mr" / "DICOMDIR")
        shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "mr" / "INDEX")  # known by its SOP class
        stats = imagenorm.compute_stats(tmp_path / "mr")
        assert stats.files == 1 and stats.ignored == 2 and not stats.skipped
        assert_matches_reference(stats, volume_reference(slices))
        with pytest.raises(ReadError, match="DICOMDIR: a DICOM Media Storage Directory"):
            read_image(tmp_path / "mr" / "DICOMDIR")


class TestDicomSeries:
    def test_repeated_instance_counted_once_with_a_note(self, tmp_path):
        slices = mr_series(tmp_path / "mr", 3)
        shutil.copy(tmp_path / "mr" / "slice_01.dcm", tmp_path / "mr" / "slice_01b.dcm")  # a PACS re-export
        stats = imagenorm.compute_stats(tmp_path / "mr", audit=True)
        assert stats.audit_rows[0]["shape"] == "3x64x64"
        assert_matches_reference(stats, volume_reference(slices))
        [note] = [note for note in stats.notes if "repeat" in note]
        assert "1 file(s) repeat an instance" in note
        assert note.endswith(f"{tmp_path / 'mr' / 'slice_01b.dcm'} repeats {tmp_path / 'mr' / 'slice_01.dcm'}")

    def test_a_slice_exported_twice_is_one_image(self, tmp_path):
        [slice_] = mr_series(tmp_path / "mr", 1)
        shutil.copy(tmp_path / "mr" / "slice_00.dcm", tmp_path / "mr" / "slice_00b.dcm")
        stats = imagenorm.compute_stats(tmp_path / "mr", audit=True)
        assert stats.files == 1 and stats.audit_rows[0]["shape"] == "64x64"
        assert_matches_reference(stats, reference([slice_]))
        assert any("slice_00b.dcm repeats" in note for note in stats.notes)

    def test_same_instance_with_other_pixels_is_refused_naming_both(self, tmp_path):
        """Found by trying it: a re-export with other pixels was counted as one more slice."""
        mr_series(tmp_path / "mr", 2)
        dataset = pydicom.dcmread(tmp_path / "mr" / "slice_01.dcm")
        dataset.PixelData = (dataset.pixel_array + 1).tobytes()  # not a copy: other data under the same UID
        dataset.save_as(tmp_path / "mr" / "slice_01b.dcm")
        with pytest.raises(ReadError, match="slice_01b.dcm and .*slice_01.dcm are the same instance .* with different pixels"):
            imagenorm.compute_stats(tmp_path / "mr")

    def test_bad_slice_is_named_and_series_by_uid(self, tmp_path):
        folder = tmp_path / "exam"
        good = mr_series(folder, 2, names=["t1_a.dcm", "t1_b.dcm"], description="AX T1")
        mr_series(folder, 4, names=["t2_a.dcm", "t2_b.dcm", "t2_c.dcm", "t2_d.dcm"], description="AX T2", shift=100)
        data = (folder / "t2_c.dcm").read_bytes()
        (folder / "t2_c.dcm").write_bytes(data[:-2000])  # a copy cut short
        t2_uid = pydicom.dcmread(folder / "t2_a.dcm").SeriesInstanceUID
        t1_uid = pydicom.dcmread(folder / "t1_a.dcm").SeriesInstanceUID
        stats = imagenorm.compute_stats(folder, on_error="skip", audit=True)
        assert stats.files == 1 and stats.audit_rows[0]["path"] == f'{folder} (series {t1_uid} "AX T1", 2 files)'
        assert_matches_reference(stats, volume_reference(good))
        [skipped] = stats.skipped
        assert skipped["path"] == f'{folder} (series {t2_uid} "AX T2", 4 files)'
        assert skipped["reason"].startswith(f"its slice {folder / 't2_c.dcm'} (file 3 of 4): ")
        assert "pixel data" in skipped["reason"]
        with pytest.raises(ReadError, match=r"AX T2\", 4 files\): its slice .*t2_c\.dcm \(file 3 of 4\)"):
            imagenorm.compute_stats(folder)

    def test_volume_keeps_what_the_slices_declare(self, tmp_path):
        folder = tmp_path / "u12"
        folder.mkdir()
        for index in range(3):
            dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            dataset.PixelRepresentation, dataset.BitsStored, dataset.HighBit = 0, 12, 11
            dataset.InstanceNumber, dataset.ImagePositionPatient = index + 1, [0.0, 0.0, float(index)]
            dataset.SOPInstanceUID = generate_uid(entropy_srcs=[str(index)])
            stored = np.clip(dataset.pixel_array.astype(np.int32) + index, 0, 4095).astype(np.uint16)
            dataset.PixelData = stored.tobytes()
            dataset.save_as(folder / f"{index}.dcm")
        options = ReadOptions(dicom_values="stored")
        first = read_image(folder / "0.dcm", options)
        items, _ = as_item_source(folder)
        volume = items.load(0, options)
        assert volume.pixels.shape == (1, 3, 128, 128)
        for name in ("significant_bits", "physical", "spacing", "channels", "palette"):
            assert getattr(volume, name) == getattr(first, name), name
        assert first.significant_bits == 12
        assert imagenorm.compute_stats(folder, dicom_values="stored").significant_bits == 12
