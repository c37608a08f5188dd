"""Normalization speed: imagenorm's one-pass transform against the plain chain and torchvision.

In one run, for 8- and 16-bit input, at one thread and at the default thread count:
  plain chain   x.float().div(scale).sub(mean).div(std)      (what tutorials write)
  imagenorm     Standardize.from-stats(x)                     (fresh output)
  imagenorm out Standardize(x, out=buffer)                    (preallocated / pinned batch buffer)
  torchvision   v2.ToDtype(float32, scale=True) + v2.Normalize (when torchvision imports)
and the memory-bandwidth floor: bytes read + written over a measured copy bandwidth.

Targets: (a) batch (64, 3, 224, 224), fresh output: >= 3x faster than the plain chain;
(b) the same into out=: within 2.5x the floor; (c) one image (3, 224, 224): >= 2.5x faster.

    python benchmarks/normalize_throughput.py
"""

from __future__ import annotations

import os
import sys
import time
from datetime import date

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine  # noqa: E402

import imagenorm  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def per_call_ms(function, min_seconds: float = 0.4, rounds: int = 5) -> float:
    """Best over ``rounds`` of the mean time per call, each round lasting ~min_seconds / rounds."""
    function()
    start = time.perf_counter()
    function()
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(min_seconds / rounds / once))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1000


def copy_bandwidth() -> float:
    """Bytes per second read + written by a large float32 copy (the machine's practical ceiling)."""
    source = torch.rand(32 * 1024 * 1024)
    target = torch.empty_like(source)
    ms = per_call_ms(lambda: target.copy_(source))
    return 2 * source.numel() * 4 / (ms / 1000)


def torchvision_pipeline(scale_dtype):
    try:
        from torchvision.transforms import v2
    except Exception:  # torchvision is optional and does not import next to every torch build
        return None
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def run(threads: int, bandwidth: float) -> list[str]:
    torch.set_num_threads(threads)
    lines = []
    for dtype in (torch.uint8, torch.uint16):
        top = float(torch.iinfo(dtype).max)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        transform = imagenorm.Standardize(MEAN, STD)  # [0, 1]-scale constants, integer input
        tv = torchvision_pipeline(dtype)
        for label, shape in (("batch", (64, 3, 224, 224)), ("image", (3, 224, 224))):
            x = torch.randint(0, int(top) + 1, shape, dtype=torch.int64).to(dtype)
            buffer = torch.empty(shape, dtype=torch.float32)
            assert torch.allclose(transform(x), x.float().div(top).sub(mean).div(std), atol=1e-5)
            plain = per_call_ms(lambda: x.float().div(top).sub(mean).div(std))
            fresh = per_call_ms(lambda: transform(x))
            into = per_call_ms(lambda: transform(x, out=buffer))
            floor = (x.numel() * x.element_size() + buffer.numel() * 4) / bandwidth * 1000
            tv_ms = per_call_ms(lambda: tv(x)) if tv is not None else float("nan")
            name = f"{str(dtype).removeprefix('torch.')} {label} {tuple(shape)}"
            lines.append(
                f"{threads:>7d} {name:34s} {plain:8.3f} {fresh:9.3f} {into:9.3f} {tv_ms:11.3f} {floor:7.3f}"
                f" {plain / fresh:13.2f} {into / floor:12.2f}"
            )
    return lines


def main() -> None:
    default_threads = torch.get_num_threads()
    bandwidth = copy_bandwidth()
    print(f"# normalize throughput; {machine()}; {date.today()}; copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)")
    header = f"{'threads':>7s} {'input':34s} {'plain ms':>8s} {'imagenorm':>9s} {'out= ms':>9s} {'torchvision':>11s} {'floor':>7s} {'plain/fresh':>13s} {'out=/floor':>12s}"
    print(header)
    for threads in sorted({1, default_threads}):
        for line in run(threads, bandwidth):
            print(line)
    print("targets: batch plain/fresh >= 3.0; batch out=/floor <= 2.5; image plain/fresh >= 2.5")


if __name__ == "__main__":
    main()
