"""Figures for embeddings: class-coloured 2-D / 3-D scatter (with thumbnails) and PCA's explained variance.

Each function takes an :class:`~cnn_explain.embedding.Embedding` (or a
``Projection`` for the variance plot) and an optional Axes, and returns the
``matplotlib.figure.Figure``; nothing is shown or saved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..embedding import Embedding

from ._base import blank_figure, new_figure, to_image

__all__ = ["scatter_embedding", "scatter_embedding_3d", "explained_variance_figure", "class_colors"]


def class_colors(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA colours: tab10 up to 10 classes, tab20 up to 20, then evenly spaced hues."""
    from matplotlib import colormaps

    if n <= 10:
        return colormaps["tab10"](np.arange(n))
    if n <= 20:
        return colormaps["tab20"](np.arange(n))
    return colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))


def _groups(result: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Colour groups: true labels, else predictions; returns (per-point class, classes, legend title)."""
    if result.labels is not None:
        lab, title = np.asarray(result.labels), "true class"
    else:
        lab, title = np.asarray(result.predictions), "predicted class"
    return lab, np.unique(lab), title


def _group_name(result: Any, c: int, title: str) -> str:
    """Legend text of group ``c``: a label's name (the data set's own), or a predicted model class's."""
    if title == "predicted class" and hasattr(result, "model_class_name"):
        return result.model_class_name(c)
    return result.class_name(c) if hasattr(result, "class_name") else str(c)


def _wrong(result: Any) -> np.ndarray | None:
    """Misclassified points, or ``None`` when labels and model classes cannot be compared."""
    if hasattr(result, "misclassified"):
        return result.misclassified
    if result.labels is None:
        return None
    return np.asarray(result.predictions) != np.asarray(result.labels)


def _check_dims(result: Any, wanted: tuple[int, ...]) -> np.ndarray:
    coords = np.asarray(result.coords)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(
            f"plots need n_components=2 or 3, the embedding has {coords.shape[-1]} components; "
            "embed again with n_components=2 (or 3)"
        )
    if coords.shape[1] not in wanted:
        raise ValueError(f"this figure needs n_components in {wanted}, the embedding has {coords.shape[1]}")
    return coords


_PRETTY = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def _where(result: Any) -> str:
    feats = getattr(result, "features", None)
    side = "input of layer" if getattr(feats, "captured", "output") == "input" else "layer"
    return f"{side} {getattr(result, 'layer', '')!r}"


def _title(result: Any) -> str:
    text = f"{_PRETTY.get(result.method, result.method)} of the {_where(result)}"
    parts = [f"trustworthiness {result.trustworthiness:.3f}"]
    if getattr(result, "knn_accuracy", None) is not None:
        parts.append(f"10-NN accuracy {result.knn_accuracy:.1%}")
    if getattr(result, "accuracy", None) is not None:
        parts.append(f"model accuracy {result.accuracy:.1%}")
    note = getattr(result, "accuracy_note", None)
    return text + "\n" + ", ".join(parts) + (f"\n{note}" if note else "")


def scatter_embedding(result: Embedding, ax: Axes | None = None, *, thumbnails: Any = None, n_thumbnails: int = 40,
                      mark_errors: bool = True, thumbnail_size: float = 16.0, thumbnail_cmap: str = "gray_r",
                      point_size: float = 12.0, seed: int = 0) -> Figure:
    """Scatter the map coloured by true class, misclassified samples marked with a black ×.

    A 3-D embedding is drawn by :func:`scatter_embedding_3d`. With
    ``thumbnails``, small images of a spread-out subsample are drawn at their
    points (as the t-SNE map of MNIST in seed 002): each chosen point is at
    least ~8% of the map's extent away from the others already shown.

    Args:
        result: an :class:`~cnn_explain.embedding.Embedding` (2 or 3 components).
        ax: a Matplotlib Axes to draw on (a new figure otherwise).
        thumbnails: the images, indexed like the embedded ``data``: a tensor /
            array ``(N, C, H, W)``, the ``(images, labels)`` tuple or a Dataset
            (``result.indices`` picks the rows).
        n_thumbnails: at most this many images.
        mark_errors: mark samples whose prediction differs from the label.
        thumbnail_size: thumbnail height in points.
        thumbnail_cmap: colour map for one-channel images (``"gray_r"``: dark ink on white).
        point_size: marker area.
        seed: order in which thumbnail candidates are considered.

    Returns:
        The Figure. Each class is one ``PathCollection`` labelled with its name
        (its offsets are that class's ``coords``); errors are one more collection.

    Raises:
        ValueError: ``n_components`` is not 2 or 3, thumbnails on a 3-D map.
    """
    coords = _check_dims(result, (2, 3))
    if coords.shape[1] == 3:
        if thumbnails is not None:
            raise ValueError("thumbnails are drawn on 2-D maps only; embed with n_components=2")
        return scatter_embedding_3d(result, ax, mark_errors=mark_errors, point_size=point_size)
    fig, ax = new_figure((7.0, 6.0), ax)
    _draw_points(ax, result, coords, mark_errors, point_size)
    if thumbnails is not None:
        _draw_thumbnails(ax, result, coords, thumbnails, n=n_thumbnails, size=thumbnail_size, cmap=thumbnail_cmap,
                         seed=seed)
    ax.set_xlabel(f"{_PRETTY.get(result.method, result.method)} 1")
    ax.set_ylabel(f"{_PRETTY.get(result.method, result.method)} 2")
    ax.set_title(_title(result), fontsize=10)
    return fig


