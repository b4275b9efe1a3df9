"""integrated_gradients(): equal to captum's IntegratedGradients (every method, batches, per-image
targets, number / tensor / blur baselines); exact IG's completeness to 1e-10 in float64 on a conv
net with max-pool, BatchNorm, residual add and F.relu, its agreement with a 1e5-step float64
Riemann sum, captum converging to it, its refusal of GELU / sigmoid nets; batch and chunk
independence; the model left as found."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain.attribution.integrated_gradients import IGMethod, blur_baseline, integrated_gradients

captum_attr = pytest.importorskip("captum.attr")
TARGETS = [0, 3, 4]


def close(a, b, rel=1e-6):
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.abs().max()))


@pytest.fixture
def net64(tiny_resnet):
    return tiny_resnet.double()


@pytest.fixture
def x64(images):
    return images.double()


class ResPoolNet(nn.Module):
    """conv-BN-F.relu, max-pool, a residual block with an add, avg-pool, concat, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.c2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(12 * 6, 4)

    def forward(self, x):
        y = self.pool(F.relu(self.bn1(self.c1(x))))
        y = torch.relu(self.bn2(self.c2(y)) + y)
        z = torch.cat([F.avg_pool2d(y, 2), F.max_pool2d(y, 2)], 1)
        return self.fc(torch.flatten(z, 1))


@pytest.fixture
def respool():
    torch.manual_seed(0)
    net = ResPoolNet()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return net.double().eval()


@pytest.mark.parametrize("method", [m.value for m in IGMethod])
def test_equals_captum_every_method(net64, x64, method):
    ref = captum_attr.IntegratedGradients(net64).attribute(x64, target=TARGETS, n_steps=16, method=method)
    r = integrated_gradients(net64, x64, target=TARGETS, steps=16, method=method, progress=False)
    close(r.attribution, ref)
    assert r.method == "integrated_gradients" and r.target.tolist() == TARGETS and r.pieces is None


@pytest.mark.parametrize("kind", ["number", "tensor", "blur"])
def test_equals_captum_baselines(net64, x64, kind):
    base = {"number": 0.3, "tensor": torch.rand(1, *x64.shape[1:], dtype=torch.float64),
            "blur": blur_baseline(x64)}[kind]
    ref, delta = captum_attr.IntegratedGradients(net64).attribute(
        x64, baselines=base, target=TARGETS, n_steps=20, return_convergence_delta=True)
    r = integrated_gradients(net64, x64, target=TARGETS, steps=20, baseline="blur" if kind == "blur" else base,
                             progress=False)
    close(r.attribution, ref)
    torch.testing.assert_close(r.convergence_delta, delta.abs(), rtol=1e-6, atol=1e-9)


def test_chunks_and_batch_size_do_not_change_the_result(net64, x64):
    a = integrated_gradients(net64, x64, target=TARGETS, steps=10, internal_batch_size=2, progress=False)
    b = integrated_gradients(net64, x64, target=TARGETS, steps=10, internal_batch_size=7, progress=False)
    c = integrated_gradients(net64, x64, target=TARGETS, steps=10, memory_budget=10**9, progress=False)
    one = integrated_gradients(net64, x64[2:], target=TARGETS[2], steps=10, progress=False)
    for r in (b, c):
        torch.testing.assert_close(r.attribution, a.attribution, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(one.attribution[0], a.attribution[2], rtol=1e-12, atol=1e-14)


def test_exact_completeness_and_riemann_agreement(respool, x64, snapshot):
    snap = snapshot(respool)
    r = integrated_gradients(respool, x64, target=[0, 1, 3], exact=True, progress=False)
    snap.assert_unchanged()
    assert r.method == "exact_integrated_gradients"
    assert (r.convergence_delta < 1e-10).all(), r.convergence_delta
    assert (r.pieces > 10).all()  # the path crosses many linear regions
    # the gradient jumps at each breakpoint, so a midpoint Riemann sum with step h errs by O(h):
    # about 1e-5 of the map's max at h = 1e-5, and ten times less than at h = 1e-4
    err = []
    for n in (10_000, 100_000):
        ref = integrated_gradients(respool, x64[:1], target=0, steps=n, method="riemann_middle",
                                   internal_batch_size=25_000, progress=False)
        err.append(float((ref.attribution - r.attribution[:1]).abs().max() / r.attribution[:1].abs().max()))
    assert err[1] < 5e-5 and err[1] < err[0] / 4, err


def test_exact_on_resnet_with_inplace_relu_and_captum_converges(net64, x64):
    r = integrated_gradients(net64, x64[:1], target=0, exact=True, progress=False)
    assert float(r.convergence_delta[0]) < 1e-10
    errors = []
    for n in (16, 64, 256):
        ref = captum_attr.IntegratedGradients(net64).attribute(x64[:1], target=0, n_steps=n, method="riemann_middle")
        errors.append(float((ref - r.attribution).abs().max()))
    assert errors[0] > errors[1] > errors[2]


def test_exact_is_batch_independent(respool, x64):
    a = integrated_gradients(respool, x64, target=TARGETS[:1] * 3, exact=True, internal_batch_size=5, progress=False)
    b = integrated_gradients(respool, x64[1:2], target=0, exact=True, progress=False)
    torch.testing.assert_close(b.attribution[0], a.attribution[1], rtol=1e-9, atol=1e-12)
    assert int(b.pieces[0]) == int(a.pieces[1])


@pytest.mark.parametrize("act,name", [(nn.GELU(), "GELU"), (nn.Sigmoid(), "Sigmoid"), (nn.SiLU(), "SiLU")])
def test_exact_refuses_other_nonlinearities(act, name):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).double().eval()
    with pytest.raises(ValueError, match=f"'1' is {name}"):
        integrated_gradients(net, torch.rand(1, 3, 10, 10, dtype=torch.float64), exact=True, progress=False)


def test_exact_refuses_an_active_torch_function_mode():
    """A mode may change what each operation computes (here: rounding every conv input), which the linear pieces
    cannot know; the quadrature calls the model and honours it."""

    class Rounding(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.conv2d:
                args = ((args[0] * 8).round() / 8, *args[1:])
            return func(*args, **(kwargs or {}))

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).double().eval()
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with Rounding():
        with pytest.raises(ValueError, match="a Rounding is active around the call"):
            integrated_gradients(net, x, target=0, exact=True, progress=False)
        integrated_gradients(net, x, target=0, steps=8, progress=False)  # the quadrature runs
    with torch.device("cpu"):
        assert integrated_gradients(net, x, target=0, exact=True, progress=False).pieces[0] >= 1


def test_exact_refuses_functional_gelu():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return F.gelu(self.conv(x)).flatten(1)

    with pytest.raises(ValueError, match="gelu"):
        integrated_gradients(Net().eval(), torch.rand(1, 3, 5, 5), target=0, exact=True, progress=False)


def test_model_left_as_found_and_errors(tiny_net, images, snapshot):
    tiny_net.train()
    snap = snapshot(tiny_net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integrated_gradients(tiny_net, images, steps=4, progress=False)
    snap.assert_unchanged()
    with pytest.raises(ValueError, match="method must be one of"):
        integrated_gradients(tiny_net, images, method="simpson")
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(tiny_net, images, baseline="noise")
    with pytest.raises(ValueError, match="does not broadcast"):
        integrated_gradients(tiny_net, images, baseline=torch.zeros(2, 5, 5))
    with pytest.raises(TypeError, match="exact"):
        integrated_gradients(tiny_net, images, exact=1)
