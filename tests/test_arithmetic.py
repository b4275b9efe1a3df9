"""The worked arithmetic equals what the layer produced (conv stride/pad/dilation/groups, pools, linear)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain.features.arithmetic import arithmetic
from cnn_explain.hooks import hook_count


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def _x(shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _all_positions(model, x, layer, out_shape):
    for c, h, w in itertools.product(*(range(n) for n in out_shape)):
        a = arithmetic(model, x, layer, c, h, w)
        assert a.computed == pytest.approx(a.actual, abs=1e-5), (c, h, w)
        yield a


CONVS = [
    dict(kernel_size=3, stride=2, padding=(1, 2), dilation=(2, 1), groups=2),
    dict(kernel_size=(2, 3), stride=(1, 3), padding=2, dilation=1, groups=1),
    dict(kernel_size=4, stride=1, padding="same", dilation=1, groups=4),
    dict(kernel_size=3, stride=3, padding=1, groups=1, padding_mode="reflect"),
    dict(kernel_size=3, stride=2, padding=1, groups=2, padding_mode="circular", bias=False),
]


@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_conv_every_output_equals_model(cfg):
    net = _seeded(nn.Sequential(nn.Conv2d(4, 4, **cfg), nn.ReLU()))
    x = _x((2, 4, 7, 8))
    out_shape = net[0](x).shape[1:]
    results = list(_all_positions(net, x, "0", out_shape))
    a = results[-1]
    assert a.kind == "conv" and a.input_slice.shape == a.kernel.shape == (4 // cfg["groups"],) + tuple(net[0].kernel_size)
    assert torch.allclose(a.products, a.input_slice * a.kernel)
    assert torch.allclose(a.per_channel_sums, a.products.sum((1, 2)))
    assert (a.bias is None) == (not cfg.get("bias", True))
    assert a.activation is not None and a.activation.name == "ReLU"
    assert a.activation.value == pytest.approx(max(a.actual, 0.0), abs=1e-6)
    assert torch.equal(a.kernel, net[0].weight[a.channel].detach().double())


def test_conv_by_hand_reads_the_padded_input():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(9.0).view(1, 1, 3, 3))
        conv.bias.fill_(0.5)
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    a = arithmetic(nn.Sequential(conv), x, "0", 0, 0, 0)
    # the top-left output reads rows -1..1, cols -1..1: one row and column of zero padding
    expected_slice = torch.tensor([[0.0, 0, 0], [0, 1, 2], [0, 5, 6]])
    assert a.rows == (-1, 0, 1) and a.cols == (-1, 0, 1)
    assert torch.equal(a.input_slice[0], expected_slice.double())
    assert a.computed == 4 * 1 + 5 * 2 + 7 * 5 + 8 * 6 + 0.5 == pytest.approx(a.actual)
    assert a.activation is None  # no activation module follows


def test_groups_pick_the_right_input_channels():
    net = _seeded(nn.Sequential(nn.Conv2d(6, 9, 3, groups=3)))
    a = arithmetic(net, _x((1, 6, 5, 5)), "0", channel=7)
    assert a.input_channels == (4, 5) and a.position == (1, 1)  # default: the centre


@pytest.mark.parametrize("cfg", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                 dict(kernel_size=2, stride=1, dilation=2),
                                 dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0))])
def test_maxpool_winner_is_torchs_index(cfg):
    net = nn.Sequential(nn.MaxPool2d(**cfg))
    x = _x((1, 2, 7, 8))
    out, idx = F.max_pool2d(x, **cfg, return_indices=True)
    for a in _all_positions(net, x, "0", out.shape[1:]):
        c, (h, w) = a.channel, a.position
        flat = int(idx[0, c, h, w])
        assert a.winner == (flat // 8, flat % 8) and a.kind == "maxpool"
        assert a.input_slice.max() == a.computed


@pytest.mark.parametrize("cfg", [dict(kernel_size=3, stride=2, padding=1, count_include_pad=True, ceil_mode=True),
                                 dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
                                 dict(kernel_size=2, stride=2, padding=1, divisor_override=3)])
def test_avgpool_divisor_semantics(cfg):
    net = nn.Sequential(nn.AvgPool2d(**cfg))
    x = _x((1, 2, 7, 6))
    results = list(_all_positions(net, x, "0", net(x).shape[1:]))
    corner = results[0]  # top-left window: one padded row and column
    if cfg.get("divisor_override"):
        assert corner.divisor == 3
    else:
        assert corner.divisor == (9 if cfg["count_include_pad"] else 4)


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool2d((3, 2)), nn.AdaptiveMaxPool2d(3)])
def test_adaptive_pools(pool):
    net = nn.Sequential(pool)
    x = _x((1, 2, 7, 5))
    list(_all_positions(net, x, "0", net(x).shape[1:]))


def test_linear_dot_product(tiny_net, images):
    for k in range(5):
        a = arithmetic(tiny_net, images, "fc", k, index=2)
        assert a.kind == "linear" and a.position is None and a.index == 2
        assert a.computed == pytest.approx(a.actual, abs=1e-5)
        assert a.actual == pytest.approx(float(tiny_net(images)[2, k]), abs=1e-6)
    with pytest.raises(ValueError, match="h and w"):
        arithmetic(tiny_net, images, "fc", 0, h=1)


def test_activation_only_when_it_reads_this_output(tiny_resnet):
    x = _x((1, 3, 8, 8))
    assert arithmetic(tiny_resnet, x, "stem").activation is None  # BatchNorm comes first
    a = arithmetic(tiny_resnet, x, "layer1.conv2", 2, 1, 1)
    assert a.activation is None and a.computed == pytest.approx(a.actual, abs=1e-5)


def test_text_and_figure(tiny_net, images):
    a = arithmetic(tiny_net, images, "conv1", 1, 0, 3)
    text = str(a)
    assert "input channel 0" in text and "bias" in text and "ReLU" in text and f"{a.computed:.6g}" in text
    assert "max =" in str(arithmetic(tiny_net, images, "pool", 1))
    from cnn_explain.plotting.features import arithmetic_figure

    fig = arithmetic_figure(a)
    data = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert torch.allclose(torch.as_tensor(data[0].data), a.input_slice[0])
    assert torch.allclose(torch.as_tensor(data[1].data), a.kernel[0])
    assert arithmetic_figure(arithmetic(tiny_net, images, "pool", 1)) is not None
    assert arithmetic_figure(arithmetic(tiny_net, images, "fc", 1)) is not None


def test_bad_input_names_the_argument(tiny_net, images):
    with pytest.raises(ValueError, match=r"channel=4 .*0\.\.3"):
        arithmetic(tiny_net, images, "conv1", 4)
    with pytest.raises(ValueError, match=r"h=12 .*0\.\.11"):
        arithmetic(tiny_net, images, "conv1", 0, 12, 0)
    with pytest.raises(ValueError, match=r"w=-1"):
        arithmetic(tiny_net, images, "conv1", 0, 0, -1)
    with pytest.raises(ValueError, match="layer 'relu1' is a ReLU"):
        arithmetic(tiny_net, images, "relu1")
    with pytest.raises(ValueError, match="index"):
        arithmetic(tiny_net, images, "conv1", index=3)
    with pytest.raises(TypeError, match="channel"):
        arithmetic(tiny_net, images, "conv1", 0.5)


def test_model_unchanged_after_success_and_exception(tiny_net, images, exploding_net, snapshot):
    tiny_net.train()
    snap = snapshot(tiny_net)
    arithmetic(tiny_net, images, "conv2", 3)
    snap.assert_unchanged()
    snap = snapshot(exploding_net)
    with pytest.raises(Exception, match="inside forward"):
        arithmetic(exploding_net, images, "conv1")
    snap.assert_unchanged()
    assert hook_count(exploding_net) == 0


def test_facade_is_the_same_call(tiny_net, images):
    from cnn_explain import explain

    a = explain(tiny_net).arithmetic(images[:1], "conv2", 2, 1, 1)
    b = arithmetic(tiny_net, images[:1], "conv2", 2, 1, 1)
    assert a.computed == b.computed and torch.equal(a.products, b.products)
