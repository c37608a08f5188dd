"""Throughput of ``imagenorm stats`` on real-photo JPEGs and PNGs against decoding alone.

Folders (made once from scikit-image's photos, cached under benchmarks/data):
2,000 JPEGs, 1,000 8-bit gray PNGs and 500 8-bit RGB PNGs, all 500x375.

Measured per folder in one run, interleaved round after round across all folders,
single-threaded libraries (one core per process):
  (a) decode only with Pillow (``Image.open`` + ``np.asarray``), one process;
  (e) the exact fast decoder imagenorm uses, alone (file bytes + ``simplejpeg.decode_jpeg`` /
      ``imagecodecs.spng_decode``), one process;
  (f) for PNG, libpng alone (``imagecodecs.png_decode``): exact and faster on gray, but not
      used (on Python 3.11 each PNG it refuses takes a reference from ``None``);
  (b) imagenorm.compute_stats with 1 and 2 worker processes;
and for the JPEG folder only:
  (c) the common recipe: per-image mean/std in torch, averaged over images;
  (d) DataLoader workers that ship decoded images to the main process, reduced there;
plus peak memory for 1,000 vs 10,000 files.
Before timing, (e) is checked against Pillow on every file: the same pixels, or abort.

Targets (issue 11): (b, 1 worker) >= 1.0 x (a) on JPEG, >= 0.9 x (a) on PNG;
(b, 2 workers) >= 1.8 x (b, 1 worker); peak RSS at 10,000 files within 10% of that at 1,000.

    python benchmarks/stats_throughput.py [--files 2000] [--gray-files 1000] [--rgb-files 500]
        [--folders jpeg,png-gray,png-rgb] [--rounds 7] [--skip-memory] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import imagecodecs  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_best, machine, photo_jpegs, photo_pngs  # noqa: E402

import imagenorm  # noqa: E402
from imagenorm.readers import jpeg  # noqa: E402
from imagenorm.readers.base import read_file  # noqa: E402
from imagenorm.stats import kernels  # noqa: E402

torch.set_num_threads(1)


def decode_only(paths: list[str]) -> None:
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image)


def fast_decode(decoder: Callable[[bytes], np.ndarray], paths: list[str]) -> None:
    for path in paths:
        decoder(read_file(path))


def check_exact(decoder: Callable[[bytes], np.ndarray], paths: list[str]) -> float:
    """Assert that ``decoder`` gives Pillow's pixels for every file; return the megapixels."""
    pixels = 0
    for path in paths:
        with Image.open(path) as image:
            expected = np.asarray(image)
        got = decoder(read_file(path))
        if got.shape != expected.shape or got.dtype != expected.dtype or not np.array_equal(got, expected):
            differ = int(np.count_nonzero(got != expected)) if got.shape == expected.shape else "all"
            raise SystemExit(
                f"fast decoder {decoder.__name__} differs from Pillow on {path}: "
                f"{got.dtype}{got.shape} vs {expected.dtype}{expected.shape}, {differ} values differ; benchmark aborted"
            )
        pixels += expected.shape[0] * expected.shape[1]
    return pixels / 1e6


def decode_jpeg(data: bytes) -> np.ndarray:
    """libjpeg-turbo with Pillow's IDCT and upsampling: the very call of imagenorm's fast path."""
    return jpeg.decode_samples(data)


