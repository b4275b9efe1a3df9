"""Occlusion: a hand-worked map, equality with captum.attr.Occlusion, baselines, batching, bad input, model state."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from conftest import Boom
from torch import nn

from cnn_explain import explain
from cnn_explain.attribution import occlusion
from cnn_explain.attribution.occlude.windows import resolve_baseline


class SumNet(nn.Module):
    """conv 1->1, 3x3 all-ones kernel, padding 1, no bias; score = sum of the output map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x):
        return self.conv(x).sum(dim=(2, 3))


def _by_hand(img: torch.Tensor, win: int, stride: int) -> torch.Tensor:
    """Score = Σ_p x[p]·cnt(p), cnt(p) = output positions whose 3x3 kernel covers p; drop of a window =
    Σ_{p in window} x[p]·cnt(p); each pixel averages the drops of the (truncated) windows covering it."""
    h, w = img.shape
    cnt = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            cnt[i, j] = (min(i + 1, h - 1) - max(i - 1, 0) + 1) * (min(j + 1, w - 1) - max(j - 1, 0) + 1)
    contrib = img.double() * cnt
    total = torch.zeros(h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    r = 0
    while True:
        c = 0
        while True:
            drop = contrib[r:r + win, c:c + win].sum()
            total[r:r + win, c:c + win] += drop
            count[r:r + win, c:c + win] += 1
            if c + win >= w:
                break
            c += stride
        if r + win >= h:
            break
        r += stride
    return total / count


@pytest.mark.parametrize("shape, win, stride", [((5, 7), 3, 2), ((6, 6), 3, 2), ((7, 5), 4, 3)])
@pytest.mark.parametrize("mode", ["exact", "batched"])
def test_hand_worked_sum_net(shape, win, stride, mode):
    img = (torch.arange(shape[0] * shape[1], dtype=torch.float64).reshape(shape) % 7) - 2.0
    net = SumNet().double()
    r = occlusion(net, img[None, None], target=0, window=win, stride=stride, measure="logit", mode=mode,
                  progress=False)
    expected = _by_hand(img, win, stride)
    torch.testing.assert_close(r.attribution[0, 0].double(), expected, rtol=1e-10, atol=1e-10)
    assert r.method == "occlusion" and r.target.tolist() == [0]


def _captum(model, x, target, measure, window, stride, baselines=0.0, ppe=4):
    f = (lambda z: torch.softmax(model(z), 1)) if measure == "prob" else model
    return Occlusion(f).attribute(x, sliding_window_shapes=(x.shape[1], *window), strides=(1, *stride),
                                  target=target, baselines=baselines, perturbations_per_eval=ppe)


@pytest.mark.parametrize("net", ["tiny_net", "tiny_functional_net", "tiny_resnet"])
@pytest.mark.parametrize("measure", ["prob", "logit"])
def test_equals_captum_float64(net, measure, request):
    model = request.getfixturevalue(net).double()
    x = torch.rand(2, 3, 13, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = _captum(model, x, [1, 3], measure, (4, 3), (3, 2))
    for mode in ("exact", "batched"):
        r = occlusion(model, x, target=[1, 3], window=(4, 3), stride=(3, 2), measure=measure, mode=mode,
                      progress=False)
        scale = expected.abs().max()  # captum divides in float32: its map is float32
        assert float((r.attribution.double() - expected.double()).abs().max()) <= 1e-6 * float(scale)
    assert r.attribution.dtype == torch.float64


def test_equals_captum_float32_default_target(tiny_resnet):
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(3))
    r = occlusion(tiny_resnet, x, window=3, stride=2, mode="incremental", progress=False)
    assert r.engine == "incremental"
    expected = _captum(tiny_resnet, x, r.target, "prob", (3, 3), (2, 2))
    assert torch.equal(r.target, tiny_resnet(x).argmax(1))
    # float32 rounding differs between batch sizes of the model itself; ~1e-5 of the max is that noise
    assert float((r.attribution - expected).abs().max()) <= 1e-4 * float(expected.abs().max())


@pytest.mark.parametrize("baseline", [0.5, "mean", "blur", "tensor"])
def test_baselines_equal_captum(tiny_net, baseline):
    model = tiny_net.double()
    x = torch.rand(1, 3, 10, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if baseline == "tensor":
        baseline = torch.linspace(0, 1, 9, dtype=torch.float64)  # broadcast along the last axis
    full = resolve_baseline(baseline, x, (3, 3))
    expected = _captum(model, x, 2, "logit", (3, 3), (2, 2), baselines=full)
    r = occlusion(model, x, target=2, window=3, stride=2, baseline=baseline, measure="logit", progress=False)
    torch.testing.assert_close(r.attribution.double(), expected.double(), rtol=0,
                               atol=1e-6 * float(expected.abs().max()))
    if isinstance(baseline, str) and baseline == "mean":
        torch.testing.assert_close(full[0, :, 0, 0], x[0].mean((1, 2)))


def test_blur_baseline_is_smooth_copy():
    x = torch.zeros(1, 1, 25, 25)
    x[0, 0, 12, 12] = 1.0
    b = resolve_baseline("blur", x, (8, 8))  # sigma 2: the impulse becomes a normalized Gaussian
    assert abs(float(b.sum()) - 1.0) < 1e-5 and float(b.max()) < 0.05 and float(b[0, 0, 12, 12]) == float(b.max())
    const = torch.full((1, 2, 6, 7), 0.3)
    torch.testing.assert_close(resolve_baseline("blur", const, (4, 4)), const)


@pytest.mark.parametrize("mode", ["exact", "batched"])
def test_same_for_any_batch_size(tiny_resnet, mode):
    model = tiny_resnet.double()
    x = torch.rand(2, 3, 8, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    maps = [occlusion(model, x, target=[0, 4], window=3, stride=2, batch_size=b, mode=mode, progress=False)
            for b in (1, 7, None)]
    for r in maps[1:]:
        torch.testing.assert_close(r.attribution, maps[0].attribution, rtol=0, atol=1e-12)
    assert maps[0].batch_size == 1 and maps[1].batch_size == 7


def test_memory_budget_sets_batch_size(tiny_net):
    x = torch.rand(1, 3, 12, 12)
    small = occlusion(tiny_net, x, window=4, stride=2, memory_budget=1, progress=False)
    big = occlusion(tiny_net, x, window=4, stride=2, progress=False)
    assert small.batch_size == 1 and big.batch_size == 25
    torch.testing.assert_close(small.attribution, big.attribution, rtol=0, atol=1e-6)


def test_stride_larger_than_window(tiny_net):
    model = tiny_net.double()
    x = torch.rand(1, 3, 12, 11, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    r = occlusion(model, x, target=1, window=2, stride=5, progress=False)
    b = occlusion(model, x, target=1, window=2, stride=5, mode="batched", progress=False)
    torch.testing.assert_close(r.attribution, b.attribution, rtol=0, atol=1e-12)
    assert r.drops.shape == (1, 3, 3)
    assert torch.all(r.attribution[0, :, 2:5] == 0)  # rows 2..4 are covered by no window


def test_explainer_facade_same_result(tiny_net, images):
    a = explain(tiny_net).occlusion(images, target=2, window=3, stride=3, progress=False)
    b = occlusion(tiny_net, images, target=2, window=3, stride=3, progress=False)
    assert torch.equal(a.attribution, b.attribution)


def test_single_image_chw_accepted(tiny_net, images):
    r = occlusion(tiny_net, images[0], window=3, stride=3, progress=False)
    assert r.attribution.shape == (1, 3, 12, 10)


@pytest.mark.parametrize("kwargs, err, word", [
    (dict(window=13), ValueError, "window"),
    (dict(window=(3, 11)), ValueError, "window"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=-2), ValueError, "stride"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(window=(3, 3, 3)), ValueError, "window"),
    (dict(target=5), ValueError, "target"),
    (dict(target=[1, 2]), ValueError, "target"),
    (dict(target="cat"), TypeError, "target"),
    (dict(measure="softmax"), ValueError, "measure"),
    (dict(mode="fast"), ValueError, "mode"),
    (dict(baseline="zeros"), ValueError, "baseline"),
    (dict(baseline=[0.0]), TypeError, "baseline"),
    (dict(baseline=torch.zeros(2, 3, 3)), ValueError, "baseline"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(approx_tau=2.0, mode="approx"), ValueError, "approx_tau"),
])
def test_bad_input(tiny_net, images, kwargs, err, word):
    with pytest.raises(err, match=word):
        occlusion(tiny_net, images, progress=False, **kwargs)


def test_bad_model_and_channels(tiny_net):
    with pytest.raises(TypeError, match="model"):
        occlusion(lambda z: z, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        occlusion(tiny_net, torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("mode", ["exact", "batched", "approx"])
def test_model_unchanged(tiny_resnet, snapshot, mode):
    tiny_resnet.train()
    tiny_resnet.fc.weight.grad = torch.ones_like(tiny_resnet.fc.weight)
    snap = snapshot(tiny_resnet)
    x = torch.rand(1, 3, 8, 8)
    x0 = x.clone()
    state = torch.get_rng_state()
    occlusion(tiny_resnet, x, window=3, stride=2, mode=mode, progress=False)
    snap.assert_unchanged()
    assert torch.equal(x, x0) and torch.equal(torch.get_rng_state(), state)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_model_unchanged_after_exception(exploding_net, snapshot):
    exploding_net.train()
    snap = snapshot(exploding_net)
    with pytest.raises(Boom):
        occlusion(exploding_net, torch.rand(1, 3, 8, 8), window=3, progress=False)
    snap.assert_unchanged()


def test_approx_mode_close_to_exact(tiny_resnet):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    r = occlusion(tiny_resnet, x, window=4, stride=2, mode="approx", compare_exact=True, progress=False)
    assert r.mode == "approx" and r.deviation["pearson"] > 0.9
    assert r.extra["positions_computed"] < r.extra["positions"]
    full = occlusion(tiny_resnet, x, window=4, stride=2, mode="approx", approx_tau=None, approx_drill=1.0,
                     approx_precision="float32", compare_exact=True, progress=False)
    assert full.deviation["rel_max_abs"] < 1e-4
    assert occlusion(tiny_resnet, x, window=4, stride=2, mode="approx", progress=False).deviation is None


@pytest.mark.slow
def test_approx_close_to_exact_on_trained_digits():
    """Checkerboard drill-down + projective-field threshold (defaults) keep the map of a real model."""
    from cnn_explain.data import load_digits
    from cnn_explain.train import pretrained_digits_cnn

    model = pretrained_digits_cnn()
    data = load_digits("test")
    x = torch.stack([data[i][0] for i in range(3)])
    r = occlusion(model, x, window=6, stride=2, mode="approx", compare_exact=True, progress=False)
    exact = occlusion(model, x, window=6, stride=2, progress=False)
    assert r.extra["positions_computed"] == 72 + 15  # checkerboard of 12×12, then ceil(0.2 × 72)
    a, e = r.attribution[:, 0].reshape(-1).double(), exact.attribution[:, 0].reshape(-1).double()
    pearson = float(torch.corrcoef(torch.stack([a, e]))[0, 1])
    assert pearson >= 0.95 and r.deviation["pearson"] == pytest.approx(pearson, abs=1e-6)
    assert r.deviation["max_abs"] == pytest.approx(float((a - e).abs().max()), rel=1e-4, abs=1e-7)
    assert r.deviation["rel_max_abs"] == pytest.approx(r.deviation["max_abs"] / float(e.abs().max()), rel=1e-6)


def test_incremental_clean_scores_come_from_the_engine_clean_pass(monkeypatch):
    """One image: the engine's clean pass gives the clean scores; no separate forward of the model."""
    import importlib

    from cnn_explain.models import tiny_vgg

    occ_module = importlib.import_module("cnn_explain.attribution.occlude.engines")  # where the engines call forward
    model = tiny_vgg().eval()
    calls = []
    forward_logits = occ_module.forward_logits
    monkeypatch.setattr(occ_module, "forward_logits", lambda *a: calls.append(1) or forward_logits(*a))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    r = occlusion(model, x, window=4, stride=4, mode="incremental", progress=False)
    assert r.engine == "incremental" and not calls
    ref = occlusion(model, x, window=4, stride=4, mode="batched", progress=False)
    assert calls and int(r.target) == int(ref.target)
    torch.testing.assert_close(r.drops, ref.drops, rtol=0, atol=1e-6)


@pytest.mark.parametrize("where", ["model", "conv", "global"])
def test_forward_hooks_make_incremental_fall_back(where):
    """A hook that changes a value would be bypassed by incremental inference: plain batched runs."""
    from cnn_explain.models import tiny_vgg

    model = tiny_vgg().eval().double()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    double = lambda module, inputs, out: out * 2  # noqa: E731
    if where == "global":
        handle = torch.nn.modules.module.register_module_forward_hook(double)
    else:
        handle = (model if where == "model" else conv).register_forward_hook(double)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    try:
        with pytest.warns(UserWarning, match="hooks"):
            r = occlusion(model, x, window=4, stride=4, target=0, mode="incremental", progress=False)
        ref = occlusion(model, x, window=4, stride=4, target=0, mode="batched", progress=False)
    finally:
        handle.remove()
    assert r.engine == "batched" and "hooks" in r.fallback_reason
    torch.testing.assert_close(r.drops, ref.drops, rtol=0, atol=0)
    clean = occlusion(model, x, window=4, stride=4, target=0, mode="incremental", progress=False)
    assert clean.engine == "incremental"
    assert not torch.allclose(clean.drops, r.drops)  # the hook did change the scores


_PEAK_SCRIPT = r"""
import sys, warnings
import torch
from torch import nn
from cnn_explain.attribution import occlusion

warnings.simplefilter("ignore")
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(32, 5)).eval()
x = torch.rand(1, 3, 256, 256)
occlusion(model, x[..., :32, :32], window=16, stride=16, progress=False)  # kernels and allocator warmed up


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


for mib, mode in ((40, "exact"), (60, "incremental"), (200, "incremental")):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    r = occlusion(model, x, window=64, stride=32, progress=False, memory_budget=mib * 2**20, mode=mode)
    print(mib, r.engine, r.batch_size, status("VmHWM") - before)
"""


def test_memory_budget_bounds_the_peak(tmp_path):
    """The peak resident memory of a call (VmHWM, in a fresh process) stays within memory_budget, the incremental
    engine's clean maps included: 40 MiB does not hold them (about 48 MiB) and runs batched; 60 MiB leaves room for
    two positions; 200 MiB for many."""
    import subprocess
    import sys

    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}).stdout.split("\n")
    rows = [line.split() for line in out if line.strip()]
    assert [(r[1]) for r in rows] == ["batched", "incremental", "incremental"]
    assert int(rows[1][2]) < int(rows[2][2])  # the cache leaves room for fewer positions
    for mib, _, _, peak in rows:
        assert int(peak) <= int(mib) * 2**20, (mib, int(peak) / 2**20)


class _FakeQuant(torch.overrides.TorchFunctionMode):
    """Per-tensor dynamic int8 fake quantization of every convolution's input: the scale is the tensor's max |x|,
    so a crop of a map is quantized differently from the whole map."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import torch.nn.functional as F

        if func in (F.conv2d, torch.conv2d):
            x = args[0]
            s = x.abs().amax().clamp(min=1e-12) / 127
            args = ((x / s).round() * s, *args[1:])
        return func(*args, **(kwargs or {}))


def test_an_active_torch_function_mode_gets_the_models_own_forwards(tiny_net):
    """Under a mode that sees whole tensors, incremental inference (which computes crops) would draw another map
    (6 % of its max on this net); it is refused with the mode's name, and the map is the plain forwards' one."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kw = dict(window=8, stride=4, progress=False)
    with _FakeQuant():
        plain = occlusion(tiny_net, x, mode="batched", **kw)
        with pytest.warns(UserWarning, match="a _FakeQuant is active around the call"):
            got = occlusion(tiny_net, x, mode="incremental", **kw)
    assert got.engine == "batched" and "_FakeQuant" in got.fallback_reason
    torch.testing.assert_close(got.attribution, plain.attribution, rtol=0, atol=0)
    assert occlusion(tiny_net, x, mode="incremental", **kw).engine == "incremental"  # no mode: incremental
    with torch.device("cpu"):  # a device context is a mode too, but changes no values
        assert occlusion(tiny_net, x, mode="incremental", **kw).engine == "incremental"
