"""Figure of a model's architecture from a :class:`cnn_explain.summary.Summary`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..summary import Summary

__all__ = ["architecture"]


def architecture(summary: Summary, *, ax: Axes | None = None, log: bool = True, skip_activations: bool = True) -> Figure:
    """Horizontal bars of neurons and parameters per layer, first layer on top.

    Args:
        summary: a :class:`cnn_explain.summary.Summary`.
        ax: optional Matplotlib Axes to draw into.
        log: logarithmic x axis (neurons and parameters differ by orders of magnitude).
        skip_activations: leave out rows that have neither parameters nor a new shape
            (ReLU, BatchNorm-free activations, Dropout...) to keep the figure short.

    Returns:
        The ``matplotlib.figure.Figure``. The bar heights are ``row.neurons`` and
        ``row.params`` of the rows shown (``ax.containers[0]`` and ``[1]``).

    Example:
        >>> from cnn_explain.summary import summarize
        >>> from cnn_explain.models import cifar10_cnn
        >>> fig = architecture(summarize(cifar10_cnn(), (3, 32, 32)))
    """
    import numpy as np

    rows = list(summary.rows)
    if skip_activations:
        kept, prev = [], None
        for r in rows:
            if r.params or r.output_shape != prev:
                kept.append(r)
            prev = r.output_shape
        rows = kept
    fig, ax = new_figure((7.0, 0.32 * len(rows) + 1.4), ax)
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r.neurons for r in rows], height=0.4, label="neurons (outputs per image)", color="#4C72B0")
    ax.barh(y + 0.2, [r.params for r in rows], height=0.4, label="parameters", color="#DD8452")
    ax.set_yticks(y, [f"{r.name} {r.kind} {r.shape}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("count" + (" (log scale)" if log else ""))
    ax.set_title(f"{summary.model_name}: {summary.total_params:,} parameters", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    return fig
