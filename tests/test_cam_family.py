"""cam(): every method torch-cam 0.5.0 has equal to it after the same normalization (Grad-CAM,
XGrad-CAM, Layer-CAM, Score-CAM, SS-CAM, IS-CAM); Grad-CAM++ and Smooth Grad-CAM++ equal to the
paper's formula from autograd gradients (torch-cam's own Grad-CAM++ is shown to compute
sum(g^2 relu(g)) instead); hand-worked HiResCAM, Ablation-CAM and Eigen-CAM; batch independence;
the model left as found; clear errors."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from cnn_explain.attribution.cam import CamLayer, cam_pass
from cnn_explain.attribution.cam_family import CamMethod, cam

tc = pytest.importorskip("torchcam.methods")
TARGETS = [0, 3, 4]
LAYER = "layer2.conv2"
logging.getLogger("torchcam").setLevel(logging.ERROR)


def norm(c: torch.Tensor) -> torch.Tensor:
    """torch-cam's normalization of (N, h, w) maps."""
    c = c - c.amin((-2, -1), keepdim=True)
    return c / (c.amax((-2, -1), keepdim=True) + 1e-8)


def torchcam(net, x, cls, **kw):
    with cls(net, LAYER, input_shape=tuple(x.shape[1:]), **kw) as ex:
        scores = net(x)
        return ex(class_idx=TARGETS, scores=scores)[0]


@pytest.mark.parametrize("method,cls", [("grad-cam", "GradCAM"), ("xgrad-cam", "XGradCAM"),
                                        ("layer-cam", "LayerCAM"), ("score-cam", "ScoreCAM"),
                                        ("is-cam", "ISCAM")])
def test_equals_torchcam(tiny_resnet, images, method, cls):
    ref = torchcam(tiny_resnet, images, getattr(tc, cls))
    r = cam(tiny_resnet, images, target=TARGETS, layer=LAYER, method=method, progress=False)
    assert r.layer == LAYER and r.method == method and r.cam.shape == (3, 1, 6, 5)
    assert r.attribution.shape == (3, 1, 12, 10) and (r.cam >= 0).all()
    assert ref.amax() > 0.5
    torch.testing.assert_close(norm(r.cam[:, 0]), ref, rtol=0, atol=1e-5)


def test_ss_cam_equals_torchcam_with_the_same_noise(tiny_resnet, images):
    """torch-cam draws from the global RNG, we from a private generator with the same seed: same numbers."""
    state = torch.random.get_rng_state()
    torch.manual_seed(7)
    ref = torchcam(tiny_resnet, images, tc.SSCAM, num_samples=3)
    torch.random.set_rng_state(state)
    before = torch.random.get_rng_state()
    r = cam(tiny_resnet, images, target=TARGETS, layer=LAYER, method="ss-cam", samples=3, seed=7, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.testing.assert_close(norm(r.cam[:, 0]), ref, rtol=0, atol=1e-5)


def _acts_grads(net, x):
    _, a, g, _, _ = cam_pass(net, x, TARGETS, CamLayer(LAYER), None)
    return a.double(), g.double()


def _pp(a, g1, g2, g3):
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3 + 1e-8)
    w = (alpha * g1.clamp(min=0)).sum((2, 3))
    return torch.relu((w[:, :, None, None] * a).sum(1))


def test_grad_cam_pp_is_the_papers_formula_and_torchcam_differs(tiny_resnet, images):
    a, g = _acts_grads(tiny_resnet, images)
    r = cam(tiny_resnet, images, target=TARGETS, layer=LAYER, method="grad-cam++", progress=False)
    torch.testing.assert_close(r.cam[:, 0].double(), _pp(a, g, g ** 2, g ** 3), rtol=1e-5, atol=1e-7)
    # torch-cam 0.5.0: `alpha[mask].div_(...)` divides a copy, so its weights are sum(g^2 relu(g))
    ref = torchcam(tiny_resnet, images, tc.GradCAMpp)
    w = (g ** 2 * g.clamp(min=0)).sum((2, 3))
    torch.testing.assert_close(norm(torch.relu((w[:, :, None, None] * a).sum(1))).float(), ref, rtol=0, atol=1e-5)


def test_smooth_grad_cam_pp_averages_derivatives_over_the_same_noise(tiny_resnet, images):
    gen = torch.Generator().manual_seed(3)
    sums = [0, 0, 0]
    for _ in range(3):
        z = torch.normal(0.0, 0.2, size=images.shape, generator=gen)
        _, g = _acts_grads(tiny_resnet, images + z)
        sums = [s + g ** (p + 1) for p, s in enumerate(sums)]
    a, _ = _acts_grads(tiny_resnet, images)
    expected = _pp(a, *(s / 3 for s in sums))
    r = cam(tiny_resnet, images, target=TARGETS, layer=LAYER, method="smooth-grad-cam++", samples=3, noise=0.2,
            seed=3, progress=False)
    torch.testing.assert_close(r.cam[:, 0].double(), expected, rtol=1e-5, atol=1e-7)


