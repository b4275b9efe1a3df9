"""Incremental occlusion: equal to plain batched occlusion (float64) on every layer kind; fallback when it must."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain.attribution.occlude.windows import make_grid
from cnn_explain.attribution.occlude.incremental import IncrementalOcclusion, NodeState
from cnn_explain.attribution import occlusion


class Strided(nn.Module):
    """stride, padding, dilation, groups, 'same', max/avg pooling (padding, ceil_mode), BN, cat, F.relu."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3)
        self.bn = nn.BatchNorm2d(6)
        self.c = nn.Conv2d(3, 6, 5, padding="same")
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.d = nn.Conv2d(12, 8, (3, 2), stride=(1, 2))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.bn(self.b(self.a(x))))
        z = torch.sigmoid(self.pool(self.c(x)))
        u = self.avg(torch.cat([y, z], dim=1))
        u = F.avg_pool2d(F.max_pool2d(u, 2, 1, dilation=1), 2, 1, padding=1)
        return self.head(F.adaptive_avg_pool2d(F.leaky_relu(self.d(u)), 1).flatten(1))


class Residual(nn.Module):
    """Two residual additions (one in place), a reused inplace ReLU, a shape query."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        x = self.relu(self.stem(x))
        y = self.c1(x)
        y += x
        y = self.relu(y)
        y = y + self.c2(y) * 0.5
        y = F.adaptive_max_pool2d(y, 3)
        return self.fc(y.view(y.size(0), -1))


class SharedBeforeReLU(nn.Module):
    """A conv output read by a ReLU and by an addition (must not be rectified in place), and
    ReLUs of single-use inputs (may be): in the patch phase and in the full phase."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 2 * 2, 2)

    def forward(self, x):
        y = self.a(x)
        z = F.relu(y) + y
        w = self.relu(self.b(z))
        v = torch.relu(F.adaptive_avg_pool2d(w, 2))
        return self.fc(torch.flatten(v, 1))


class ControlFlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.mean() > 0:  # data-dependent: torch.fx cannot trace it
            y = -y
        return self.fc(y.mean((2, 3)))


class WithFFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.fft.fft2(self.conv(x)).abs()
        return self.fc(y.mean((2, 3)))


class InplaceOnView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        head = y[:, :2]  # a view of y, read after y changes in place
        y.relu_()
        return self.fc(y.mean((2, 3))) + head.mean()


class ReadAfterInplace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        z = self.relu(y)
        return self.fc((y + z).mean((2, 3)))  # y is read after relu changed it in place


def _seeded(cls):
    torch.manual_seed(0)
    m = cls()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 1.5)
    return m.double().eval()


def _both(model, x, **kw):
    inc = occlusion(model, x, progress=False, measure="logit", mode="incremental", **kw)
    plain = occlusion(model, x, progress=False, measure="logit", mode="batched", **kw)
    return inc, plain


