"""Time ``imagenorm compare`` of two 16-bit 3-channel stats files (every one of the 65,536 bins used).

    .venv/bin/python benchmarks/compare_speed.py [--rounds 5]

Prints the stats files' size, the best time of ``compare_stats`` on loaded statistics, of
loading both files and comparing, and of the whole command line (a fresh process: Python,
imagenorm and numpy start-up included), with the target of well under one second.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

import imagenorm
from common import run_in_temporary_folder
from imagenorm.compare import compare_stats
from report_speed import best, sixteen_bit_stats_files  # the same data as the report's benchmark


def main() -> None:
    run_in_temporary_folder(run, __doc__, "imagenorm-compare-", rounds=5)


def run(folder: str, rounds: int) -> None:
    train, test = sixteen_bit_stats_files(folder)
    first, second = imagenorm.DatasetStats.load(train), imagenorm.DatasetStats.load(test)
    in_memory = best(lambda: compare_stats(first, second), rounds)
    with_loading = best(lambda: imagenorm.DatasetStats.load(train).compare(imagenorm.DatasetStats.load(test)), rounds)
    command = [os.path.join(os.path.dirname(sys.executable), "imagenorm"), "compare", train, test, "--json"]
    once = subprocess.run(command, capture_output=True, text=True, check=False)
    if once.returncode != 1 or json.loads(once.stdout)["drift"] is not True:  # exit 1: drift (and not an error)
        raise SystemExit(f"imagenorm compare did not report the drift: exit {once.returncode}: {once.stderr[-500:]}")
    whole = best(lambda: subprocess.run(command, capture_output=True, check=False), rounds)
    drift = compare_stats(first, second)
    print(f"# compare speed; {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, imagenorm {imagenorm.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    used = int(np.count_nonzero(first.state.counts[0]))
    print(f"stats files: {os.path.getsize(train):,} and {os.path.getsize(test):,} bytes (uint16, 3 channels, "
          f"{used:,} of 65,536 bins used in channel 0); best of {rounds}")
    print(f"compare_stats (loaded)          {in_memory * 1000:8.1f} ms")
    print(f"load both + compare             {with_loading * 1000:8.1f} ms")
    print(f"imagenorm compare --json (CLI)  {whole * 1000:8.1f} ms   target: well under 1 s -> "
          f"{'MET' if whole < 1.0 else 'missed'}")
    print(f"drift: {drift.drift} ({', '.join(drift.drifting)}); pooled wasserstein {drift.pooled.wasserstein:.4f} "
          f"reference stds, ks {drift.pooled.ks:.4f}, psi {drift.pooled.psi:.4f}")


if __name__ == "__main__":
    main()
