"""Make docs/report.png: the HTML report of samples/rgb8 in headless Chromium, full page, 1200 px wide.

    .venv/bin/python docs/report_screenshot.py

Needs the dev extra (selenium, jinja2, matplotlib) and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

import imagenorm
from imagenorm.audit import write_csv
from imagenorm.report import write_report

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1200


def main() -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        sys.exit("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        stats = imagenorm.compute_stats(str(ROOT / "samples" / "rgb8"), audit=True)
        stats.save(folder / "rgb8.json")
        write_csv(stats.audit_rows, folder / "rgb8-audit.csv")
        here = os.getcwd()
        os.chdir(folder)  # the page names the stats file as given: rgb8.json
        try:
            write_report(imagenorm.DatasetStats.load("rgb8.json"), "report.html", audit="rgb8-audit.csv")
        finally:
            os.chdir(here)
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                         f"--window-size={WIDTH},900", "--force-device-scale-factor=1"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            driver.get((folder / "report.html").as_uri())
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(WIDTH, height + 200)  # the window's frame takes some of it
            inner = driver.execute_script("return window.innerHeight")
            driver.set_window_size(WIDTH, height + 200 + (height - inner))
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, min(WIDTH, image.width), min(height, image.height)))
    target = ROOT / "docs" / "report.png"
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT)} ({image.width}x{image.height}, {target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
