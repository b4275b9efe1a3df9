"""Figures for the inside of the network: feature maps, filters, maximization images,
the worked arithmetic of one output, and a receptive-field box.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot; none
shows or saves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._base import blank_figure, new_figure, to_image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..features.arithmetic import Arithmetic
    from ..features.filters import FilterResult
    from ..features.maximize import MaximizeResult
    from ..layers import Box

__all__ = ["feature_map_grid", "filter_grid", "maximize_grid", "arithmetic_figure", "receptive_field_figure"]


def _grid(fig_or_sub, n: int, ncols: int):
    rows = max(1, math.ceil(n / ncols))
    cols = min(ncols, max(n, 1))
    axes = np.atleast_1d(fig_or_sub.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes:
        ax.set_axis_off()
    return axes


# --------------------------------------------------------------------------- feature maps
def _pick_channels(t: torch.Tensor, top_k: int | None, max_channels: int) -> list[int]:
    if top_k is not None:
        means = t.float().mean(dim=(1, 2))
        return means.argsort(descending=True)[: min(top_k, t.shape[0])].tolist()
    return list(range(min(t.shape[0], max_channels)))


def feature_map_grid(maps: Mapping[str, torch.Tensor], layers: str | Sequence[str] | None = None, *, index: int = 0,
                     top_k: int | None = None, shared_scale: bool = False, max_channels: int = 16,
                     ncols: int = 8, cmap: str = "viridis") -> Figure:
    """A grid of channels per layer, titled with the layer name and map shape (seed 000, figure 5).

    Args:
        maps: ``{layer: (N, C, H, W) or (N, F)}`` from :func:`cnn_explain.features.feature_maps`.
        layers: which layers to draw (default all, in order).
        index: which image of the batch.
        top_k: draw the ``top_k`` channels with the highest mean activation
            (most active first) instead of the first ``max_channels``.
        shared_scale: one colour scale for all drawn channels of a layer (compare
            channels) instead of one per channel (see each channel's pattern).
        max_channels: channels drawn per layer when ``top_k`` is None.

    Returns:
        The Figure. Each channel's Axes is titled ``"ch k"`` and its value range
        ``"lo … hi"``; with ``shared_scale`` each layer has one colour bar.
    """
    names = list(maps) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    missing = [n for n in names if n not in maps]
    if missing or not names:
        raise ValueError(f"layers: {missing or names} not in the maps (available: {list(maps)})")
    chosen = []
    for name in names:
        t = maps[name][index].detach().cpu().float()
        chans = _pick_channels(t, top_k, max_channels) if t.dim() == 3 else []
        chosen.append((name, t, chans))
    heights = [max(1, math.ceil(len(c) / ncols)) + 0.4 if c else 1.0 for _, _, c in chosen]
    fig = blank_figure(figsize=(1.3 * ncols, 1.4 * sum(heights)))
    subfigs = np.atleast_1d(fig.subfigures(len(chosen), 1, height_ratios=heights, squeeze=False).ravel())
    for sub, (name, t, chans) in zip(subfigs, chosen):
        label = "top-%d of " % len(chans) if top_k is not None else ""
        sub.suptitle(f"{name}  {tuple(maps[name].shape[1:])}" + (f"  ({label}{t.shape[0]} channels)" if chans else ""),
                     fontsize=9)
        if not chans:  # (F,) vector: one strip
            ax = sub.subplots(1, 1)
            ax.imshow(t.reshape(1, -1).numpy(), aspect="auto", cmap=cmap)
            ax.set_yticks([])
            continue
        vmin, vmax = (float(t[chans].min()), float(t[chans].max())) if shared_scale else (None, None)
        axes = _grid(sub, len(chans), ncols)
        for ax, c in zip(axes, chans):
            im = ax.imshow(t[c].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(f"ch {c}\n{float(t[c].min()):.2g} … {float(t[c].max()):.2g}", fontsize=7)
        if shared_scale:
            sub.colorbar(im, ax=list(axes), shrink=0.8).set_label("activation", fontsize=7)
    return fig


# --------------------------------------------------------------------------- filters
def filter_grid(result: FilterResult, max_filters: int = 64, max_inputs: int = 16, ncols: int = 8) -> Figure:
    """Draw a :class:`~cnn_explain.features.filters.FilterResult`.

    RGB first layers: each filter as a small colour image; one input channel:
    gray images; deeper layers: a grid of filters (rows) × input channels
    (columns), capped at ``max_filters`` / 16 rows and ``max_inputs`` columns.
    Every filter is scaled to [0, 1] on its own (:meth:`FilterResult.normalized`).
    """
    norm = result.normalized()
    cout, cin = norm.shape[:2]
    if result.rgb or cin == 1:
        n = min(cout, max_filters)
        fig = blank_figure(figsize=(1.1 * min(ncols, n), 1.2 * math.ceil(n / ncols) + 0.4))
        for k, ax in enumerate(_grid(fig, n, ncols)):
            img = norm[k].permute(1, 2, 0).numpy() if result.rgb else norm[k, 0].numpy()
            ax.imshow(img, cmap=None if result.rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{k}", fontsize=7)
        fig.suptitle(f"{result.layer}: {cout} filters {tuple(norm.shape[1:])}\n{_weight_range(result)}", fontsize=9)
        return fig
    rows, cols = min(cout, max_filters, 16), min(cin, max_inputs)
    fig = blank_figure(figsize=(0.8 * cols + 0.6, 0.8 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k in range(rows):
        for c in range(cols):
            ax = axes[k, c]
            ax.imshow(norm[k, c].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"f{k}", fontsize=7)
            if k == 0:
                ax.set_title(f"in {c}", fontsize=7)
    fig.suptitle(f"{result.layer}: filters × input channels (showing {rows}/{cout} × {cols}/{cin})\n"
                 f"{_weight_range(result)}", fontsize=9)
    return fig


def _weight_range(result: FilterResult) -> str:
    w = result.weight
    return (f"weights {float(w.min()):.3g} … {float(w.max()):.3g}; each filter drawn on its own range "
            "(darkest = its min, brightest = its max)")


# --------------------------------------------------------------------------- maximization
def _unchanged_channels(result: MaximizeResult, tol: float = 1e-3) -> list[bool]:
    """For each image of ``result``: did the optimization leave it unchanged (the channel never fired)?

    True when the objective never moved during the run (a channel whose ReLU output is
    0 everywhere gives a zero gradient) or the image is flat (pixel std below ``tol``).
    """
    hist = result.history
    if hist.numel():
        still = (hist.amax(0) - hist.amin(0)).abs() <= 1e-9
    else:  # no step was taken: nothing changed
        still = torch.ones(len(result.channels), dtype=torch.bool)
    flat = result.pixels.flatten(1).std(1) < tol
    return (still.cpu() | flat.cpu()).tolist()


def maximize_grid(result: MaximizeResult, ncols: int = 8, *, class_names: Sequence[str] | None = None) -> Figure:
    """The images of a :class:`~cnn_explain.features.maximize.MaximizeResult`, one per channel.

    Drawn from ``result.pixels`` (values in [0, 1]); Axes titled ``"ch k"``. An image
    the optimization did not change (:func:`_unchanged_channels`: the channel never
    fired, so the image stayed flat grey) is not shown as a result: its panel says
    ``"never fired"`` instead. With ``class_names`` (when the layer is the class
    scores) each panel is titled with the class's name.
    """
    n = len(result.channels)
    dead = _unchanged_channels(result)
    fig = blank_figure(figsize=(1.6 * min(ncols, n), 1.7 * math.ceil(n / ncols) + 0.5))
    for ax, img, ch, off in zip(_grid(fig, n, ncols), result.pixels, result.channels, dead):
        name = f"ch {ch}" if class_names is None or not 0 <= ch < len(class_names) else str(class_names[ch])
        ax.set_title(name, fontsize=8, color="tab:red" if off else "black")
        if off:
            ax.set_axis_on()
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_facecolor("0.93")
            ax.text(0.5, 0.5, "never fired:\nimage unchanged", ha="center", va="center", fontsize=8,
                    color="tab:red", transform=ax.transAxes)
            ax.set_gid(f"unchanged-{ch}")
            continue
        arr = img[0].numpy() if img.shape[0] == 1 else img[:3].permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(arr, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
    note = f" ({sum(dead)} of {n} never fired: not shown)" if any(dead) else ""
    fig.suptitle(f"{result.layer}: images maximizing each channel{note}", fontsize=9)
    return fig


# --------------------------------------------------------------------------- arithmetic
def _matrix(ax: Axes, m: torch.Tensor, title: str, cmap: str = "coolwarm", annotate: bool = True) -> None:
    """Weights and products on a diverging scale centred at 0; inputs (any other cmap) on their own range."""
    arr = m.double().numpy().copy()
    arr[np.isneginf(arr)] = np.nan  # max-pool padding
    finite = np.isfinite(arr).any()
    if cmap == "coolwarm":
        lim = np.nanmax(np.abs(arr)) if finite else 1.0
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = (np.nanmin(arr), np.nanmax(arr)) if finite else (0.0, 1.0)
        vmin, vmax = (vmin - 0.5, vmax + 0.5) if vmin == vmax else (vmin - 0.25 * (vmax - vmin), vmax)
    ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if annotate and arr.size <= 49:
        for (i, j), v in np.ndenumerate(arr):
            ax.text(j, i, "pad" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    bbox=dict(boxstyle="round,pad=0.1", facecolor="white", alpha=0.6, linewidth=0))


def arithmetic_figure(result: Arithmetic, max_channels: int = 3) -> Figure:
    """Lay out an :class:`~cnn_explain.features.arithmetic.Arithmetic` like seed 000's figure 4.

    Conv: one row per input channel (up to ``max_channels``): input slice × kernel =
    products, and the row's sum; then ``Σ sums + bias = computed``, the value the
    layer produced and the activation. Pools: the window, the winner outlined
    (max) or the divisor (average). Linear: the largest products as bars.
    """
    if result.kind == "conv":
        n = min(len(result.input_channels), max_channels)
        fig = blank_figure(figsize=(7.5, 2.0 * n + 1.2))
        gs = fig.add_gridspec(n + 1, 4, height_ratios=[1] * n + [0.6])
        rgb = len(result.input_channels) == 3  # seed 000's figure 4: red, green and blue slices
        for i in range(n):
            c = result.input_channels[i]
            cmap = ("Reds", "Greens", "Blues")[i] if rgb else "gray"
            _matrix(fig.add_subplot(gs[i, 0]), result.input_slice[i], f"input ch {c}", cmap=cmap)
            _matrix(fig.add_subplot(gs[i, 1]), result.kernel[i], f"× kernel [{result.channel}, {i}]")
            _matrix(fig.add_subplot(gs[i, 2]), result.products[i], "= products")
            t = fig.add_subplot(gs[i, 3])
            t.set_axis_off()
            t.text(0, 0.5, f"Σ = {float(result.per_channel_sums[i]):.4f}", fontsize=10, va="center")
    elif result.kind == "linear":
        fig = blank_figure(figsize=(7.5, 3.5))
        gs = fig.add_gridspec(2, 1, height_ratios=[1, 0.5])
        ax = fig.add_subplot(gs[0])
        order = result.products.abs().argsort(descending=True)[:16].tolist()
        ax.bar(range(len(order)), [float(result.products[i]) for i in order], color="tab:blue")
        ax.set_xticks(range(len(order)), [str(i) for i in order], fontsize=7, rotation=90)
        ax.set_title(f"largest products x_i·w[{result.channel}, i] (of {result.products.numel()})", fontsize=8)
    else:
        fig = blank_figure(figsize=(5.0, 3.5))
        gs = fig.add_gridspec(2, 1, height_ratios=[1, 0.5])
        ax = fig.add_subplot(gs[0])
        _matrix(ax, result.input_slice, f"window of input ch {result.channel}", cmap="gray")
        if result.winner is not None:
            from matplotlib.patches import Rectangle

            i, j = result.rows.index(result.winner[0]), result.cols.index(result.winner[1])
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    _summary_text(fig.add_subplot(gs[-1, :] if result.kind == "conv" else gs[-1]), result)
    where = "" if result.position is None else f" at (h={result.position[0]}, w={result.position[1]})"
    fig.suptitle(f"{result.layer} ({result.kind}), output channel {result.channel}{where}", fontsize=10)
    return fig


def _summary_text(ax: Axes, r: Arithmetic) -> None:
    ax.set_axis_off()
    if r.kind in ("conv", "linear"):
        total = r.computed - (r.bias or 0.0)
        first = f"Σ = {total:.5f}" + (f"  + bias {r.bias:.5f}" if r.bias is not None else "") + f"  = {r.computed:.5f}"
    elif r.winner is not None:
        first = f"max = {r.computed:.5f}, won by input (row {r.winner[0]}, col {r.winner[1]})"
    else:
        first = f"mean = sum / {r.divisor} = {r.computed:.5f}"
    lines = [first, f"the layer produced {r.actual:.5f}  (|difference| {r.difference:.1e})"]
    if r.activation is not None:
        lines.append(f"{r.activation.name} → {r.activation.value:.5f}")
    ax.text(0, 0.5, "\n".join(lines), fontsize=10, va="center", family="monospace")


# --------------------------------------------------------------------------- receptive field
def receptive_field_figure(image: Any, box: Box, ax: Axes | None = None, color: str = "red") -> Figure:
    """Draw an inclusive receptive-field box on an image.

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)`` tensor (or an ``(H, W[, 3])`` array).
        box: any object with inclusive ``.top .bottom .left .right`` input
            coordinates (from :func:`cnn_explain.layers.receptive_field`); it may
            extend past the image into the padding, and the axes then show it.
            A ``.support`` differing from the box (pixels that really reach the
            output) is drawn dashed.
        ax: optional Axes to draw on.
        color: edge colour of the box.
    """
    from matplotlib.patches import Rectangle

    if isinstance(image, torch.Tensor):
        img = to_image(image[0] if image.dim() == 4 else image)
    else:
        img = np.asarray(image)
    fig, ax = new_figure((4.0, 4.0), ax)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    top, bottom, left, right = int(box.top), int(box.bottom), int(box.left), int(box.right)
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                           fill=False, edgecolor=color, linewidth=2))
    support = getattr(box, "support", None)
    if support is not None and tuple(support) != (top, bottom, left, right):
        t, b, l, r = (int(v) for v in support)  # the pixels inside the image that really reach the output
        ax.add_patch(Rectangle((l - 0.5, t - 0.5), r - l + 1, b - t + 1, fill=False, edgecolor=color,
                               linewidth=1, linestyle="--"))
    H, W = img.shape[:2]
    ax.set_xlim(min(-0.5, left - 0.5), max(W - 0.5, right + 0.5))
    ax.set_ylim(max(H - 0.5, bottom + 0.5), min(-0.5, top - 0.5))
    ax.set_title(f"receptive field: rows {top}..{bottom}, cols {left}..{right}", fontsize=9)
    return fig
