"""Exact occlusion on look-alikes of real CNNs: equal to captum whichever engine ran, and the engine says why."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from realnets import REAL_NETS, real_net
from torch import nn

from cnn_explain.attribution import occlusion
from cnn_explain.attribution.occlude.graph import Unsupported
from cnn_explain.attribution.occlude.incremental import IncrementalOcclusion
from cnn_explain.attribution.occlude.record import record
from cnn_explain.attribution.occlude.windows import make_grid
from cnn_explain.hooks import select_output


def _captum(model, x, target, window, stride, monkeypatch):
    """captum's map, all in float64: its last step casts the summed drops with ``.float()`` before dividing
    by the window counts, which is switched off for float64 tensors here (else no comparison beats ~1e-7)."""
    def probs(z):
        return torch.softmax(select_output(model(z)), 1)

    cast = torch.Tensor.float
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "float", lambda t, *a, **k: t if t.dtype == torch.float64 else cast(t, *a, **k))
        out = Occlusion(probs).attribute(x, sliding_window_shapes=(x.shape[1], *window), strides=(1, *stride),
                                         target=target, baselines=0.0, perturbations_per_eval=7)
    assert out.dtype == torch.float64
    return out


@pytest.mark.parametrize("name", sorted(REAL_NETS))
def test_exact_equals_captum_float64(name, monkeypatch):
    model, x = real_net(name)
    model, x = model.double(), x.double()
    window, stride = (5, 4), (3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = occlusion(model, x, target=[1, 3], window=window, stride=stride, progress=False)
    expected = _captum(model, x, torch.tensor([1, 3]), window, stride, monkeypatch)
    scale = float(expected.abs().max())
    assert scale > 0
    assert float((r.attribution - expected).abs().max()) <= 1e-9 * scale, (name, r.engine)
    assert r.engine in ("incremental", "batched")
    assert (r.fallback_reason is None) == (r.engine == "incremental")


@pytest.mark.parametrize("name", sorted(REAL_NETS))
def test_winograd_changes_equal_captum_float64(name, monkeypatch):
    """Every qualifying convolution (the channel floor lowered to 1 for these small nets) runs by Winograd
    F(4×4, 3×3) inside incremental inference: dense concatenation, in-place residual additions, 'same'
    padding done by the module's own forward (left to that forward) — the map stays captum's to 1e-9."""
    from cnn_explain.attribution.occlude import winograd

    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    model, x = real_net(name)
    model, x = model.double(), x.double()
    window, stride = (5, 4), (3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = occlusion(model, x, target=[1, 3], window=window, stride=stride, progress=False, winograd=True,
                      mode="incremental")
    expected = _captum(model, x, torch.tensor([1, 3]), window, stride, monkeypatch)
    assert float((r.attribution - expected).abs().max()) <= 1e-9 * float(expected.abs().max()), (name, r.engine)
    if name in ("densenet", "resnet_tv"):
        assert r.engine == "incremental" and len(r.extra["winograd_layers"]) >= 4, r.extra


def test_engines_and_reasons():
    """Which engine can run on each look-alike, and what mode="exact" chose and why."""
    for name in REAL_NETS:
        model, x = real_net(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forced = occlusion(model, x[:1], window=4, stride=2, mode="incremental", progress=False)
            chosen = occlusion(model, x[:1], window=4, stride=2, progress=False)
        if name == "convnext":  # permute + channels-last LayerNorm: no region rule
            assert forced.engine == "batched" and "permute" in forced.fallback_reason
            assert chosen.engine_reason == chosen.fallback_reason == forced.fallback_reason
            continue
        assert (forced.engine, forced.fallback_reason) == ("incremental", None), name
        assert chosen.engine_reason.startswith("cost model: incremental"), name
        assert (chosen.fallback_reason is None) == (chosen.engine == "incremental")
        if chosen.engine == "batched":
            assert chosen.fallback_reason == chosen.engine_reason


def test_control_flow_net_is_recorded():
    model, x = real_net("control_flow")
    grid = make_grid((32, 32), (4, 4), (2, 2))
    with torch.inference_mode():
        net = IncrementalOcclusion(model, x[:1], *grid.positions())
    assert net.how == "recorded"
    states = {n.target: p.state.value for n, p in net.plan.items() if n.op == "call_function"}
    assert states[torch.narrow] == "patch"  # the channel split keeps the changed region


def test_swish_autograd_function_is_recorded_as_its_ops():
    """EfficientNet's Swish (a custom autograd.Function) is recorded as the sigmoid and product it computes."""
    model, x = real_net("efficientnet")
    graph = record(model, x[:1]).graph
    names = {getattr(n.target, "__name__", "") for n in graph.nodes if n.op == "call_function"}
    assert {"sigmoid", "mul", "pad", "conv2d"} <= names
    assert not any("apply" in name for name in names)


class _Gate(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(F.adaptive_avg_pool2d(x, 1))


class _Opaque(nn.Module):
    def forward(self, x):
        if float(x.sum()) > 0:  # a tensor value in Python control flow
            return x * 2
        return x


@pytest.mark.parametrize("model, reason", [
    (_Opaque(), "data-dependent"),
])
def test_record_refuses(model, reason):
    with pytest.raises(Unsupported, match=reason):
        record(model, torch.rand(1, 3, 8, 8))


def test_tensor_made_outside_torch_functions_is_refused():
    class Numpy(nn.Module):
        def forward(self, x):
            return x + torch.from_numpy(x.numpy() * 0)

    with pytest.raises(Unsupported, match="outside torch functions|data-dependent"):
        record(Numpy(), torch.rand(1, 3, 8, 8))


def test_se_gate_makes_the_rest_full_and_is_exact():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), _Gate(), nn.Conv2d(4, 4, 3), nn.GELU(),
                          nn.Flatten(), nn.LazyLinear(3)).double().eval()
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    model(x)
    r = occlusion(model, x, window=3, stride=2, progress=False)
    b = occlusion(model, x, window=3, stride=2, progress=False, mode="batched")
    assert float((r.attribution - b.attribution).abs().max()) <= 1e-12 * float(b.attribution.abs().max())


class _OpaqueSwish(torch.autograd.Function):
    """A custom autograd.Function whose forward leaves torch (as a compiled kernel would): not provably pointwise."""

    @staticmethod
    def forward(ctx, x):
        return torch.from_numpy(x.numpy() / (1 + __import__("numpy").exp(-x.numpy())))

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover
        raise NotImplementedError


class _OpaqueNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(_OpaqueSwish.apply(self.conv(x)).mean((2, 3)))


def test_custom_function_leaving_torch_falls_back_with_the_reason():
    model = _OpaqueNet().double().eval()
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    with pytest.warns(UserWarning, match="not possible"):
        r = occlusion(model, x, window=3, stride=2, target=0, mode="incremental", progress=False)
    plain = occlusion(model, x, window=3, stride=2, target=0, mode="batched", progress=False)
    assert r.engine == "batched" and "recorded on real tensors" in r.fallback_reason
    assert "Python values" in r.fallback_reason
    torch.testing.assert_close(r.attribution, plain.attribution, rtol=0, atol=0)
