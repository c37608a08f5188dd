"""Folder datasets keep bit depth; normalized datasets in memory and on the fly agree."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

import imagenorm
from imagenorm.datasets import parse_size
from imagenorm.errors import ImagenormError
from imagenorm.options import OptionConflictError, OptionError, ReadOptions

from conftest import channel_first, random_image, write_png

APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(58)  # an AppleDouble header


@pytest.fixture
def labelled(tmp_path, rng):
    images = {}
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for index in range(3):
            image = random_image(rng, "uint16", (10, 12, 3))
            write_png(tmp_path / label / f"{index}.png", image)
            images[(label, index)] = channel_first(image)
    return tmp_path, images


def test_folder_keeps_16_bits_and_labels(labelled):
    root, images = labelled
    dataset = imagenorm.ImageFolderDataset(root)
    assert dataset.classes == ["cats", "dogs"] and dataset.targets == [0, 0, 0, 1, 1, 1]
    image, label = dataset[4]
    assert image.dtype == torch.uint16 and label == 1
    np.testing.assert_array_equal(image.numpy(), images[("dogs", 1)])


def test_no_labels_and_loose_files(labelled, rng):
    root, _ = labelled
    assert isinstance(imagenorm.ImageFolderDataset(root, labels=False)[0], torch.Tensor)
    write_png(root / "loose.png", random_image(rng, "uint16", (10, 12, 3)))
    assert imagenorm.ImageFolderDataset(root).targets is None
    with pytest.raises(ImagenormError, match=r"loose\.png: not inside a class sub-folder"):
        imagenorm.ImageFolderDataset(root, labels=True)


def train_and_validation(root, rng, validation_classes: dict[str, int]):
    """A training folder with two images each of ant, bee and cow, and a validation folder with
    the given number of images per class (0: an empty class folder)."""
    for split, counts in (("train", {"ant": 2, "bee": 2, "cow": 2}), ("val", validation_classes)):
        for label, count in counts.items():
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                write_png(root / split / label / f"{index}.png", random_image(rng, "uint8", (6, 5)))
    return root / "train", root / "val"


def test_empty_class_folder_is_an_error_unless_allowed(tmp_path, rng):
    train, val = train_and_validation(tmp_path, rng, {"ant": 0, "bee": 1, "cow": 1})
    with pytest.raises(ImagenormError, match=r"val: no images for class\(es\) 'ant' .*allow_empty=True"):
        imagenorm.ImageFolderDataset(val)
    training = imagenorm.ImageFolderDataset(train)
    validation = imagenorm.ImageFolderDataset(val, allow_empty=True)
    assert validation.classes == training.classes == ["ant", "bee", "cow"]
    assert validation.class_to_idx == training.class_to_idx == {"ant": 0, "bee": 1, "cow": 2}
    assert validation.targets == [1, 2]  # bee and cow keep their training labels
    assert [validation[i][1] for i in range(2)] == [1, 2]


def test_class_to_idx_gives_validation_the_training_labels(tmp_path, rng):
    train, val = train_and_validation(tmp_path, rng, {"bee": 1, "cow": 1})
    training = imagenorm.ImageFolderDataset(train)
    mapping = {"cow": 0, "bee": 1, "ant": 2}  # any numbering, e.g. from another tool
    with pytest.raises(ImagenormError, match=r"no images for class\(es\) 'ant'"):
        imagenorm.ImageFolderDataset(val, class_to_idx=mapping)  # like torchvision: a missing class is an error
    validation = imagenorm.ImageFolderDataset(val, class_to_idx=mapping, allow_empty=True)
    assert validation.classes == ["cow", "bee", "ant"] and validation.targets == [1, 0]
    same = imagenorm.ImageFolderDataset(val, class_to_idx=training.class_to_idx, allow_empty=True)
    assert same.targets == [1, 2] and same.class_to_idx == training.class_to_idx
    (val / "dog").mkdir()
    write_png(val / "dog" / "0.png", random_image(rng, "uint8", (6, 5)))
    with pytest.raises(ImagenormError, match=r"val: class folder\(s\) 'dog' not in class_to_idx"):
        imagenorm.ImageFolderDataset(val, class_to_idx=training.class_to_idx, allow_empty=True)


@pytest.mark.parametrize("class_to_idx, message", [
    ({"a": 0, "b": 0}, "two classes the same label"),
    ({"a": -1}, "'a' to -1"),
    ({"a": True}, "'a' to True"),
    ({3: 0}, "3 to 0"),
    (["a", "b"], "must be a non-empty mapping"),
    ({}, "must be a non-empty mapping"),
])
def test_class_to_idx_checked_where_it_enters(labelled, class_to_idx, message):
    root, _ = labelled
    with pytest.raises(OptionError, match=message):
        imagenorm.ImageFolderDataset(root, class_to_idx=class_to_idx)


def test_class_options_that_contradict(labelled):
    root, _ = labelled
    with pytest.raises(OptionError, match="class_to_idx= gives labels, but labels=False"):
        imagenorm.ImageFolderDataset(root, labels=False, class_to_idx={"cats": 0, "dogs": 1})
    with pytest.raises(OptionError, match="allow_empty must be True or False"):
        imagenorm.ImageFolderDataset(root, allow_empty="yes")
    with pytest.raises(ImagenormError, match="class_to_idx= needs a folder"):
        imagenorm.ImageFolderDataset(str(root / "*" / "*.png"), class_to_idx={"cats": 0, "dogs": 1})


def test_hidden_files_and_folders_are_never_read_nor_classes(labelled):
    root, images = labelled
    (root / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "cats" / "0.png", root / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "cats" / "._0.png").write_bytes(APPLE_DOUBLE)  # macOS metadata beside a copied file
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    dataset = imagenorm.ImageFolderDataset(root)
    assert dataset.classes == ["cats", "dogs"] and dataset.targets == [0, 0, 0, 1, 1, 1]
    assert dataset.hidden == 3 and len(dataset) == 6
    np.testing.assert_array_equal(dataset[0][0].numpy(), images[("cats", 0)])


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_modes_give_identical_tensors(labelled, cache):
    root, _ = labelled
    folder = imagenorm.ImageFolderDataset(root)
    transform = imagenorm.Standardize.from_stats(imagenorm.compute_stats(folder.paths))
    normalized = imagenorm.normalize_dataset(folder, transform, cache=cache)
    assert normalized.cache == cache
    for index in range(len(folder)):
        image, label = normalized[index]
        assert label == folder.targets[index]
        assert torch.equal(image, transform(folder[index][0]))


def test_auto_picks_by_budget(labelled):
    root, _ = labelled
    folder = imagenorm.ImageFolderDataset(root, labels=False)
    transform = imagenorm.Standardize(per_image=True)
    small = imagenorm.normalize_dataset(folder, transform, memory_budget="1GiB")
    assert small.cache == "memory" and "fit the 1.0 GiB budget" in small.reason
    tiny = imagenorm.normalize_dataset(folder, transform, memory_budget=1000)
    assert tiny.cache == "none" and "exceed" in tiny.reason
    assert torch.equal(small[2], tiny[2])


@pytest.mark.filterwarnings("ignore:.pin_memory. argument is set as true")
def test_dataloader_workers_and_pinned_memory_give_identical_batches(labelled):
    root, _ = labelled
    folder = imagenorm.ImageFolderDataset(root)
    transform = imagenorm.MinMaxScale.from_stats(imagenorm.compute_stats(folder.paths), out_range=(-1, 1))
    dataset = imagenorm.normalize_dataset(folder, transform, cache="none")
    plain = list(torch.utils.data.DataLoader(dataset, batch_size=2))
    parallel = list(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, pin_memory=True))
    for (a, labels_a), (b, labels_b) in zip(plain, parallel):
        assert torch.equal(a, b) and torch.equal(labels_a, labels_b)


@pytest.mark.parametrize("text, expected", [("4GiB", 4 * 2**30), ("500MB", 500 * 10**6), ("1.5 KiB", 1536), (123, 123)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("size", ["lots", "1.2.3", "4i", "", -5, True, 2.5])
def test_parse_size_error(size):
    with pytest.raises(OptionError, match=r"memory_budget=.* is not a memory size"):
        parse_size(size)


# --- folders of mixed sizes ----------------------------------------------------------
SIZES = [(13, 17), (6, 9), (13, 17), (10, 4), (6, 9), (8, 8)]  # item 0 the largest; one repeats later


class Counting(torch.utils.data.Dataset):
    """A dataset that counts how often its items are read (decoded)."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads += 1
        return self.dataset[index]


