"""Trial of the HTML report (``imagenorm report`` / ``imagenorm.report``): the page's numbers,
markers and overlays against the stats file and ``imagenorm compare``, escaping, the CLI's
errors, and the page in headless Chromium.

The tests named ``test_bug_*`` fail on the code as tried and pass once it is fixed."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import imagenorm

from conftest import write_png

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from imagenorm.cli import app  # noqa: E402
from imagenorm.errors import ImagenormError  # noqa: E402
from imagenorm.report import render_report, write_report  # noqa: E402
from imagenorm.report.audit import thumbnail  # noqa: E402

MARKER_COLOURS = {"#1f6fb4": "mean", "#555555": "range", "#c0392b": "low", "#d9822b": "high"}


# --- helpers ----------------------------------------------------------------------------------
def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result) -> str:
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    return text


def charts(page: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, key) -> (linear svg, log svg) for every chart and overlay of the page."""
    found = {}
    for match in re.finditer(r'<figure class="chart" data-(chart|overlay)="([^"]*)">(.*?)</figure>', page, re.S):
        linear = re.search(r'<div class="linear">(.*?)</div>', match[3], re.S)[1]
        log = re.search(r'<div class="log">(.*?)</div>', match[3], re.S)[1]
        found[(match[1], html.unescape(match[2]))] = (linear, log)
    return found


def x_axis(svg: str):
    """Data value of an SVG x coordinate, from the first and last labelled x tick; and one pixel in data units."""
    ticks = sorted((float(x), float(label.replace("\u2212", "-"))) for x, label in re.findall(
        r'<text style="font-size: 7px; text-anchor: middle" x="([-\d.]+)" y="[-\d.]+"[^>]*>([^<]*)</text>', svg))
    (x0, v0), (x1, v1) = ticks[0], ticks[-1]
    per_px = (v1 - v0) / (x1 - x0)
    return (lambda x: v0 + (x - x0) * per_px), abs(per_px)


def markers(svg: str) -> dict[str, list[float]]:
    """The vertical marker lines of a histogram chart, by kind, in data units."""
    to_value, _ = x_axis(svg)
    found: dict[str, list[float]] = {}
    for x1, x2, style in re.findall(r'<path d="M ([-\d.]+) [-\d.]+\s*L ([-\d.]+) [-\d.]+\s*"[^>]*style="([^"]*)"', svg):
        colour = re.search(r"stroke: (#[0-9a-f]{6})", style)
        if x1 == x2 and colour and colour[1] in MARKER_COLOURS:
            found.setdefault(MARKER_COLOURS[colour[1]], []).append(to_value(float(x1)))
    return {kind: sorted(values) for kind, values in found.items()}


def cells(page: str, table: str) -> dict[str, list[str]]:
    body = re.search(rf'<table data-table="{table}">(.*?)</table>', page, re.S)[1]
    return {html.unescape(row): re.findall(r'data-value="([^"]*)"', cells_)
            for row, cells_ in re.findall(r'<tr data-row="([^"]*)">(.*?)</tr>', body, re.S)}


def drift_table(page: str) -> dict[str, dict[str, str]]:
    body = re.search(r'<table data-table="drift">(.*?)</table>', page, re.S)[1]
    head = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", body)]
    return {html.unescape(name): dict(zip(head, [html.unescape(re.sub("<[^>]*>", "", c))
                                                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]))
            for name, row in re.findall(r'<tr data-row="([^"]*)">(.*?)</tr>', body, re.S)}


def decoded(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def pgm12(folder: Path, rng) -> Path:
    folder.mkdir()
    for index in range(3):
        pixels = rng.integers(0, 4096, (20, 30)).astype(">u2")
        (folder / f"image{index}.pgm").write_bytes(b"P5\n30 20\n4095\n" + pixels.tobytes())
    return folder


def rgb(folder: Path, rng, dtype=np.uint8, count: int = 4, low: int = 0, high: int = 255) -> Path:
    folder.mkdir()
    for index in range(count):
        write_png(folder / f"image{index}.png", rng.integers(low, high, (24, 32, 3), endpoint=True).astype(dtype))
    return folder


def nifti_int16(path: Path, rng) -> Path:
    nibabel = pytest.importorskip("nibabel")
    volume = rng.integers(-1000, 1500, (16, 16, 8)).astype(np.int16)  # HU-like, no scl_slope: stays int16
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), str(path))
    return path