def scatter_embedding_3d(result: Embedding, ax: Axes | None = None, *, mark_errors: bool = True,
                         point_size: float = 10.0) -> Figure:
    """3-D scatter of a 3-component embedding (``mpl_toolkits.mplot3d``), coloured by class.

    Args:
        result: an :class:`~cnn_explain.embedding.Embedding` with 3 components.
        ax: a 3-D Axes (``fig.add_subplot(projection="3d")``), or ``None``.
        mark_errors: mark misclassified samples with a black ×.
        point_size: marker area.

    Returns:
        The Figure.
    """
    coords = _check_dims(result, (3,))
    if ax is None:
        fig = blank_figure((7.0, 6.0))
        ax = fig.add_subplot(1, 1, 1, projection="3d")
    elif getattr(ax, "name", "") != "3d":
        raise ValueError("ax must be a 3-D Axes: fig.add_subplot(projection='3d')")
    _draw_points(ax, result, coords, mark_errors, point_size, inside=True)
    for i, setter in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
        setter(f"{_PRETTY.get(result.method, result.method)} {i + 1}")
    ax.set_title(_title(result), fontsize=10)
    return ax.figure


def _draw_points(ax: Axes, result: Embedding, coords: np.ndarray, mark_errors: bool, size: float, inside: bool = False) -> None:
    lab, classes, title = _groups(result)
    colors = class_colors(len(classes))
    cols = [coords[:, j] for j in range(coords.shape[1])]
    for color, c in zip(colors, classes):
        m = lab == c
        ax.scatter(*[col[m] for col in cols], s=size, color=color, alpha=0.8, linewidths=0,
                   label=_group_name(result, int(c), title))
    wrong = _wrong(result) if mark_errors else None
    if wrong is not None:
        if wrong.any():
            ax.scatter(*[col[wrong] for col in cols], s=size * 2.5, marker="x", color="black",
                       linewidths=1.0, label=f"misclassified ({int(wrong.sum())})")
    where = {"loc": "upper left", "bbox_to_anchor": (0.0, 1.0)} if inside else \
        {"loc": "center left", "bbox_to_anchor": (1.01, 0.5)}
    ax.legend(title=title, fontsize=8, title_fontsize=8, markerscale=1.5, frameon=False, **where)


def _image_source(images: Any) -> Any:
    if isinstance(images, tuple) and len(images) == 2 and hasattr(images[0], "__getitem__"):
        return images[0]
    return images


def _thumbnail(source: Any, index: int) -> np.ndarray:
    import torch

    from ..images import to_batch

    item = source[index]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[0] in (1, 3, 4):
        item = torch.from_numpy(item)
    return to_image(to_batch(item, argname="thumbnails")[0])


def spread_subsample(coords: np.ndarray, n: int, min_dist: float, seed: int = 0) -> np.ndarray:
    """Indices of at most ``n`` points, each at least ``min_dist`` from those chosen before."""
    order = np.random.default_rng(seed).permutation(len(coords))
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= n:
            break
        if not chosen or np.min(np.sum((coords[chosen] - coords[i]) ** 2, axis=1)) >= min_dist ** 2:
            chosen.append(int(i))
    return np.asarray(chosen, dtype=np.int64)


def _draw_thumbnails(ax: Axes, result: Embedding, coords: np.ndarray, images: Any, *, n: int, size: float,
                     cmap: str, seed: int) -> None:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    source = _image_source(images)
    if n < 1:
        return
    extent = np.ptp(coords, axis=0).max() or 1.0
    pick = spread_subsample(coords, n, 0.08 * extent, seed)
    lab, classes, _ = _groups(result)
    colors = dict(zip(classes.tolist(), class_colors(len(classes))))
    for i in pick:
        img = _thumbnail(source, int(result.indices[i]))
        zoom = size / img.shape[0] * ax.figure.dpi / 72.0
        box = OffsetImage(img, zoom=zoom, cmap=cmap if img.ndim == 2 else None)
        ab = AnnotationBbox(box, coords[i], frameon=True, pad=0.1,
                            bboxprops={"edgecolor": colors[lab[i].item()], "linewidth": 1.2})
        ab.set_gid(f"thumbnail-{int(result.indices[i])}")
        ax.add_artist(ab)


def explained_variance_figure(result: Embedding, ax: Axes | None = None, *, n: int | None = None) -> Figure:
    """PCA's explained variance: one bar per component and the cumulative curve.

    The ratio of component ``i`` is ``λ_i / Σ_j λ_j`` (``λ`` the eigenvalues of
    the features' covariance); the bars of the plotted axes (the first
    ``n_components``) are highlighted.

    Args:
        result: a PCA :class:`~cnn_explain.embedding.Embedding` or ``Projection``.
        ax: a Matplotlib Axes, or ``None``.
        n: show the first ``n`` components (default all stored, at most 50).

    Returns:
        The Figure (bar heights equal ``result.explained_variance[:n]``).

    Raises:
        ValueError: the result is not a PCA embedding.
    """
    ev = getattr(result, "explained_variance", None)
    if ev is None or result.method != "pca":
        raise ValueError("explained_variance_figure needs a PCA embedding (method='pca')")
    ev = np.asarray(ev)[: (len(ev) if n is None else max(1, int(n)))]
    k = result.coords.shape[1]
    fig, ax = new_figure((6.5, 4.0), ax)
    xs = np.arange(1, len(ev) + 1)
    colors = ["tab:blue" if i < k else "tab:gray" for i in range(len(ev))]
    ax.bar(xs, ev, color=colors, label="per component")
    ax.plot(xs, np.cumsum(ev), "o-", color="tab:orange", markersize=3, label="cumulative")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(xs if len(xs) <= 20 else xs[::5])
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    where = f" of the {_where(result)}" if hasattr(result, "layer") else ""
    ax.set_title(f"PCA{where}: the {k} plotted components explain {ev[:k].sum():.1%}", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig
