"""Feature maps equal the layers' own outputs (eval mode, in-place safe, batch invariant); the grid figure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_explain.features.maps import feature_maps
from cnn_explain.plotting.features import feature_map_grid


def test_maps_equal_direct_computation(tiny_net, images):
    maps = feature_maps(tiny_net, images)
    assert list(maps) == ["conv1", "relu1", "pool", "conv2", "relu2", "gap", "fc"]
    with torch.no_grad():
        c1 = tiny_net.conv1(images)
        p = tiny_net.pool(torch.relu(c1))
        c2 = tiny_net.conv2(p)
    assert torch.allclose(maps["conv1"], c1) and torch.allclose(maps["relu1"], c1.clamp(min=0))
    assert torch.allclose(maps["pool"], p) and torch.allclose(maps["conv2"], c2)
    assert torch.allclose(maps["fc"], tiny_net(images).detach(), atol=1e-6)
    assert maps["fc"].shape == (3, 5) and maps["conv1"].device.type == "cpu"
    assert not maps["conv1"].is_inference()  # usable with autograd afterwards


def test_inplace_relu_does_not_change_recorded_maps(tiny_resnet):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = feature_maps(tiny_resnet, x, layers=["bn", "layer1.bn2"])
    with torch.no_grad():
        bn = tiny_resnet.bn(tiny_resnet.stem(x))
    assert (maps["bn"] < 0).any() and torch.allclose(maps["bn"], bn)


def test_eval_mode_and_model_unchanged(snapshot, images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU()).train()
    net[1].running_mean.uniform_(-1, 1)
    snap = snapshot(net)
    state = torch.get_rng_state()
    maps = feature_maps(net, images, layers="*")
    with torch.no_grad():
        expected = net.eval()(images)
    net.train()
    assert torch.allclose(maps["3"], expected)  # dropout off, running statistics used
    snap.assert_unchanged()
    assert torch.equal(state, torch.get_rng_state())


def test_batch_invariance(tiny_net, images):
    full = feature_maps(tiny_net, images, layers="conv2")["conv2"]
    single = torch.cat([feature_maps(tiny_net, images[i], layers="conv2")["conv2"] for i in range(3)])
    assert torch.allclose(full, single, atol=1e-6)


def test_errors_and_exception_safety(tiny_net, images, exploding_net, snapshot):
    with pytest.raises(ValueError, match="no layer named"):
        feature_maps(tiny_net, images, layers="conv9")
    with pytest.raises(ValueError, match="channels"):
        feature_maps(tiny_net, images[:, :1])
    snap = snapshot(exploding_net)
    with pytest.raises(Exception, match="inside forward"):
        feature_maps(exploding_net, images)
    snap.assert_unchanged()


def test_grid_data_top_k_and_scales(tiny_net, images):
    maps = feature_maps(tiny_net, images)
    fig = feature_map_grid(maps, layers=["conv1", "fc"], index=1)
    axes = [ax for ax in fig.get_axes() if ax.images]
    assert len(axes) == 4 + 1
    for c, ax in enumerate(axes[:4]):
        m = maps["conv1"][1, c]
        assert ax.get_title() == f"ch {c}\n{float(m.min()):.2g} … {float(m.max()):.2g}"  # each panel's range
        assert torch.allclose(torch.as_tensor(ax.images[0].get_array().data), maps["conv1"][1, c])
    fig = feature_map_grid(maps, layers="conv2", top_k=2)
    axes = [ax for ax in fig.get_axes() if ax.images]
    best = maps["conv2"][0].mean((1, 2)).argsort(descending=True)[:2].tolist()
    assert [ax.get_title().split("\n")[0] for ax in axes] == [f"ch {c}" for c in best]
    shared_fig = feature_map_grid(maps, "conv1", shared_scale=True)
    shared = [ax.images[0].get_clim() for ax in shared_fig.get_axes() if ax.images]  # the colour bar has none
    own = [ax.images[0].get_clim() for ax in feature_map_grid(maps, "conv1").get_axes() if ax.images]
    assert len(shared) == len(own) == 4 and len(set(shared)) == 1 and len(set(own)) == 4
    assert shared[0] == (float(maps["conv1"][0].min()), float(maps["conv1"][0].max()))
    with pytest.raises(ValueError, match="layers"):
        feature_map_grid(maps, layers="nope")


def test_a_chosen_layer_called_again_later_is_recorded_every_time(tiny_resnet, images):
    """The forward is not cut after the chosen layer's first call: TinyResNet's block reuses one ReLU."""
    maps = feature_maps(tiny_resnet, images, layers="layer1.relu")
    assert list(maps) == ["layer1.relu", "layer1.relu#1"]
    assert not torch.equal(maps["layer1.relu"], maps["layer1.relu#1"])
