"""Epoch time of normalized datasets: in memory vs on the fly, and imagenorm vs the torchvision recipe.

On 400 real-photo JPEGs of 500x375 (from the stats benchmark's folder), batch size 32:
  - in memory: normalize_dataset(cache="memory"): the one-off fill, then an epoch;
  - on the fly: normalize_dataset(cache="none"), DataLoader with 0 and 2 workers;
  - per item, one process: ImageFolderDataset + Standardize against the torchvision-style
    recipe (PIL -> RGB -> ToTensor-like float /255 -> Normalize), and against torchvision's
    own ToTensor + Normalize when torchvision imports;
  - mixed sizes: 200 JPEGs of as many sizes (320..640 x 240..480, resized copies of the
    same photos), in memory (one flat buffer; the fill decodes each image twice) against
    on the fly, batches of 32 as lists.

    python benchmarks/dataset_throughput.py [--files 400] [--mixed-files 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from common import DATA, machine, photo_jpegs  # noqa: E402

import imagenorm  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class TorchvisionStyle(torch.utils.data.Dataset):
    """What tutorials write: PIL -> convert("RGB") -> float in [0, 1] -> Normalize, per item."""

    def __init__(self, paths, transform=None):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            rgb = image.convert("RGB")
            if self.transform is not None:
                return self.transform(rgb)
            tensor = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255)
        return tensor.sub(MEAN).div(STD)


def mixed_jpegs(count: int) -> list[str]:
    """``count`` JPEGs, each of its own size: the first photos resized (made once, then reused)."""
    root = DATA / f"jpeg_mixed_{count}"
    paths = [str(root / f"photo_{index:05d}.jpg") for index in range(count)]
    if all(os.path.exists(p) for p in paths):
        return paths
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(1)
    for source, path in zip(photo_jpegs(2000), paths):
        size = (int(rng.integers(320, 641)), int(rng.integers(240, 481)))
        with Image.open(source) as image:
            image.resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
    return paths


def as_list(batch: list) -> list:
    """Collate images of several shapes into a list (a stack needs one shape)."""
    return batch


def epoch(dataset, workers: int = 0, collate=None) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    for batch in loader:
        for images in batch if collate is as_list else [batch]:
            images.sum()  # touch the data, as a model would
    return time.perf_counter() - start


def resident_mib() -> float:
    """Current resident memory of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def best(function, rounds: int = 3) -> float:
    return min(function() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--mixed-files", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = photo_jpegs(2000)[: args.files]
    folder = imagenorm.ImageFolderDataset(paths, labels=False)
    transform = imagenorm.Standardize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

    on_the_fly = imagenorm.normalize_dataset(folder, transform, cache="none")
    epoch(on_the_fly)
    after_first = resident_mib()
    for _ in range(4):
        epoch(on_the_fly)
    after_fifth = resident_mib()

    start = time.perf_counter()
    in_memory = imagenorm.normalize_dataset(folder, transform, cache="memory")
    fill = time.perf_counter() - start
    assert torch.equal(in_memory[7], on_the_fly[7])

    rows = {
        "in memory: fill once": fill,
        "in memory: one epoch": best(lambda: epoch(in_memory)),
        "on the fly: one epoch, 0 workers": best(lambda: epoch(on_the_fly)),
        "on the fly: one epoch, 2 workers": best(lambda: epoch(on_the_fly, 2)),
        "torchvision-style recipe: one epoch, 0 workers": best(lambda: epoch(TorchvisionStyle(paths))),
        "torchvision-style recipe: one epoch, 2 workers": best(lambda: epoch(TorchvisionStyle(paths), 2)),
    }
    try:
        from torchvision import transforms as T

        real = TorchvisionStyle(paths, T.Compose([T.ToTensor(), T.Normalize(MEAN.flatten().tolist(), STD.flatten().tolist())]))
        rows["torchvision ToTensor + Normalize: one epoch, 0 workers"] = best(lambda: epoch(real))
    except Exception:  # torchvision is optional and does not import next to every torch build
        pass
    print(f"# dataset throughput: {len(paths)} JPEGs 500x375, batch 32, torch threads 1; {machine()}; {date.today()}")
    print(f"in-memory size: {in_memory._stored.layout.nbytes / 2**20:.0f} MiB; {in_memory.reason}")
    print(f"on the fly, resident memory after epoch 1: {after_first:.0f} MiB, after epoch 5: {after_fifth:.0f} MiB")
    for name, seconds in rows.items():
        print(f"{name:58s} {seconds:8.3f} s {len(paths) / seconds:9.1f} images/s")
    recipe = rows["torchvision-style recipe: one epoch, 0 workers"]
    print(f"on the fly vs torchvision-style recipe (0 workers): {recipe / rows['on the fly: one epoch, 0 workers']:.2f}x faster")
    print(f"in-memory epoch vs on the fly (0 workers): {rows['on the fly: one epoch, 0 workers'] / rows['in memory: one epoch']:.1f}x faster")
    mixed_sizes(args.mixed_files, transform)


def mixed_sizes(count: int, transform) -> None:
    """Memory epoch against on-the-fly epoch on a folder of mixed sizes, and what the fill costs."""
    folder = imagenorm.ImageFolderDataset(mixed_jpegs(count), labels=False)
    on_the_fly = imagenorm.normalize_dataset(folder, transform, cache="none")
    start = time.perf_counter()
    in_memory = imagenorm.normalize_dataset(folder, transform)  # auto: sized exactly, then filled
    fill = time.perf_counter() - start
    assert in_memory.cache == "memory" and all(torch.equal(in_memory[i], on_the_fly[i]) for i in range(0, count, 17))
    memory_epoch = best(lambda: epoch(in_memory, collate=as_list))
    fly_epoch = best(lambda: epoch(on_the_fly, collate=as_list))
    shapes = [in_memory[i].shape for i in range(count)]  # views: no decoding
    mean_pixels = sum(shape[-1] * shape[-2] for shape in shapes) / count
    print(f"# mixed sizes: {count} JPEGs of {len(set(shapes))} shapes, batches of 32 as lists, torch threads 1")
    print(f"cache='auto': {in_memory.reason}")
    print(f"{'mixed, in memory: fill once (auto: size, then fill)':58s} {fill:8.3f} s {count / fill:9.1f} images/s")
    print(f"{'mixed, in memory: one epoch':58s} {memory_epoch:8.3f} s {count / memory_epoch:9.1f} images/s")
    print(f"{'mixed, on the fly: one epoch, 0 workers':58s} {fly_epoch:8.3f} s {count / fly_epoch:9.1f} images/s")
    print(f"mixed sizes, in-memory epoch vs on the fly (0 workers): {fly_epoch / memory_epoch:.1f}x faster")
    print(f"mixed sizes, fill vs on-the-fly epoch: {fill / fly_epoch:.1f}x (sizing decodes each image once more); "
          f"{mean_pixels / (500 * 375):.2f}x the pixels of 500x375 on average")


if __name__ == "__main__":
    main()
