"""Run compute_stats in a real process group, one process per rank (used by test_distributed.py).

    torchrun --nproc_per_node=N tests/distributed_helper.py MODE FOLDER OUT     # torchrun launches
    python tests/distributed_helper.py MODE FOLDER OUT --spawn N                # the Python API spawns

MODE: ``stats`` (write each rank's result), ``landmarks`` (with histogram landmarks), ``hang`` (rank 1 never arrives), ``fail`` (a bad file
in rank 1's shard). Each rank writes OUT/rank<r>.json: the stats dict, or {"error": "..."}.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

import torch.distributed as dist
import torch.multiprocessing as mp

import imagenorm


def run_rank(rank: int, world: int, mode: str, folder: str, out: str, port: int | None) -> None:
    if port is not None:  # spawned: join by TCP on this machine
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=20))
    else:  # torchrun set the environment
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    rank = dist.get_rank()
    if mode == "hang" and rank == 1:
        time.sleep(25)
    start = time.monotonic()
    try:
        if mode == "allreduce":  # the user's own loop: each rank measures its part, then all_reduce
            paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
            stats = imagenorm.compute_stats(paths[rank::dist.get_world_size()]).all_reduce()
        elif mode == "accumulator":  # batches already in tensors (on a GPU in real use)
            dataset = imagenorm.ImageFolderDataset(folder, labels=False)
            accumulator = imagenorm.StatsAccumulator()
            for index in range(rank, len(dataset), dist.get_world_size()):
                accumulator.update(dataset[index][None])
            accumulator.all_reduce()
            stats = accumulator.compute()
        elif mode == "landmarks":  # per-image landmarks gathered from every rank, in item order
            stats = imagenorm.compute_stats(folder, distributed=True, timeout=3.0, landmarks=True)
        else:
            stats = imagenorm.compute_stats(folder, distributed=True, timeout=3.0, workers=1 if mode == "stats" and rank == 0 else 0)
        document = stats.to_dict()
        document.pop("created_at")
    except imagenorm.ImagenormError as error:
        document = {"error": str(error), "seconds": time.monotonic() - start}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as file:
        json.dump(document, file)
    if mode != "hang":
        dist.destroy_process_group()


def _spawned(index: int, world: int, mode: str, folder: str, out: str, port: int) -> None:
    run_rank(index, world, mode, folder, out, port)


if __name__ == "__main__":
    mode, folder, out = sys.argv[1:4]
    if "--spawn" in sys.argv:
        world = int(sys.argv[sys.argv.index("--spawn") + 1])
        port = int(sys.argv[sys.argv.index("--port") + 1])
        mp.spawn(_spawned, args=(world, mode, folder, out, port), nprocs=world, join=True)
    else:
        run_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), mode, folder, out, None)
        if mode == "hang":
            os._exit(0)
