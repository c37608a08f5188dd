"""Statistics over real torch.distributed process groups (gloo on 127.0.0.1) equal one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import imagenorm

from conftest import random_image, write_png

HELPER = Path(__file__).with_name("distributed_helper.py")
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_data(root: Path, rng, dtype="uint16", count=5) -> Path:
    root.mkdir()
    for index in range(count):
        image = random_image(rng, dtype, (9 + index, 11, 3))
        if np.dtype(dtype).kind == "f":
            np.save(root / f"{index}.npy", image)
        else:
            write_png(root / f"{index}.png", image)
    return root


def single_process(folder: Path) -> dict:
    document = imagenorm.compute_stats(folder).to_dict()
    document.pop("created_at")
    return document


def run(launcher: str, world: int, mode: str, folder: Path, out: Path, timeout: float = 120) -> float:
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(HELPER.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if launcher == "torchrun":
        command = [TORCHRUN, "--nnodes=1", f"--nproc_per_node={world}", "--master_addr=127.0.0.1",
                   f"--master_port={free_port()}", str(HELPER), mode, str(folder), str(out)]
    else:
        command = [sys.executable, str(HELPER), mode, str(folder), str(out), "--spawn", str(world), "--port", str(free_port())]
    start = time.monotonic()
    subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - start


def results(out: Path, world: int) -> list[dict]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world) if (out / f"rank{rank}.json").exists()]


def without_float_noise(document: dict) -> dict:
    document = dict(document)
    document.pop("between_images", None)
    return document


@pytest.mark.parametrize("launcher", ["torchrun", "spawn"])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_equal_one_process(tmp_path, rng, launcher, world):
    folder = make_data(tmp_path / "data", rng, count=5 if world == 2 else 2)  # 3 ranks, 2 files: one empty shard
    run(launcher, world, "stats", folder, tmp_path / "out")
    documents = results(tmp_path / "out", world)
    assert len(documents) == world, documents
    expected = without_float_noise(single_process(folder))
    for document in documents:
        assert "error" not in document, document
        assert without_float_noise(document) == expected


def test_float_data_across_ranks(tmp_path, rng):
    folder = make_data(tmp_path / "data", rng, dtype="float32", count=5)
    run("spawn", 2, "stats", folder, tmp_path / "out")
    expected = single_process(folder)
    for document in results(tmp_path / "out", 2):
        for got, want in zip(document["channels"] + [document["pooled"]], expected["channels"] + [expected["pooled"]]):
            assert got["count"] == want["count"] and got["min"] == want["min"] and got["max"] == want["max"]
            assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
            assert got["std"] == pytest.approx(want["std"], rel=1e-12)
            assert got["percentiles"] == want["percentiles"]  # exact float percentiles across ranks too


def test_landmarks_across_ranks_in_item_order(tmp_path, rng):
    """Ranks take items 0, 2, 4 and 1, 3: the gathered landmarks are still in item order, equal to one process."""
    folder = make_data(tmp_path / "data", rng, count=5)
    run("spawn", 2, "landmarks", folder, tmp_path / "out")
    expected = imagenorm.compute_stats(folder, landmarks=True).to_dict()["landmarks"]
    documents = results(tmp_path / "out", 2)
    assert len(documents) == 2
    for document in documents:
        assert document["landmarks"] == expected
    assert [image["name"] for image in expected["images"]] == sorted(str(p) for p in folder.iterdir())


def test_failing_rank_is_named(tmp_path, rng):
    folder = make_data(tmp_path / "data", rng, count=4)
    (folder / "1.png").write_bytes(b"")  # sorted order: index 1, rank 1's shard
    seconds = run("spawn", 2, "fail", folder, tmp_path / "out")
    documents = results(tmp_path / "out", 2)
    assert len(documents) == 2 and seconds < 60
    assert documents[1]["error"].endswith("1.png: empty file (0 bytes)")
    assert documents[0]["error"].startswith("rank 1 failed: ") and "1.png: empty file" in documents[0]["error"]


def test_hanging_rank_is_named_within_the_timeout(tmp_path, rng):
    folder = make_data(tmp_path / "data", rng, count=4)
    run("torchrun", 2, "hang", folder, tmp_path / "out")
    document = json.loads((tmp_path / "out" / "rank0.json").read_text())
    assert "the ranks did not all arrive" in document["error"] and "Ranks 1 failed to pass" in document["error"]
    assert document["seconds"] < 15  # the 3 s monitored barrier, not the 25 s the rank sleeps


def test_cli_under_torchrun_rank0_writes(tmp_path, rng):
    folder = make_data(tmp_path / "data", rng, count=5)
    command = [TORCHRUN, "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "imagenorm", "stats", str(folder), "-o", str(tmp_path / "s.json"), "--quiet", "--timeout", "20"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("raw units, uint16") == 1  # only rank 0 reports
    document = json.loads((tmp_path / "s.json").read_text())
    document.pop("created_at")
    assert without_float_noise(document) == without_float_noise(single_process(folder))


@pytest.mark.parametrize("mode", ["allreduce", "accumulator"])
def test_users_own_loop_reduces_to_the_whole(tmp_path, rng, mode):
    folder = make_data(tmp_path / "data", rng, count=5)
    run("spawn", 2, mode, folder, tmp_path / "out")
    expected = single_process(folder)
    documents = results(tmp_path / "out", 2)
    assert len(documents) == 2
    for document in documents:
        assert "error" not in document, document
        assert document["channels"] == expected["channels"] and document["pooled"] == expected["pooled"]
        assert document["files"] == 5
