"""The command line: output, exit status, one-line errors, files written or not."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import imagenorm
from imagenorm.cli import app

from conftest import random_image, write_pillow, write_png

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def folder(tmp_path, rng):
    root = tmp_path / "data"
    root.mkdir()
    for index in range(4):
        write_pillow(root / f"{index}.png", random_image(rng, "uint8", (12, 10, 3)))
    (root / "notes.md").write_text("not an image")
    return root


def test_stats_prints_table_normalize_line_and_writes_file(folder, tmp_path):
    result = invoke("stats", str(folder), "-o", str(tmp_path / "s.json"), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "transforms.Normalize(mean=[" in result.output
    assert "pooled" in result.output and "p99.5" in result.output
    assert "1 file(s) that are not images were ignored" in result.output
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["files"] == 4 and document["ignored_non_images"] == 1
    normalize = next(line for line in result.output.splitlines() if "Normalize" in line)
    mean = [f"{c['mean'] / 255:.6g}" for c in document["channels"]]
    assert normalize.startswith(f"transforms.Normalize(mean=[{mean[0]}, {mean[1]}, {mean[2]}]")


def test_show_prints_the_table_again(folder, tmp_path):
    invoke("stats", str(folder), "-o", str(tmp_path / "s.json"))
    result = invoke("show", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    assert "[0, 1] scale (raw / 255)" in result.output and "transforms.Normalize" in result.output


def test_bad_file_fails_with_one_line_and_no_file(folder, tmp_path):
    (folder / "zz.png").write_bytes(b"")
    result = invoke("stats", str(folder), "-o", str(tmp_path / "s.json"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {folder / 'zz.png'}: empty file (0 bytes)"]
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.json").exists()


def test_failed_run_never_overwrites_a_good_file(folder, tmp_path):
    assert invoke("stats", str(folder), "-o", str(tmp_path / "s.json")).exit_code == 0
    good = (tmp_path / "s.json").read_bytes()
    (folder / "zz.png").write_bytes(b"\x89PNG broken")
    assert invoke("stats", str(folder), "-o", str(tmp_path / "s.json")).exit_code == 1
    assert (tmp_path / "s.json").read_bytes() == good


def test_skip_lists_every_skipped_file(folder, tmp_path):
    (folder / "a_empty.png").write_bytes(b"")
    (folder / "b_text.jpg").write_text("text")
    result = invoke("stats", str(folder), "--on-error", "skip", "-o", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    assert "2 image(s) skipped" in result.output and "a_empty.png: empty file" in result.output
    skipped = json.loads((tmp_path / "s.json").read_text())["skipped"]
    assert [s["path"].rsplit("/", 1)[-1] for s in skipped] == ["a_empty.png", "b_text.jpg"]


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("stats", str(tmp_path / "empty"), "-o", str(tmp_path / "s.json"))
    assert result.exit_code == 1
    assert result.output.strip() == f"error: no images found under {tmp_path / 'empty'}"
    assert not (tmp_path / "s.json").exists()


def test_missing_path(tmp_path):
    result = invoke("stats", str(tmp_path / "nowhere"))
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_decompression_bomb_limit(folder):
    result = invoke("stats", str(folder), "--max-pixels", "100")
    assert result.exit_code == 1 and "120 pixels exceed the limit of 100" in result.output
    assert "raise the limit with --max-pixels N" in result.output and "max_pixels" not in result.output
    with pytest.raises(imagenorm.ReadError, match="raise the limit with max_pixels=N"):
        imagenorm.compute_stats(folder, max_pixels=100)


def test_nan_reported(tmp_path, rng):
    image = random_image(rng, "float32", (5, 5))
    image[2, 2] = np.nan
    np.save(tmp_path / "a.npy", image)
    result = invoke("stats", str(tmp_path / "a.npy"))
    assert result.exit_code == 1 and "contains 1 NaN and 0 infinite values" in result.output
    result = invoke("stats", str(tmp_path / "a.npy"), "--nonfinite", "ignore")
    assert result.exit_code == 0 and "non-finite values left out: 1" in result.output


def test_wrong_usage_is_status_2(folder):
    assert invoke("stats", str(folder), "--on-error", "maybe").exit_code == 2
    assert invoke("stats").exit_code == 2
    assert invoke("stats", str(folder), "--workers", "-1").exit_code == 2


def test_show_bad_stats_file(tmp_path):
    (tmp_path / "s.json").write_text('{"schema": "x"}')
    result = invoke("show", str(tmp_path / "s.json"))
    assert result.exit_code == 1 and "schema is 'x'" in result.output


def test_16bit_summary_in_both_scales(tmp_path, rng):
    write_png(tmp_path / "a.png", rng.integers(0, 65536, (9, 9, 3), dtype=np.uint16))
    result = invoke("stats", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "raw units, uint16" in result.output and "[0, 1] scale (raw / 65535)" in result.output


def test_python_dash_m_and_version(folder):
    completed = subprocess.run(
        [sys.executable, "-m", "imagenorm", "stats", str(folder), "--quiet"], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert "transforms.Normalize" in completed.stdout and completed.stderr == ""
    version = subprocess.run([sys.executable, "-m", "imagenorm", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("imagenorm ")


@pytest.fixture
def measured(folder, tmp_path):
    assert invoke("stats", str(folder), "-o", str(tmp_path / "s.json")).exit_code == 0
    return tmp_path / "s.json"


def test_stats_prints_advice(folder):
    result = invoke("stats", str(folder))
    assert "advice:" in result.output and "memory: in memory" in result.output


def test_check_passes_on_the_measured_data(folder, measured):
    result = invoke("check", str(folder), "--stats", str(measured), "--method", "zscore")
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"\bpass\b", result.output)) == 3 and "4 image(s) checked; passed" in result.output


def test_check_fails_on_shifted_data(folder, measured, tmp_path, rng):
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for index in range(3):
        write_pillow(shifted / f"{index}.png", (random_image(rng, "uint8", (12, 10, 3)) // 2 + 120).astype(np.uint8))
    result = invoke("check", str(shifted), "-s", str(measured), "-m", "zscore")
    assert result.exit_code == 1 and "FAIL" in result.output and "FAILED" in result.output
    # the shifted values still lie inside the measured 0..255 range: min-max only promises the range
    result = invoke("check", str(shifted), "-s", str(measured), "-m", "minmax", "--range", "-1", "1")
    assert result.exit_code == 0 and "within [-1, 1]" in result.output


def test_check_per_image_needs_no_stats(folder):
    result = invoke("check", str(folder), "-m", "zscore", "--per-image")
    assert result.exit_code == 0, result.output
    assert invoke("check", str(folder), "-m", "zscore").exit_code == 2  # --stats missing


def test_check_with_stats_of_other_channels(folder, measured, tmp_path, rng):
    gray = tmp_path / "gray"
    gray.mkdir()
    write_pillow(gray / "a.png", random_image(rng, "uint8", (12, 10)))
    result = invoke("check", str(gray), "-s", str(measured), "-m", "zscore")
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"error: {gray / 'a.png'}: Expected 3 channel(s)")


def test_apply_writes_mirrored_npy_resumes_and_never_touches_sources(folder, measured, tmp_path):
    (folder / "sub").mkdir()
    write_pillow(folder / "sub" / "z.png", np.full((12, 10, 3), 100, np.uint8))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "normalized"
    result = invoke("apply", str(folder), "-s", str(measured), "-m", "minmax", "-o", str(out))
    assert result.exit_code == 0, result.output and "5 written" in result.output
    array = np.load(out / "sub" / "z.npy")
    assert array.dtype == np.float32 and array.shape == (3, 12, 10)
    manifest = json.loads((out / "imagenorm-manifest.json").read_text())
    assert manifest["method"]["method"] == "minmax" and len(manifest["stats_sha256"]) == 64
    assert manifest["files"]["sub/z.npy"]["source"] == "sub/z.png"
    (out / "1.npy").unlink()  # as if interrupted
    result = invoke("apply", str(folder), "-s", str(measured), "-m", "minmax", "-o", str(out))
    assert "1 written, 4 already there (resumed)" in result.output
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    other = invoke("apply", str(folder), "-s", str(measured), "-m", "zscore", "-o", str(out))
    assert other.exit_code == 1 and "made with other settings" in other.output


def test_apply_refuses_the_source_tree(folder, measured):
    result = invoke("apply", str(folder), "-s", str(measured), "-m", "zscore", "-o", str(folder / "out"))
    assert result.exit_code == 1 and "refusing to write inside the source tree" in result.output


def test_plot_and_advise(measured, tmp_path):
    result = invoke("plot", str(measured), "-o", str(tmp_path / "h.png"), "--log")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = invoke("advise", str(measured))
    assert result.exit_code == 0 and "channels:" in result.output


def test_plot_without_matplotlib(measured, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("plot", str(measured), "-o", str(tmp_path / "h.png"))
    assert result.exit_code == 1
    assert result.output.strip() == "error: plotting needs matplotlib: pip install 'imagenorm[plot]'"


def test_a_bug_is_still_one_line(folder, monkeypatch):
    import imagenorm.stats

    def broken(*args, **kwargs):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(imagenorm.stats, "compute_stats", broken)
    result = invoke("stats", str(folder))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "internal error: something unexpected (please report it; IMAGENORM_DEBUG=1 shows the traceback)"
    ]
