"""Embeddings: extraction equals a manual forward, bounded memory, projections, quality, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnn_explain.embedding import available_cores, embed, extract, knn_accuracy, project, trustworthiness
from cnn_explain.models import mnist_cnn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One OpenMP/BLAS thread: scikit-learn's Barnes-Hut t-SNE busy-waits at its OpenMP barriers and runs
    ~20x slower when the 2 cores are shared with other work (measured: 41 s vs 2 s for 120 points)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _seeded(fn, seed=0):
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return fn()
    finally:
        torch.set_rng_state(state)


@pytest.fixture(scope="module")
def net():
    return _seeded(mnist_cnn).eval()


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(3)
    return torch.rand(37, 1, 28, 28, generator=g), torch.randint(0, 10, (37,), generator=g)


@pytest.fixture(scope="module")
def digits():
    """(trained mnist_cnn, test images, test labels) on scikit-learn's digits (450 test images)."""
    from cnn_explain.data import load_digits
    from cnn_explain.train import pretrained_digits_cnn

    x, y = load_digits("test").tensors
    return pretrained_digits_cnn(), x, y


# --------------------------------------------------------------------------- extract
def test_default_layer_is_input_of_last_linear(net, xy):
    x, y = xy
    f = extract(net, (x, y), batch_size=8, progress=False)
    with torch.no_grad():
        manual = net[:12](x)  # everything before the last Linear: relu(fc1(...))
        logits = net(x)
    assert f.layer == "12" and f.captured == "input" and f.pool == "avg"
    assert f.features.dtype == torch.float32 and f.features.shape == (37, 100)
    torch.testing.assert_close(f.features, manual, rtol=0, atol=1e-6)
    assert torch.equal(f.predictions, logits.argmax(1))
    assert torch.equal(f.labels, y) and torch.equal(f.indices, torch.arange(37))
    assert f.accuracy == pytest.approx((logits.argmax(1) == y).double().mean().item())


@pytest.mark.parametrize("pool", ["avg", "max", "flatten"])
def test_conv_layer_pooling_equals_manual(net, xy, pool):
    x, _ = xy
    f = extract(net, x, layer="3", pool=pool, batch_size=16, progress=False)  # second conv, (N, 64, 14, 14)
    with torch.no_grad():
        maps = net[:4](x)
    manual = {"avg": maps.mean((2, 3)), "max": maps.amax((2, 3)), "flatten": maps.flatten(1)}[pool]
    assert f.captured == "output" and f.labels is None
    torch.testing.assert_close(f.features, manual, rtol=1e-5, atol=1e-6)


def test_batch_size_invariance(net, xy):
    x, y = xy
    ref = extract(net, (x, y), batch_size=37, progress=False)
    for bs in (1, 5, 16):
        f = extract(net, (x, y), batch_size=bs, progress=False)
        torch.testing.assert_close(f.features, ref.features, rtol=1e-5, atol=1e-6)
        assert torch.equal(f.predictions, ref.predictions) and torch.equal(f.labels, ref.labels)


def test_every_kind_of_data_gives_the_same_features(net, xy):
    x, y = xy
    ref = extract(net, (x, y), progress=False)
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=10, shuffle=False)
    gen = ((x[i:i + 6], y[i:i + 6]) for i in range(0, 37, 6))
    for data in (ds, loader, gen, (x.numpy(), y.numpy())):
        f = extract(net, data, batch_size=9, progress=False)
        torch.testing.assert_close(f.features, ref.features, rtol=1e-5, atol=1e-6)
        assert torch.equal(f.labels, y) and torch.equal(f.indices, torch.arange(37))
    bare = extract(net, x, progress=False)
    assert bare.labels is None and bare.accuracy is None


def test_max_samples_is_a_seeded_subset_with_its_indices(net, xy):
    x, y = xy
    full = extract(net, (x, y), progress=False)
    a = extract(net, (x, y), max_samples=10, seed=5, progress=False)
    b = extract(net, (x, y), max_samples=10, seed=5, progress=False)
    assert torch.equal(a.indices, b.indices) and len(a) == 10
    assert torch.all(a.indices[1:] > a.indices[:-1]) and not torch.equal(a.indices, torch.arange(10))
    torch.testing.assert_close(a.features, full.features[a.indices], rtol=1e-5, atol=1e-6)
    assert torch.equal(a.labels, y[a.indices])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    assert torch.equal(extract(net, loader, max_samples=13, progress=False).indices, torch.arange(13))


