"""Shared benchmark helpers: a folder of real-photo JPEGs, timing, machine description."""

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


def photo_jpegs(count: int = 2000, size: tuple[int, int] = (500, 375), folder: str | None = None) -> list[str]:
    """``count`` JPEGs of ``size`` cut from scikit-image's photographs (made once, then reused).

    Random crops, flips and brightness changes of seven public-domain/CC0 photos,
    saved at quality 90: real photographic content, so decoding costs what it costs
    on real datasets.
    """
    import skimage.data
    from PIL import Image

    root = DATA / (folder or f"jpeg_{count}_{size[0]}x{size[1]}")
    paths = [str(root / f"{index // 500:02d}" / f"photo_{index:05d}.jpg") for index in range(count)]
    if all(os.path.exists(p) for p in paths):
        return paths
    rng = np.random.default_rng(0)
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    for index, path in enumerate(paths):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        crop_h = int(rng.integers(height // 2, height + 1))
        crop_w = min(width, int(crop_h * size[0] / size[1]))
        top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        crop = photo[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain = rng.uniform(0.7, 1.2)
        crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
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


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
