"""What a person sees: class names in titles, colour bars that say what the colour is, a sanity figure
readable for a deep net, maximization images that never changed marked as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from torch import nn

from cnn_explain.attribution import grad_cam, occlusion, saliency, sanity_check
from cnn_explain.plotting import attribution_grid, heatmap, maximize_grid, sanity_figure

NAMES = ["zero", "one", "two", "three", "four"]


def _colorbars(fig) -> list:
    """Colour-bar Axes: those a colour bar was drawn into (Matplotlib tags them)."""
    return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def test_heatmap_title_names_the_class_and_the_bar_says_what_the_colour_is(tiny_net, images):
    r = saliency(tiny_net, images, target=[3, 1, 4])
    fig = heatmap(r, index=0, class_names=NAMES)
    assert fig.axes[0].get_title() == "gradient · three"
    (bar,) = _colorbars(fig)
    assert bar.get_ylabel() == "|∂ score / ∂ pixel|"
    fig = heatmap(r, index=2, class_names=NAMES, labels=["a.png", "b.png", "c.png"])
    assert fig.axes[0].get_title() == "c.png · gradient · four"
    assert heatmap(r, index=1).axes[0].get_title() == "gradient · class 1"  # no names: the number
    with pytest.raises(TypeError, match="class_names"):
        heatmap(r, class_names="zero one")


def test_every_map_of_a_grid_has_a_labelled_colour_bar(tiny_net, images):
    cam = grad_cam(tiny_net, images, target=[2, 2, 0])
    occ = occlusion(tiny_net, images, target=[2, 2, 0], window=4, stride=2, progress=False)
    signed = saliency(tiny_net, images, target=[2, 2, 0], abs=False)
    fig = attribution_grid([occ, signed, cam], class_names=NAMES, labels=["x", "y", "z"])
    bars = _colorbars(fig)
    assert len(bars) == 3 * 3  # three images × three maps
    labels = [b.get_ylabel() for b in bars[:3]]
    assert labels[0] == "drop of P(two) when this patch is set to 0"
    assert labels[1] == "∂ score / ∂ pixel"
    assert labels[2].startswith("grad_cam") or labels[2].startswith("Grad-CAM")
    assert cam.layer in labels[2]
    firsts = [ax.get_title() for ax in fig.axes if ax.get_title().startswith(("x\n", "y\n", "z\n"))]
    assert firsts == ["x\nexplaining two", "y\nexplaining two", "z\nexplaining zero"]


class Deep(nn.Module):
    """A 28-layer ResNet-like stack: 26 convolutions in 13 residual pairs, a stem and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        pair = (lambda: nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)))
        self.blocks = nn.ModuleList(pair() for _ in range(13))
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.fc(x.mean((2, 3)))


def test_sanity_figure_of_a_28_layer_net_is_readable_at_page_width():
    net = Deep().eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    s = sanity_check(net, x, method="guided", progress=False)
    assert len(s.steps) == 29  # every layer with weights, plus the original
    fig = sanity_figure(s, class_names=NAMES)
    width, _ = fig.get_size_inches()
    assert width * 100 <= 1100  # at the report's 100 dpi, no wider than its page: shown at full size
    panels = [ax for ax in fig.axes if ax.images and not _colorbars(fig).count(ax)]
    assert 2 <= len(panels) <= 8
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert min(t.get_fontsize() for t in texts) >= 9
    titles = " ".join(ax.get_title() for ax in panels)
    assert s.layers[-1] in titles and "original" in titles  # steps named by layer, the last one shown
    rho = float(np.nanmean(s.spearman[-1].numpy()))
    verdict = [t.get_text() for t in texts if "Adebayo" in t.get_text()]
    assert verdict and f"ρ = {rho:.2f}" in verdict[0].replace("\n", " ")
    assert ("not explaining the model" in verdict[0]) == (rho >= 0.5)
    assert _colorbars(fig)


def test_maximization_images_that_never_changed_are_marked_not_shown():
    from cnn_explain.features.maximize import MaximizeResult

    pixels = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels[1] = 0.5  # flat grey: the optimization never moved it
    history = torch.stack([torch.linspace(0, 1, 4), torch.zeros(4), torch.linspace(0, 2, 4)], 1)
    r = MaximizeResult(images=pixels, pixels=pixels, layer="relu2", channels=(0, 7, 9), history=history)
    fig = maximize_grid(r)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["ch 0", "ch 9"]
    dead = [ax for ax in fig.axes if ax.get_gid() == "unchanged-7"]
    assert dead and "never fired" in " ".join(t.get_text() for t in dead[0].texts)
    assert "1 of 3 never fired" in fig._suptitle.get_text()


def test_a_real_channel_that_never_fires_is_marked(tiny_net):
    """A ReLU channel whose bias is very negative is 0 everywhere: the optimization cannot move its image."""
    from cnn_explain.features.maximize import maximize

    conv = next(m for m in tiny_net.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.bias[1] = -1e4
    relu = next(n for n, m in tiny_net.named_modules() if isinstance(m, nn.ReLU))
    r = maximize(tiny_net, relu, [0, 1], steps=4, input_shape=(3, 12, 10), progress=False)
    fig = maximize_grid(r)
    assert [ax.get_gid() for ax in fig.axes if ax.get_gid()] == ["unchanged-1"]