# --- bugs: fail now, pass when fixed ------------------------------------------------------
def test_bug_float_constant_channel_does_not_crash_the_report(tmp_path, rng):
    """A float dataset with one constant channel (e.g. a zero-filled band): `imagenorm report`
    answered 'internal error: Size mismatch between "values" and "edges"' (exit 1), because
    the constant channel's 256-bin float histogram has all edges equal and the chart widens
    the edges to 2 while keeping 256 counts."""
    folder = tmp_path / "float"
    folder.mkdir()
    for index in range(3):
        pixels = rng.normal(0.5, 0.1, (3, 16, 16)).astype(np.float32)
        pixels[1] = 0.25
        np.save(folder / f"image{index}.npy", pixels)
    stats = imagenorm.compute_stats(str(folder))
    assert stats.channels[1].std == 0
    page = render_report(stats)
    assert [key for kind, key in charts(page) if kind == "chart"] == ["red", "green", "blue", "pooled"]
    stats.save(tmp_path / "float.json")
    result = cli("report", str(tmp_path / "float.json"), "-o", str(tmp_path / "float.html"))
    assert result.exit_code == 0, result.output


def test_bug_single_constant_float_channel_does_not_crash_the_report():
    stats = imagenorm.compute_stats(np.full((2, 1, 8, 8), 0.25, np.float32))
    page = render_report(stats)
    (linear, _), = charts(page).values()
    assert markers(linear)["mean"] == pytest.approx([0.25], abs=0.01)


def test_bug_malformed_audit_csv_is_an_input_error_not_an_internal_error(tmp_path, rng):
    """An audit CSV with a row of more fields than the header: csv.DictReader puts the extra
    fields in a list under the key None, and float(list) raised TypeError: 'internal error ...
    please report it' instead of one line saying the CSV is not an audit CSV."""
    folder = rgb(tmp_path / "rgb", rng)
    stats = imagenorm.compute_stats(str(folder))
    audit = tmp_path / "audit.csv"
    header = ["path"] + [f"{c}_{k}" for c in stats.channel_names for k in ("mean", "std", "min", "max")]
    audit.write_text(",".join(header) + "\n" + ",".join([str(folder / "image0.png")] + ["1"] * 12 + ["extra"]) + "\n")
    with pytest.raises(ImagenormError):
        render_report(stats, audit=audit)
    stats.save(tmp_path / "stats.json")
    result = cli("report", str(tmp_path / "stats.json"), "-o", str(tmp_path / "r.html"), "--audit", str(audit))
    assert result.exit_code == 1
    assert "internal error" not in one_line_error(result)


def test_bug_thumbnails_of_a_mixed_depth_dataset_are_not_all_white(tmp_path, rng):
    """With --mixed-depth scale the statistics are in the [0, 1] scale (value_scale 1), but the
    thumbnail reads the raw 8/16-bit pixels and maps them with [0, 1]-scale percentiles: every
    thumbnail came out pure white (a flagged image looked blown out)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for index in range(4):
        write_png(folder / f"a{index}.png", rng.integers(0, 255, (24, 24, 3), endpoint=True).astype(np.uint8))
        write_png(folder / f"b{index}.png", (rng.integers(0, 255, (24, 24, 3), endpoint=True) * 257).astype(np.uint16))
    dark = np.full((24, 24, 3), 40, np.uint8)  # about 0.16 in the [0, 1] scale
    write_png(folder / "dark.png", dark)
    stats = imagenorm.compute_stats(str(folder), mixed_depth="scale")
    assert stats.value_scale == 1
    low, high = stats.channels[0].percentiles["0.5"], stats.channels[0].percentiles["99.5"]
    expected = round((40 / 255 - low) / (high - low) * 255)
    for name in ("dark.png", "a0.png", "b0.png"):
        shown = decoded(thumbnail(folder / name, stats))
        assert not (shown == 255).all(), f"{name}: thumbnail is all white"
    assert abs(int(decoded(thumbnail(folder / "dark.png", stats))[..., 0].mean()) - expected) <= 3


def test_bug_physical_int16_values_get_no_unit_scale_or_normalize_line(tmp_path, rng):
    """NIfTI (or DICOM CT in HU) measured as int16: values in physical units (the chart's axis
    says so, and `imagenorm compare` refuses a [0, 1] scale for physical values), yet the page
    showed a '[0, 1] scale (raw / 32767)' table with negative values and a paste-ready
    Normalize line of HU / 32767."""
    stats = imagenorm.compute_stats(str(nifti_int16(tmp_path / "ct.nii", rng)))
    assert stats.dtype == "int16" and "physical" in stats.measurement.units
    page = render_report(stats)
    assert "physical units" in page  # the chart's axis label
    assert 'data-table="scaled"' not in page
    assert 'id="normalize-line"' not in page
    assert "the [0, 1] scale is raw / 32767" not in page


def test_bug_an_audit_of_another_dataset_is_refused(tmp_path, rng):
    """The audit CSV is only checked for its columns: the audit of a 6-image dataset given with
    the stats of a 4-image one gave a page saying 'The per-image audit covers 6 image(s); 0
    stand out' under a report of 4 images (flags and thumbnails of the other dataset or none)."""
    for name, count in (("small", 4), ("large", 6)):
        rgb(tmp_path / name, rng, count=count)
        assert cli("stats", str(tmp_path / name), "-o", str(tmp_path / f"{name}.json"),
                   "--audit", str(tmp_path / f"{name}.csv")).exit_code == 0
    with pytest.raises(ImagenormError):
        render_report(tmp_path / "small.json", audit=tmp_path / "large.csv")


