"""How faithful a 2-D / 3-D map is: trustworthiness and k-NN accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._utils import positive_int
from ._project import as_matrix

__all__ = ["trustworthiness", "knn_accuracy", "QUALITY_NEIGHBORS", "TRUST_SAMPLES"]

QUALITY_NEIGHBORS = 10
TRUST_SAMPLES = 2000


def trustworthiness(features: Any, coords: Any, n_neighbors: int = QUALITY_NEIGHBORS, *,
                    max_samples: int = TRUST_SAMPLES, seed: int = 0) -> float:
    """Trustworthiness of a projection (Venna & Kaski 2001), on a fixed subsample.

    ``T(k) = 1 - 2 / (n k (2n - 3k - 1)) · Σ_i Σ_{j ∈ U_i^k} (r(i, j) - k)``

    where ``U_i^k`` are the points among ``i``'s ``k`` nearest neighbours in the
    map but not in the feature space and ``r(i, j)`` is ``j``'s rank among
    ``i``'s neighbours in the feature space. 1 means no false neighbours.
    Computed with ``sklearn.manifold.trustworthiness`` on at most
    ``max_samples`` points drawn with ``seed`` (the same points whatever the
    projection's own seed, so maps are compared on equal terms); its cost is
    quadratic in the number of points.

    Args:
        features: ``(N, D)`` feature vectors (Features / tensor / array).
        coords: ``(N, k)`` map coordinates.
        n_neighbors: ``k`` (lowered to ``(n - 1) // 2`` for tiny sets, as sklearn requires).

    Returns:
        A float in [0, 1] (NaN with fewer than 3 points).
    """
    from sklearn.manifold import trustworthiness as _trust

    x, y = as_matrix(features), as_matrix(coords, "coords")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"features has {x.shape[0]} rows but coords has {y.shape[0]}")
    n = x.shape[0]
    if n > max_samples:
        pick = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        x, y, n = x[pick], y[pick], max_samples
    k = min(positive_int(n_neighbors, "n_neighbors"), (n - 1) // 2)
    if k < 1:
        return float("nan")
    return float(_trust(x, y, n_neighbors=k))


def knn_accuracy(coords: Any, labels: Any, n_neighbors: int = QUALITY_NEIGHBORS) -> float:
    """Leave-one-out k-nearest-neighbour accuracy of ``labels`` in the map.

    Each point is classified by a majority vote of its ``k`` nearest *other*
    points (Euclidean distance in the map; a tie goes to the class whose
    neighbours are closer) and compared with its own label. High accuracy means
    the classes form separate groups in the map; compare it with the model's
    accuracy.

    Args:
        coords: ``(N, k)`` map coordinates.
        labels: ``(N,)`` integer classes.
        n_neighbors: ``k`` (at most ``N - 1``).

    Returns:
        The fraction of points whose vote equals their label.
    """
    from sklearn.neighbors import NearestNeighbors

    y = as_matrix(coords, "coords")
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != y.shape[0]:
        raise ValueError(f"labels has {lab.shape[0]} entries but coords has {y.shape[0]} rows")
    k = min(positive_int(n_neighbors, "n_neighbors"), y.shape[0] - 1)
    if k < 1:
        return float("nan")
    nbrs = NearestNeighbors(n_neighbors=k).fit(y).kneighbors(return_distance=False)  # excludes self
    classes, code = np.unique(lab, return_inverse=True)
    votes = np.zeros((y.shape[0], classes.size))
    rows = np.arange(y.shape[0])
    for r in range(k):  # weight 1 per neighbour, plus a tie-break smaller than 1 favouring closer ones
        np.add.at(votes, (rows, code[nbrs[:, r]]), 1.0 + (k - r) / (k * k + 1.0) / k)
    return float((votes.argmax(1) == code).mean())
