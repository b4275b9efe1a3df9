"""The documentation builds with `mkdocs build --strict` (API reference from the docstrings included)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    proc = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "capture" in api and "explain" in api  # docstrings rendered


def test_every_doc_image_referenced_exists():
    for page in (ROOT / "docs").glob("*.md"):
        for line in page.read_text().splitlines():
            if "](img/" in line:
                name = line.split("](img/")[1].split(")")[0]
                assert (ROOT / "docs" / "img" / name).exists(), f"{page.name} shows missing img/{name}"


RAW_TEX = ("\\frac", "\\left", "\\right", "$$", "\\[", "\\(")


@pytest.mark.slow
@pytest.mark.browser
def test_docs_formulas_render_offline_in_chromium(tmp_path):
    """Every formula on the concept and capability pages is typeset by the MathJax the site serves itself."""
    from _chromium import chromium

    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    proc = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = [p.stem for p in sorted((ROOT / "docs").glob("*.md"))
             if any(mark in p.read_text() for mark in ("$$", "\\[", "\\("))]
    assert {"concepts", "arithmetic", "summary"} <= set(pages)
    with chromium(tmp_path / "profile") as browser:
        for page in pages:
            browser.get((site / page / "index.html").as_uri())
            browser.set_script_timeout(60)
            typeset = browser.execute_async_script(
                "const done = arguments[0];"
                "if (!window.MathJax || !MathJax.startup) { done(-1); return; }"
                "MathJax.startup.promise.then(() => done(document.querySelectorAll('mjx-container').length));")
            assert typeset > 0, f"{page}: MathJax did not load or typeset nothing ({typeset})"
            text = browser.execute_script("return document.querySelector('article').innerText")
            raw = [t for t in RAW_TEX if t in text]
            assert not raw, f"{page}: raw LaTeX left in the rendered text: {raw}"
            errors = browser.execute_script("return document.querySelectorAll('mjx-merror').length")
            assert errors == 0, f"{page}: {errors} formulas failed to typeset"