FOLDERS = {  # name: (label, fast decoder, target of stats 1 worker / Pillow decode only)
    "jpeg": ("JPEGs", decode_jpeg, 1.0),
    "png-gray": ("8-bit gray PNGs", imagecodecs.spng_decode, 0.9),
    "png-rgb": ("8-bit RGB PNGs", imagecodecs.spng_decode, 0.9),
}
OTHER_DECODERS = {"png-gray": imagecodecs.png_decode, "png-rgb": imagecodecs.png_decode}  # (f): timed, not used
TWO_OVER_ONE = 1.8


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


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
    parser.add_argument("--files", type=int, default=2000, help="JPEGs (first files of the 2,000 folder)")
    parser.add_argument("--gray-files", type=int, default=1000, help="8-bit gray PNGs (first files of the 1,000 folder)")
    parser.add_argument("--rgb-files", type=int, default=500, help="8-bit RGB PNGs (first files of the 500 folder)")
    parser.add_argument("--folders", default="jpeg,png-gray,png-rgb", help="comma-separated, of: " + ",".join(FOLDERS))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds; the best of each is kept")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: 40 files a folder, 1 round, no memory check")
    args = parser.parse_args()
    folders = [name.strip() for name in args.folders.split(",") if name.strip()]
    unknown = [name for name in folders if name not in FOLDERS]
    if unknown or not folders:
        parser.error(f"--folders: unknown {unknown}; choose from {','.join(FOLDERS)}")
    if args.quick:
        args.files, args.gray_files, args.rgb_files = (min(n, 40) for n in (args.files, args.gray_files, args.rgb_files))
        args.rounds, args.skip_memory = 1, True

    # the full folders are the cache; the first files of each are used
    all_paths = {
        "jpeg": lambda: photo_jpegs(2000)[: args.files],
        "png-gray": lambda: photo_pngs(1000, "L", first=args.gray_files),
        "png-rgb": lambda: photo_pngs(500, "RGB", first=args.rgb_files),
    }
    paths = {name: all_paths[name]() for name in folders}
    megapixels = {}
    for name in folders:  # exactness once per folder, before any timing
        megapixels[name] = check_exact(FOLDERS[name][1], paths[name])
        print(f"exact: {FOLDERS[name][1].__name__} == Pillow on all {len(paths[name])} {FOLDERS[name][0]}", flush=True)

    contenders = {}
    for name in folders:
        decoder, files = FOLDERS[name][1], paths[name]
        contenders.update(
            {
                (name, "(a) decode only, Pillow, 1 process"): lambda files=files: decode_only(files),
                (name, f"(e) {decoder.__name__} only, 1 process"): lambda d=decoder, files=files: fast_decode(d, files),
                (name, "(b) imagenorm stats, 1 worker"): lambda files=files: imagenorm.compute_stats(files, workers=1),
                (name, "(b) imagenorm stats, 2 workers"): lambda files=files: imagenorm.compute_stats(files, workers=2),
            }
        )
        if name in OTHER_DECODERS:
            other = OTHER_DECODERS[name]
            contenders[(name, f"(f) {other.__name__} only (not used)")] = lambda d=other, files=files: fast_decode(d, files)
    rows = interleaved_best(contenders, args.rounds)
    if "jpeg" in folders:
        jpegs = paths["jpeg"]
        rows.update(  # far slower baselines: their ratios need no fine timing
            interleaved_best(
                {
                    ("jpeg", "(c) per-image std recipe, 1 process"): lambda: per_image_std_recipe(jpegs),
                    ("jpeg", "(d) DataLoader ships pixels, 2 workers"): lambda: dataloader_ships_pixels(jpegs),
                },
                rounds=1,
                warm_up=False,
            )
        )

    print(f"# stats throughput; {machine()}; {date.today()}; best of {args.rounds} interleaved round(s)")
    summary: dict = {"ratios": {}}
    for name in folders:
        label, decoder, target = FOLDERS[name]
        mp = megapixels[name]
        decode = rows[(name, "(a) decode only, Pillow, 1 process")][0]
        fast = rows[(name, f"(e) {decoder.__name__} only, 1 process")][0]
        one = rows[(name, "(b) imagenorm stats, 1 worker")][0]
        two = rows[(name, "(b) imagenorm stats, 2 workers")][0]
        print(f"\n## {name}: {len(paths[name])} {label}, {mp:.0f} megapixels")
        print(f"{'what':42s} {'wall s':>7s} {'CPU s':>7s} {'MP/s':>7s} {'x decode':>9s}")
        for (folder, what), (seconds, cpu) in rows.items():
            if folder == name:
                print(f"{what:42s} {seconds:7.3f} {cpu:7.3f} {mp / seconds:7.1f} {decode / seconds:9.2f}")
        print(f"{'ratio (throughput)':42s} {'value':>7s} {'target':>7s}")
        print(f"{'stats 1 worker / Pillow decode only':42s} {decode / one:7.2f} {f'>={target:.2f}':>7s} {verdict(decode / one, target)}")
        print(f"{'stats 2 workers / stats 1 worker':42s} {one / two:7.2f} {f'>={TWO_OVER_ONE:.2f}':>7s} {verdict(one / two, TWO_OVER_ONE)}")
        print(f"{decoder.__name__ + ' / Pillow decode only':42s} {decode / fast:7.2f} {'-':>7s}")
        summary["ratios"][name] = {
            "one_worker_over_decode": decode / one,
            "two_over_one": one / two,
            "fast_decoder_over_pillow": decode / fast,
            "pass": decode / one >= target and one / two >= TWO_OVER_ONE,
        }

    if "jpeg" in folders:
        exact = imagenorm.compute_stats(paths["jpeg"], workers=2)
        recipe_mean, recipe_std = per_image_std_recipe(paths["jpeg"])
        exact_std = np.array(exact.std) / 255
        error = (recipe_std - exact_std) / exact_std
        print(f"\nper-image std recipe (JPEGs): std {np.round(recipe_std.astype(float), 4).tolist()} vs exact "
              f"{np.round(exact_std, 4).tolist()}: error {', '.join(f'{100 * e:+.1f}%' for e in error)}")
        summary["recipe_std_error"] = error.tolist()

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