@pytest.fixture(params=["gray16", "rgb8"])
def mixed(request, tmp_path_factory, rng):
    """A labelled folder of PNGs of several sizes: 16-bit gray or 8-bit RGB."""
    dtype, channels = {"gray16": ("uint16", ()), "rgb8": ("uint8", (3,))}[request.param]
    root = tmp_path_factory.mktemp("mixed")
    for index, size in enumerate(SIZES):
        label = ("cats", "dogs")[index % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        write_png(root / label / f"{index}.png", random_image(rng, dtype, size + channels))
    return imagenorm.ImageFolderDataset(root)


def test_memory_cache_of_mixed_sizes_equals_on_the_fly(mixed):
    assert len({tuple(mixed[index][0].shape) for index in range(len(mixed))}) == 4
    for transform in (imagenorm.Standardize.from_stats(imagenorm.compute_stats(mixed.paths)),
                      imagenorm.MinMaxScale(per_image=True)):
        memory = imagenorm.normalize_dataset(mixed, transform, cache="memory")
        on_the_fly = imagenorm.normalize_dataset(mixed, transform, cache="none")
        assert memory.cache == "memory" and on_the_fly.cache == "none"
        for index in range(len(mixed)):
            (stored, label), (fresh, fresh_label) = memory[index], on_the_fly[index]
            assert stored.shape == mixed[index][0].shape and label == fresh_label == mixed.targets[index]
            assert torch.equal(stored, fresh) and torch.equal(stored, transform(mixed[index][0]))
        assert torch.equal(memory[-1][0], on_the_fly[len(mixed) - 1][0])
        storages = {memory[index][0].untyped_storage().data_ptr() for index in range(len(mixed))}
        assert len(storages) == 1  # views of one buffer, not one tensor per item
        loaders = [torch.utils.data.DataLoader(dataset, batch_size=1) for dataset in (memory, on_the_fly)]
        for (images, labels), (fresh_images, fresh_labels) in zip(*loaders):
            assert torch.equal(images, fresh_images) and torch.equal(labels, fresh_labels)


def test_auto_sizes_mixed_folders_exactly(mixed):
    transform = imagenorm.Standardize(per_image=True)
    exact = sum(transform(mixed[index][0]).numel() * 4 for index in range(len(mixed)))
    assert mixed[0][0].numel() * 4 * len(mixed) > exact  # item 0 times the length would overestimate

    fits = imagenorm.normalize_dataset(mixed, transform, memory_budget=exact)
    assert fits.cache == "memory" and f"{exact:,} bytes" in fits.reason and "4 shapes" in fits.reason
    large = imagenorm.normalize_dataset(mixed, transform, memory_budget="1GiB")
    assert large.cache == "memory" and "fit the 1.0 GiB budget" in large.reason
    over = imagenorm.normalize_dataset(mixed, transform, memory_budget=exact - 1)
    assert over.cache == "none" and f"{exact:,} bytes" in over.reason and "exceed" in over.reason
    for index in range(len(mixed)):
        assert torch.equal(fits[index][0], over[index][0]) and torch.equal(fits[index][0], large[index][0])


def test_auto_stops_reading_once_over_budget(mixed):
    counting = Counting(mixed)
    first_two = (mixed[0][0].numel() + mixed[1][0].numel()) * 4
    tiny = imagenorm.normalize_dataset(counting, imagenorm.Standardize(per_image=True), memory_budget=first_two - 1)
    assert tiny.cache == "none" and "exceeds" in tiny.reason
    assert f"the first 2 of 6 items already need {first_two:,} bytes" in tiny.reason
    assert counting.reads <= 3  # item 0 for the guess, then items 0 and 1; none of the other four


def test_memory_cache_reads_one_shape_once_and_mixed_sizes_at_most_twice(labelled, mixed):
    transform = imagenorm.Standardize(per_image=True)
    one_shape = Counting(imagenorm.ImageFolderDataset(labelled[0]))
    imagenorm.normalize_dataset(one_shape, transform, cache="memory")
    assert one_shape.reads == len(one_shape)
    counting = Counting(mixed)
    imagenorm.normalize_dataset(counting, transform, cache="memory")
    assert counting.reads <= 2 * len(mixed)


def test_memory_cache_follows_the_output_shape(mixed):
    crop = lambda image: image[..., :4, :4].float()  # noqa: E731  (no out=: normalized, then copied)
    memory = imagenorm.normalize_dataset(mixed, crop, cache="memory")
    assert all(torch.equal(memory[index][0], crop(mixed[index][0])) for index in range(len(mixed)))
    assert {memory[index][0].shape[-2:] for index in range(len(mixed))} == {torch.Size([4, 4])}


class Tensors(torch.utils.data.Dataset):
    def __init__(self, *tensors):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors)

    def __getitem__(self, index):
        return self.tensors[index]


