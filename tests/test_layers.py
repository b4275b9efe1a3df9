"""layers.walk / receptive_field: checked against the support of autograd gradients and hand-worked values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain.hooks import capture, hook_count
from cnn_explain.layers import Box, receptive_field, walk
from cnn_explain.models import cifar10_cnn
from conftest import TinyFunctionalNet, TinyResNet, _seeded


class RFNet(nn.Module):
    """Strides, padding, pooling, dilation, a non-square kernel, F.relu and torch.cat in forward."""

    def __init__(self, pool: type = nn.AvgPool2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = pool(2)
        self.conv2 = nn.Conv2d(2, 2, 3, stride=2, padding=2, dilation=2)
        self.conv3 = nn.Conv2d(4, 2, (3, 1), padding=(1, 0))
        self.side = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        y = self.conv2(x)
        y = torch.cat([y, self.side(y)], dim=1)
        return self.conv3(y)


def _positive(model: nn.Module) -> nn.Module:
    """Positive weights and benign BatchNorm statistics: no gradient cancels to zero by chance."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return model.eval()


def _support_boxes(model: nn.Module, layer: str, shape) -> dict[tuple[int, int], tuple[int, int, int, int] | None]:
    """Bounding box of the nonzero input gradient of every output position (channels summed)."""
    x = (torch.rand(1, *shape, generator=torch.Generator().manual_seed(0)) + 0.1).requires_grad_(True)
    base, _, _ = layer.partition("#")
    boxes = {}
    with capture(model, base, grads=True) as rec:
        model(x)
        out = rec.live(layer)
        for h in range(out.shape[2]):
            for w in range(out.shape[3]):
                (g,) = torch.autograd.grad(out[0, :, h, w].sum(), x, retain_graph=True)
                rows, cols = torch.nonzero(g[0].abs().sum(0), as_tuple=True)
                boxes[h, w] = None if len(rows) == 0 else (  # None: the output sees only padding
                    rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item())
    return boxes


def _check_all_positions(model, layers, shape):
    """Every position of every listed layer: the box's in-image part equals the gradient's support.

    One walk gives every position's field; the public receptive_field is checked on the corners.
    """
    checked = set()
    for info in walk(model, shape):
        if info.name not in layers:
            continue
        checked.add(info.name)
        _, n_h, n_w = info.output_shape
        support = _support_boxes(model, info.name, shape)
        for h in range(n_h):
            for w in range(n_w):
                box = Box(*info.rf_field.box(h, w), info.name, h, w, shape, info.rf_field.support(h, w))
                if (h in (0, n_h - 1)) and (w in (0, n_w - 1)):
                    assert receptive_field(model, info.name, h, w, input_shape=shape) == box
                assert box.support == support[h, w], (info.name, h, w)
                if box.support is not None:
                    c = box.clipped()
                    assert (c.top, c.bottom, c.left, c.right) == support[h, w], (info.name, h, w)
    assert checked == set(layers)


def test_receptive_field_equals_gradient_support_strides_padding_dilation():
    torch.manual_seed(0)
    model = _positive(RFNet())
    _check_all_positions(model, {"conv1", "pool", "conv2", "side", "conv3"}, (1, 13, 11))


def test_receptive_field_equals_gradient_support_residual():
    model = _positive(_seeded(TinyResNet))
    layers = {"layer1.relu#1", "layer2.downsample.1", "layer2.bn1", "layer2.relu#1"}
    _check_all_positions(model, layers, (3, 9, 8))


def test_receptive_field_functional_relu_net():
    model = _seeded(TinyFunctionalNet)
    model.pool = nn.AvgPool2d(2)  # max-pool gradients reach only the argmax; same geometry (tested below)
    model = _positive(model)
    _check_all_positions(model, {"pool", "conv2"}, (3, 10, 9))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "zeros"])
def test_padding_modes(mode):
    """Conv2d(padding_mode=...) runs F.pad then an unpadded conv: same box as zero padding, exact support."""
    torch.manual_seed(0)
    model = _positive(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode=mode), nn.AvgPool2d(2),
                                    nn.ZeroPad2d((2, 0, 1, 3)), nn.Conv2d(2, 1, 3, padding=2, padding_mode=mode)))
    _check_all_positions(model, {"0", "3"}, (1, 9, 8))
    zero = walk(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)), (1, 9, 8))[0]
    assert walk(model, (1, 9, 8))[0].rf_field.box(0, 0) == zero.rf_field.box(0, 0) == (-1, 1, -1, 1)


