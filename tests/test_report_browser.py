"""The HTML report in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by selenium. No console error, no request beyond the file itself, the charts, the copy
button, the log switch, the comparison overlay and the print layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import imagenorm

from conftest import write_png

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (the dev extra)")
pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from imagenorm.report import write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
DRIVER = shutil.which("chromedriver")
if BROWSER is None or DRIVER is None:
    pytest.skip("the browser tests need chromium and chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)


def new_driver(width: int = 1200, height: int = 900):
    """Headless Chromium with its console and network logs recorded."""
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    try:
        driver = new_driver()
    except WebDriverException as error:  # installed but unable to start is a failure, not a skip
        pytest.fail(f"chromium did not start: {str(error).splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()


def rgb16(folder: Path, shift: int) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for index in range(3):
        pixels = rng.normal(20000 + 2500 * index + shift, 5000, (40, 48, 3)).clip(0, 65535).astype(np.uint16)
        write_png(folder / f"image_{index}.png", pixels)
    return folder


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Reports of the shipped samples and of a 16-bit RGB dataset (alone, and against a shifted copy)."""
    folder = tmp_path_factory.mktemp("reports")
    reference = imagenorm.compute_stats(str(rgb16(folder / "reference", 0)))
    made = {"rgb8": imagenorm.compute_stats(str(ROOT / "samples" / "rgb8")),
            "gray16": imagenorm.compute_stats(str(ROOT / "samples" / "gray16")),
            "rgb16": reference}
    paths = {}
    for name, stats in made.items():
        paths[name] = folder / f"{name}.html"
        write_report(stats, paths[name])
    shifted = imagenorm.compute_stats(str(rgb16(folder / "shifted", 9000)))
    paths["rgb16-compare"] = folder / "rgb16-compare.html"
    write_report(reference, paths["rgb16-compare"], compare=shifted)
    return paths


def open_report(driver, path: Path) -> tuple[str, list[dict], list[str]]:
    """Load ``path`` fresh; its URL, the console entries and the URLs of every request."""
    driver.get("about:blank")
    driver.get_log("browser"), driver.get_log("performance")  # drain what came before
    url = path.as_uri()
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    console = driver.get_log("browser")
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return url, console, requests


CHARTS = {"rgb8": 4, "gray16": 1, "rgb16": 4, "rgb16-compare": 4}


@pytest.mark.parametrize("name", list(CHARTS))
def test_opens_alone_without_errors(browser, reports, name):
    url, console, requests = open_report(browser, reports[name])
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []
    assert requests and all(request == url or request.startswith("data:") for request in requests), requests
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-chart]")) == CHARTS[name]
    for chart in browser.find_elements(By.CSS_SELECTOR, "[data-chart] .linear svg"):
        size = chart.size
        assert size["width"] > 300 and size["height"] > 80  # drawn, scaled to its column
    assert browser.execute_script("return document.documentElement.classList.contains('js')")


def visible_svg(driver, selector: str) -> str:
    shown = [svg for svg in driver.find_elements(By.CSS_SELECTOR, f"{selector} svg") if svg.is_displayed()]
    assert len(shown) == 1
    return shown[0].get_attribute("outerHTML")


def test_the_log_switch_changes_every_chart(browser, reports):
    open_report(browser, reports["rgb16"])
    switch = browser.find_element(By.ID, "log-switch")
    assert switch.is_displayed() and switch.get_attribute("aria-pressed") == "false"
    before = [visible_svg(browser, f'[data-chart="{key}"]') for key in ("red", "pooled")]
    switch.click()
    assert switch.get_attribute("aria-pressed") == "true"
    after = [visible_svg(browser, f'[data-chart="{key}"]') for key in ("red", "pooled")]
    assert all(a != b for a, b in zip(before, after))
    switch.click()
    assert [visible_svg(browser, f'[data-chart="{key}"]') for key in ("red", "pooled")] == before


def normalize_line(driver) -> str:
    return driver.find_element(By.ID, "normalize-line").text


def test_copy_puts_the_normalize_line_on_the_clipboard(browser, reports):
    open_report(browser, reports["rgb8"])
    try:
        browser.execute_cdp_cmd("Browser.grantPermissions",
                                {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    except WebDriverException:
        pass  # then the page must fall back to the visible field
    expected = imagenorm.compute_stats(str(ROOT / "samples" / "rgb8")).normalize_line()
    assert normalize_line(browser) == expected
    browser.find_element(By.ID, "copy-button").click()
    status = browser.find_element(By.ID, "copy-status")
    WebDriverWait(browser, 10).until(lambda d: status.text)
    if status.text.startswith("Copied"):
        pasted = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, (error) => done('refused: ' + error));")
        assert pasted == expected
    else:
        assert_fallback(browser, expected)


def assert_fallback(driver, expected: str) -> None:
    field = driver.find_element(By.ID, "copy-fallback")
    assert field.is_displayed()
    assert field.get_attribute("value") == expected
    assert driver.execute_script("const f = document.getElementById('copy-fallback');"
                                 "return [document.activeElement === f, f.selectionStart, f.selectionEnd];") \
        == [True, 0, len(expected)]
    assert "blocked" in driver.find_element(By.ID, "copy-status").text


def test_a_refused_clipboard_shows_the_line_selected(browser, reports):
    open_report(browser, reports["rgb8"])
    browser.execute_script("navigator.clipboard.writeText = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));")
    browser.find_element(By.ID, "copy-button").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "copy-fallback").is_displayed())
    assert_fallback(browser, normalize_line(browser))


def test_compare_overlays_the_histograms(browser, reports):
    open_report(browser, reports["rgb16-compare"])
    overlays = browser.find_elements(By.CSS_SELECTOR, "[data-overlay]")
    assert [o.get_attribute("data-overlay") for o in overlays] == ["red", "green", "blue", "pooled"]
    assert all(o.find_element(By.CSS_SELECTOR, ".linear svg").is_displayed() for o in overlays)
    assert browser.find_element(By.CSS_SELECTOR, "[data-verdict]").text == "drift"
    rows = browser.find_elements(By.CSS_SELECTOR, '[data-table="drift"] tr[data-row]')
    assert [row.get_attribute("data-row") for row in rows] == ["red", "green", "blue", "pooled"]
    before = visible_svg(browser, '[data-overlay="red"]')
    browser.find_element(By.ID, "log-switch").click()
    assert visible_svg(browser, '[data-overlay="red"]') != before


def test_prints_without_buttons_and_with_linear_charts(browser, reports):
    open_report(browser, reports["rgb8"])
    browser.find_element(By.ID, "log-switch").click()  # even when the screen shows log counts
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:  # computed styles: selenium's is_displayed does not follow emulated media
        displays = browser.execute_script(
            "const shown = (e) => getComputedStyle(e).display;"
            "return {buttons: [...document.querySelectorAll('button')].map(shown),"
            "        charts: [...document.querySelectorAll('[data-chart]')].map("
            "            (c) => [shown(c.querySelector('.linear')), shown(c.querySelector('.log'))])};")
        assert displays["buttons"] and set(displays["buttons"]) == {"none"}
        assert displays["charts"] == [["block", "none"]] * 4
        pdf = browser.execute_cdp_cmd("Page.printToPDF", {"printBackground": False})
        assert len(pdf["data"]) > 10_000
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
