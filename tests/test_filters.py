"""Filters: the right weights (a copy), clear errors, per-filter normalization, the grid figure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_explain.features.filters import filters
from cnn_explain.plotting.features import filter_grid


def test_first_conv_by_default_and_a_copy(tiny_net):
    r = filters(tiny_net)
    assert r.layer == "conv1" and r.rgb and r.groups == 1
    assert torch.equal(r.weight, tiny_net.conv1.weight.detach()) and torch.equal(r.bias, tiny_net.conv1.bias.detach())
    r.weight.zero_()
    assert tiny_net.conv1.weight.abs().sum() > 0


def test_named_layer_groups_and_gray():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3, groups=2, bias=False), nn.Linear(3, 3))
    r = filters(net)
    assert r.layer == "0" and not r.rgb and r.weight.shape == (4, 1, 3, 3)
    r2 = filters(net, "2")
    assert r2.weight.shape == (8, 2, 3, 3) and r2.groups == 2 and r2.bias is None
    assert filters(net, net[2]).layer == "2"
    with pytest.raises(ValueError, match=r"layer '1' is a ReLU with no weights"):
        filters(net, "1")
    with pytest.raises(ValueError, match=r"layer '3' is a Linear with a 2-D weight"):
        filters(net, "3")
    with pytest.raises(ValueError, match="first Conv2d layer, but the model has none"):
        filters(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="no layer named"):
        filters(net, "conv")


def test_normalized_per_filter(tiny_net):
    r = filters(tiny_net, "conv2")
    n = r.normalized()
    flat = n.reshape(n.shape[0], -1)
    assert torch.allclose(flat.min(1).values, torch.zeros(6)) and torch.allclose(flat.max(1).values, torch.ones(6))
    k = 3
    w = r.weight[k]
    assert torch.allclose(n[k], (w - w.min()) / (w.max() - w.min()))


def test_figures_show_the_normalized_weights(tiny_net):
    r = filters(tiny_net)
    axes = [ax for ax in filter_grid(r).get_axes() if ax.images]
    assert len(axes) == 4
    assert torch.allclose(torch.as_tensor(axes[2].images[0].get_array()), r.normalized()[2].permute(1, 2, 0))
    deep = filters(tiny_net, "conv2")
    axes = [ax for ax in filter_grid(deep, max_inputs=3).get_axes() if ax.images]
    assert len(axes) == 6 * 3  # filters × capped input channels
    assert torch.allclose(torch.as_tensor(axes[3 * 2 + 1].images[0].get_array().data), deep.normalized()[2, 1])


def test_facade(tiny_net):
    from cnn_explain import explain

    assert torch.equal(explain(tiny_net).filters("conv2").weight, filters(tiny_net, "conv2").weight)
