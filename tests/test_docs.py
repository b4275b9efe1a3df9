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
