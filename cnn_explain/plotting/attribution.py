"""Figures for attribution results: heatmaps, grids, the sanity-check cascade, deletion/insertion curves.

Every function takes a result and returns a ``matplotlib.figure.Figure`` built
without pyplot (nothing is shown, no backend or global state changes).

* Signed maps (some value < 0) use a diverging colormap centred at 0
  (``RdBu_r``, limits ``±max|map|``): red pushes the class score up, blue down.
* Non-negative maps use a sequential colormap (``inferno``) from 0 to the max.
* Every map has a colour bar labelled with what the colour is (``"|∂ score / ∂ pixel|"``,
  ``"drop of P(truck) when this patch is set to 0"``, ``"grad_cam at layer4"``), and
  titles name the class (``class_names=``) and the image (``labels=``, e.g. file names).

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
from ._labels import check_names, class_label, image_label, meaning
from ._sanity import sanity_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..attribution.deletion import DeletionInsertion
    from ..attribution.result import Attribution

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
          title: str | None, class_names: Sequence[str] | None = None, bar_label: str | None = None):
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
    cls = class_label(int(result.target[index]), class_names)
    if title is None:
        title = f"{result.method} · {cls}"
    ax.set_title(title, fontsize=9)
    if colorbar:
        bar = ax.figure.colorbar(im, ax=ax, shrink=0.8)
        bar.set_label(bar_label or meaning(result, cls), fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return im


def heatmap(result: Attribution, image: Any = None, ax: Axes | None = None, index: int = 0, *, alpha: float = 0.6,
            reduce: str = "auto", colorbar: bool = True, title: str | None = None,
            class_names: Sequence[str] | None = None, labels: Sequence[str] | None = None) -> Figure:
    """One image's attribution map overlaid on the image, with a colour bar that says what the colour is.

    Args:
        result: any attribution result (saliency, Grad-CAM, occlusion, ...).
        image: ``(C, H, W)`` / ``(N, C, H, W)`` image to draw under the map
            (default ``result.inputs[index]``; none if the result has no inputs).
        ax: draw into this Axes (its Figure is returned).
        index: which image of the batch.
        alpha: opacity of the map over the image.
        reduce: how channels are combined (see ``Attribution.map``).
        colorbar: add a colour bar (labelled with the map's meaning).
        title: default ``"<method> · <class name>"`` (``"<label> · <method> · <class>"`` with labels).
        class_names: the model's class names (``class_names[k]`` names class ``k``).
        labels: one label per image of the batch, e.g. file names.

    Returns:
        The Figure. The map is the second image of the Axes (``ax.images[-1]``).
    """
    class_names, labels = check_names(class_names, "class_names"), check_names(labels, "labels")
    if title is None and labels is not None:
        cls = class_label(int(result.target[index]), class_names)
        title = f"{image_label(index, labels)} · {result.method} · {cls}"
    fig, ax = new_figure((4.2, 3.6), ax)
    _draw(ax, result, index, image, alpha=alpha, reduce=reduce, colorbar=colorbar, title=title,
          class_names=class_names)
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
                     colorbar: bool = True, class_names: Sequence[str] | None = None,
                     labels: Sequence[str] | None = None,
                     bar_labels: Sequence[str | None] | None = None) -> Figure:
    """Several methods side by side for a batch: one row per image, one column per result.

    Args:
        results: an attribution result or a sequence of them (same images).
        images: ``(N, C, H, W)`` images for the first column (default the first result's ``inputs``).
        indices: which images (default all, at most 8).
        titles: column titles (default each result's ``method``).
        alpha: opacity of the maps (as in `heatmap`).
        reduce: how channels are combined (as in `heatmap`).
        colorbar: a colour bar per map (each map has its own scale), labelled with its meaning.
        class_names: the model's class names: the first column says ``"explaining truck"``.
        labels: one label per image of the batch (e.g. file names) for the first column.
        bar_labels: one colour-bar label per result, to replace the default meaning
            (``None`` in a place keeps it), e.g. a short one where the meaning is long.

    Returns:
        The Figure (``len(indices)`` rows × ``1 + len(results)`` columns of images,
        plus one colour-bar Axes per map when ``colorbar``).
    """
    results = _as_list(results)
    class_names, labels = check_names(class_names, "class_names"), check_names(labels, "labels")
    n = len(results[0])
    indices = list(range(min(n, 8))) if indices is None else list(indices)
    titles = [r.method for r in results] if titles is None else list(titles)
    if len(titles) != len(results):
        raise ValueError(f"titles has {len(titles)} entries for {len(results)} results")
    bar_labels = [None] * len(results) if bar_labels is None else list(bar_labels)
    if len(bar_labels) != len(results):
        raise ValueError(f"bar_labels has {len(bar_labels)} entries for {len(results)} results")
    fig = blank_figure(((2.6 if colorbar else 2.0) * (len(results) + 1), 2.2 * len(indices)))
    axes = np.asarray(fig.subplots(len(indices), len(results) + 1, squeeze=False))
    for row, i in enumerate(indices):
        img = _image(images, results[0], i)
        ax = axes[row, 0]
        if img is not None:
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        cls = class_label(int(results[0].target[i]), class_names)
        ax.set_title(f"{image_label(i, labels)}\nexplaining {cls}", fontsize=9)
        for col, (r, t, bl) in enumerate(zip(results, titles, bar_labels), start=1):
            _draw(axes[row, col], r, i, images, alpha=alpha, reduce=reduce, colorbar=colorbar,
                  title=t if row == 0 else "", class_names=class_names, bar_label=bl)
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
