"""Folder datasets keep bit depth; normalized datasets in memory and on the fly agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imagenorm
from imagenorm.datasets import parse_size
from imagenorm.errors import ImagenormError

from conftest import channel_first, random_image, write_png


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


def test_memory_cache_needs_one_shape(tmp_path, rng):
    write_png(tmp_path / "a.png", random_image(rng, "uint8", (10, 12)))
    write_png(tmp_path / "b.png", random_image(rng, "uint8", (11, 12)))
    folder = imagenorm.ImageFolderDataset(tmp_path)
    with pytest.raises(ImagenormError, match="item 1 has shape .* use cache='none'"):
        imagenorm.normalize_dataset(folder, imagenorm.Standardize(per_image=True), cache="memory")


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


def test_parse_size_error():
    with pytest.raises(ValueError, match="cannot read a memory size"):
        parse_size("lots")