@pytest.mark.slow
@pytest.mark.parametrize("cls", [Strided, Residual])
@pytest.mark.parametrize("window, stride", [(3, 2), ((4, 3), (3, 4)), (2, 5)])
def test_incremental_equals_plain(cls, window, stride):
    model = _seeded(cls)
    x = torch.rand(2, 3, 15, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inc, plain = _both(model, x, window=window, stride=stride, target=[0, 1])
    assert inc.engine == "incremental" and inc.fallback_reason is None
    assert plain.engine == "batched"
    torch.testing.assert_close(inc.drops, plain.drops, rtol=0, atol=1e-12)
    torch.testing.assert_close(inc.attribution, plain.attribution, rtol=0, atol=1e-12)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
def test_full_threshold_and_tiny_net(tiny_resnet, threshold):
    model = tiny_resnet.double()
    x = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = make_grid((10, 12), (3, 3), (2, 2))
    with torch.inference_mode():
        eng = IncrementalOcclusion(model, x, *g.positions(), full_threshold=threshold)
        idx = eng.sort(torch.arange(len(g)))
        base = torch.zeros(3, 10, 12, dtype=torch.float64)

        def make_input(pos, box):
            from cnn_explain.attribution.occlude.regions import read_windows
            from cnn_explain.attribution.occlude.windows import window_mask
            start = (box.top, box.left)
            return torch.where(window_mask(g, pos, box.top, box.left, box.size),
                               read_windows(base, None, None, start, box.size),
                               read_windows(x[0], None, None, start, box.size))

        out = eng.run(idx, make_input)
        (r0, r1), (c0, c1) = g.positions(idx)
        occ = x.repeat(len(idx), 1, 1, 1)
        for k in range(len(idx)):
            occ[k, :, r0[k]:r1[k] + 1, c0[k]:c1[k] + 1] = 0
        torch.testing.assert_close(out, model(occ), rtol=0, atol=1e-12)
    states = {p.state for p in eng.plan.values()}
    assert (NodeState.PATCH in states) and (threshold == 1.0 or NodeState.FULL in states)


def test_mac_count_of_one_conv():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).double()
    g = make_grid((8, 8), (2, 2), (2, 2))
    with torch.inference_mode():
        eng = IncrementalOcclusion(model.eval(), torch.rand(1, 2, 8, 8, dtype=torch.float64), *g.positions())
        macs = eng.macs()
    assert macs["full"] == 3 * 64 * 2 * 9 + 192 * 2
    # a 2x2 window changes a 4x4 block of the conv output, clipped to 3 rows/cols at the borders
    side = torch.tensor([3, 4, 4, 3], dtype=torch.float64)
    needed_conv = 3 * 2 * 9 * float((side[:, None] * side[None]).mean())
    assert macs["needed"] == pytest.approx(needed_conv + 192 * 2)


def test_read_after_inplace_is_recorded_and_exact():
    """fx refuses an in-place change read later; the real-tensor recording follows the tensor objects (y is z)."""
    model = _seeded(ReadAfterInplace)
    x = torch.rand(2, 3, 9, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r = occlusion(model, x, window=3, stride=2, target=1, progress=False, measure="logit", mode="incremental")
    plain = occlusion(model, x, window=3, stride=2, target=1, progress=False, measure="logit", mode="batched")
    assert r.engine == "incremental"
    torch.testing.assert_close(r.attribution, plain.attribution, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls, reason", [(ControlFlow, "data-dependent"), (WithFFT, "fft"),
                                        (InplaceOnView, "in place")])
