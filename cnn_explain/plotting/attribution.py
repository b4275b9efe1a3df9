"""Figures for attribution results: heatmaps, grids, the sanity-check cascade, deletion/insertion curves.

Every function takes a result and returns a ``matplotlib.figure.Figure`` built
without pyplot (nothing is shown, no backend or global state changes).

* Signed maps (some value < 0) use a diverging colormap centred at 0
  (``RdBu_r``, limits ``±max|map|``): red pushes the class score up, blue down.
* Non-negative maps use a sequential colormap (``inferno``) from 0 to the max.

Example:
    >>> from cnn_explain.plotting import heatmap
    >>> fig = heatmap(saliency(model, images), index=0)     # doctest: +SKIP
    >>> fig.savefig("saliency.png")                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._base import blank_figure, new_figure, to_image

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..attribution.deletion import DeletionInsertion
    from ..attribution.result import Attribution
    from ..attribution.sanity import SanityResult

__all__ = ["heatmap", "attribution_grid", "sanity_figure", "deletion_insertion_figure", "map_norm"]

DIVERGING = "RdBu_r"
SEQUENTIAL = "inferno"


def map_norm(m: np.ndarray) -> tuple[str, float, float]:
    """``(cmap, vmin, vmax)`` for a 2-D map: diverging and symmetric around 0 when signed."""
    lo, hi = float(np.min(m)), float(np.max(m))
    if lo < 0:
        v = max(-lo, hi) or 1.0
        return DIVERGING, -v, v
    return SEQUENTIAL, 0.0, hi if hi > 0 else 1.0


def _image(image: Any, result: Any, index: int) -> np.ndarray | None:
    if image is None:
        inputs = getattr(result, "inputs", None)
        return None if inputs is None else to_image(inputs[index])
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a tensor or array (C, H, W), got {type(image).__name__}")
    if image.dim() == 4:
        image = image[index]
    if image.dim() == 2:
        image = image[None]
    return to_image(image)


def _draw(ax: Axes, result: Attribution, index: int, image: Any, *, alpha: float, reduce: str, colorbar: bool,
          title: str | None):
    m = result.map(index, reduce).numpy()
    img = _image(image, result, index)
    if img is not None and img.shape[:2] != m.shape:
        raise ValueError(f"image is {img.shape[:2]} but the map is {m.shape}; pass the explained image")
    cmap, vmin, vmax = map_norm(m)
    if img is not None:  # a grey underlay keeps the map's colours readable
        grey = img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114])
        ax.imshow(grey, cmap="gray", interpolation="nearest")
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha if img is not None else 1.0,
                   interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is None:
        title = f"{result.method} · class {int(result.target[index])}"
    ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return im


def heatmap(result: Attribution, image: Any = None, ax: Axes | None = None, index: int = 0, *, alpha: float = 0.6,
            reduce: str = "auto", colorbar: bool = True, title: str | None = None) -> Figure:
    """One image's attribution map overlaid on the image, with a colorbar.

    Args:
        result: any attribution result (saliency, Grad-CAM, occlusion, ...).
        image: ``(C, H, W)`` / ``(N, C, H, W)`` image to draw under the map
            (default ``result.inputs[index]``; none if the result has no inputs).
        ax: draw into this Axes (its Figure is returned).
        index: which image of the batch.
        alpha: opacity of the map over the image.
        reduce: how channels are combined (see ``Attribution.map``).
        colorbar: add a colorbar.
        title: default ``"<method> · class <target>"``.

    Returns:
        The Figure. The map is the second image of the Axes (``ax.images[-1]``).
    """
    fig, ax = new_figure((4.2, 3.6), ax)
    _draw(ax, result, index, image, alpha=alpha, reduce=reduce, colorbar=colorbar, title=title)
    return fig


def _as_list(results: Any) -> list:
    if isinstance(results, Sequence) and not isinstance(results, (str, torch.Tensor)):
        results = list(results)
    else:
        results = [results]
    if not results or not all(hasattr(r, "map") and hasattr(r, "target") for r in results):
        raise TypeError("results must be an attribution result or a non-empty sequence of them")
    return results


def attribution_grid(results: Attribution | Sequence[Attribution], images: Any = None, *, indices: Sequence[int] | None = None,
                     titles: Sequence[str] | None = None, alpha: float = 0.6, reduce: str = "auto",
                     colorbar: bool = False) -> Figure:
    """Several methods side by side for a batch: one row per image, one column per result.

    Args:
        results: an attribution result or a sequence of them (same images).
        images: ``(N, C, H, W)`` images for the first column (default the first result's ``inputs``).
        indices: which images (default all, at most 8).
        titles: column titles (default each result's ``method``).
        alpha: opacity of the maps (as in `heatmap`).
        reduce: how channels are combined (as in `heatmap`).
        colorbar: a colorbar per map (each map has its own colour scale).

    Returns:
        The Figure (``len(indices)`` rows × ``1 + len(results)`` columns).
    """
    results = _as_list(results)
    n = len(results[0])
    indices = list(range(min(n, 8))) if indices is None else list(indices)
    titles = [r.method for r in results] if titles is None else list(titles)
    if len(titles) != len(results):
        raise ValueError(f"titles has {len(titles)} entries for {len(results)} results")
    fig = blank_figure((2.0 * (len(results) + 1), 2.0 * len(indices)))
    axes = np.asarray(fig.subplots(len(indices), len(results) + 1, squeeze=False))
    for row, i in enumerate(indices):
        img = _image(images, results[0], i)
        ax = axes[row, 0]
        if img is not None:
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"image {i} · class {int(results[0].target[i])}", fontsize=9)
        for col, (r, t) in enumerate(zip(results, titles), start=1):
            _draw(axes[row, col], r, i, images, alpha=alpha, reduce=reduce, colorbar=colorbar,
                  title=t if row == 0 else "")
    return fig


def sanity_figure(result: SanityResult, index: int = 0, *, alpha: float = 0.6) -> Figure:
    """The randomization cascade: the map after each step, and Spearman / SSIM per step.

    Top row: image ``index`` and its map at each step (original, then each
    re-initialized layer). Bottom: mean Spearman and SSIM over the batch (thin
    lines: each image).

    Returns:
        The Figure; the bottom Axes holds the lines ``"spearman"`` and ``"ssim"``.
    """
    steps = result.steps
    fig = blank_figure((1.6 * (len(steps) + 1), 4.6))
    grid = fig.add_gridspec(2, len(steps) + 1, height_ratios=[1, 1.1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(to_image(result.inputs[index]), cmap="gray" if result.inputs.shape[1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("image", fontsize=8)
    for k, name in enumerate(steps):
        _draw(fig.add_subplot(grid[0, k + 1]), result.step(k), index, None, alpha=alpha, reduce="max_abs",
              colorbar=False, title=name)
    ax = fig.add_subplot(grid[1, :])
    x = np.arange(len(steps))
    for key, color in (("spearman", "tab:blue"), ("ssim", "tab:orange")):
        values = getattr(result, key).numpy()
        ax.plot(x, values, color=color, alpha=0.25, linewidth=0.8)
        seen = ~np.isnan(values)  # a step whose similarities are all NaN (constant maps) plots as a gap
        mean = np.where(seen.any(1), np.where(seen, values, 0).sum(1) / np.maximum(seen.sum(1), 1), np.nan)
        ax.plot(x, mean, color=color, linewidth=2.2, marker="o", label=key)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xticks(x, steps, rotation=30, fontsize=8)
    ax.set_ylabel("similarity to original")
    ax.set_title(f"{result.method}: cascading randomization ({result.order})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _curve_sets(curves: Any) -> dict[str, Any]:
    if isinstance(curves, Mapping):
        sets = dict(curves)
    elif isinstance(curves, Sequence) and not isinstance(curves, str):
        sets = {(c.method or f"map {i}"): c for i, c in enumerate(curves)}
    else:
        sets = {curves.method or "attribution": curves}
    if not sets or not all(hasattr(c, "deletion") and hasattr(c, "insertion") for c in sets.values()):
        raise TypeError("curves must be a DeletionInsertion result, a sequence or a dict of them")
    return sets


def deletion_insertion_figure(curves: DeletionInsertion | Sequence[DeletionInsertion] | Mapping[str, DeletionInsertion],
                              index: int | None = None) -> Figure:
    """Deletion (left) and insertion (right) curves with their AUC in the legend.

    Args:
        curves: a `~cnn_explain.attribution.deletion.DeletionInsertion`, or
            several to compare (a dict label -> result, or a sequence labelled by method).
        index: one image; default the mean over the batch (each image thin, for a single result).

    Returns:
        The Figure; each labelled line's y data is the (mean) curve.
    """
    sets = _curve_sets(curves)
    fig = blank_figure((9.0, 3.6))
    axes = fig.subplots(1, 2)
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for (label, c), color in zip(sets.items(), _colors(len(sets))):
            y, auc, fr = getattr(c, kind).numpy(), getattr(c, f"{kind}_auc").numpy(), c.fractions.numpy()
            if index is None:
                for row in (y if len(sets) == 1 else ()):  # each image, when there is one set
                    ax.plot(fr, row, color=color, alpha=0.2, linewidth=0.7)
                y, auc = y.mean(0), auc.mean()
            else:
                y, auc = y[index], auc[index]
            ax.plot(fr, y, color=color, linewidth=2.0, label=f"{label} (AUC {float(auc):.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("probability" if next(iter(sets.values())).measure == "prob" else "logit")
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=10)
        ax.legend(fontsize=8)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
