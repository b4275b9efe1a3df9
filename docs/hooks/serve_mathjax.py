"""MkDocs hook: serve MathJax from the built site itself, so formulas render offline.

The MathJax bundle comes from a package registry (PyPI's ``django-static-mathjax``,
installed with the ``docs`` extra), not from a CDN at view time. ``tex-svg-full.js``
carries every TeX extension and draws SVG, so it needs no font files beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mathjax

BUNDLE = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"
TARGET = "assets/mathjax/tex-svg-full.js"


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Copy the MathJax bundle into the built site (``extra_javascript`` points at it)."""
    dest = Path(config["site_dir"]) / TARGET
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUNDLE, dest)
