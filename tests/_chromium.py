"""Headless Chromium for the browser tests (Debian's chromium + chromium-driver, driven by Selenium).

Tests that use :func:`chromium` are skipped, with how to install the browser,
where ``/usr/bin/chromium`` or ``chromedriver`` is missing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
HOW = "install Debian's browser and driver: sudo apt-get install chromium chromium-driver"


def driver_path() -> str | None:
    """Where chromedriver is, or None."""
    for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")):
        if p and Path(p).is_file():
            return p
    return None


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A headless Chromium WebDriver with an empty profile in ``profile``; quits on exit."""
    if not CHROMIUM.is_file() or driver_path() is None:
        pytest.skip(f"Chromium or chromedriver not found; {HOW}")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1200,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path()), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
