"""Make docs/img/report.png: the top of the --fast demo report, rendered by headless Chromium.

    .venv/bin/python docs/gen/report.py          # needs Debian's chromium and chromium-driver
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

IMG = Path(__file__).resolve().parents[1] / "img" / "report.png"


def main(argv: list[str] | None = None) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cnn_explain.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        page = run_demo(out=Path(tmp) / "report", fast=True, progress=False)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--window-size=1100,1300", f"--user-data-dir={Path(tmp) / 'profile'}"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(page.resolve().as_uri())
            IMG.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(IMG))
        finally:
            driver.quit()
    from PIL import Image

    with Image.open(IMG) as im:  # smaller file for the docs
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(IMG, optimize=True)
    print(IMG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
