"""``embed`` = extract + project + quality, and its :class:`Embedding` result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..plotting._display import Displayable
from ..hooks import LayerSpec
from ._extract import Features, extract
from ._project import METHODS, project
from ._quality import QUALITY_NEIGHBORS, knn_accuracy, trustworthiness

__all__ = ["Embedding", "embed"]

_EXTRACT_OPTIONS = ("pool", "batch_size", "max_samples", "progress", "output", "device", "layer_input")


@dataclass(frozen=True, eq=False)
class Embedding(Displayable):
    """A 2-D or 3-D map of one layer's features over a data set, with its quality.

    Attributes:
        coords: ``(N, k)`` float32 NumPy array, one row per sample.
        labels: ``(N,)`` int64 array of true classes, or ``None``.
        predictions: ``(N,)`` int64 array, the model's predicted classes.
        indices: ``(N,)`` int64 array, each sample's position in ``data``.
        trustworthiness: ``T(10)`` on a fixed subsample of at most 2,000 points
            (see :func:`~cnn_explain.embedding.trustworthiness`).
        knn_accuracy: leave-one-out 10-NN accuracy of ``labels`` in the map
            (``None`` without labels).
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        layer: the recorded layer's name (``features.captured`` says input or output).
        explained_variance: PCA's explained-variance ratios (first ``min(N, D, 50)``
            components), else ``None``.
        class_names: names of the classes of ``labels`` (the data set's own, e.g.
            an image folder's subfolders; else the model's), or ``None`` (plots then
            show numbers).
        model_class_names: the model's class names, or ``None`` when not known.
        label_to_model: for a data set with its own classes, the model class each
            data-set class is (matched by name), ``None`` where none matches;
            ``None`` when the labels already are model classes.
        accuracy_note: why ``accuracy`` and the misclassified marks are left out
            (some data-set class is not a model class), else ``None``.
        seed: the seed used.
        backend: the library that computed the map.
        threads: the threads the projection ran on.
        deterministic: whether the projection ran in its reproducible single-threaded mode
            (``embed(..., deterministic=True)``); otherwise t-SNE and UMAP use every core.
        features: the :class:`~cnn_explain.embedding.Features` that were projected.
        options: the projection's options.
    """

    coords: np.ndarray
    labels: np.ndarray | None
    predictions: np.ndarray
    indices: np.ndarray
    trustworthiness: float
    knn_accuracy: float | None
    method: str
    layer: str
    explained_variance: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    model_class_names: tuple[str, ...] | None = None
    label_to_model: tuple[int | None, ...] | None = None
    accuracy_note: str | None = None
    seed: int | None = 0
    backend: str = ""
    threads: int | None = None
    deterministic: bool = False
    features: Features | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_components(self) -> int:
        return int(self.coords.shape[1])

    @property
    def model_labels(self) -> np.ndarray | None:
        """``(N,)`` the labels as model classes, or ``None`` (no labels, or a data-set class the model lacks)."""
        if self.labels is None:
            return None
        if self.label_to_model is None:
            return self.labels
        if any(m is None for m in self.label_to_model):
            return None
        return np.asarray(self.label_to_model, dtype=np.int64)[self.labels]

    @property
    def misclassified(self) -> np.ndarray | None:
        """``(N,)`` bool, prediction != label; ``None`` when labels and model classes cannot be compared."""
        truth = self.model_labels
        return None if truth is None else self.predictions != truth

    @property
    def accuracy(self) -> float | None:
        """The model's accuracy on these samples (``None`` without comparable labels: see ``accuracy_note``)."""
        wrong = self.misclassified
        return None if wrong is None else float(1.0 - wrong.mean())

    def class_name(self, index: int) -> str:
        """Name of label ``index`` (its number when no names are known)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def model_class_name(self, index: int) -> str:
        """Name of model class ``index`` (its number when no names are known)."""
        if self.model_class_names is not None and 0 <= index < len(self.model_class_names):
            return self.model_class_names[index]
        return str(index)


@dataclass(frozen=True)
class _Labels:
    """How the data's labels read: their names, the model's names, the match between the two."""

    names: tuple[str, ...] | None
    model_names: tuple[str, ...] | None
    to_model: tuple[int | None, ...] | None
    note: str | None


def _key(name: str) -> str:
    return name.strip().casefold()


def _label_names(class_names: Sequence[str] | None, data: Any) -> _Labels:
    """The data set's own classes (``data.classes``, torchvision style) matched by name to the model's."""
    if class_names is not None and (isinstance(class_names, str) or not isinstance(class_names, Sequence)):
        raise TypeError("class_names must be a sequence of strings, one per model class")
    model = None if class_names is None else tuple(str(c) for c in class_names)
    own = getattr(data, "classes", None) or getattr(getattr(data, "dataset", None), "classes", None)
    if own is None:  # the labels are model class indices
        return _Labels(model, model, None, None)
    own = tuple(str(c) for c in own)
    if model is None:  # the model's classes are known by number only: folder "3" is class 3
        to_model = tuple(int(n) if n.strip().isdigit() else None for n in own)
    else:
        lookup = {_key(n): i for i, n in enumerate(model)}
        to_model = tuple(lookup.get(_key(n)) for n in own)
    missing = [n for n, m in zip(own, to_model) if m is None]
    note = None
    if missing:
        why = "the model's class names are unknown (pass class_names=)" if model is None else \
            f"{', '.join(missing[:4])}{' …' if len(missing) > 4 else ''} not among the model's classes"
        note = f"accuracy not shown: {why}"
    return _Labels(own, model, to_model, note)


def embed(
    model: nn.Module,
    data: Any,
    layer: LayerSpec = None,
    method: str = "tsne",
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
    **options: Any,
) -> Embedding:
    """Map a layer's features over a whole data set to 2-D (or 3-D) and measure the map.

    Seed 002: *to see what the last layers learned, reduce the last feature
    vectors to 2-D or 3-D with PCA or t-SNE*. This runs
    :func:`~cnn_explain.embedding.extract` (streamed, pooled features; default:
    the input of the last ``nn.Linear``), :func:`~cnn_explain.embedding.project`
    and the two quality measures, trustworthiness ``T(10)`` and leave-one-out
    10-NN accuracy of the labels in the map.

    Args:
        model: the network.
        data: tensor, ``(images, labels)``, Dataset, DataLoader or iterable of batches.
        layer: ``None`` (penultimate features) or the layer whose output to map.
        method: ``"tsne"`` (default), ``"pca"`` or ``"umap"``.
        seed: random seed of the projection and of a ``max_samples`` subset.
        class_names: the model's class names. A data set with its own classes
            (``data.classes``, e.g. :class:`cnn_explain.data.ImageFolder`) labels the
            legend with those; they are matched to the model's classes by name, and
            accuracy / misclassified marks are given only when every one matches.
        **options: ``pool``, ``batch_size``, ``max_samples``, ``progress``,
            ``output``, ``device``, ``layer_input`` go to ``extract``; everything
            else (``n_components``, ``backend``, ``perplexity``, ``n_neighbors``, ...)
            to ``project``.

    Returns:
        :class:`Embedding` with ``.coords``, ``.labels``, ``.predictions``,
        ``.trustworthiness``, ``.knn_accuracy``.

    Example:
        >>> from cnn_explain.models import mnist_cnn
        >>> x, y = torch.rand(60, 1, 28, 28), torch.arange(60) % 3
        >>> e = embed(mnist_cnn(), (x, y), method="pca", progress=False)
        >>> e.coords.shape
        (60, 2)

    Paper: L. van der Maaten, G. Hinton, *Visualizing Data using t-SNE*, JMLR 2008.
    """
    if method not in METHODS:  # fail before the (long) extraction
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = _label_names(class_names, data)
    ex_kw = {k: options.pop(k) for k in _EXTRACT_OPTIONS if k in options}
    feats = extract(model, data, layer, seed=0 if seed is None else seed, **ex_kw)
    proj = project(feats, method, seed=seed, progress=ex_kw.get("progress", True), **options)
    labels = None if feats.labels is None else feats.labels.numpy()
    return Embedding(
        coords=proj.coords, labels=labels, predictions=feats.predictions.numpy(),
        indices=feats.indices.numpy(),
        trustworthiness=trustworthiness(feats.features, proj.coords, QUALITY_NEIGHBORS),
        knn_accuracy=None if labels is None else knn_accuracy(proj.coords, labels, QUALITY_NEIGHBORS),
        method=method, layer=feats.layer, explained_variance=proj.explained_variance,
        class_names=names.names, model_class_names=names.model_names, label_to_model=names.to_model,
        accuracy_note=names.note, seed=seed, backend=proj.backend, threads=proj.threads,
        deterministic=proj.deterministic, features=feats, options=proj.options,
    )