# --- verified behaviours ----------------------------------------------------------------------
def test_12_bit_pgm_numbers_scale_normalize_and_markers_match_the_stats(tmp_path, rng):
    stats = imagenorm.compute_stats(str(pgm12(tmp_path / "pgm", rng)))
    assert stats.value_scale == 4095
    page = render_report(stats)
    summary = stats.channels[0]
    raw = cells(page, "raw")["gray"]
    assert [float(v) for v in raw[1:]] == [summary.mean, summary.std, summary.min, summary.max]
    assert [float(v) for v in cells(page, "percentiles")["gray"]] == list(summary.percentiles.values())
    scaled = [float(v) for v in cells(page, "scaled")["gray"]]
    want = [summary.mean, summary.std, summary.min, summary.max] + [summary.percentiles[k] for k in ("0.5", "50", "99.5")]
    assert scaled == pytest.approx([v / 4095 for v in want], rel=1e-15)
    line = html.unescape(re.search(r'<pre id="normalize-line">(.*?)</pre>', page, re.S)[1])
    assert line == stats.normalize_line()
    for svg in charts(page)[("chart", "gray")]:
        found = markers(svg)
        _, pixel = x_axis(svg)
        assert found["mean"] == pytest.approx([summary.mean], abs=pixel)
        assert found["range"] == pytest.approx([summary.min, summary.max], abs=pixel)
        assert found["low"] == pytest.approx([summary.percentiles["0.5"]], abs=pixel)
        assert found["high"] == pytest.approx([summary.percentiles["99.5"]], abs=pixel)


def test_16_bit_rgb_drawn_bins_keep_every_count_and_markers_sit_right(tmp_path, rng):
    from imagenorm.report import charts as report_charts

    stats = imagenorm.compute_stats(str(rgb(tmp_path / "rgb16", rng, np.uint16, 3, 0, 65535)))
    drawn = report_charts.histograms(stats)
    assert [h.counts.sum() for h in drawn] == [c.count for c in stats.channels] + [stats.pooled.count]
    assert all(h.counts.size <= 256 for h in drawn)
    page = render_report(stats)
    assert len(page.encode()) < 3_000_000
    for key, summary in zip(["red", "green", "blue", "pooled"], list(stats.channels) + [stats.pooled]):
        linear, log = charts(page)[("chart", key)]
        for svg in (linear, log):
            _, pixel = x_axis(svg)
            assert markers(svg)["mean"] == pytest.approx([summary.mean], abs=pixel)


