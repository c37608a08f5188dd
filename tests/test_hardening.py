"""Hardening (issue 10): writers, output paths, resumable apply, the paste-ready line, kernels
without a cache folder."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app

from conftest import write_png


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def data(tmp_path, rng):
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(4):
        write_png(folder / f"{index}.png", rng.integers(0, 256, (6, 5), dtype=np.uint8))
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_character_device_is_written_through_not_replaced(data, tmp_path):
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    for option in ("-o", "--audit"):
        result = invoke("stats", data, option, device)
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_fifo_is_refused_before_any_work(data, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = invoke("stats", data, "-o", fifo)
    assert result.exit_code == 1 and result.output.strip() == f"error: {fifo}: not a regular file (a FIFO or socket); give a file name"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_link_keeps_pointing_at_the_replaced_file(data, tmp_path):
    (tmp_path / "real.json").write_text("old")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    assert invoke("stats", data, "-o", tmp_path / "link.json").exit_code == 0
    assert os.path.islink(tmp_path / "link.json")
    assert json.loads((tmp_path / "real.json").read_text())["files"] == 4


@pytest.mark.parametrize("target, reason", [("missing/s.json", "no such folder"), (".", "is a folder")])
def test_output_paths_are_checked_before_the_first_image(data, tmp_path, target, reason):
    (data / "broken.png").write_bytes(b"not a png")  # reading first would fail on this file instead
    result = invoke("stats", data, "-o", tmp_path / target)
    assert result.exit_code == 1 and reason in result.output and "broken.png" not in result.output
    assert ".imagenorm-" not in result.output


def test_checkpoint_path_checked_before_work(data, tmp_path):
    with pytest.raises(imagenorm.ImagenormError, match="no such folder"):
        imagenorm.compute_stats(data, checkpoint=tmp_path / "missing" / "run.ckpt")


def test_apply_refuses_an_output_inside_any_source_folder(tmp_path, rng):
    images = tmp_path / "vB" / "images"
    images.mkdir(parents=True)
    write_png(images / "a.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    result = invoke("apply", tmp_path / "vB", "-m", "zscore", "--per-image", "-o", tmp_path / "vB" / "normalized")
    assert result.exit_code == 1 and "refusing to write inside the source tree" in result.output
    assert not (tmp_path / "vB" / "normalized").exists()


def test_an_interrupted_apply_resumes_and_cleans_up(data, tmp_path):
    (data / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")  # stops the first run after 0.png and 1.png
    out = tmp_path / "out"
    first = invoke("apply", data, "-m", "zscore", "--per-image", "-o", out)
    assert first.exit_code == 1 and "2.png" in first.output
    manifest = json.loads((out / "imagenorm-manifest.json").read_text())  # the settings come first
    assert manifest["method"]["method"] == "zscore" and sorted(p.name for p in out.glob("*.npy")) == ["0.npy", "1.npy"]
    (out / ".imagenorm-stray.tmp").write_bytes(b"half")  # what a kill leaves
    (data / "2.png").unlink()
    second = invoke("apply", data, "-m", "zscore", "--per-image", "-o", out)
    assert second.exit_code == 0, second.output
    assert "1 written, 2 already there (resumed)" in second.output
    assert not (out / ".imagenorm-stray.tmp").exists()


def test_normalize_line_is_refused_without_a_unit_scale_and_keeps_small_stds():
    with pytest.raises(imagenorm.ImagenormError, match="no \\[0, 1\\] scale"):
        imagenorm.compute_stats(np.array([[[-1000, 3000]]], np.int32)).normalize_line()
    low_signal = np.array([[[1000, 1008] * 50]], np.uint16)  # std 4 raw units in 16 bits
    line = imagenorm.compute_stats(low_signal).normalize_line()
    std = float(line.split("std=[")[1].rstrip("])"))
    assert std == pytest.approx(4 / 65535, rel=1e-5)


def test_kernels_compile_without_a_cache_folder():
    """A read-only install: numba finds no place for its cache; imagenorm still imports and runs."""
    code = (
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []\n"  # no locator: what a read-only install sees
        "import numpy as np, torch, imagenorm\n"
        "stats = imagenorm.compute_stats(np.arange(16, dtype=np.uint8).reshape(1, 4, 4))\n"
        "print(stats.pooled.mean, float(imagenorm.Standardize.from_stats(stats)(torch.zeros(1, 4, 4, dtype=torch.uint8)).mean()))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[0] == "7.5"
