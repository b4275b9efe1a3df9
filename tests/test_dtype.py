"""Every capability runs in the model's floating dtype.

A float32 image given to a ``model.double()`` is converted (by the one input
conversion, ``_utils.model_input``), not rejected with a torch error, and the
maps come out in float64, equal to captum in float64 within 1e-9 of the map's
max (saliency, Grad-CAM; occlusion against a float64 loop, since captum's
occlusion divides in float32), on TinyNet and on ConvNeXt / EfficientNet look-alikes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from cnn_explain import explain
from cnn_explain._utils import model_dtype, model_input
from cnn_explain.attribution import grad_cam, occlusion, saliency

from conftest import TinyNet, _seeded
from realnets import real_net
from test_contract import CAPABILITIES, _inputs

captum_attr = pytest.importorskip("captum.attr")
TARGETS = [1, 3]

# result fields that stay float32 on purpose, with the reason
FLOAT32_BY_DESIGN: dict[str, str] = {
    "maximize.images": "the optimized image lives in its parameterization's float32 (the model sees it in float64)",
    "maximize.pixels": "the same image before normalization",
    "embed.features.features": "stored features are float32 to halve the memory of a data set's features",
}



def _double_net() -> torch.nn.Module:
    return _seeded(TinyNet).double()


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(3))


def _floating(value: Any, where: str) -> list[tuple[str, torch.dtype]]:
    """``(path, dtype)`` of every floating tensor inside a result (dataclasses, dicts, lists)."""
    if isinstance(value, torch.Tensor):
        return [(where, value.dtype)] if value.is_floating_point() else []
    if dataclasses.is_dataclass(value):
        return [p for f in dataclasses.fields(value) for p in _floating(getattr(value, f.name), f"{where}.{f.name}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _floating(v, f"{where}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _floating(v, f"{where}[{i}]")]
    return []


def _near(a: torch.Tensor, ref: torch.Tensor, rel: float = 1e-9) -> None:
    assert a.dtype == torch.float64
    scale = float(ref.detach().abs().max())
    assert scale > 0
    err = float((a - ref.detach().to(a.dtype)).abs().max())
    assert err <= rel * scale, f"max difference {err:.3g} > {rel:g} x {scale:.3g}"


# ----------------------------------------------------------------------------- every capability
def test_model_dtype_reads_the_floating_parameters():
    assert model_dtype(_double_net()) == torch.float64
    assert model_dtype(TinyNet()) == torch.float32
    assert model_dtype(torch.nn.Identity()) == torch.float32
    assert model_input(_double_net(), _x()).dtype == torch.float64


# predict has no function of its own (the contract's 'function' for it is a plain reference)
RUNS = [pytest.param(cap, via, id=f"{cap.name}-{via}") for cap in CAPABILITIES for via in ("facade", "function")
        if (cap.name, via) != ("predict", "function")]


@pytest.mark.parametrize("cap,via", RUNS)
def test_every_capability_takes_float32_images_on_a_float64_model(cap, via, tmp_path):
    inp = _inputs(tmp_path)
    assert inp.x.dtype == inp.data.dtype == torch.float32
    model = _double_net()
    result = cap.facade(explain(model), inp) if via == "facade" else cap.function(model, inp)
    found = [(f"{cap.name}{w[len('r'):]}", d) for w, d in _floating(result, "r")]
    wrong = [(w, d) for w, d in found if d != torch.float64 and w not in FLOAT32_BY_DESIGN]
    assert not wrong, f"not float64: {wrong}"


# ----------------------------------------------------------------------------- equal to references in float64
@pytest.mark.parametrize("method,cls", [("gradient", "Saliency"), ("guided", "GuidedBackprop"),
                                        ("deconv", "Deconvolution")])
def test_saliency_equals_captum_in_float64(method, cls):
    model, x = _double_net(), _x()
    r = saliency(model, x, target=TARGETS, method=method, progress=False)
    algo = getattr(captum_attr, cls)(model)
    ref = algo.attribute(x.double(), target=TARGETS, **({"abs": True} if cls == "Saliency" else {}))
    if cls != "Saliency":
        ref = ref.abs()
    _near(r.attribution, ref)
    assert r.inputs.dtype == torch.float64


@pytest.mark.parametrize("name", ["convnext", "efficientnet"])
def test_saliency_of_real_nets_in_float64(name):
    model, x = real_net(name)
    model = model.double()
    r = saliency(model, x, target=TARGETS, progress=False)
    ref = captum_attr.Saliency(model).attribute(x.double(), target=TARGETS, abs=True)
    _near(r.attribution, ref)
    via = explain(model).saliency(x, target=TARGETS, progress=False)
    assert torch.equal(via.attribution, r.attribution)


def test_grad_cam_equals_captum_in_float64():
    model, x = _double_net(), _x()
    ref = captum_attr.LayerGradCam(model, model.conv2).attribute(x.double(), target=TARGETS, relu_attributions=True)
    up = captum_attr.LayerAttribution.interpolate(ref, tuple(x.shape[-2:]), "bilinear")
    r = grad_cam(model, x, target=TARGETS, layer="conv2")
    _near(r.cam, ref)
    _near(r.attribution, up)


def test_guided_grad_cam_equals_captum_in_float64():
    model, x = _double_net(), _x()
    ref = captum_attr.GuidedGradCam(model, model.conv2).attribute(x.double(), target=TARGETS,
                                                                   interpolate_mode="bilinear")
    _near(grad_cam(model, x, target=TARGETS, layer="conv2", guided=True).attribution, ref)


def _occlusion_loop(model, x: torch.Tensor, target: list[int], win: tuple[int, int], stride: tuple[int, int]):
    """captum's occlusion (windows at k·stride, the last one clipped; each pixel averages the drops of its
    windows) as a plain float64 loop."""
    x = x.double()
    n, _, h, w = x.shape
    rows, t = torch.arange(n), torch.tensor(target)
    tot, cnt = torch.zeros(n, h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
    with torch.no_grad():
        base = model(x).softmax(1)[rows, t]
        for i in range(0, math.ceil((h - win[0]) / stride[0]) * stride[0] + 1, stride[0]):
            for j in range(0, math.ceil((w - win[1]) / stride[1]) * stride[1] + 1, stride[1]):
                xo = x.clone()
                xo[:, :, i:i + win[0], j:j + win[1]] = 0
                tot[:, i:i + win[0], j:j + win[1]] += (base - model(xo).softmax(1)[rows, t])[:, None, None]
                cnt[i:i + win[0], j:j + win[1]] += 1
    return tot / cnt


@pytest.mark.parametrize("mode", ["exact", "batched"])
def test_occlusion_in_float64(mode):
    model, x = _double_net(), _x()
    r = occlusion(model, x, target=TARGETS, window=(4, 3), stride=(3, 2), mode=mode, progress=False)
    _near(r.attribution[:, 0], _occlusion_loop(model, x, TARGETS, (4, 3), (3, 2)))
    # captum agrees to float32 precision only: it divides its sums in float32 (``single_attrib.float() / weight``)
    ref = captum_attr.Occlusion(lambda z: model(z).softmax(1)).attribute(
        x.double(), sliding_window_shapes=(3, 4, 3), strides=(1, 3, 2), target=TARGETS)
    _near(r.attribution, ref, rel=1e-6)


def test_a_float64_image_on_a_float32_model_runs_in_float32():
    model, x = _seeded(TinyNet), _x()
    r = saliency(model, x.double(), target=TARGETS, progress=False)
    assert r.attribution.dtype == torch.float32
    assert torch.equal(r.attribution, saliency(model, x, target=TARGETS, progress=False).attribution)

