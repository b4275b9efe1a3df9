"""Each benchmark owns one section of ``docs/performance.md``, between
``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``; this replaces it."""

from __future__ import annotations

import re
from pathlib import Path

PERFORMANCE_MD = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_section(name: str, title: str, text: str, path: Path = PERFORMANCE_MD) -> None:
    """Replace benchmark ``name``'s section of ``path`` with ``text`` (appended under ``## title`` if new)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{text}\n{end}"
    old = path.read_text() if path.exists() else "# Performance\n"
    if start in old and end in old:
        new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(new)