def test_mixed_output_dtypes_go_on_the_fly():
    dataset = Tensors(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3, dtype=torch.float64))
    double = lambda image: image * 2  # noqa: E731  (keeps each dtype)
    auto = imagenorm.normalize_dataset(dataset, double)
    assert auto.cache == "none" and "item 1 normalizes to torch.float64 but item 0 to torch.float32" in auto.reason
    assert torch.equal(auto[1], torch.zeros(1, 3, 3, dtype=torch.float64))
    with pytest.raises(ImagenormError, match="one buffer holds one dtype; use cache='none'"):
        imagenorm.normalize_dataset(dataset, double, cache="memory")


@pytest.mark.parametrize("cache", ["memroy", "Memory", None])
def test_cache_typo(labelled, cache):
    folder = imagenorm.ImageFolderDataset(labelled[0])
    with pytest.raises(OptionError, match=rf"cache={cache!r} is not one of 'auto', 'memory', 'none'"):
        imagenorm.normalize_dataset(folder, imagenorm.Standardize(per_image=True), cache=cache)


def test_memory_budget_checked_where_it_enters(labelled):
    folder = imagenorm.ImageFolderDataset(labelled[0])
    with pytest.raises(OptionError, match="memory_budget='4 gigs' is not a memory size"):
        imagenorm.normalize_dataset(folder, imagenorm.Standardize(per_image=True), cache="memory",
                                    memory_budget="4 gigs")


