"""Statistics over 1 and 2 torch.distributed ranks (gloo, this machine) on the 2,000-JPEG folder.

Launches ``torchrun --nproc_per_node=N`` on this script for N = 1, 2; inside, each rank times
``compute_stats(..., distributed=True)`` and the cross-rank reduction separately (process
start-up and group set-up are not counted). Prints seconds, speed-up and the merge's share.

    python benchmarks/distributed_throughput.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import date

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, photo_jpegs  # noqa: E402


def rank_main() -> None:
    import torch.distributed as dist

    import imagenorm
    from imagenorm.stats import distributed

    dist.init_process_group("gloo")
    paths = photo_jpegs(2000)
    reduce_seconds = []
    original = distributed.reduce_partial

    def timed(partial, group=None):
        start = time.perf_counter()
        result = original(partial, group)
        reduce_seconds.append(time.perf_counter() - start)
        return result

    distributed.reduce_partial = timed
    imagenorm.compute_stats(paths[:50], distributed=True)  # warm-up: page cache, kernel compile
    best = None
    for _ in range(3):
        reduce_seconds.clear()
        dist.barrier()
        start = time.perf_counter()
        imagenorm.compute_stats(paths, distributed=True)
        total = time.perf_counter() - start
        if best is None or total < best[0]:
            best = (total, sum(reduce_seconds))
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"ranks": dist.get_world_size(), "seconds": best[0], "reduce": best[1]}))
    dist.destroy_process_group()


def main() -> None:
    photo_jpegs(2000)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    results = {}
    for ranks in (1, 2):
        output = subprocess.run(
            [torchrun, "--nnodes=1", f"--nproc_per_node={ranks}", "--master_addr=127.0.0.1", "--master_port=29531",
             __file__, "--rank-main"], capture_output=True, text=True, check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        ).stdout
        results[ranks] = json.loads(re.search(r"RESULT (.*)", output).group(1))
    print(f"# distributed throughput: 2000 JPEGs (375 MP), gloo on 127.0.0.1; {machine()}; {date.today()}")
    for ranks, result in results.items():
        print(f"{ranks} rank(s): {result['seconds']:.3f} s, {375 / result['seconds']:.1f} MP/s, "
              f"cross-rank reduction {1000 * result['reduce']:.1f} ms ({100 * result['reduce'] / result['seconds']:.2f}% of the time)")
    print(f"speed-up, 2 ranks over 1: {results[1]['seconds'] / results[2]['seconds']:.2f}x")


if __name__ == "__main__":
    if "--rank-main" in sys.argv:
        rank_main()
    else:
        main()