def _one_conv_net(fc_weight):
    """identity 1x1 conv on 2 channels -> GAP -> linear: dS_c/dA_k = W[c, k] / (h w) everywhere."""
    conv = nn.Conv2d(2, 2, 1, bias=False)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2)[:, :, None, None])
        fc.weight.copy_(torch.tensor(fc_weight))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()


X = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]], [[3.0, 0.0], [1.0, 1.0]]]])


def test_hand_worked_hires_cam():
    """HiResCAM = ReLU(sum_k g_k * A_k); here g_k = W[0, k] / 4: [[2*1-3, 2*2-0], [0-1, 2*4-1]] / 4."""
    r = cam(_one_conv_net([[2.0, -1.0], [0.5, 3.0]]), X, target=0, method="hires-cam", progress=False)
    expected = torch.tensor([[-1.0, 4.0], [-1.0, 7.0]]).clamp(min=0) / 4
    torch.testing.assert_close(r.cam[0, 0], expected)
    assert r.weights is None and r.method == "hires-cam"


def test_hand_worked_ablation_cam():
    """y = (2 mean A0 - mean A1) = 2*7/4 - 5/4 = 9/4. Zeroing A0: y = -5/4, w0 = (9/4 + 5/4)/(9/4) = 14/9;
    zeroing A1: y = 14/4, w1 = (9/4 - 14/4)/(9/4) = -5/9. Map = ReLU(w0 A0 + w1 A1)."""
    r = cam(_one_conv_net([[2.0, -1.0], [0.5, 3.0]]), X, target=0, method="ablation-cam", batch_size=1,
            progress=False)
    w = torch.tensor([14 / 9, -5 / 9])
    torch.testing.assert_close(r.weights[0], w)
    torch.testing.assert_close(r.cam[0, 0], torch.relu(w[0] * X[0, 0] - 5 / 9 * X[0, 1]))


def test_hand_worked_eigen_cam():
    """Rank-one maps A_k = c_k P: the first right singular vector is c/|c|, the projection |c| P."""
    p = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    x = torch.stack([3 * p, 4 * p])[None]
    r = cam(_one_conv_net([[1.0, 0.0], [0.0, 1.0]]), x, method="eigen-cam", progress=False)
    torch.testing.assert_close(r.cam[0, 0], 5 * p)


@pytest.mark.parametrize("method", [m.value for m in CamMethod])
def test_batch_independent_and_model_left_as_found(tiny_resnet, images, snapshot, method):
    snap = snapshot(tiny_resnet)
    kw = {"samples": 2} if method in ("ss-cam", "is-cam", "smooth-grad-cam++") else {}
    full = cam(tiny_resnet, images, target=TARGETS, layer=LAYER, method=method, batch_size=7, progress=False, **kw)
    one = cam(tiny_resnet, images[1:2], target=TARGETS[1], layer=LAYER, method=method, batch_size=3,
              progress=False, **kw)
    snap.assert_unchanged()
    if method not in ("ss-cam", "smooth-grad-cam++"):  # the noise depends on the batch's shape
        torch.testing.assert_close(one.cam[0], full.cam[1], rtol=1e-5, atol=1e-6)
    assert full.cam.abs().amax() > 0


def test_errors(tiny_resnet, images):
    with pytest.raises(ValueError, match="method must be one of"):
        cam(tiny_resnet, images, method="gradcam")
    with pytest.raises(ValueError, match="noise"):
        cam(tiny_resnet, images, method="ss-cam", noise=-1.0)
    with pytest.raises(TypeError, match="samples"):
        cam(tiny_resnet, images, method="is-cam", samples=2.5)
    with pytest.raises(ValueError, match="layer"):
        cam(tiny_resnet, images, layer="nope")


