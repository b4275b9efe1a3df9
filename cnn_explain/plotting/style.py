"""Style-transfer figure: content, style and result side by side, plus the loss curves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ._base import blank_figure, to_image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..style import StyleResult

__all__ = ["style_figure", "loss_curves"]

_CURVES = (("total", "total (weighted)"), ("content", "content"), ("style", "style"), ("tv", "total variation"))


def style_figure(result: StyleResult, content: Any = None, style: Any = None, *,
                 figsize: tuple[float, float] = (13.0, 3.4)) -> Figure:
    """Content, style and stylized images in a row, then the loss curves on a log scale.

    Args:
        result: a :class:`cnn_explain.style.StyleResult`.
        content: the content image to show (``(3, H, W)`` tensor or anything
            :func:`cnn_explain.style.images.load_rgb` takes); default the
            resized one stored in ``result.content``.
        style: the style image, same; default ``result.style``.
        figsize: figure size in inches.

    Returns:
        A ``matplotlib.figure.Figure`` (not shown, not saved) with four Axes:
        content, style, result, losses.

    Example:
        >>> fig = style_figure(transfer(content, style))       # doctest: +SKIP
        >>> fig.savefig("style.png")                           # doctest: +SKIP
    """
    _check_result(result)
    content = _image(result.content if content is None else content, "content")
    style = _image(result.style if style is None else style, "style")
    fig = blank_figure(figsize)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.35]})
    for ax, img, title in zip(axes[:3], (content, style, result.image), ("content", "style", "result")):
        ax.imshow(to_image(img))
        ax.set_title(title)
        ax.set_axis_off()
    loss_curves(result, ax=axes[3])
    settings = result.settings
    drop = getattr(result, "style_drop", float("nan"))
    gain = f"; style (Gram) loss {drop:.0f}× lower than the content image's" if drop == drop else ""
    fig.suptitle(
        f"{settings.get('model_name', 'model')}, {settings.get('optimizer', '')} × {len(result.history)} steps, "
        f"{result.seconds:.1f} s{gain}",
        fontsize="medium",
    )
    return fig


def loss_curves(result: StyleResult, ax: Axes | None = None, *, figsize: tuple[float, float] = (5.0, 3.4)) -> Figure:
    """The loss terms of ``result.history`` per step, log scale (zeros are left out).

    Lines are labelled ``"total (weighted)"``, ``"content"``, ``"style"`` and
    ``"total variation"``; their y data are the history values in step order.
    """
    from ._base import new_figure

    _check_result(result)
    fig, ax = new_figure(figsize, ax)
    steps = list(range(len(result.history)))
    for key, label in _CURVES:
        if result.history and key in result.history[0]:
            ax.plot(steps, [h[key] for h in result.history], label=label, lw=1.5 if key == "total" else 1.0)
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("losses")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return fig


def _check_result(result: Any) -> None:
    if not all(hasattr(result, a) for a in ("image", "history", "settings")):
        raise TypeError(f"result must be a StyleResult from cnn_explain.style.transfer, got {type(result).__name__}")


def _image(x: Any, argname: str) -> torch.Tensor:
    from ..style.images import load_rgb

    if x is None:
        raise ValueError(f"{argname} is required: the result does not hold the {argname} image")
    return load_rgb(x, argname)[0]
