"""PCA / t-SNE / UMAP projections of feature vectors (:func:`project`).

scikit-learn, openTSNE and umap-learn are imported only when a method needs them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._utils import positive_int, progress_bar

__all__ = ["Projection", "project", "METHODS", "as_matrix", "available_cores", "warm_up_umap"]

METHODS = ("pca", "tsne", "umap")
TSNE_BACKENDS = ("auto", "sklearn", "opentsne")
PCA_SPECTRUM = 50  # components whose explained variance PCA reports


@dataclass(frozen=True, eq=False)
class Projection:
    """Low-dimensional coordinates of feature vectors.

    Attributes:
        coords: ``(N, n_components)`` float32 NumPy array.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        n_components: number of output dimensions.
        seed: the random seed (``None``: not fixed).
        backend: the library that computed it (``"sklearn"``, ``"opentsne"``, ``"umap-learn"``).
        explained_variance: PCA only: explained-variance *ratio* of the first
            ``min(N, D, 50)`` principal components (``explained_variance[:n_components]``
            belongs to the plotted axes); ``None`` for t-SNE and UMAP.
        options: the method options used (defaults included).
        threads: the threads the method ran on (PCA: 1, scikit-learn's own BLAS threads aside).
        deterministic: whether the same seed and data give identical coordinates
            (``False`` for multi-threaded UMAP: its parallel updates race; see :func:`project`).
    """

    coords: np.ndarray
    method: str
    n_components: int
    seed: int | None
    backend: str
    explained_variance: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    deterministic: bool = True


def as_matrix(features: Any, argname: str = "features") -> np.ndarray:
    """``Features`` / tensor / array -> ``(N, D)`` float32 NumPy matrix (finite values checked)."""
    x = getattr(features, "features", features)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{argname} must be Features, a tensor or an array (N, D), got {type(features).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{argname} must be 2-D (N samples, D features), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{argname} is empty: there is nothing to project")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{argname} contains NaN or infinite values")
    return x


def project(
    features: Any,
    method: str = "pca",
    n_components: int = 2,
    seed: int | None = 0,
    *,
    backend: str = "auto",
    progress: bool = True,
    deterministic: bool = False,
    **options: Any,
) -> Projection:
    """Project ``(N, D)`` feature vectors to ``n_components`` dimensions.

    * ``"pca"`` — principal components (scikit-learn ``PCA``): the linear map
      ``y = (x - mean) V_k`` onto the ``k`` directions of largest variance;
      reports each component's explained-variance ratio ``λ_i / Σ_j λ_j``.
    * ``"tsne"`` — t-SNE (van der Maaten & Hinton, JMLR 2008): matches
      neighbourhood probabilities ``p_ij`` (Gaussian, ``perplexity``-calibrated)
      with Student-t ones ``q_ij ∝ (1 + |y_i - y_j|²)⁻¹`` by minimizing
      ``KL(P‖Q)``. ``backend="auto"`` uses openTSNE (FFT-accelerated, Poličar
      et al. 2024; the ``tsne`` extra) when importable and ``n_components <= 3``,
      else scikit-learn (openTSNE's gradient: Barnes-Hut below 10,000
      points and in 3-D, FFT interpolation above). Default ``perplexity=30`` (it must be ``< N``), PCA init
      (``init="random"`` works for both backends).
    * ``"umap"`` — UMAP (McInnes et al. 2018, umap-learn; defaults
      ``n_neighbors=15``, ``min_dist=0.1``). Its first call in a Python process
      compiles numba code (tens of seconds; a one-time note is printed when
      ``progress``); compiled code is cached on disk for later runs (numba's
      cache: ``NUMBA_CACHE_DIR`` if set, else next to umap's sources or in the
      user cache directory). Pass ``numba_cache=False`` to leave umap's numba
      functions as they are.

    Threads and determinism: t-SNE and UMAP use every core this process may run
    on (``n_jobs=-1``). PCA and t-SNE (both backends, any thread count) give the
    same coordinates for the same ``seed`` and data. umap-learn is reproducible
    only single-threaded: by default UMAP runs on every core from a seeded
    initialization, and coordinates differ slightly between runs (the quality
    does not: trustworthiness agrees to about 0.005); ``deterministic=True`` runs
    it on one thread and gives identical coordinates for the same seed (2–3×
    slower on a 2-core machine, more on larger ones). ``deterministic=True``
    makes t-SNE single-threaded too. The result's ``threads`` and
    ``deterministic`` say which ran, and so does the progress line. Passing
    ``n_jobs`` yourself overrides the thread count.

    Args:
        features: :class:`~cnn_explain.embedding.Features`, a tensor or an array ``(N, D)``.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        n_components: output dimensions (2 or 3 for plots).
        seed: random seed (``None``: not fixed).
        backend: t-SNE only: ``"auto"``, ``"sklearn"`` or ``"opentsne"``.
        progress: show a progress bar (openTSNE) / a line saying how UMAP runs and the compile note.
        deterministic: one thread, identical coordinates for the same seed (see above).
        **options: passed to the estimator (``sklearn.decomposition.PCA``,
            ``sklearn.manifold.TSNE`` / ``openTSNE.TSNE``, ``umap.UMAP``).

    Returns:
        :class:`Projection` with ``.coords`` ``(N, n_components)``.

    Raises:
        ValueError: unknown method/backend, too few samples (e.g. t-SNE's
            ``perplexity`` must be smaller than ``N``), NaN features.
        TypeError: an option the estimator does not accept.

    Example:
        >>> p = project(np.random.rand(100, 8), "pca", seed=0)
        >>> p.coords.shape, p.explained_variance.shape
        ((100, 2), (8,))
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be True or False, got {deterministic!r}")
    if backend not in TSNE_BACKENDS:
        raise ValueError(f"backend must be one of {TSNE_BACKENDS}, got {backend!r}")
    n_components = positive_int(n_components, "n_components")
    if seed is not None:
        seed = positive_int(seed, "seed", minimum=0)
    x = as_matrix(features)
    n, d = x.shape
    if n_components > d or n_components >= n:
        raise ValueError(
            f"n_components={n_components} needs more than {n_components} samples and at least "
            f"{n_components} features; the data are {n} × {d}"
        )
    if method == "pca":
        return _pca(x, n_components, seed, options)
    if method == "tsne":
        return _tsne(x, n_components, seed, backend, progress, _with_threads(options, deterministic))
    return _umap(x, n_components, seed, progress, _with_threads(options, deterministic), deterministic)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _with_threads(options: dict[str, Any], deterministic: bool) -> dict[str, Any]:
    """``options`` with ``n_jobs`` set: the caller's, else 1 when ``deterministic``, else every core."""
    return {"n_jobs": 1 if deterministic else -1, **options}


def _threads(n_jobs: Any) -> int:
    """The thread count ``n_jobs`` stands for (joblib convention: -1 is every core, -2 all but one)."""
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    return n_jobs if n_jobs > 0 else max(1, available_cores() + 1 + n_jobs)


def _estimator(cls, kwargs: dict[str, Any], what: str):
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TypeError(f"{what} does not accept these options: {exc}") from exc


def _pca(x: np.ndarray, k: int, seed: int | None, options: dict) -> Projection:
    from sklearn.decomposition import PCA

    keep = min(x.shape[0], x.shape[1], max(k, PCA_SPECTRUM))
    kw = {"n_components": keep, "random_state": seed, **options}
    pca = _estimator(PCA, kw, "sklearn.decomposition.PCA").fit(x)
    coords = pca.transform(x)[:, :k].astype(np.float32)
    return Projection(coords, "pca", k, seed, "sklearn", pca.explained_variance_ratio_.astype(np.float64), kw)


# --------------------------------------------------------------------------- t-SNE
def _tsne(x: np.ndarray, k: int, seed: int | None, backend: str, progress: bool, options: dict) -> Projection:
    n = x.shape[0]
    perplexity = float(options.get("perplexity", 30.0))
    if not 0 < perplexity < n:
        raise ValueError(
            f"t-SNE needs 0 < perplexity < number of samples, got perplexity={perplexity:g} with {n} "
            f"samples: pass perplexity={max(1, min(30, (n - 1) // 3))} (about N/3 or less) or give more samples"
        )
    if backend == "auto":
        backend = "opentsne" if k <= 3 and importlib.util.find_spec("openTSNE") else "sklearn"
    if backend == "opentsne":
        return _opentsne(x, k, seed, perplexity, progress, options)
    from sklearn.manifold import TSNE

    kw = {"n_components": k, "perplexity": perplexity, "init": "pca", "random_state": seed, **options}
    if k > 3 and "method" not in options:
        kw["method"] = "exact"  # Barnes-Hut handles at most 3 dimensions
    coords = _estimator(TSNE, kw, "sklearn.manifold.TSNE").fit_transform(x)
    return Projection(np.asarray(coords, dtype=np.float32), "tsne", k, seed, "sklearn", None, kw,
                      threads=_threads(kw["n_jobs"]), deterministic=seed is not None)


def _opentsne(x: np.ndarray, k: int, seed: int | None, perplexity: float, progress: bool, options: dict) -> Projection:
    try:
        from openTSNE import TSNE
    except ImportError as exc:
        raise ValueError("backend='opentsne' needs openTSNE: pip install 'cnn_explain[tsne]'") from exc
    n = x.shape[0]
    options = dict(options)
    if "init" in options:  # one name for both backends: openTSNE calls it ``initialization``
        options["initialization"] = options.pop("init")
    kw: dict[str, Any] = {"n_components": k, "perplexity": perplexity, "random_state": seed,
                          "negative_gradient_method": "auto" if k <= 2 else "bh", **options}
    if 3 * perplexity >= n and "perplexity" not in options:  # openTSNE needs 3·perplexity neighbours
        kw["perplexity"] = max(1.0, (n - 1) / 3)
    total = int(kw.get("early_exaggeration_iter", 250)) + int(kw.get("n_iter", 500))
    threads = _threads(kw.get("n_jobs"))
    bar = progress_bar(enabled=progress, total=total, desc=f"t-SNE (openTSNE, {threads} threads)", unit="it")
    every = 10

    def tick(iteration, error, embedding):  # openTSNE callback: return True to stop
        bar.update(every)
        return False

    if progress and "callbacks" not in kw:
        kw.update(callbacks=tick, callbacks_every_iters=every)
    try:
        est = _estimator(TSNE, kw, "openTSNE.TSNE")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*perplexity.*", category=UserWarning)
            coords = np.asarray(est.fit(x), dtype=np.float32)
    finally:
        bar.close()
    kw.pop("callbacks", None)
    kw.pop("callbacks_every_iters", None)
    return Projection(coords, "tsne", k, seed, "opentsne", None, kw, threads=threads, deterministic=seed is not None)


# --------------------------------------------------------------------------- UMAP
_UMAP_STATE = {"noticed": False, "cached": False}


def _umap_cache_warm() -> bool:
    """True when numba already has compiled code on disk for a central umap function."""
    try:
        import umap.umap_ as uu

        cache = uu.smooth_knn_dist._cache
        return os.path.exists(cache._cache_file._index_path)
    except Exception:  # private numba API: when in doubt, assume a cold cache
        return False


def enable_numba_cache() -> int:
    """Turn on numba's on-disk cache for every compiled function of umap and pynndescent.

    umap-learn compiles its functions (``@numba.njit``) on first use in each
    process, mostly without ``cache=True``; this sets the cache on each of them
    (``Dispatcher.enable_caching()``, the same as ``cache=True``) so the next
    Python session loads the machine code instead of compiling it again. Files
    go where numba puts caches (``NUMBA_CACHE_DIR`` if set, else beside the
    package sources if writable, else the user cache directory). Nothing is
    changed outside this process except those cache files.

    Returns:
        The number of functions whose cache was switched on.
    """
    from numba.core.dispatcher import Dispatcher

    count = 0
    for name, mod in list(sys.modules.items()):
        if mod is None or name.split(".")[0] not in ("umap", "pynndescent"):
            continue
        for value in list(vars(mod).values()):
            if isinstance(value, Dispatcher) and type(value._cache).__name__ == "NullCache":
                try:
                    value.enable_caching()
                    count += 1
                except Exception:  # a function numba cannot cache: it still compiles as before
                    pass
    _UMAP_STATE["cached"] = True
    return count


def _umap(x: np.ndarray, k: int, seed: int | None, progress: bool, options: dict,
          deterministic: bool = False) -> Projection:
    numba_cache = bool(options.pop("numba_cache", True))
    try:
        import numba
        import umap
    except ImportError as exc:  # pragma: no cover - umap-learn is a dependency
        raise ValueError("method='umap' needs umap-learn: pip install umap-learn") from exc
    if numba_cache and not _UMAP_STATE["cached"]:
        enable_numba_cache()
    threads = _threads(options["n_jobs"])
    # umap-learn is reproducible only with ``random_state`` set, which also forces one thread; on more
    # threads the seed goes to the global NumPy generator it then draws from (restored afterwards).
    one_thread = deterministic or threads == 1
    kw = {"n_components": k, "n_neighbors": min(15, x.shape[0] - 1), "min_dist": 0.1,
          "random_state": seed if one_thread else None, **options}
    if progress:
        how = ("one thread, deterministic" if one_thread and seed is not None else
               f"{threads} threads; coordinates vary slightly between runs (deterministic=True: one thread, "
               "identical coordinates)")
        print(f"cnn_explain: UMAP of {x.shape[0]:,} points on {how}", file=sys.stderr, flush=True)
    if not _UMAP_STATE["noticed"]:
        _UMAP_STATE["noticed"] = True
        if progress and not _umap_cache_warm():
            print("cnn_explain: UMAP's first call in this session compiles numba code; this takes tens of "
                  "seconds once" + (" and is cached on disk for later sessions." if numba_cache else "."),
                  file=sys.stderr, flush=True)
    est = _estimator(umap.UMAP, kw, "umap.UMAP")
    numba_threads, numpy_state = numba.get_num_threads(), np.random.get_state()
    try:
        if seed is not None and kw["random_state"] is None:
            np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
            warnings.filterwarnings("ignore", message=".*random_state.*parallelism.*")
            # pynndescent's nn_descent cannot be cached (numba: "dynamic globals"); it compiles per process
            warnings.filterwarnings("ignore", message=".*Cannot cache compiled function.*")
            coords = est.fit_transform(x)
    finally:  # umap-learn sets numba's process-wide thread count to n_jobs
        numba.set_num_threads(numba_threads)
        np.random.set_state(numpy_state)
    return Projection(np.asarray(coords, dtype=np.float32), "umap", k, seed, "umap-learn", None, kw,
                      threads=1 if one_thread else threads, deterministic=one_thread and seed is not None)


WARM_UP_POINTS = 4_200  # above umap-learn's 4,096: its approximate neighbour search (NN-descent) runs too


def warm_up_umap(progress: bool = False) -> float:
    """Compile (or load from numba's disk cache) every numba function a UMAP run needs; returns seconds.

    Runs :func:`project` once single-threaded and once on every core on
    ``WARM_UP_POINTS`` random points (more than 4,096, so umap-learn's
    NN-descent neighbour search compiles too, not only its exact one), with the
    disk cache on (:func:`enable_numba_cache`): later processes load the
    machine code instead of compiling it, except pynndescent's ``nn_descent``
    which numba cannot cache ("dynamic globals") and compiles once per process.
    Call it once per process before timing or serving UMAP.
    """
    import time

    start = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(WARM_UP_POINTS, 8)).astype(np.float32)
    for deterministic in (True, False):
        project(x, "umap", seed=0, progress=progress, deterministic=deterministic, n_epochs=2)
    return time.perf_counter() - start
