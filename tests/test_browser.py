"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

Every ``<img>`` must load (``naturalWidth > 0``), the console must have no
SEVERE entry, and a screenshot is saved. Skipped, with how to install the
browser, where ``/usr/bin/chromium`` or ``chromedriver`` is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _chromium import chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "profile") as driver:
        yield driver


def _report(folder: Path):
    from conftest import TinyNet, _seeded

    from cnn_explain import explain

    g = torch.Generator().manual_seed(5)
    data = torch.utils.data.TensorDataset(torch.rand(30, 3, 16, 16, generator=g), torch.arange(30) % 5)
    ex = explain(_seeded(TinyNet), class_names=["<b>zero</b>", "one", "two", "three", "four"])
    return ex.report(torch.rand(2, 3, 16, 16, generator=g), data=data, out=folder / "report", progress=False,
                     settings=dict(maximize_steps=3, maximize_channels=2, max_channels=4, embed_methods=("pca",),
                                   style={"content": torch.rand(3, 16, 16, generator=g),
                                          "style": torch.rand(3, 16, 16, generator=g), "size": 32, "steps": 2}))


def test_report_renders_in_chromium(browser, tmp_path):
    res = _report(tmp_path)
    browser.get(res.path.resolve().as_uri())
    browser.execute_script("return document.readyState")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth,"
        " i.currentSrc]);")
    assert len(images) == len(res.figures) > 5
    broken = [(src, cur) for src, done, width, cur in images if not (done and width > 0)]
    assert not broken, f"images that did not load: {broken}"
    used_svg = [cur for *_, cur in images if cur.endswith(".svg")]
    assert len(used_svg) == sum(1 for f in res.figures if f.svg)  # the lighter SVG is what the browser shows
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"console errors: {severe}"
    headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.innerText)")
    assert {"Model summary", "Attribution methods side by side", "Style transfer"} <= set(headings)
    assert browser.execute_script("return document.querySelectorAll('script').length") == 0
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    import numpy as np
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] >= 800 and len(np.unique(np.asarray(im.convert("L")))) > 10
