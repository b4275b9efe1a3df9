"""Attribution figures: they return Figures (no pyplot), and what they draw is the result's data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cnn_explain.attribution import deletion_insertion, grad_cam, saliency, sanity_check
from cnn_explain.attribution.result import Attribution
from cnn_explain.plotting import attribution_grid, deletion_insertion_figure, heatmap, sanity_figure


@pytest.fixture
def results(tiny_net, images):
    return [saliency(tiny_net, images, method="guided"), saliency(tiny_net, images, abs=False),
            grad_cam(tiny_net, images)]


def test_heatmap_draws_the_map_with_the_right_colour_scale(results):
    unsigned, signed, cam = results
    for r in results:
        for i in range(3):
            fig = heatmap(r, index=i)
            assert isinstance(fig, Figure)
            ax = fig.axes[0]
            im = ax.images[-1]
            np.testing.assert_array_equal(np.asarray(im.get_array()), r.map(i).numpy())
            assert ax.images[0].get_array().shape == (12, 10)  # the image underneath
            assert len(fig.axes) == 2  # + colorbar
            lo, hi = im.get_clim()
            if (r.map(i) < 0).any():
                assert im.get_cmap().name == "RdBu_r" and lo == -hi == -float(r.map(i).abs().max())
            else:
                assert im.get_cmap().name == "inferno" and lo == 0 and hi == pytest.approx(float(r.map(i).max()))
    assert signed.signed and not unsigned.signed and not cam.signed


def test_heatmap_on_a_given_axes_and_an_occlusion_like_result(images):
    occl = Attribution(torch.randn(3, 3, 12, 10), [0, 1, 2], "occlusion")  # no inputs: image passed
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert heatmap(occl, images, ax=ax, index=1, colorbar=False) is fig
    np.testing.assert_allclose(ax.images[-1].get_array(), occl.attribution[1].sum(0).numpy())
    assert "occlusion" in ax.get_title() and "class 1" in ax.get_title()
    with pytest.raises(ValueError, match="image"):
        heatmap(occl, torch.rand(3, 5, 5))


def test_grid_has_one_row_per_image_and_one_column_per_method(results):
    fig = attribution_grid(results, indices=[2, 0], colorbar=False)
    axes = np.asarray(fig.axes).reshape(2, 4)
    for row, i in enumerate([2, 0]):
        for col, r in enumerate(results, start=1):
            np.testing.assert_array_equal(axes[row, col].images[-1].get_array(), r.map(i).numpy())
    assert [a.get_title() for a in axes[0, 1:]] == ["guided", "gradient", "grad_cam"]
    with pytest.raises(ValueError, match="titles"):
        attribution_grid(results, titles=["a"])
    with pytest.raises(TypeError, match="results"):
        attribution_grid([])


def test_sanity_figure_plots_the_similarities(tiny_net, images):
    s = sanity_check(tiny_net, images, method="gradient", progress=False)
    fig = sanity_figure(s, index=1)
    assert isinstance(fig, Figure)
    curves = next(a for a in fig.axes if a.get_ylabel() == "similarity to original")
    lines = {ln.get_label(): ln for ln in curves.get_lines()}
    np.testing.assert_allclose(lines["spearman"].get_ydata(), s.spearman.mean(1).numpy())
    np.testing.assert_allclose(lines["ssim"].get_ydata(), s.ssim.mean(1).numpy())
    m = s.maps[1, 1].abs().amax(0).numpy()  # step 1 of image 1, divided by its max as the similarities compare it
    np.testing.assert_allclose(fig.axes[2].images[-1].get_array(), m / m.max(), rtol=1e-6)


def test_deletion_insertion_figure(tiny_net, images, results):
    a = deletion_insertion(tiny_net, images, results[0], steps=4, progress=False)
    b = deletion_insertion(tiny_net, images, results[2], steps=4, progress=False)
    fig = deletion_insertion_figure({"guided": a, "cam": b})
    dele, ins = fig.axes[:2]
    labelled = [ln for ln in dele.get_lines() if not ln.get_label().startswith("_")]
    np.testing.assert_allclose(labelled[0].get_ydata(), a.deletion.mean(0).numpy())
    assert labelled[1].get_label().startswith("cam (AUC")
    one = deletion_insertion_figure(a, index=2)
    np.testing.assert_allclose(one.axes[1].get_lines()[0].get_ydata(), a.insertion[2].numpy())


def test_no_pyplot_is_imported():
    code = ("import torch, sys; from cnn_explain.attribution.result import Attribution;"
            "from cnn_explain.plotting import heatmap;"
            "heatmap(Attribution(torch.rand(1, 1, 4, 4), [0], 'x')).savefig('/dev/null', format='png');"
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_figures_work_for_occlusion_results(tiny_net, images):
    from cnn_explain.attribution import occlusion

    r = occlusion(tiny_net, images, window=4, stride=2, progress=False)
    fig = heatmap(r, index=1)
    np.testing.assert_array_equal(fig.axes[0].images[-1].get_array(), r.map(1).numpy())
    grid = attribution_grid([r, saliency(tiny_net, images, target=r.target)], colorbar=False)
    assert len(grid.axes) == 3 * 3
