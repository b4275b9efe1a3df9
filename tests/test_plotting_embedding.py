"""Embedding figures: plotted data equal the result; thumbnails show the right images; bad dims rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cnn_explain.embedding import Embedding, project
from cnn_explain.plotting import explained_variance_figure, scatter_embedding, scatter_embedding_3d


def _result(k: int = 2, n: int = 30, method: str = "tsne", labels: bool = True) -> Embedding:
    rng = np.random.default_rng(0)
    lab = np.arange(n) % 3
    pred = lab.copy()
    pred[[2, 7]] = (lab[[2, 7]] + 1) % 3  # two mistakes
    return Embedding(coords=rng.normal(size=(n, k)).astype(np.float32), labels=lab if labels else None,
                     predictions=pred, indices=np.arange(n)[::-1].copy(), trustworthiness=0.95,
                     knn_accuracy=0.9 if labels else None, method=method, layer="fc",
                     class_names=("zero", "one", "two"))


def test_scatter_points_per_class_and_errors_equal_the_result():
    r = _result()
    fig = scatter_embedding(r)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    cols = ax.collections
    assert [c.get_label() for c in cols] == ["zero", "one", "two", "misclassified (2)"]
    for c, cls in zip(cols[:3], range(3)):
        np.testing.assert_allclose(c.get_offsets(), r.coords[r.labels == cls])
    np.testing.assert_allclose(cols[3].get_offsets(), r.coords[[2, 7]])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["zero", "one", "two", "misclassified (2)"]
    assert "trustworthiness 0.950" in ax.get_title()
    assert len(scatter_embedding(r, mark_errors=False).axes[0].collections) == 3


def test_scatter_without_labels_colours_by_prediction_and_draws_on_given_axes():
    r = _result(labels=False)
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert scatter_embedding(r, ax=ax) is fig
    assert len(ax.collections) == 3 and ax.get_legend().get_title().get_text() == "predicted class"
    np.testing.assert_allclose(ax.collections[1].get_offsets(), r.coords[r.predictions == 1])


def test_thumbnails_show_the_images_of_spread_out_points():
    from matplotlib.offsetbox import AnnotationBbox

    r = _result(n=30)
    images = torch.rand(30, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    fig = scatter_embedding(r, thumbnails=(images, None), n_thumbnails=8)
    boxes = [a for a in fig.axes[0].artists if isinstance(a, AnnotationBbox)]
    assert 1 <= len(boxes) <= 8
    extent = np.ptp(r.coords, axis=0).max()
    xy = np.array([b.xy for b in boxes])
    for b in boxes:  # each thumbnail is the image of the sample at its point
        i = int(b.get_gid().split("-")[1])
        row = int(np.flatnonzero(r.indices == i)[0])
        np.testing.assert_allclose(b.xy, r.coords[row])
        np.testing.assert_allclose(b.offsetbox.get_data(), images[i, 0].numpy())
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    assert d.min() >= 0.08 * extent - 1e-6
    ds = torch.utils.data.TensorDataset(images, torch.zeros(30))
    assert len(scatter_embedding(r, thumbnails=ds, n_thumbnails=3).axes[0].artists) <= 3


def test_3d_variant_plots_the_three_coordinates():
    r = _result(k=3)
    fig = scatter_embedding(r)
    ax = fig.axes[0]
    assert ax.name == "3d" and fig is scatter_embedding_3d(r, ax=ax)
    x, y, z = ax.collections[1]._offsets3d
    np.testing.assert_allclose(np.c_[x, y, z], r.coords[r.labels == 1])


def test_bad_dimensions_and_bad_axes():
    for k in (1, 4):
        with pytest.raises(ValueError, match="n_components=2 or 3"):
            scatter_embedding(_result(k=k))
    with pytest.raises(ValueError, match="2-D maps only"):
        scatter_embedding(_result(k=3), thumbnails=torch.rand(30, 1, 4, 4))
    with pytest.raises(ValueError, match="3-D Axes"):
        scatter_embedding_3d(_result(k=3), ax=Figure().add_subplot())
    with pytest.raises(ValueError, match="PCA"):
        explained_variance_figure(_result())


def test_explained_variance_bars_equal_the_ratios():
    x = np.random.default_rng(0).normal(size=(40, 6)) * np.arange(1, 7)
    p = project(x, "pca", seed=0)
    fig = explained_variance_figure(p)
    ax = fig.axes[0]
    heights = [b.get_height() for b in ax.patches]
    np.testing.assert_allclose(heights, p.explained_variance)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.cumsum(p.explained_variance))
    assert len(explained_variance_figure(p, n=3).axes[0].patches) == 3


@pytest.mark.slow
def test_library_does_not_import_pyplot():
    import subprocess
    import sys

    code = ("import numpy as np, sys\nfrom cnn_explain.embedding import Embedding\n"
            "from cnn_explain.plotting.embedding import scatter_embedding\n"
            "e = Embedding(np.zeros((4, 2), np.float32) + np.arange(4)[:, None], np.arange(4) % 2, "
            "np.arange(4) % 2, np.arange(4), 1.0, 1.0, 'pca', 'fc')\n"
            "scatter_embedding(e).savefig('/dev/null', format='png')\n"
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == "False"
