"""Kill a run with SIGKILL, run the same command again: it resumes and ends with the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import imagenorm
from imagenorm.stats.checkpoint import Checkpoint, Signature

from conftest import random_image, write_png


@pytest.fixture
def many_images(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(300):
        write_png(folder / f"{index:04d}.png", random_image(rng, "uint16", (24, 24, 3)))
    return folder


def command(folder, output, checkpoint):
    return [sys.executable, "-m", "imagenorm", "stats", str(folder), "-o", str(output), "--quiet",
            "--checkpoint", str(checkpoint), "--checkpoint-every", "1", "--workers", "0"]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, many_images):
    checkpoint = tmp_path / "run.ckpt"
    process = subprocess.Popen(command(many_images, tmp_path / "resumed.json", checkpoint))
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert checkpoint.exists() and not (tmp_path / "resumed.json").exists()
    with np.load(checkpoint) as archive:
        done = json.loads(archive["meta"].tobytes())["files"]
    assert 0 < done < 300
    subprocess.run(command(many_images, tmp_path / "resumed.json", checkpoint), check=True, capture_output=True)
    assert not checkpoint.exists()  # removed once the run completed
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    uninterrupted = imagenorm.compute_stats(many_images).to_dict()
    for document in (resumed, uninterrupted):
        document.pop("created_at")
    assert resumed == uninterrupted


def test_checkpoint_of_another_run_is_refused(tmp_path, many_images, rng):
    checkpoint = tmp_path / "run.ckpt"
    stats_api = imagenorm.compute_stats
    from imagenorm.stats.checkpoint import Checkpoint
    from imagenorm.stats.measurement import Measurement
    from imagenorm.stats.histogram import IntegerHistogram

    Checkpoint(str(checkpoint)).save(Measurement(IntegerHistogram.empty("uint16", 3)), 1, Signature("another run", np.zeros(0, np.uint64)), counted=0)
    with pytest.raises(imagenorm.ImagenormError, match="is a checkpoint of another run"):
        stats_api(many_images, checkpoint=str(checkpoint))


def test_interrupted_float_run_resumes_exactly(tmp_path, rng):
    """Float moments (Chan's merge) resume bit for bit: the same merges in the same order."""
    data = tmp_path / "data"
    data.mkdir()
    for index in range(200):  # chunks of 64 images: a checkpoint after each
        np.save(data / f"{index:03d}.npy", random_image(rng, "float32", (2, 6, 7)))
    checkpoint = str(tmp_path / "f.ckpt")
    seen = []

    def interrupt(done):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C mid-run

    with pytest.raises(KeyboardInterrupt):
        imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1), progress=interrupt)
    assert os.path.exists(checkpoint)
    resumed = imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1))
    plain = imagenorm.compute_stats(data)
    assert resumed.channels == plain.channels and resumed.pooled == plain.pooled
    assert not os.path.exists(checkpoint)


def test_a_file_changed_after_the_kill_is_not_resumed_over(tmp_path, rng):
    """The checkpoint knows each counted file's size and modification time."""
    data = tmp_path / "data"
    data.mkdir()
    for index in range(130):
        np.save(data / f"{index:03d}.npy", np.full((4, 4), 99, np.uint8))
    checkpoint = str(tmp_path / "c.ckpt")
    calls = []

    def interrupt(done):
        calls.append(done)
        if len(calls) == 2:  # after the first chunk of 64 was saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1), progress=interrupt)
    assert os.path.exists(checkpoint)
    np.save(data / "000.npy", np.full((4, 4), 250, np.uint8))  # counted before the kill, rewritten after
    os.utime(data / "000.npy", ns=(1, 1))
    with pytest.raises(imagenorm.ImagenormError, match="000.npy changed since .*c.ckpt counted it"):
        imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1))
    os.unlink(checkpoint)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1), progress=interrupt)
    np.save(data / "129.npy", np.full((4, 4), 7, np.uint8))  # not counted yet: the resume reads it afresh
    resumed = imagenorm.compute_stats(data, checkpoint=Checkpoint(checkpoint, every_items=1))
    assert resumed.channels == imagenorm.compute_stats(data).channels


def test_unreadable_checkpoints_are_one_line(tmp_path, rng):
    data = tmp_path / "d"
    data.mkdir()
    np.save(data / "a.npy", np.zeros((2, 2), np.uint8))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    for name in ("empty.ckpt", "junk.ckpt"):
        with pytest.raises(imagenorm.ImagenormError, match="not a readable imagenorm checkpoint; remove it") as raised:
            imagenorm.compute_stats(data, checkpoint=str(tmp_path / name))
        assert "pickle" not in str(raised.value)
