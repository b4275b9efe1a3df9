"""The page itself, rendered from Jinja2 templates with autoescaping.

The templates (``templates/*.html`` beside this module) hold every piece of
markup: the page, a figure, a table, the line of a skipped section and one
template per section. Every value passed to them is escaped unless it is
already :class:`markupsafe.Markup` (the output of another template), so a
class, layer or file name can never inject markup.

Nothing here needs JavaScript: the page is a table of contents, one ``<section>``
per capability, figures as ``<img>`` (an SVG ``<source>`` first when the SVG is
the lighter file) and small tables.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["render", "table", "figure_html", "page", "skipped_html"]


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates' environment (built once): autoescaping, undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cnn_explain.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **values: Any) -> Markup:
    """Render ``templates/<template>`` with ``values`` (escaped unless they are ``Markup``)."""
    return Markup(environment().get_template(template).render(**values))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = ()) -> Markup:
    """An HTML table; every cell is escaped (pass plain values, not markup). ``numeric``: right-aligned columns."""
    return render("table.html", header=list(header), rows=[list(r) for r in rows], numeric=set(numeric))


def figure_html(png: str, svg: str | None, caption: str, width: int, height: int) -> Markup:
    """A ``<figure>``: the PNG as ``<img>``, preceded by an SVG ``<source>`` when one was kept."""
    return render("figure.html", png=png, svg=svg, caption=caption, width=int(width), height=int(height))


def skipped_html(reason: str) -> Markup:
    """The line that says why a section was left out."""
    return render("skipped.html", reason=reason)


def page(title: str, meta: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document. ``sections`` holds ``(anchor, title, body)``; bodies are rendered templates (Markup)."""
    items = [{"anchor": a, "title": t, "body": b} for a, t, b in sections]  # a plain-str body would be escaped
    return render("page.html", title=title, meta=meta, sections=items) + "\n"
