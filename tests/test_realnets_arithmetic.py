"""The model's arithmetic on architectures written by others (tests/realnets.py look-alikes).

* summary rows add up: every parameter in exactly one row, MACs per row and in
  total equal to what ``torch.utils.flop_counter.FlopCounterMode`` counts;
* receptive fields equal the support of the input gradient (float64, positive
  random weights so nothing cancels), also through ConvNeXt's permutes;
* worked arithmetic uses the convolution that really ran (EfficientNet's static
  "same" padding, weight standardization) and refuses what it cannot explain.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnn_explain.features.arithmetic import arithmetic
from cnn_explain.hooks import capture
from cnn_explain.layers import receptive_field, row_names, trace
from cnn_explain.summary import summarize
from realnets import REAL_NETS, real_net


class DilatedNet(nn.Module):
    """Dilated, grouped and depthwise convolutions, a transposed one, and a functional conv in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(8, 8, 3, stride=2, dilation=(3, 1), groups=4)
        self.dw = nn.Conv2d(8, 8, 5, padding=4, dilation=2, groups=8, bias=False)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.extra = nn.Parameter(torch.randn(4, 4, 1, 1) * 0.1)  # used by F.conv2d in the model's forward
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.dw(F.relu(self.b(F.relu(self.a(x)))))
        x = F.conv2d(self.up(x), self.extra)
        return self.fc(x.mean((2, 3)))


NETS = [*REAL_NETS, "dilated"]


def _net(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    if name == "dilated":
        torch.manual_seed(0)
        return DilatedNet().eval(), (3, 17, 15)
    model, x = real_net(name)
    return model, tuple(x.shape[1:])


# --------------------------------------------------------------------------- summary
def _flop_counts(model: nn.Module, shape) -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return counter


@pytest.mark.parametrize("name", NETS)
def test_every_parameter_in_exactly_one_row(name):
    model, shape = _net(name)
    s = summarize(model, shape)
    assert sum(r.params for r in s.rows) == s.total_params == sum(p.numel() for p in model.parameters())
    owned = [id(p) for info in trace(model, shape).infos for p in info.owned]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())  # each once, none missing
    assert s.trainable_params == sum(r.trainable for r in s.rows)


@pytest.mark.parametrize("name", NETS)
def test_macs_equal_flop_counter(name):
    """Per row: the FLOPs FlopCounterMode counts inside the module, less those of rows inside it, / 2."""
    model, shape = _net(name)
    counter = _flop_counts(model, shape)
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    prefix = type(model).__name__
    fqn = {n: prefix + ("." + n if n else "") for n in row_names(model)}
    rows = summarize(model, shape).rows
    macs: dict[str, int] = {}
    for r in rows:
        base = r.name.partition("#")[0]
        macs[base] = macs.get(base, 0) + r.macs
    for name_, total in macs.items():
        inner = [n for n in macs if n != name_ and n.startswith(name_ + "." if name_ else "")]
        nearest = [n for n in inner if not any(m != n and n.startswith(m + ".") for m in inner)]
        expected = (flops.get(fqn[name_], 0) - sum(flops.get(fqn[n], 0) for n in nearest)) // 2
        assert total == expected, name_
    assert sum(r.macs for r in rows) <= summarize(model, shape).total_macs == counter.get_total_flops() // 2
    if name == "dilated":  # the model owns `extra`, so it has a row: the F.conv2d in its forward
        root = next(r for r in rows if r.name == "")
        assert root.params == 16 and root.macs == 4 * 4 * 12 * 14  # C_in·C_out·H·W
        assert sum(r.macs for r in rows) == counter.get_total_flops() // 2


