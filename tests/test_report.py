"""The HTML report: self-contained, the numbers of the stats, escaped, capped, small."""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import imagenorm
from imagenorm.audit import write_csv
from imagenorm.errors import ImagenormError, OutputError
from imagenorm.stats.summary import percentile_key

from conftest import write_png, write_tiff

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from imagenorm import report  # noqa: E402
from imagenorm.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


class Page(HTMLParser):
    """The parts of a report a test looks at: every attribute, the cells with data-value per
    table and row, and the text of each element kind."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.cells: dict[tuple[str, str], list[tuple[str | None, str]]] = {}  # (table, row) -> [(data-key, data-value)]
        self.tags: list[str] = []
        self.text: list[str] = []
        self._table = self._row = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = dict(attrs)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        if tag == "table":
            self._table = values.get("data-table")
        elif tag == "tr":
            self._row = values.get("data-row")
        elif tag == "td" and "data-value" in values and self._row is not None:
            self.cells.setdefault((self._table, self._row), []).append((values.get("data-key"), values["data-value"]))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, attribute: str) -> int:
        return sum(1 for _, name, _ in self.attributes if name == attribute)

    def values(self, attribute: str) -> list[str]:
        return [value for _, name, value in self.attributes if name == attribute]


@pytest.fixture(scope="module")
def rgb8():
    return imagenorm.compute_stats(str(SAMPLES / "rgb8"), audit=True)


@pytest.fixture(scope="module")
def rgb8_page(rgb8):
    return report.render_report(rgb8)


def rgb16_folder(folder: Path, rng: np.random.Generator, images: int = 3, shift: int = 0, size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(images):
        pixels = rng.normal(20000 + 3000 * index + shift, 6000, (size, size, 3)).clip(0, 65535).astype(np.uint16)
        write_png(folder / f"image_{index}.png", pixels)
    return folder


# --- self-contained -------------------------------------------------------------------------
def test_the_page_requests_nothing_from_elsewhere(rgb8_page):
    page = Page(rgb8_page)
    for tag, name, value in page.attributes:
        if name in ("src", "href", "xlink:href", "action", "poster", "srcset", "data"):
            assert value.startswith(("data:", "#")), (tag, name, value)
    assert not re.search(r"url\((?!#)", rgb8_page)  # CSS and SVG references stay inside the page
    assert "@import" not in rgb8_page and "@font-face" not in rgb8_page
    assert "://" not in rgb8_page  # not even an XML namespace
    assert not {"link", "iframe", "object", "embed", "base"} & set(page.tags)
    assert page.tags.count("script") == 1  # ours, inline
    assert rgb8_page.count("<script>") == 1


def test_a_strict_content_security_policy(rgb8_page):
    metas = [dict(attributes) for attributes in _tags(rgb8_page, "meta")]
    assert {"http-equiv": "Content-Security-Policy", "content": CSP} in metas
    assert report.CONTENT_SECURITY_POLICY == CSP


def _tags(text: str, wanted: str) -> list[list[tuple[str, str]]]:
    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == wanted:
                found.append(attrs)

    Collect().feed(text)
    return found


# --- what it shows --------------------------------------------------------------------------
def test_one_chart_per_channel_and_pooled_each_linear_and_log(rgb8, rgb8_page):
    page = Page(rgb8_page)
    assert page.values("data-chart") == ["red", "green", "blue", "pooled"]
    assert page.tags.count("svg") == 2 * (len(rgb8.channel_names) + 1)
    assert page.count("data-overlay") == 0


def test_the_tables_hold_the_statistics(rgb8, rgb8_page):
    cells = Page(rgb8_page).cells
    for name, summary in [*zip(rgb8.channel_names, rgb8.channels), ("pooled", rgb8.pooled)]:
        raw = dict(cells["raw", name][1:])
        assert int(cells["raw", name][0][1]) == summary.count
        assert {key: float(value) for key, value in raw.items()} == {
            "mean": summary.mean, "std": summary.std, "min": summary.min, "max": summary.max}
        percentiles = {key[1:]: float(value) for key, value in cells["percentiles", name]}
        assert percentiles == summary.percentiles
        scaled = [float(value) for _, value in cells["scaled", name]]
        assert scaled[:2] == [summary.mean / 255, summary.std / 255]
    assert rgb8.normalize_line() in rgb8_page
    assert f"{rgb8.channels[0].mean:.6g}" in rgb8_page  # shown as well as carried


def test_what_was_measured_advice_and_spread(rgb8, rgb8_page):
    text = " ".join(Page(rgb8_page).text)
    assert "16" in text and "uint8" in text and "raw / 255" in text
    from imagenorm.advice import advise

    for advice in advise(rgb8):
        assert advice.recommendation in text and advice.reason in text
    assert "Between images" in text and "mean of image means" in text
    assert "Read with the default options." in text


def test_read_options_mask_and_significant_bits_are_said(tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))  # 12 significant bits in 16-bit containers
    for index in range(2):
        pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4000) + index
        Image.fromarray(pixels).save(tmp_path / f"s{index}.png", pnginfo=info)
    stats = imagenorm.compute_stats(str(tmp_path), mask="nonzero")
    assert stats.significant_bits == 12
    text = " ".join(Page(report.render_report(stats)).text)
    assert "significant bits" in text and "12 of uint16" in text and "divide by 4095" in text
    assert "Read options that differ from the defaults" in text and "nonzero" in text


def test_a_gray_dataset_has_one_chart_and_says_why():
    stats = imagenorm.compute_stats(str(SAMPLES / "gray16"))
    page = report.render_report(stats)
    assert Page(page).values("data-chart") == ["gray"]
    assert "One channel: the pooled statistics are this channel's" in page
    assert "pooled" not in [row for _, row in Page(page).cells]


def test_float_statistics(tmp_path, rng):
    for index in range(3):
        write_tiff(tmp_path / f"f{index}.tiff", rng.normal(index, 1.0, (3, 32, 32)).astype(np.float32), photometric="minisblack",
                   planarconfig="separate")
    stats = imagenorm.compute_stats(str(tmp_path))
    assert not stats.exact and stats.float_histograms is not None
    page = report.render_report(stats)
    parsed = Page(page)
    assert len(parsed.values("data-chart")) == len(stats.channel_names) + 1
    assert float(dict(parsed.cells["raw", "pooled"][1:])["mean"]) == stats.pooled.mean
    assert "scaled" not in {table for table, _ in parsed.cells}  # floats are the [0, 1] scale already
    assert stats.normalize_line() in page
    without = report.render_report(stats.replace(float_histograms=None))
    assert Page(without).count("data-chart") == 0 and "carry no histogram" in without


def test_pooled_float_histogram_keeps_every_count(tmp_path, rng):
    from imagenorm.report.charts import histograms

    write_tiff(tmp_path / "f.tiff", np.stack([rng.normal(0, 1, (40, 40)), rng.normal(5, 2, (40, 40))]).astype(np.float32),
               photometric="minisblack", planarconfig="separate")
    stats = imagenorm.compute_stats(str(tmp_path))
    *channels, pooled = histograms(stats)
    assert pooled.counts.sum() == pytest.approx(sum(c.counts.sum() for c in channels))
    assert pooled.edges[0] == min(c.edges[0] for c in channels) and pooled.edges[-1] == max(c.edges[-1] for c in channels)


def test_pooled_integer_histogram_sums_the_exact_counts(rgb8):
    from imagenorm.report.charts import histograms

    *channels, pooled = histograms(rgb8)
    assert pooled.counts.sum() == rgb8.pooled.count == sum(c.counts.sum() for c in channels)
    assert pooled.counts.size <= 256


# --- escaping -------------------------------------------------------------------------------
def test_a_file_name_with_markup_is_escaped(tmp_path, rng):
    write_png(tmp_path / "good.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    (tmp_path / "<script>alert(1)<script>.png").write_bytes(b"not a png")
    stats = imagenorm.compute_stats(str(tmp_path), on_error="skip")
    assert len(stats.skipped) == 1
    page = report.render_report(stats)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;script&gt;.png" in page
    assert page.count("<script") == 1


# --- the audit ------------------------------------------------------------------------------
@pytest.fixture
def flagged_dataset(tmp_path, rng):
    """12 random 8-bit images and 4 constant ones (flagged), their stats and audit CSV."""
    folder = tmp_path / "data"
    folder.mkdir()
    for index in range(12):
        write_png(folder / f"random_{index:02}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    for index in range(4):
        write_png(folder / f"flat_{index}.png", np.full((40, 40, 3), 30 * index, np.uint8))
    stats = imagenorm.compute_stats(str(folder), audit=True)
    write_csv(stats.audit_rows, tmp_path / "audit.csv")
    assert len(stats.flagged) == 4
    return stats, tmp_path / "audit.csv"


def test_flagged_images_with_thumbnails(flagged_dataset):
    stats, audit = flagged_dataset
    page = Page(report.render_report(stats, audit=audit))
    assert page.count("data-flagged") == 4
    thumbnails = [value for tag, name, value in page.attributes if tag == "img" and name == "src"]
    assert len(thumbnails) == 4 and all(src.startswith("data:image/png;base64,") for src in thumbnails)
    from PIL import Image
    import base64
    import io

    image = Image.open(io.BytesIO(base64.b64decode(thumbnails[0].split(",", 1)[1])))
    assert max(image.size) <= 96 and image.mode in ("RGB", "L")


def test_thumbnails_are_capped_in_number_and_bytes(flagged_dataset, monkeypatch):
    from imagenorm.report import audit as audit_part

    stats, audit = flagged_dataset
    monkeypatch.setattr(audit_part, "MAX_THUMBNAILS", 2)
    page = report.render_report(stats, audit=audit)
    assert page.count("data-thumbnail") == 2 and page.count("data-flagged") == 4
    assert "thumbnails capped at 2 images" in page
    monkeypatch.setattr(audit_part, "MAX_THUMBNAILS", 50)
    monkeypatch.setattr(audit_part, "MAX_THUMBNAIL_BYTES", 60)  # under one PNG
    page = report.render_report(stats, audit=audit)
    assert page.count("data-thumbnail") == 0 and "KB" in page
    assert report.render_report(stats).count("data-thumbnail") == 0


def test_the_audit_flags_images_when_the_stats_did_not(flagged_dataset):
    stats, audit = flagged_dataset
    page = report.render_report(stats.replace(flagged=None), audit=audit)
    assert page.count("data-flagged") == 4


def test_an_audit_of_other_channels_is_refused(flagged_dataset):
    _, audit = flagged_dataset
    gray = imagenorm.compute_stats(str(SAMPLES / "gray16"))
    with pytest.raises(ImagenormError, match="no column gray_mean"):
        report.render_report(gray, audit=audit)
    with pytest.raises(ImagenormError, match="missing.csv"):
        report.render_report(gray, audit=audit.parent / "missing.csv")


# --- size -----------------------------------------------------------------------------------
def test_a_16_bit_rgb_report_stays_small(tmp_path):
    rng = np.random.default_rng(7)
    for index in range(4):  # full-range values: nearly every one of the 65,536 bins is used
        write_png(tmp_path / f"full_{index}.png", rng.integers(0, 65536, (256, 256, 3), dtype=np.uint16))
    stats = imagenorm.compute_stats(str(tmp_path))
    assert np.count_nonzero(stats.state.counts[0]) > 63000
    page = report.render_report(stats)
    assert len(page.encode("utf-8")) < 1_000_000  # the promise is 3 MB
    assert Page(page).count("data-chart") == 4


# --- comparison -----------------------------------------------------------------------------
def test_compare_overlays_each_channel_and_shows_the_drift(tmp_path, rng):
    reference = imagenorm.compute_stats(str(rgb16_folder(tmp_path / "a", rng)))
    other = imagenorm.compute_stats(str(rgb16_folder(tmp_path / "b", rng, shift=8000)))
    page = report.render_report(reference, compare=other)
    parsed = Page(page)
    assert parsed.values("data-overlay") == ["red", "green", "blue", "pooled"]
    assert parsed.values("data-verdict") == ["drift"]
    assert parsed.tags.count("svg") == 2 * 8


def test_compare_in_the_unit_scale_across_dtypes(rgb8, tmp_path, rng):
    other = imagenorm.compute_stats(str(rgb16_folder(tmp_path / "b", rng)))
    page = report.render_report(rgb8, compare=other)
    assert "[0, 1] scale" in page and Page(page).count("data-overlay") == 4


def test_incomparable_statistics_leave_the_old_report(rgb8, tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(ImagenormError, match="channels"):
        report.write_report(rgb8, target, compare=imagenorm.compute_stats(str(SAMPLES / "gray16")))
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left


# --- writing and errors ---------------------------------------------------------------------
def test_write_report_from_stats_files(rgb8, tmp_path):
    rgb8.save(tmp_path / "stats.json")
    report.write_report(str(tmp_path / "stats.json"), tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "stats.json" in page
    with pytest.raises(ImagenormError, match="DatasetStats or the path"):
        report.render_report(42)


def test_an_unwritable_output_is_one_line_before_any_work(rgb8, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "render_report", lambda *a, **k: pytest.fail("rendered before checking the output"))
    with pytest.raises(OutputError, match="no such folder") as caught:
        report.write_report(rgb8, tmp_path / "missing" / "report.html")
    assert "\n" not in str(caught.value)
    with pytest.raises(OutputError, match="is a folder"):
        report.write_report(rgb8, tmp_path)


@pytest.mark.parametrize("module", ["jinja2", "matplotlib"])
def test_missing_extra_names_the_install(rgb8, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImagenormError, match=r"pip install 'imagenorm\[report\]'"):
        report.render_report(rgb8)


def test_command_line(rgb8, tmp_path, rng):
    rgb8.save(tmp_path / "stats.json")
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "stats.json"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "r.html").stat().st_size > 10_000
    result = runner.invoke(app, ["report", str(tmp_path / "stats.json"), "-o", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no such folder" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output


def test_command_line_with_audit_and_compare(tmp_path, rng):
    runner = CliRunner()
    folder = rgb16_folder(tmp_path / "a", rng)
    result = runner.invoke(app, ["stats", str(folder), "-o", str(tmp_path / "a.json"), "--audit", str(tmp_path / "a.csv")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["stats", str(rgb16_folder(tmp_path / "b", rng, shift=500)), "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(tmp_path / "a.json"), "-o", str(tmp_path / "r.html"),
                                 "--audit", str(tmp_path / "a.csv"), "--compare", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert page.count("data-overlay") == 4 and page.count("data-chart") == 4


def test_percentile_keys_in_the_table_are_the_stats_files(rgb8_page):
    keys = [key for (table, _), cells in Page(rgb8_page).cells.items() if table == "percentiles" for key, _ in cells]
    assert set(keys) == {f"p{percentile_key(q)}" for q in imagenorm.PERCENTILES}


def test_charts_leave_matplotlib_settings_as_the_program_set_them():
    import matplotlib

    from imagenorm.report import render_report

    stats = imagenorm.compute_stats(Path(__file__).resolve().parent.parent / "samples" / "gray16")
    with matplotlib.rc_context({"lines.linewidth": 7.0, "svg.fonttype": "path"}):
        before = dict(matplotlib.rcParams)
        page = render_report(stats)
        assert dict(matplotlib.rcParams) == before
    assert "<svg" in page and 'stroke-width="7' not in page  # drawn in matplotlib's defaults, not the caller's style


def test_report_takes_the_drift_thresholds_of_compare(tmp_path, rng):
    from imagenorm.report import render_report

    data = rng.integers(0, 4096, (3, 3, 20, 20)).astype(np.uint16)
    train, test = imagenorm.compute_stats(data), imagenorm.compute_stats((data * 1.5).astype(np.uint16))
    assert 'data-verdict="drift"' in render_report(train, compare=test)
    relaxed = render_report(train, compare=test, max_wasserstein=100.0, max_ks=1.0)
    assert "exceeds 100.0 reference stds" in relaxed and 'data-verdict="no drift"' in relaxed
    with pytest.raises(imagenorm.OptionError, match="max_kss"):
        render_report(train, compare=test, max_kss=1.0)