def test_model_unchanged_after_success_and_after_exception(snapshot, exploding_net, images):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 10 * 8, 3))
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    snap = snapshot(model)
    a = extract(model, images, progress=False)
    b = extract(model, images, progress=False)
    snap.assert_unchanged()
    assert model.training and torch.equal(a.features, b.features)  # eval mode inside: dropout was off
    with torch.no_grad():
        torch.testing.assert_close(a.features, model.eval()[:4](images))
    model.train()
    exploding_net.train()
    snap = snapshot(exploding_net)
    with pytest.raises(Exception, match="inside forward"):
        extract(exploding_net, images, progress=False)
    snap.assert_unchanged()


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.spare = nn.Linear(3, 3)  # registered but never called in forward

    def forward(self, x):
        return self.conv(x).flatten(1)


def test_extract_bad_input(net, xy):
    x, _ = xy
    with pytest.raises(ValueError, match="empty"):
        extract(net, x[:0], progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract(net, torch.utils.data.TensorDataset(x[:0]), progress=False)
    with pytest.raises(ValueError, match="pool"):
        extract(net, x, pool="mean", progress=False)
    with pytest.raises(ValueError, match="no nn.Linear"):
        extract(nn.Sequential(nn.Conv2d(1, 2, 3)), x, progress=False)
    unused = _Unused()
    with pytest.raises(ValueError, match="produced no tensor"):
        extract(unused, x, progress=False)
    with pytest.raises(TypeError, match="data"):
        extract(net, 42, progress=False)
    with pytest.raises(ValueError, match="labels"):
        extract(net, (x, torch.zeros(3)), progress=False)


_MEMORY_SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from cnn_explain.embedding import extract
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU())  # 32 x 64 x 64 maps: 512 KiB per image

    class Lazy(torch.utils.data.Dataset):  # images made on demand: the data take no memory
        def __init__(self, n): self.n = n
        def __len__(self): return self.n
        def __getitem__(self, i): return torch.rand(1, 64, 64), i % 10

    pool = sys.argv[2]
    def status(key):  # KiB; VmHWM belongs to this address space (ru_maxrss survives fork+exec on Linux,
        for line in open("/proc/self/status"):  # so a big parent process would hide the growth)
            if line.startswith(key + ":"):
                return int(line.split()[1])

    extract(model, Lazy(64), layer="1", pool=pool, batch_size=32, progress=False)  # warm-up: 2 batches
    before = status("VmHWM")  # the peak so far includes one batch's working memory
    f = extract(model, Lazy(int(sys.argv[1])), layer="1", pool=pool, batch_size=32, progress=False)
    after = status("VmHWM")
    print((after - before) / 1024, f.features.shape[1])