def test_fallback_is_taken_and_reported_once(cls, reason, snapshot):
    model = _seeded(cls)
    snap = snapshot(model)
    x = torch.rand(2, 3, 9, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = occlusion(model, x, window=3, stride=2, target=1, progress=False, measure="logit")
    msgs = [str(w.message) for w in caught if "incremental" in str(w.message)]
    assert len(msgs) == 1 and reason in msgs[0]
    assert r.engine == "batched" and reason in r.fallback_reason
    plain = occlusion(model, x, window=3, stride=2, target=1, progress=False, measure="logit", mode="batched")
    torch.testing.assert_close(r.attribution, plain.attribution, rtol=0, atol=0)
    snap.assert_unchanged()


def test_incremental_leaves_no_trace(tiny_functional_net, snapshot):
    snap = snapshot(tiny_functional_net)
    r = occlusion(tiny_functional_net, torch.rand(1, 3, 9, 9), window=3, stride=2, mode="incremental",
                  progress=False)
    assert r.engine == "incremental"
    snap.assert_unchanged()


def test_approx_tau_changes_little(tiny_resnet):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    r = occlusion(tiny_resnet, x, window=4, stride=2, mode="approx", approx_tau=0.5, approx_drill=1.0,
                  approx_precision="float32", compare_exact=True, progress=False)
    assert r.engine == "incremental" and r.deviation["pearson"] > 0.9
    same = occlusion(tiny_resnet, x, window=4, stride=2, mode="approx", approx_tau=1.0, approx_drill=1.0,
                     approx_precision="float32", compare_exact=True, progress=False)
    assert same.deviation["rel_max_abs"] < 1e-5  # tau = 1 truncates nothing


def test_relu_in_place_only_where_nothing_else_reads():
    model = _seeded(SharedBeforeReLU)
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inc, plain = _both(model, x, window=3, stride=2, target=1)
    assert inc.engine == "incremental"
    torch.testing.assert_close(inc.drops, plain.drops, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- operator rules (from cnn_explain.ops)


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _head(*layers):
    """conv -> layers -> conv -> mean -> linear: the layers sit between two patch convolutions."""
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *layers, nn.Conv2d(4, 4, 3), _Fn(lambda x: x.mean((2, 3))),
                         nn.Linear(4, 3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in body.parameters():
            torch.nn.init.uniform_(p, -0.5, 0.5)
    return body.double().eval()


_EXACT = {
    "prelu": [nn.PReLU(4, 0.3)],
    "rrelu_eval": [nn.RReLU()],
    "rrelu_fn": [_Fn(lambda x: F.rrelu(x, training=False))],
    "dropout3d_eval": [nn.Dropout3d(0.5)],
    "dropout2d_fn": [_Fn(lambda x: F.dropout2d(x, 0.5, training=False))],
    "groupnorm": [nn.GroupNorm(2, 4)],
    "layernorm_chw": [nn.LayerNorm([4, 12, 10])],
    "instancenorm": [nn.InstanceNorm2d(4)],
    "zeropad": [nn.ZeroPad2d((1, 2, 0, 3))],
    "constantpad": [nn.ConstantPad2d((2, 0, 1, 1), 0.5)],
    "fpad": [_Fn(lambda x: F.pad(x, (0, 1, 2, 0), value=-1.0))],
    "silu_gelu_sigmoid": [nn.SiLU(), nn.GELU(), nn.Sigmoid()],
}


@pytest.mark.parametrize("name", sorted(_EXACT))
def test_rules_from_the_op_table_are_exact(name):
    """Each operation runs incrementally and equals plain inference (float64, 1e-12)."""
    model = _head(*_EXACT[name])
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inc, plain = _both(model, x, window=3, stride=2, target=1)
    assert inc.engine == "incremental", inc.fallback_reason
    scale = float(plain.attribution.abs().max())
    assert scale > 0 and float((inc.attribution - plain.attribution).abs().max()) <= 1e-12 * scale


@pytest.mark.parametrize("layer, kind", [(nn.GroupNorm(2, 4), "full"), (nn.LayerNorm([4, 12, 10]), "full"),
                                         (nn.BatchNorm2d(4), "patch"), (nn.PReLU(4), "patch")])
def test_norms_over_positions_are_not_elementwise(layer, kind):
    """LayerNorm / GroupNorm (category NORM) make the region the whole map; BatchNorm in eval keeps it."""
    model = _head(layer)
    g = make_grid((12, 10), (3, 3), (2, 2))
    with torch.inference_mode():
        eng = IncrementalOcclusion(model, torch.rand(1, 3, 12, 10, dtype=torch.float64), *g.positions())
    assert eng.plan[next(n for n in eng.nodes if n.target == "1")].state.value == kind


@pytest.mark.parametrize("layers, reason", [
    ([_Fn(lambda x: F.rrelu(x, training=True))], "training=True"),
    ([_Fn(lambda x: F.dropout(x, 0.5))], "training=True"),
    ([_Fn(lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"))], "reflect"),
    ([_Fn(lambda x: F.conv1d(x.flatten(2), torch.ones(4, 4, 3, dtype=x.dtype), padding=1).reshape(x.shape))],
     "conv1d"),
    ([nn.Unflatten(1, (4, 1)), nn.Conv3d(4, 4, 1).double(), nn.Flatten(1, 2)], "Conv3d"),
])
def test_operations_without_a_rule_fall_back_with_the_reason(layers, reason):
    model = _head(*layers)
    x = torch.rand(1, 3, 12, 10, dtype=torch.float64)
    with pytest.warns(UserWarning, match="not possible"):
        r = occlusion(model, x, window=3, stride=2, target=1, mode="incremental", progress=False)
    assert r.engine == "batched" and reason in r.fallback_reason