def test_drift_numbers_equal_compare_json_and_overlay_is_in_unit_scale(tmp_path, rng):
    eight = rgb(tmp_path / "rgb8", rng)
    sixteen = rgb(tmp_path / "rgb16", rng, np.uint16, 3, 0, 65535)
    for name, folder in (("a", eight), ("b", sixteen)):
        assert cli("stats", str(folder), "-o", str(tmp_path / f"{name}.json")).exit_code == 0
    result = cli("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    numbers = json.loads(result.stdout)
    assert numbers["scale"] == "[0, 1]"
    page = render_report(tmp_path / "a.json", compare=tmp_path / "b.json")
    table = drift_table(page)
    columns = {"mean shift": "mean_shift", "in ref. stds": "mean_shift_std", "std ratio": "std_ratio",
               "Wasserstein (ref. stds)": "wasserstein", "Wasserstein": "wasserstein_raw", "KS": "ks", "PSI": "psi"}
    for row in numbers["channels"] + [numbers["pooled"]]:
        for column, key in columns.items():
            assert float(table[row["name"]][column]) == pytest.approx(row[key], rel=1e-5, abs=1e-12)
    for (kind, key), (linear, _) in charts(page).items():
        if kind == "overlay":
            to_value, _ = x_axis(linear)
            xs = [to_value(float(x)) for x in re.findall(r"[ML] ([-\d.]+) ", " ".join(
                re.findall(r'<path d="(M [^"]*)"[^>]*style="fill: none; stroke: #c0392b', linear)))]
            assert min(xs) == pytest.approx(0, abs=0.01) and max(xs) == pytest.approx(1, abs=0.01)


def test_markup_in_skipped_and_audit_paths_is_escaped(tmp_path, rng):
    folder = rgb(tmp_path / "data", rng)
    bad = folder / "<img src=x onerror=alert(1)>.png"
    bad.write_bytes(b'<script>alert("x")</script>')
    odd = np.zeros((24, 32, 3), np.uint8)
    Image.fromarray(odd).save(folder / "it's \"<b>odd<\\b>\".png", format="PNG")
    stats_file, audit = tmp_path / "s.json", tmp_path / "a.csv"
    assert cli("stats", str(folder), "-o", str(stats_file), "--on-error", "skip", "--audit", str(audit)).exit_code == 0
    page = render_report(stats_file, audit=audit)
    assert "<img src=x" not in page and "<script>alert" not in page and "<b>odd" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page


def test_cli_exit_codes_and_one_line_errors(tmp_path, rng):
    stats_file = tmp_path / "s.json"
    assert cli("stats", str(rgb(tmp_path / "rgb", rng)), "-o", str(stats_file)).exit_code == 0
    gray = tmp_path / "gray.json"
    imagenorm.compute_stats(rng.integers(0, 255, (2, 1, 8, 8)).astype(np.uint8)).save(gray)
    (tmp_path / "folder").mkdir()
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    out = str(tmp_path / "r.html")
    for args in (["report", str(tmp_path / "missing.json"), "-o", out],
                 ["report", str(stats_file), "-o", str(tmp_path / "nope" / "r.html")],
                 ["report", str(stats_file), "-o", str(tmp_path / "folder")],
                 ["report", str(stats_file), "-o", out, "--audit", str(tmp_path / "missing.csv")],
                 ["report", str(stats_file), "-o", out, "--audit", str(tmp_path / "bad.csv")],
                 ["report", str(stats_file), "-o", out, "--compare", str(gray)]):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert one_line_error(result).startswith("error:")
        assert not Path(out).exists()
    assert cli("report", str(stats_file)).exit_code == 2
    assert cli("report", str(stats_file), "-o", out).exit_code == 0


# --- in a browser -------------------------------------------------------------------------
def test_in_chromium_no_errors_log_switch_copy_fallback_print(tmp_path, rng):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if browser is None or not Path(driver_path).exists():
        pytest.skip("needs chromium and chromedriver")
    reference = imagenorm.compute_stats(str(rgb(tmp_path / "a", rng, np.uint16, 3, 0, 65535)))
    other = imagenorm.compute_stats(str(rgb(tmp_path / "b", rng)))
    page = tmp_path / "report.html"
    write_report(reference, page, compare=other)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
        figures = driver.find_elements(By.CSS_SELECTOR, "figure.chart")
        assert len(figures) == 8  # 4 histograms, 4 overlays
        assert len(driver.find_elements(By.CSS_SELECTOR, "[data-overlay]")) == 4

        def shown():
            return [(f.find_element(By.CSS_SELECTOR, ".linear").is_displayed(),
                     f.find_element(By.CSS_SELECTOR, ".log").is_displayed()) for f in figures]

        assert shown() == [(True, False)] * 8
        driver.find_element(By.ID, "log-switch").click()
        assert shown() == [(False, True)] * 8
        driver.find_element(By.ID, "log-switch").click()
        driver.execute_script("Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true});")
        driver.find_element(By.ID, "copy-button").click()
        field = driver.find_element(By.ID, "copy-fallback")
        assert field.is_displayed() and field.get_attribute("value") == reference.normalize_line()
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        buttons = driver.execute_script(
            "return [...document.querySelectorAll('button')].map(b => getComputedStyle(b).display)")
        assert buttons and set(buttons) == {"none"}
    finally:
        driver.quit()