def test_layer_scale_and_padding_owning_conv_rows():
    model, _ = real_net("convnext")
    by = {r.name: r for r in summarize(model, (3, 32, 32)).rows}
    assert by["stage1.0"].kind == "ConvNeXtBlock" and by["stage1.0"].params == 8 and by["stage1.0"].formula == "8 = 8"
    assert by["stage1.0.pwconv1"].shape == "8×8×32"  # channels-last (N, H, W, C) written H×W×C
    model, _ = real_net("efficientnet")
    by = {r.name: r for r in summarize(model, (3, 32, 32)).rows}
    stem = by["conv_stem"]
    assert stem.kind == "Conv2dStaticSamePadding" and stem.formula == "3×3×3×8 = 216"
    assert stem.macs == 16 * 16 * 8 * 3 * 9 and stem.output_shape == (8, 16, 16)
    assert by["blocks.1.depthwise"].macs == 8 * 8 * 32 * 25  # depthwise 5×5, stride 2


# --------------------------------------------------------------------------- receptive fields
def _prepared(model: nn.Module) -> nn.Module:
    """float64 copy, positive random weights scaled by the fan-in, identity BatchNorm statistics, max pools as average pools
    of the same geometry (a max pool's gradient reaches only the winner)."""
    model = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1  # activations stay O(1): no saturated sigmoid
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) + 0.05) / fan_in)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    for parent in list(model.modules()):
        for key, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, key, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    return model


