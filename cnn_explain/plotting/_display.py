"""Results that draw themselves in Jupyter: the :class:`Displayable` mixin.

A result class that derives from :class:`Displayable` gets ``_repr_png_``: the
notebook shows the result's figure (the function of :data:`FIGURES` for the
first class of its MRO that is listed there) instead of a bare ``repr``.
Nothing is imported until a notebook asks for the picture, so the mixin costs
nothing outside Jupyter.
"""

from __future__ import annotations

import io
from importlib import import_module
from typing import Any

__all__ = ["Displayable", "FIGURES", "figure_of"]

#: ``{result class name: (plotting submodule, function)}``.
FIGURES: dict[str, tuple[str, str]] = {
    "Attribution": ("attribution", "attribution_grid"),
    "SanityResult": ("attribution", "sanity_figure"),
    "DeletionInsertion": ("attribution", "deletion_insertion_figure"),
    "FilterResult": ("features", "filter_grid"),
    "MaximizeResult": ("features", "maximize_grid"),
    "Arithmetic": ("features", "arithmetic_figure"),
    "Embedding": ("embedding", "scatter_embedding"),
    "StyleResult": ("style", "style_figure"),
}

#: Resolution of the picture a notebook shows (figures are sized in inches).
DISPLAY_DPI = 80


def figure_of(result: Any) -> Any:
    """The result's default figure (a ``matplotlib.figure.Figure``).

    Raises:
        TypeError: no figure is known for the result's class (see :data:`FIGURES`).
    """
    for cls in type(result).__mro__:
        if cls.__name__ in FIGURES:
            module, name = FIGURES[cls.__name__]
            return getattr(import_module(f"cnn_explain.plotting.{module}"), name)(result)
    raise TypeError(f"no figure is known for {type(result).__name__}; known: {sorted(FIGURES)}")


class Displayable:
    """Mixin for result classes: ``_repr_png_`` draws the result's figure (Jupyter, IPython)."""

    __slots__ = ()

    def _repr_png_(self) -> bytes:
        """PNG bytes of :func:`figure_of` ``(self)``, for notebooks."""
        fig = figure_of(self)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DISPLAY_DPI)
        fig.clear()
        return buf.getvalue()