def test_benchmark_quick_smoke(capsys):
    """benchmarks/cam_family.py --quick runs and prints the ratio table (Score-CAM only, to stay short)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(bench))
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    try:
        spec = importlib.util.spec_from_file_location("bench_cam_family", bench / "cam_family.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main(["--quick", "--methods", "score-cam"]) == 0
    finally:
        sys.path.remove(str(bench))
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)
    out = capsys.readouterr().out
    assert "score-cam" in out and "x " in out


@pytest.mark.parametrize("method", ["grad-cam++", "score-cam"])
def test_default_layer_is_grad_cams(tiny_resnet, images, method):
    """layer=None reads the map Grad-CAM reads (the classifier's pooled map), not the last conv that ran."""
    from cnn_explain.attribution import grad_cam

    r = cam(tiny_resnet, images, target=TARGETS, method=method, progress=False)
    assert r.layer == grad_cam(tiny_resnet, images, target=TARGETS).layer
    same = cam(tiny_resnet, images, target=TARGETS, method=method, layer=r.layer, progress=False)
    torch.testing.assert_close(r.cam, same.cam)


def test_ablation_cam_refuses_a_map_that_is_no_modules_output(images):
    from realnets import real_net

    model, x = real_net("dataclass_out")
    with pytest.raises(ValueError, match="zeroes channels of a module.s tensor output"):
        cam(model, x, method="ablation-cam", layer="stage2.last_hidden_state", output="logits", progress=False)


@pytest.mark.parametrize("native,ran", [(True, "bfloat16 autocast, channels-last"),
                                        (False, "model dtype, channels-last")])
@pytest.mark.parametrize("method", ["score-cam", "ss-cam", "is-cam"])
def test_low_precision_is_close_to_exact_and_says_what_ran(monkeypatch, tiny_resnet, images, snapshot, method,
                                                           native, ran):
    """precision="low": bfloat16 only where the CPU has it natively (mocked both ways), channels-last always;
    the map stays close to the exact one, and the model is left as found."""
    from cnn_explain.attribution.occlude import lowp

    monkeypatch.setattr(lowp, "native_bfloat16", lambda: native)
    kw = dict(layer=LAYER, method=method, target=TARGETS, samples=2, progress=False)
    exact = cam(tiny_resnet, images, **kw)
    snap = snapshot(tiny_resnet)
    low = cam(tiny_resnet, images, precision="low", **kw)
    snap.assert_unchanged()
    assert exact.params["precision"] == "exact" and low.params["precision"] == ran
    a, b = exact.cam.flatten(1), low.cam.flatten(1)
    for i in range(a.shape[0]):
        assert float(torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1]) > (0.99 if native else 0.99999)
    if not native:  # float32 in another layout: the same map up to rounding
        torch.testing.assert_close(low.cam, exact.cam, rtol=1e-4, atol=1e-6 * float(a.abs().max()))


class _ViewHead(nn.Module):
    """conv -> relu -> view(N, -1) -> linear: ``view`` refuses channels-last maps."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv, self.relu, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Linear(6 * 8 * 8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).view(x.shape[0], -1))


def test_low_precision_falls_back_to_contiguous_where_the_model_needs_it(monkeypatch):
    from cnn_explain.attribution.occlude import lowp

    monkeypatch.setattr(lowp, "native_bfloat16", lambda: False)
    net, x = _ViewHead().eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError):  # the premise: channels-last input breaks this model's view
        net(x.contiguous(memory_format=torch.channels_last))
    exact = cam(net, x, layer="relu", method="score-cam", progress=False)
    low = cam(net, x, layer="relu", method="score-cam", progress=False, precision="low")
    assert low.params["precision"] == "model dtype, contiguous"
    torch.testing.assert_close(low.cam, exact.cam, rtol=0, atol=0)


def test_low_precision_keeps_a_float64_model_in_float64(monkeypatch, tiny_resnet, images):
    """Autocast lowers float32 only: a float64 model runs in float64 (channels-last) and says so."""
    from cnn_explain.attribution.occlude import lowp

    monkeypatch.setattr(lowp, "native_bfloat16", lambda: True)
    net, x = tiny_resnet.double(), images.double()
    exact = cam(net, x, layer=LAYER, method="score-cam", target=TARGETS, progress=False)
    low = cam(net, x, layer=LAYER, method="score-cam", target=TARGETS, progress=False, precision="low")
    assert low.params["precision"] == "model dtype, channels-last" and low.cam.dtype == torch.float64
    torch.testing.assert_close(low.cam, exact.cam, rtol=1e-10, atol=1e-12)


def test_precision_errors(tiny_resnet, images):
    with pytest.raises(ValueError, match="precision must be 'exact' or 'low'"):
        cam(tiny_resnet, images, method="score-cam", precision="half", progress=False)
    with pytest.raises(ValueError, match="'score-cam'.*pass precision='exact'"):
        cam(tiny_resnet, images, method="grad-cam", precision="low", progress=False)


@pytest.mark.parametrize("bf16,autocast", [(True, torch.bfloat16), (False, torch.float16)])
def test_low_precision_on_cuda_picks_bfloat16_where_supported(monkeypatch, bf16, autocast):
    """The CUDA branch, decided without a GPU: bfloat16 autocast where the device supports it, else float16;
    channels-last on either; a float64 model keeps its dtype and layout (no CPU-only channels-last)."""
    from cnn_explain.attribution._score_cam import Precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    chosen = Precision.choose("low", torch.device("cuda"))
    assert (chosen.autocast, chosen.channels_last) == (autocast, True)
    assert chosen.name == f"{str(autocast).removeprefix('torch.')} autocast, channels-last"
    kept = Precision.choose("low", torch.device("cuda"), torch.float64)
    assert (kept.autocast, kept.channels_last, kept.name) == (None, False, "exact")
