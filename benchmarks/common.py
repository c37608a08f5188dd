"""Shared benchmark helpers: folders of real-photo JPEGs and PNGs, timing, machine description."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def _photo_crop(photo: np.ndarray, rng: np.random.Generator, size: tuple[int, int]):
    """A random crop of ``photo`` with the aspect of ``size``, maybe flipped, brightness scaled, resized."""
    from PIL import Image

    height, width = photo.shape[:2]
    crop_h = int(rng.integers(height // 2, height + 1))
    crop_w = min(width, int(crop_h * size[0] / size[1]))
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    crop = photo[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.7, 1.2)
    crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.BILINEAR)


def photo_jpegs(count: int = 2000, size: tuple[int, int] = (500, 375), folder: str | None = None) -> list[str]:
    """``count`` JPEGs of ``size`` cut from scikit-image's photographs (made once, then reused).

    Random crops, flips and brightness changes of seven public-domain/CC0 photos,
    saved at quality 90: real photographic content, so decoding costs what it costs
    on real datasets.
    """
    import skimage.data

    root = DATA / (folder or f"jpeg_{count}_{size[0]}x{size[1]}")
    paths = [str(root / f"{index // 500:02d}" / f"photo_{index:05d}.jpg") for index in range(count)]
    if all(os.path.exists(p) for p in paths):
        return paths
    rng = np.random.default_rng(0)
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    for index, path in enumerate(paths):
        image = _photo_crop(photos[index % len(photos)], rng, size)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path, quality=90)
    return paths


GRAY_PHOTOS = PHOTOS + ("camera", "moon")  # the colour photos converted to L, and two gray ones


def photo_pngs(
    count: int, mode: str = "L", size: tuple[int, int] = (500, 375), first: int | None = None
) -> list[str]:
    """8-bit PNGs (``mode`` "L" or "RGB") of ``size`` cut from scikit-image's photographs.

    Folder ``png_gray_{count}_{W}x{H}`` or ``png_rgb_...`` under ``benchmarks/data``, made
    once and reused. The same random crops, flips and brightness changes as
    :func:`photo_jpegs` (the gray folder also uses scikit-image's gray ``camera`` and
    ``moon``; colour photos are converted to L by Pillow), saved with Pillow's default
    PNG compression. Each file depends only on its index, so ``first`` (the first files
    only, e.g. for a smoke test) makes and returns a prefix of the same folder.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")
    tag = "gray" if mode == "L" else "rgb"
    root = DATA / f"png_{tag}_{count}_{size[0]}x{size[1]}"
    wanted = count if first is None else min(first, count)
    paths = [str(root / f"{index // 500:02d}" / f"photo_{index:05d}.png") for index in range(wanted)]
    missing = [index for index, path in enumerate(paths) if not os.path.exists(path)]
    if not missing:
        return paths
    import skimage.data

    names = GRAY_PHOTOS if mode == "L" else PHOTOS
    photos = [getattr(skimage.data, name)() for name in names]
    for index in missing:
        rng = np.random.default_rng((1 if mode == "L" else 2, index))
        image = _photo_crop(photos[index % len(photos)], rng, size).convert(mode)
        os.makedirs(os.path.dirname(paths[index]), exist_ok=True)
        partial = paths[index] + ".partial"  # an interrupted run leaves no truncated PNG behind
        image.save(partial, format="PNG")
        os.replace(partial, paths[index])
    return paths


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def interleaved_best(
    contenders: dict[str, Callable[[], object]], rounds: int = 3, warm_up: bool = True
) -> dict[str, tuple[float, float]]:
    """Best wall time and best CPU time (s) of each contender over ``rounds`` rounds, run in turn.

    One warm-up call each first (unless ``warm_up`` is False). Running the contenders in
    turn, round after round, spreads the machine's drifts (other tenants, clock changes)
    over all of them, and the best time is the least disturbed one. CPU time includes
    worker processes, so it shows the work done whatever the wall clock did.
    """
    for function in contenders.values() if warm_up else ():
        function()
    best = {name: (float("inf"), float("inf")) for name in contenders}
    for _ in range(rounds):
        for name, function in contenders.items():
            wall, cpu = time.perf_counter(), cpu_seconds()
            function()
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def run_in_temporary_folder(run: Callable[[str, int], None], description: str, prefix: str, rounds: int = 3) -> None:
    """Parse ``--rounds``, then ``run(folder, rounds)`` in a temporary folder removed afterwards."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        run(folder, args.rounds)


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
