"""The page itself: plain HTML with inline CSS, every user-supplied string escaped.

Nothing here needs JavaScript: the page is a table of contents, one ``<section>``
per capability, figures as ``<img>`` (an SVG ``<source>`` first when the SVG is
the lighter file) and small tables.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["esc", "table", "figure_html", "page", "skipped_html"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav ol{columns:2}nav a{text-decoration:none}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.formula{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
p.skipped{background:#fff6e0;border-left:4px solid #e0a800;padding:.4em .8em}
p.meta{color:#666}
.lede{color:#444}
"""


def esc(value: Any) -> str:
    """``html.escape(str(value), quote=True)``: safe inside text and attribute values."""
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = ()) -> str:
    """An HTML table; every cell is escaped (pass plain values, not markup)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure_html(png: str, svg: str | None, caption: str, width: int, height: int) -> str:
    """A ``<figure>``: the PNG as ``<img>``, preceded by an SVG ``<source>`` when one was kept."""
    source = f'<source type="image/svg+xml" srcset="{esc(svg)}">' if svg else ""
    img = f'<img src="{esc(png)}" alt="{esc(caption)}" width="{int(width)}" height="{int(height)}">'
    return f"<figure><picture>{source}{img}</picture><figcaption>{esc(caption)}</figcaption></figure>"


def skipped_html(reason: str) -> str:
    """The line that says why a section was left out."""
    return f'<p class="skipped">Left out: {esc(reason)}</p>'


def page(title: str, meta: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document. ``sections`` holds ``(anchor, title, body html)``; bodies are already escaped."""
    toc = "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t, _ in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><p class=\"meta\">{esc(meta)}</p></header>",
        f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>",
    ]
    for anchor, sec_title, body in sections:
        parts.append(f'<section id="{esc(anchor)}"><h2>{esc(sec_title)}</h2>{body}</section>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