def _positions(n_h: int, n_w: int) -> set[tuple[int, int]]:
    return {(h, w) for h in {0, n_h // 2, n_h - 1} for w in {0, n_w // 3, n_w - 1}}


def _support(out: torch.Tensor, x: torch.Tensor, dims, h: int, w: int, weights: torch.Tensor):
    """Bounding box of the nonzero input gradient of a random positive mix of the values at (h, w)."""
    if dims is None:
        score = (out * weights[: out[0].numel()].view_as(out[0])).sum()
    else:
        idx = [slice(None)] * out.dim()
        idx[0], idx[dims[0]], idx[dims[1]] = 0, h, w
        v = out[tuple(idx)]
        score = (v * weights[: v.numel()].view_as(v)).sum()
    (g,) = torch.autograd.grad(score, x, retain_graph=True)
    rows, cols = torch.nonzero(g[0].abs().sum(0), as_tuple=True)
    if len(rows) == 0:
        return None
    return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()


def _check_fields(model: nn.Module, shape) -> int:
    walked = trace(model, shape)
    x = (torch.rand(1, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1)
    x.requires_grad_(True)
    weights = torch.rand(1 << 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.5
    names = sorted({i.module_name for i in walked.infos if i.rf_field is not None})
    checked = 0
    with capture(model, names, grads=True) as rec:
        model(x)
        for info in walked.infos:
            fld = info.rf_field
            if fld is None:
                continue
            out = rec.live(info.name)
            for h, w in _positions(*fld.size):
                support = _support(out, x, fld.dims, h, w, weights)
                mine = fld.support(h, w)
                if fld.reason is None:
                    assert mine == support, (info.name, h, w, fld.dims)
                else:  # conservative: contains the true support
                    assert support is None or (mine[0] <= support[0] and support[1] <= mine[1]
                                               and mine[2] <= support[2] and support[3] <= mine[3])
                checked += 1
    return checked


@pytest.mark.parametrize("name", NETS)
def test_receptive_fields_equal_gradient_support(name):
    model, shape = _net(name)
    assert _check_fields(_prepared(model), shape) > 20


def test_convnext_is_exact_through_permutes_without_input_shape():
    model, _ = real_net("convnext")
    walked = trace(model, (3, 32, 32))
    assert walked.reasons == ()
    dims = {i.name: i.rf_field.dims for i in walked.infos}
    assert dims["stage1.0.norm"] == dims["stage1.0.pwconv2"] == (1, 2) and dims["stage1.0"] == (2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        box = receptive_field(model, "stage1.0.pwconv2", 3, 5)  # (3, 32, 32) from the stem's in_channels
    # stem 4×4 s4 then the depthwise 7×7 (padding 3) at jump 4: rows 4·(3−3) .. 4·(3+3)+3
    assert (box.top, box.bottom, box.left, box.right) == (0, 27, 8, 35) and box.exact and box.reason is None
    assert box.input_shape == (3, 32, 32)


class Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.head(F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest"))


def test_conservative_box_is_flagged_with_a_reason_and_a_warning():
    model = Upsampling()
    with pytest.warns(UserWarning, match="conservative.*interpolate"):
        box = receptive_field(model, "head", 2, 3, input_shape=(1, 6, 7))
    assert not box.exact and "interpolate" in box.reason
    assert (box.top, box.bottom, box.left, box.right) == (0, 5, 0, 6)  # the whole input: contains the truth
    assert _check_fields(_prepared(model), (1, 6, 7)) > 0


def test_receptive_field_needs_a_conv_for_its_default_shape():
    with pytest.raises(ValueError, match="input_shape"):
        receptive_field(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "1", 0, 0)


# --------------------------------------------------------------------------- worked arithmetic
def _every_position(model, x, layer, channels):
    out_shape = None
    for c in channels:
        a = arithmetic(model, x, layer, c, 0, 0)
        out_shape = a.output_shape
        for h in range(out_shape[1]):
            for w in range(out_shape[2]):
                a = arithmetic(model, x, layer, c, h, w)
                assert a.computed == pytest.approx(a.actual, abs=1e-5), (layer, c, h, w)
                yield a


def test_static_same_padding_conv_stride_2_asymmetric():
    model, x = real_net("efficientnet")
    stem = model.conv_stem
    assert stem.static_padding.padding == (0, 1, 0, 1)  # TensorFlow "same": the extra row/column at the end
    results = list(_every_position(model, x, "conv_stem", [0, 5]))
    corner = next(a for a in results if a.position == (15, 15))
    assert corner.rows == (30, 31, 32) and corner.cols == (30, 31, 32)  # row/col 32 is the static padding
    assert torch.equal(corner.input_slice[:, 2, :], torch.zeros(3, 3, dtype=torch.float64))
    first = next(a for a in results if a.position == (0, 0))
    assert first.rows == (0, 1, 2) and torch.equal(first.input_slice, x[0, :, :3, :3].double())
    assert torch.equal(first.kernel, stem.weight[first.channel].detach().double()) and first.bias is None
    with torch.no_grad():
        by_hand = F.conv2d(F.pad(x[:1], (0, 1, 0, 1)), stem.weight, stride=2)[0, first.channel, 0, 0]
    assert first.actual == pytest.approx(float(by_hand), abs=1e-6)


def test_static_same_padding_depthwise_and_convnext_depthwise():
    model, x = real_net("efficientnet")
    list(_every_position(model, x, "blocks.1.depthwise", [3]))  # depthwise 5×5, stride 2, padding (1, 2)
    a = arithmetic(model, x, "blocks.1.depthwise", 7, 7, 7)
    assert a.input_channels == (7,) and a.rows == (13, 14, 15, 16, 17)
    model, x = real_net("convnext")
    a = arithmetic(model, x, "stage1.0.dwconv", 2, 0, 4)
    assert a.input_channels == (2,) and a.rows == tuple(range(-3, 4)) and a.difference < 1e-5


class WSConv2d(nn.Conv2d):
    """Weight standardization: each filter is standardized before the convolution."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class AddAfter(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) + 0.5


def test_weight_standardized_conv_uses_the_standardized_weight():
    torch.manual_seed(0)
    model = nn.Sequential(WSConv2d(3, 4, 3, padding=1, dilation=2, stride=2), nn.ReLU()).eval()
    x = torch.randn(1, 3, 9, 8)
    results = list(_every_position(model, x, "0", range(4)))
    w = model[0].weight.detach().double()
    standard = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
    for a in results[::7]:
        assert torch.allclose(a.kernel, standard[a.channel], atol=1e-6)
        assert not torch.allclose(a.kernel, w[a.channel], atol=1e-2)
    assert results[0].activation is not None and results[0].activation.name == "ReLU"


def test_a_conv_that_does_more_raises_with_the_reason():
    torch.manual_seed(0)
    model = nn.Sequential(AddAfter(3, 4, 3, padding=1)).eval()
    with pytest.raises(ValueError, match="does more than the convolution"):
        arithmetic(model, torch.randn(1, 3, 6, 6), "0", 1, 2, 2)


def test_dilated_grouped_conv_and_functional_neighbours():
    model, shape = _net("dilated")
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(4))
    for layer in ("a", "b", "dw"):
        list(_every_position(model, x, layer, [1]))
    a = arithmetic(model, x, "b", 5, 1, 2)
    assert a.input_channels == (4, 5) and a.rows == (2, 5, 8) and a.cols == (4, 5, 6)


class LayoutNet(nn.Module):
    """Layout ops the rules follow exactly: grouped reshape and back, transpose, strided slicing,
    softmax over the columns, GroupNorm, a split along channels, a stack (Identity rows mark the steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.sliced, self.mixed = nn.Identity(), nn.Identity()
        self.last = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        y = x.reshape(n, 2, c // 2, h, w).sum(2)          # grid kept: (N, 2, H, W)
        y = y.transpose(1, 3).sigmoid().transpose(1, 3)  # channels moved to the end and back
        y = self.sliced(y[:, :, 1:, ::2])                # rows from 1, every other column
        z = torch.softmax(y, dim=-1)                     # mixes the columns of a row only
        a, b = z.split(1, dim=1)
        z = self.mixed(torch.stack([a[:, 0], b[:, 0]], dim=1))
        return self.last(torch.cat([z, x[:, :2, 1:, ::2]], 1)) + self.gn(x).mean()


def test_layout_ops_are_exact():
    torch.manual_seed(0)
    model = LayoutNet().eval()
    walked = trace(model, (2, 9, 10))
    assert walked.reasons == ()
    assert _check_fields(_prepared(model), (2, 9, 10)) > 0
    box = receptive_field(model, "sliced", 2, 1, input_shape=(2, 9, 10))
    assert box.exact and (box.top, box.bottom, box.left, box.right) == (2, 4, 1, 3)  # row 3, column 2, conv 3×3
    box = receptive_field(model, "mixed", 2, 1, input_shape=(2, 9, 10))
    assert box.exact and (box.top, box.bottom, box.left, box.right) == (2, 4, 0, 9)  # the whole row band (cut to the image)
    box = receptive_field(model, "gn", 0, 0, input_shape=(2, 9, 10))
    assert box.exact and (box.top, box.bottom, box.left, box.right) == (0, 8, 0, 9)  # GroupNorm: all of it


class Tokens(nn.Module):
    """A map flattened to tokens, a Linear per token, and reshaped back: the grid is rebuilt by position
    arithmetic the rules do not follow, so the fields after it are conservative and say so."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.token = nn.Linear(4, 4)
        self.head = nn.Conv2d(4, 1, 1)
        self.se = nn.Linear(4, 4)

    def forward(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        gate = torch.sigmoid(self.se(x.mean((2, 3)))).view(n, c, 1, 1)  # a 1×1 grid from a vector: exact
        x = x * gate
        t = self.token(x.flatten(2).transpose(1, 2))
        return self.head(t.transpose(1, 2).reshape(n, c, h, w))


def test_tokens_reshaped_back_to_a_map_are_flagged():
    model = Tokens().eval()
    walked = trace(model, (1, 6, 5))
    fields = {i.name: i.rf_field for i in walked.infos}
    assert fields["conv"].reason is None and fields["se"].reason is None
    assert "grid" in fields["head"].reason and walked.reasons == (fields["head"].reason,)
    assert _check_fields(_prepared(model), (1, 6, 5)) > 0