def test_max_pool_has_the_geometry_of_avg_pool():
    shape = (1, 13, 11)
    a, b = walk(RFNet(nn.AvgPool2d), shape), walk(RFNet(nn.MaxPool2d), shape)
    assert [(i.rf, i.jump, i.start) for i in a] == [(i.rf, i.jump, i.start) for i in b]


def test_cifar10_receptive_fields_by_hand():
    """r_out = r_in + (k-1)·j_in, j_out = j_in·s: the classic recurrence for seed 000's network."""
    rows = [i for i in walk(cifar10_cnn()) if i.kind in ("Conv2d", "MaxPool2d")]
    assert [i.rf[0] for i in rows] == [3, 5, 6, 10, 14, 16, 24, 32, 36]
    assert [i.jump[0] for i in rows] == [1, 1, 2, 2, 2, 4, 4, 4, 8]
    box = receptive_field(cifar10_cnn(), "14", 1, 2)
    assert (box.top, box.bottom, box.left, box.right) == (-14 + 8, -14 + 8 + 35, -14 + 16, -14 + 16 + 35)
    assert (box.height, box.width) == (36, 36)


def test_residual_downsample_is_not_chained():
    """The 1×1 stride-2 shortcut joins the main path by +: rf 13, not 13 + something."""
    info = {i.name: i for i in walk(TinyResNet(), (3, 16, 16))}
    assert info["layer2.downsample.1"].rf == (7, 7)
    assert info["layer2.relu#1"].rf == (13, 13) and info["layer2.relu#1"].jump == (2, 2)


def test_global_layers_see_the_whole_input():
    box = receptive_field(TinyResNet(), "fc", 0, 0, input_shape=(3, 9, 7))
    assert (box.top, box.bottom, box.left, box.right) == (0, 8, 0, 6)
    gap = {i.name: i for i in walk(TinyResNet(), (3, 9, 7))}["gap"]
    assert gap.jump is None and gap.rf == (9, 7)


def test_adaptive_pool_windows():
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d((2, 3)))
    box = receptive_field(net, "1", 1, 2, input_shape=(1, 5, 7))  # rows 2..4, cols 4..6 (PyTorch's windows)
    assert (box.top, box.bottom, box.left, box.right) == (2, 4, 4, 6)


def test_walk_rows_shapes_macs_and_repeated_calls():
    info = walk(TinyResNet(), (3, 8, 6))
    names = [i.name for i in info]
    assert names.count("layer1.relu") == 1 and "layer1.relu#1" in names
    stem = info[0]
    assert stem.output_shape == (8, 8, 6) and stem.macs == 8 * 8 * 6 * 3 * 9
    fc = info[-1]
    assert fc.kind == "Linear" and fc.macs == 16 * 5 and fc.input_shape == (16,)
    grouped = walk(nn.Sequential(nn.Conv2d(4, 8, 3, groups=2)), (4, 5, 5))[0]
    assert grouped.macs == 8 * 3 * 3 * 2 * 9 and grouped.groups == 2


def test_model_left_unchanged(snapshot):
    model = TinyResNet().train()
    model.stem.weight.grad = torch.ones_like(model.stem.weight)
    snap = snapshot(model)
    rng = torch.get_rng_state()
    walk(model, (3, 8, 8))
    receptive_field(model, "layer2.conv2", 1, 1, input_shape=(3, 8, 8))
    snap.assert_unchanged()
    with pytest.raises(ValueError):
        walk(model, (5, 8, 8))  # wrong channel count: forward fails
    snap.assert_unchanged()
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch._C._len_torch_function_stack() == 0 and hook_count(model) == 0
    assert torch._C._len_torch_dispatch_stack() == 0  # the MAC counter is gone, with its global module hooks
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_forward_pre_hooks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layer="nope", h=0, w=0), "layer"),
        (dict(layer="conv1", h=13, w=0), r"h=13 .*0 <= h <= 12"),
        (dict(layer="conv1", h=0, w=11), r"w=11 .*0 <= w <= 10"),
        (dict(layer="conv1", h=-1, w=0), "h must be >= 0"),
        (dict(layer="conv1#1", h=0, w=0), "no call #1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        receptive_field(RFNet(), input_shape=(1, 13, 11), **kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="leave out the batch dimension"):
        walk(RFNet(), (1, 1, 13, 11))
    with pytest.raises(TypeError, match="input_shape"):
        walk(RFNet(), "1,13,11")
    with pytest.raises(TypeError, match="model"):
        walk("not a model", (1, 8, 8))


def test_box_helpers():
    b = Box(-2, 3, 5, 9, input_shape=(1, 8, 8))
    assert (b.height, b.width) == (6, 5)
    c = b.clipped()
    assert (c.top, c.bottom, c.left, c.right) == (0, 3, 5, 7)
