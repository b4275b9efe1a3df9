"""Embeddings: PCA / t-SNE / UMAP maps of one layer's features over a whole data set.

Three steps, each usable alone:

1. :func:`extract` streams the data through the model with one capture hook and
   keeps one pooled vector per sample (memory ``N × C``, never ``N × C × H × W``);
   by default the input of the last ``nn.Linear``, the penultimate features.
2. :func:`project` maps the ``(N, C)`` vectors to 2-D or 3-D with PCA, t-SNE
   (scikit-learn or openTSNE) or UMAP (umap-learn, loaded only when used).
3. :func:`trustworthiness` and :func:`knn_accuracy` say how faithful the map is.

:func:`embed` runs all three (it is what ``explain(model).embed(data)`` calls);
figures are in :mod:`cnn_explain.plotting.embedding`.

Example:
    >>> from cnn_explain.embedding import embed
    >>> e = embed(model, dataset, method="tsne")          # doctest: +SKIP
    >>> e.trustworthiness, e.knn_accuracy, e.accuracy     # doctest: +SKIP
"""

from ._embed import Embedding, embed
from ._extract import POOLS, Features, extract
from ._project import METHODS, Projection, available_cores, enable_numba_cache, project, warm_up_umap
from ._quality import knn_accuracy, trustworthiness

__all__ = [
    "embed", "Embedding",
    "extract", "Features", "POOLS",
    "project", "Projection", "METHODS", "enable_numba_cache", "warm_up_umap", "available_cores",
    "trustworthiness", "knn_accuracy",
]