""")


def _peak_growth_mib(n: int, pool: str) -> float:
    # A fixed mmap threshold makes glibc return every freed batch buffer at once, so the peak RSS is what is
    # alive, not allocator fragmentation; one thread keeps the run short on a shared CPU.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(n), pool], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.split()[0])


@pytest.mark.slow
def test_memory_grows_with_n_times_c_not_with_feature_maps():
    """512 images whose maps are 512 KiB each (after a 64-image warm-up): pooled features (64 KiB) must
    not raise the peak by the maps' 256 MiB; the same run with pool="flatten" (which keeps the maps) shows
    that the measurement can fail."""
    pooled, kept = _peak_growth_mib(512, "avg"), _peak_growth_mib(512, "flatten")
    assert pooled < 16, f"peak memory rose by {pooled:.0f} MiB with pooled features"
    assert kept > 200, f"control: keeping the maps should raise the peak by ~256 MiB, rose {kept:.0f} MiB"


# --------------------------------------------------------------------------- project
@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(3, 12))
    labels = np.repeat(np.arange(3), 40)
    return (centers[labels] + rng.normal(size=(120, 12))).astype(np.float32), labels


def test_pca_equals_the_eigen_decomposition(blobs):
    x, _ = blobs
    p = project(x, "pca", seed=0)
    xc = x.astype(np.float64) - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(p.explained_variance, s ** 2 / (s ** 2).sum(), rtol=1e-4, atol=1e-7)
    manual = xc @ vt[:2].T
    signs = np.sign((p.coords * manual).sum(0))  # components are defined up to sign
    np.testing.assert_allclose(p.coords, manual * signs, rtol=1e-3, atol=1e-3)
    assert p.backend == "sklearn" and p.coords.dtype == np.float32


@pytest.mark.parametrize("method,backend", [("pca", "auto"), ("tsne", "sklearn"), ("tsne", "opentsne")])
def test_projection_reproducible_under_a_seed(blobs, method, backend):
    x, _ = blobs
    opts = {"backend": backend, "progress": False} | ({"perplexity": 10, "init": "random"} if method == "tsne" else {})
    a = project(x, method, seed=1, **opts)
    b = project(torch.from_numpy(x), method, seed=1, **opts)
    np.testing.assert_array_equal(a.coords, b.coords)
    if method == "tsne":  # the seed matters (random initialization), and it is the one used
        assert a.backend == backend
        assert not np.allclose(a.coords, project(x, method, seed=2, **opts).coords)


def test_project_bad_input(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match=r"perplexity < number of samples.*perplexity=6"):
        project(x[:20], "tsne", progress=False)
    with pytest.raises(ValueError, match="method"):
        project(x, "isomap")
    with pytest.raises(ValueError, match="n_components"):
        project(x, "pca", n_components=13)
    with pytest.raises(ValueError, match="n_components"):
        project(x, "pca", n_components=0)
    with pytest.raises(TypeError, match="PCA does not accept"):
        project(x, "pca", perplexity=3)
    with pytest.raises(ValueError, match="NaN"):
        project(np.full((5, 3), np.nan), "pca")
    with pytest.raises(ValueError, match="empty"):
        project(np.zeros((0, 3)), "pca")


# --------------------------------------------------------------------------- quality
def test_trustworthiness_matches_sklearn_and_perfect_map_scores_one(blobs):
    from sklearn.manifold import trustworthiness as sk_trust

    x, _ = blobs
    y = project(x, "pca", seed=0).coords
    assert trustworthiness(x, y) == pytest.approx(sk_trust(x, y, n_neighbors=10))
    assert trustworthiness(x[:, :2], x[:, :2]) == pytest.approx(1.0)
    sub = trustworthiness(x, y, max_samples=50, seed=0)  # a fixed subsample: same value every time
    assert sub == trustworthiness(x, y, max_samples=50, seed=0) != trustworthiness(x, y)


def test_knn_accuracy_by_hand_and_vs_sklearn_leave_one_out():
    coords = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [3.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # k=1: 0->1 ok, 1->0 ok, 2->{1,3 tie at 1} nearest-first picks 1 (label 0) ok, 10->11 ok, 11->10 ok, 3->2 wrong
    assert knn_accuracy(coords, labels, n_neighbors=1) == pytest.approx(5 / 6)
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    pts = rng.normal(size=(80, 2))
    lab = (pts[:, 0] + 0.5 * rng.normal(size=80) > 0).astype(int)  # two classes, odd k: no ties
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=5), pts, lab, cv=LeaveOneOut())
    assert knn_accuracy(pts, lab, n_neighbors=5) == pytest.approx((pred == lab).mean())


# --------------------------------------------------------------------------- embed on trained digits
def test_embed_pca_and_facade(net, xy):
    from cnn_explain import explain

    x, y = xy
    names = [f"c{i}" for i in range(10)]
    e = embed(net, (x, y), method="pca", class_names=names, progress=False, batch_size=8)
    f = explain(net, class_names=names).embed((x, y), method="pca", progress=False)
    np.testing.assert_allclose(e.coords, f.coords, atol=1e-5)  # batch sizes 8 and 256
    assert e.class_names == tuple(names) and e.class_name(3) == "c3" and e.layer == "12"
    assert e.coords.shape == (37, 2) and e.explained_variance is not None
    np.testing.assert_array_equal(e.labels, y.numpy())
    assert e.knn_accuracy == pytest.approx(knn_accuracy(e.coords, y.numpy()))
    assert e.trustworthiness == pytest.approx(trustworthiness(e.features, e.coords))
    with pytest.raises(ValueError, match="method"):
        embed(net, x, method="lda")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_penultimate_map_of_trained_digits_is_faithful(digits, method, snapshot):
    model, x, y = digits
    snap = snapshot(model)
    e = embed(model, (x, y), method=method, seed=0, progress=False)
    snap.assert_unchanged()
    assert e.accuracy > 0.9, "the digits model should be trained"
    assert e.trustworthiness >= 0.9
    assert abs(e.knn_accuracy - e.accuracy) <= 0.04, (e.knn_accuracy, e.accuracy)


@pytest.mark.slow
def test_umap_notice_once_cache_enabled_and_seeded_runs_equal(blobs, monkeypatch, capsys):
    from numba.core.dispatcher import Dispatcher

    from cnn_explain.embedding import _project

    x, _ = blobs
    monkeypatch.setitem(_project._UMAP_STATE, "noticed", False)
    monkeypatch.setattr(_project, "_umap_cache_warm", lambda: False)  # as on a fresh machine
    a = project(x, "umap", seed=0, progress=True, deterministic=True)
    b = project(x, "umap", seed=0, progress=True, deterministic=True)
    assert capsys.readouterr().err.count("compiles numba code") == 1
    np.testing.assert_array_equal(a.coords, b.coords)  # seeded UMAP is deterministic (single-threaded)
    assert a.backend == "umap-learn" and a.options["random_state"] == 0
    import umap.umap_ as uu

    cached = [v for v in vars(uu).values() if isinstance(v, Dispatcher)]
    assert cached and all(type(v._cache).__name__ != "NullCache" for v in cached)


# --------------------------------------------------------------------------- threads and determinism
@pytest.fixture(scope="module")
def clusters():
    """600 points in 10 Gaussian clusters in 20-D: enough for the multi-threaded paths to matter."""
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=4.0, size=(10, 20))
    labels = np.repeat(np.arange(10), 60)
    return (centers[labels] + rng.normal(size=(600, 20))).astype(np.float32)


def _trust_default_vs_single(x, method, **opts):
    multi = project(x, method, seed=0, progress=False, **opts)
    single = project(x, method, seed=0, progress=False, deterministic=True, **opts)
    assert multi.threads == available_cores() and single.threads == 1
    assert multi.options["n_jobs"] == -1 and single.options["n_jobs"] == 1
    assert abs(trustworthiness(x, multi.coords) - trustworthiness(x, single.coords)) <= 0.005
    return multi, single


@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_tsne_defaults_to_every_core_with_the_quality_of_one_thread(clusters, backend):
    multi, single = _trust_default_vs_single(clusters, "tsne", backend=backend)
    assert multi.deterministic and single.deterministic
    again = project(clusters, "tsne", seed=0, progress=False, deterministic=True, backend=backend)
    np.testing.assert_array_equal(single.coords, again.coords)


def test_user_n_jobs_wins_and_bad_deterministic_is_named(clusters):
    p = project(clusters, "tsne", seed=0, progress=False, n_jobs=1, backend="opentsne")
    assert p.threads == 1 and p.options["n_jobs"] == 1
    with pytest.raises(TypeError, match="deterministic"):
        project(clusters, "pca", deterministic="yes")


@pytest.mark.slow
def test_umap_default_every_core_deterministic_option_identical_twice(clusters, capsys):
    import numba

    threads_before, numpy_before = numba.get_num_threads(), np.random.get_state()[1].copy()
    multi, single = _trust_default_vs_single(clusters, "umap")
    assert not multi.deterministic and multi.options["random_state"] is None
    assert single.deterministic and single.options["random_state"] == 0
    again = project(clusters, "umap", seed=0, progress=True, deterministic=True)
    np.testing.assert_array_equal(single.coords, again.coords)
    assert "one thread, deterministic" in capsys.readouterr().err
    project(clusters, "umap", seed=0, progress=True)
    assert f"on {available_cores()} threads" in capsys.readouterr().err or available_cores() == 1
    assert numba.get_num_threads() == threads_before  # umap-learn's set_num_threads is undone
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_before)  # the global generator too
