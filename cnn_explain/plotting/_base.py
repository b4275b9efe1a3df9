"""Shared figure helpers: figures are made without pyplot, so no backend or global state changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float] = (6.0, 4.0), ax: Axes | None = None, **kwargs: Any) -> tuple[Figure, Axes]:
    """Return ``(fig, ax)``: the given Axes and its Figure, or a new Figure with one Axes.

    The figure is a plain ``matplotlib.figure.Figure`` (not registered with
    pyplot), so it is never shown and never leaks.
    """
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained", **kwargs)
    return fig, fig.add_subplot(1, 1, 1)


def blank_figure(figsize: tuple[float, float] = (6.0, 4.0), **kwargs: Any) -> Figure:
    """A new pyplot-free Figure with no Axes."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained", **kwargs)


def to_image(t: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor -> array for ``imshow``: ``(H, W)`` for one channel, else ``(H, W, 3)`` clipped to [0, 1]."""
    import numpy as np

    a = t.detach().cpu().float().numpy()
    if a.ndim == 3 and a.shape[0] == 1:
        return a[0]
    if a.ndim == 3:
        a = np.transpose(a[:3], (1, 2, 0))
        lo, hi = a.min(), a.max()
        if lo < 0 or hi > 1:
            a = (a - lo) / (hi - lo + 1e-12)
        return np.clip(a, 0, 1)
    return a