# --- reading as the statistics were measured -------------------------------------------
@pytest.fixture
def rgba(tmp_path, rng):
    images = [random_image(rng, "uint8", (9, 11, 4)) for _ in range(3)]
    for index, image in enumerate(images):
        write_png(tmp_path / f"{index}.png", image)
    return tmp_path, [channel_first(image) for image in images]


def test_folder_reads_alpha_as_measured(rgba):
    root, images = rgba
    stats = imagenorm.compute_stats(root, alpha="keep")
    folder = imagenorm.ImageFolderDataset(root, stats=stats)
    assert folder.read_options.alpha == "keep" and imagenorm.ImageFolderDataset(root)[0].shape[0] == 3
    for index, image in enumerate(images):
        np.testing.assert_array_equal(folder[index].numpy(), image)
    normalized = imagenorm.normalize_dataset(folder, imagenorm.Standardize.from_stats(stats))
    assert normalized[0].shape == (4, 9, 11)


def test_folder_reads_gray_as_measured_through_the_stats_file(tmp_path, rng):
    (tmp_path / "images").mkdir()
    for index in range(2):
        write_png(tmp_path / "images" / f"{index}.png", random_image(rng, "uint8", (9, 11, 3)))
    imagenorm.compute_stats(tmp_path / "images", convert="gray").save(tmp_path / "stats.json")
    stats = imagenorm.DatasetStats.load(tmp_path / "stats.json")
    folder = imagenorm.ImageFolderDataset(tmp_path / "images", stats=stats)
    assert folder[0].shape == (1, 9, 11) and stats.channel_names == ("gray",)
    assert folder.read_options == stats.read_options and stats.read_options.convert == "gray"
    with pytest.raises(OptionConflictError, match=r"convert='rgb' was given, but .*stats\.json was measured with convert='gray'"):
        imagenorm.ImageFolderDataset(tmp_path / "images", stats=stats, convert="rgb")


def test_explicit_option_conflicting_with_the_statistics(rgba):
    root, _ = rgba
    stats = dataclasses.replace(imagenorm.compute_stats(root, alpha="keep"), source="train_stats.json")
    with pytest.raises(OptionConflictError,
                       match=r"alpha='drop' was given, but train_stats\.json was measured with alpha='keep'"):
        imagenorm.ImageFolderDataset(root, stats=stats, alpha="drop")
    with pytest.raises(OptionConflictError, match=r"dicom_values='stored' was given, .* dicom_values='modality'"):
        imagenorm.ImageFolderDataset(root, stats=stats, dicom_values="stored")
    with pytest.raises(OptionConflictError,
                       match=r"read_options has alpha='drop', but train_stats\.json was measured with alpha='keep'"):
        imagenorm.ImageFolderDataset(root, stats=stats, read_options=ReadOptions())
    agreeing = imagenorm.ImageFolderDataset(root, stats=stats, alpha="keep", read_options=ReadOptions(alpha="keep"))
    assert agreeing.read_options == stats.read_options


def test_read_options_without_statistics(rgba):
    root, _ = rgba
    assert imagenorm.ImageFolderDataset(root).read_options == ReadOptions()
    given = imagenorm.ImageFolderDataset(root, alpha="keep", nifti_4d="pooled", monochrome1="invert", max_pixels=10**6)
    assert given.read_options == ReadOptions(alpha="keep", nifti_4d="pooled", monochrome1="invert", max_pixels=10**6)
    whole = imagenorm.ImageFolderDataset(root, read_options=ReadOptions(alpha="keep"), alpha="keep")
    assert whole[0].shape[0] == 4
    with pytest.raises(OptionConflictError, match=r"alpha='drop' was given, but read_options has alpha='keep'"):
        imagenorm.ImageFolderDataset(root, read_options=ReadOptions(alpha="keep"), alpha="drop")
    with pytest.raises(OptionError, match=r"alpha='kep' is not one of 'drop', 'keep'"):
        imagenorm.ImageFolderDataset(root, alpha="kep")
