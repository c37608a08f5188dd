"""Time ``write_report`` on a 16-bit 3-channel stats file (every one of the 65,536 bins used).

    .venv/bin/python benchmarks/report_speed.py [--rounds 3]

Makes a small random 16-bit RGB dataset with full-range values (8 images of 256×256 as one
array: about 1.5 million values per channel, so nearly every bin is used), saves its stats
file, and prints the best time of ``write_report`` on the loaded statistics (4 charts, each
drawn linear and log), of loading and writing, of the whole command line (a fresh process:
Python, imagenorm, jinja2 and matplotlib start-up included), and the page's size, alone and
with ``--compare`` against a shifted dataset. The size limit is 3 MB.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np

import imagenorm
from common import run_in_temporary_folder
from imagenorm.report import write_report


def best(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def sixteen_bit_stats_files(folder: str) -> tuple[str, str]:
    """Two stats files of 16-bit RGB data (8 images of 256x256): uniform over the full range
    (every bin used), and a clipped normal distribution."""
    rng = np.random.default_rng(13)
    train, test = os.path.join(folder, "train.json"), os.path.join(folder, "test.json")
    imagenorm.compute_stats(rng.integers(0, 65536, (8, 3, 256, 256), dtype=np.uint16)).save(train)
    shifted = np.clip(rng.normal(34000, 15000, (8, 3, 256, 256)), 0, 65535).astype(np.uint16)
    imagenorm.compute_stats(shifted).save(test)
    return train, test


def main() -> None:
    run_in_temporary_folder(run, __doc__, "imagenorm-report-", rounds=3)


def run(folder: str, rounds: int) -> None:
    train, test = sixteen_bit_stats_files(folder)
    stats, other = imagenorm.DatasetStats.load(train), imagenorm.DatasetStats.load(test)
    used = int(np.count_nonzero(stats.state.counts[0]))
    page, compared = os.path.join(folder, "report.html"), os.path.join(folder, "compare.html")
    write_report(stats, page)  # warm: imports, fonts
    in_memory = best(lambda: write_report(stats, page), rounds)
    with_loading = best(lambda: write_report(imagenorm.DatasetStats.load(train), page), rounds)
    with_compare = best(lambda: write_report(stats, compared, compare=other), rounds)
    command = [sys.executable, "-m", "imagenorm", "report", train, "-o", page]
    command_line = best(lambda: subprocess.run(command, check=True, capture_output=True), rounds)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"stats file: {os.path.getsize(train) / 1e6:.2f} MB, bins used in channel 0: {used:,} of 65,536")
    print(f"write_report, loaded statistics:       {in_memory:.3f} s")
    print(f"load + write_report:                   {with_loading:.3f} s")
    print(f"write_report with compare:             {with_compare:.3f} s")
    print(f"imagenorm report (fresh process):      {command_line:.3f} s")
    print(f"report size: {os.path.getsize(page) / 1e3:.0f} KB alone, {os.path.getsize(compared) / 1e3:.0f} KB with "
          f"compare (limit 3,000 KB)")


if __name__ == "__main__":
    main()
