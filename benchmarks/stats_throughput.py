"""Throughput of ``imagenorm stats`` on ~2,000 real-photo JPEGs against decoding alone.

Measured in one run, single-threaded libraries (one core per process):
  (a) decode only, with the same decoder imagenorm uses (Pillow), one process;
  (b) imagenorm.compute_stats with 1 and 2 worker processes;
  (c) the common recipe: per-image mean/std in torch, averaged over images;
  (d) DataLoader workers that ship decoded images to the main process, reduced there;
plus peak memory for 1,000 vs 10,000 files.

Targets: (b, 1 worker) >= 0.75 x (a); (b, 2 workers) >= 1.7 x (b, 1 worker);
peak RSS at 10,000 files within 10% of that at 1,000.

    python benchmarks/stats_throughput.py [--files 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_best, machine, photo_jpegs  # noqa: E402

import imagenorm  # noqa: E402
from imagenorm.stats import kernels  # noqa: E402

torch.set_num_threads(1)


def decode_only(paths: list[str]) -> None:
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image)


def per_image_std_recipe(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """What tutorials do: mean and std of each image (in [0, 1]), averaged over images."""
    means, stds = [], []
    for path in paths:
        with Image.open(path) as image:
            tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
        means.append(tensor.mean(dim=(1, 2)))
        stds.append(tensor.std(dim=(1, 2)))
    return torch.stack(means).mean(0).numpy(), torch.stack(stds).mean(0).numpy()


class DecodedImages(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            return torch.from_numpy(np.asarray(image).copy())


def dataloader_ships_pixels(paths: list[str]) -> None:
    """Workers decode, pixels cross to the main process, which reduces them."""
    loader = torch.utils.data.DataLoader(DecodedImages(paths), batch_size=None, num_workers=2)
    banks = np.zeros((kernels.BANKS, 3, 256), np.int64)
    for image in loader:
        kernels.count_values(np.moveaxis(image.numpy(), -1, 0), banks)


def peak_rss_mb(paths_file: str, workers: int) -> float:
    """Peak resident memory (MB) of a fresh process running compute_stats, workers included."""
    code = (
        "import resource, sys, imagenorm\n"
        f"paths = open({paths_file!r}).read().split()\n"
        f"imagenorm.compute_stats(paths, workers={workers})\n"
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(own + children)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(output.strip()) / 1024


def memory_check(tmp: str) -> tuple[float, float]:
    small = photo_jpegs(10_000, (64, 48), folder="jpeg_10000_64x48")
    results = []
    for count in (1_000, 10_000):
        list_file = os.path.join(tmp, f"paths_{count}.txt")
        with open(list_file, "w") as file:
            file.write("\n".join(small[:count]))
        results.append(peak_rss_mb(list_file, workers=2))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; the best of each is kept")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    paths = photo_jpegs(args.files)
    megapixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / 1e6
    exact = imagenorm.compute_stats(paths, workers=2)

    rows = interleaved_best(
        {
            "(a) decode only, Pillow, 1 process": lambda: decode_only(paths),
            "(b) imagenorm stats, 1 worker": lambda: imagenorm.compute_stats(paths, workers=1),
            "(b) imagenorm stats, 2 workers": lambda: imagenorm.compute_stats(paths, workers=2),
        },
        args.rounds,
    )
    rows.update(  # far slower baselines: their ratios need no fine timing
        interleaved_best(
            {
                "(c) per-image std recipe, 1 process": lambda: per_image_std_recipe(paths),
                "(d) DataLoader ships pixels, 2 workers": lambda: dataloader_ships_pixels(paths),
            },
            rounds=1,
            warm_up=False,
        )
    )

    decode = rows["(a) decode only, Pillow, 1 process"][0]
    print(f"# stats throughput: {len(paths)} JPEGs, {megapixels:.0f} megapixels; {machine()}; {date.today()}")
    print(f"{'what':42s} {'wall s':>7s} {'CPU s':>7s} {'MP/s':>7s} {'x decode':>9s}")
    for name, (seconds, cpu) in rows.items():
        print(f"{name:42s} {seconds:7.3f} {cpu:7.3f} {megapixels / seconds:7.1f} {decode / seconds:9.2f}")

    one, two = rows["(b) imagenorm stats, 1 worker"][0], rows["(b) imagenorm stats, 2 workers"][0]
    print(f"\n1 worker / decode only: {decode / one:.2f} (target >= 0.75)")
    print(f"2 workers / 1 worker:   {one / two:.2f} (target >= 1.70)")

    recipe_mean, recipe_std = per_image_std_recipe(paths)
    exact_std = np.array(exact.std) / 255
    error = (recipe_std - exact_std) / exact_std
    print(f"per-image std recipe: std {np.round(recipe_std, 4).tolist()} vs exact {np.round(exact_std, 4).tolist()}: "
          f"error {', '.join(f'{100 * e:+.1f}%' for e in error)}")
    summary = {"ratios": {"one_worker_over_decode": decode / one, "two_over_one": one / two}, "recipe_std_error": error.tolist()}

    if not args.skip_memory:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            small_rss, large_rss = memory_check(tmp)
        print(f"peak RSS (main + workers, 2 workers): 1,000 files {small_rss:.0f} MB, 10,000 files {large_rss:.0f} MB, "
              f"ratio {large_rss / small_rss:.3f} (target <= 1.10)")
        summary["peak_rss_mb"] = [small_rss, large_rss]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
