"""The examples run and do what they say (on the shipped sample dataset)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *arguments: str) -> str:
    completed = subprocess.run([sys.executable, str(ROOT / "examples" / script), *arguments], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_minmax_grayscale_reaches_0_and_1():
    output = run("minmax_grayscale.py")
    low, high = (float(v) for v in re.search(r"normalized output: min (\S+), max (\S+)", output).groups())
    assert low == 0.0 and high == 1.0


def test_zscore_precomputed_gives_mean_0_std_1():
    output = run("zscore_precomputed.py")
    mean, std = (float(v) for v in re.search(r"normalized output: mean (\S+), std (\S+)", output).groups())
    assert abs(mean) < 1e-5 and abs(std - 1) < 1e-5


def mixed_sizes(folder: Path) -> Path:
    """A folder of RGB photos of several sizes, cut from the shipped samples."""
    from PIL import Image

    folder.mkdir()
    for index, path in enumerate(sorted((ROOT / "samples" / "rgb8").glob("*.png"))[:6]):
        with Image.open(path) as image:
            image.crop((0, 0, 40 + 9 * index, 30 + 5 * index)).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize("folder", [None, "mixed"])
def test_per_channel_dataloader_gives_mean_0_std_1_per_channel(folder, tmp_path):
    arguments = [] if folder is None else [str(mixed_sizes(tmp_path / folder))]
    output = run("per_channel_dataloader.py", *arguments)
    rows = re.findall(r"(\w+): mean (\S+), std (\S+)", output)
    assert [name for name, _, _ in rows] == ["red", "green", "blue"]
    for _, mean, std in rows:
        assert abs(float(mean)) < 1e-5 and abs(float(std) - 1) < 1e-5


@pytest.mark.parametrize("script", ["minmax_grayscale.py", "zscore_precomputed.py"])
def test_examples_take_a_folder_of_mixed_sizes(script, tmp_path):
    assert "normalized output" in run(script, str(mixed_sizes(tmp_path / "mixed")))
