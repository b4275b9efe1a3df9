"""Inputs that are checked: non-finite pixels, targets, devices.

* every capability that takes images refuses NaN / inf values with a ``ValueError``
  naming the argument and how many values are not finite;
* targets are ints, integer tensors / arrays, or (through the façade, which knows
  them) class names; floats, bools and strings reach no capability;
* ``device=`` names a device this machine has, else a ``ValueError`` listing those it has.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cnn_explain import explain
from cnn_explain._utils import available_devices, check_device, resolve_target
from cnn_explain.attribution import deletion_insertion, grad_cam, occlusion, saliency, sanity_check
from cnn_explain.attribution.cam_family import cam
from cnn_explain.attribution.integrated_gradients import integrated_gradients
from cnn_explain.embedding import extract

from conftest import TinyNet, _seeded
from test_contract import CAPABILITIES, Inputs, _inputs

# the capabilities that take images (x or a data set); the others take none
TAKES_IMAGES = {"predict", "feature_maps", "arithmetic", "occlusion", "saliency", "grad_cam", "sanity_check",
                "embed", "report", "integrated_gradients", "cam"}
NO_IMAGES = {"summary", "filters", "maximize", "receptive_field"}
NAMES = ["cat", "dog", "bird", "horse", "frog"]


def test_every_capability_is_classified():
    assert TAKES_IMAGES | NO_IMAGES == {c.name for c in CAPABILITIES}
    assert not TAKES_IMAGES & NO_IMAGES


# ----------------------------------------------------------------------------- non-finite values
def _spoiled(inp: Inputs, value: float) -> Inputs:
    """The contract's inputs with two pixels of the first image (of x and of the data set) set to ``value``."""
    x, data = inp.x.clone(), inp.data.clone()
    for t in (x, data):
        t[0, 0, 1, 2] = value
        t[0, 2, 5, 3] = value
    return Inputs(x, data, inp.labels, inp.folder)


IMAGE_RUNS = [pytest.param(c, via, id=f"{c.name}-{via}") for c in CAPABILITIES if c.name in TAKES_IMAGES
              for via in ("facade", "function") if (c.name, via) != ("predict", "function")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cap,via", IMAGE_RUNS)
def test_non_finite_images_are_refused(cap, via, value, tmp_path):
    inp = _spoiled(_inputs(tmp_path), value)
    model = _seeded(TinyNet)
    argname = {"embed": "data", "report": "images"}.get(cap.name, "x")
    with pytest.raises(ValueError, match=rf"{argname}\b.* has 2 values that are not finite"):
        cap.facade(explain(model), inp) if via == "facade" else cap.function(model, inp)


@pytest.mark.parametrize("call", [
    lambda m, x: deletion_insertion(m, x, torch.rand(x.shape), steps=2, progress=False),
    lambda m, x: integrated_gradients(m, x, steps=2, progress=False),
    lambda m, x: cam(m, x, method="grad-cam++"),
    lambda m, x: extract(m, x, progress=False),
], ids=["deletion_insertion", "integrated_gradients", "cam", "extract"])
def test_non_finite_images_are_refused_by_the_other_functions(call):
    x = torch.rand(2, 3, 12, 10)
    x[1, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"1 values that are not finite \(1 NaN, 0 infinite\)"):
        call(_seeded(TinyNet), x)


def test_finite_extremes_are_accepted():
    x = torch.rand(1, 3, 12, 10)
    x[0, 0, 0, 0] = torch.finfo(torch.float32).max
    r = saliency(_seeded(TinyNet), x, progress=False)
    assert torch.isfinite(r.inputs).all()


# ----------------------------------------------------------------------------- targets
LOGITS = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])


@pytest.mark.parametrize("target,expected", [
    (2, [2, 2]), (np.int64(1), [1, 1]), (torch.tensor(2), [2, 2]), ([0, 2], [0, 2]),
    ((np.int32(1), 2), [1, 2]), (np.array([2, 0]), [2, 0]), (torch.tensor([1, 1], dtype=torch.int32), [1, 1]),
    (torch.tensor(1, dtype=torch.uint8), [1, 1]), (None, [1, 0]),
])
def test_integer_targets(target, expected):
    t = resolve_target(target, LOGITS)
    assert t.tolist() == expected and t.dtype == torch.long


@pytest.mark.parametrize("target", [
    [1.5, 0.5], 1.0, torch.tensor(2.7), torch.tensor([1.0, 0.0]), np.array([1.0, 2.0]), np.float64(1.0),
    True, [True, 0], np.bool_(True), torch.tensor([True, False]), "cat", ["cat", 1], b"1", object(), [],
], ids=lambda t: type(t).__name__ + ":" + repr(t)[:20])
def test_other_targets_are_a_type_error(target):
    with pytest.raises(TypeError, match="target must be None, an int, or one int per image"):
        resolve_target(target, LOGITS)


def test_a_string_target_points_to_class_names():
    with pytest.raises(TypeError, match=re.escape("class_names=[...]")):
        resolve_target("cat", LOGITS)


def test_out_of_range_and_wrong_length():
    with pytest.raises(ValueError, match=r"target=3 is outside the model's 3 classes \[0, 2\]"):
        resolve_target(3, LOGITS)
    with pytest.raises(ValueError, match=r"target=-1 is outside"):
        resolve_target([0, -1], LOGITS)
    with pytest.raises(ValueError, match="2 images"):
        resolve_target([1, 2, 0], LOGITS)


TARGET_FUNCTIONS = {
    "occlusion": lambda m, x, t: occlusion(m, x, target=t, window=4, stride=3, progress=False),
    "saliency": lambda m, x, t: saliency(m, x, target=t, progress=False),
    "grad_cam": lambda m, x, t: grad_cam(m, x, target=t),
    "sanity_check": lambda m, x, t: sanity_check(m, x, method="gradient", target=t, progress=False),
    "deletion_insertion": lambda m, x, t: deletion_insertion(m, x, torch.rand(x.shape), target=t, steps=2,
                                                             progress=False),
    "integrated_gradients": lambda m, x, t: integrated_gradients(m, x, target=t, steps=2, progress=False),
    "cam": lambda m, x, t: cam(m, x, target=t, method="grad-cam++"),
}


@pytest.mark.parametrize("target", [[1.5, 0.5], torch.tensor(2.7), True], ids=["floats", "float tensor", "bool"])
@pytest.mark.parametrize("name", list(TARGET_FUNCTIONS))
def test_every_function_refuses_non_integer_targets(name, target):
    with pytest.raises(TypeError, match="target"):
        TARGET_FUNCTIONS[name](_seeded(TinyNet), torch.rand(2, 3, 12, 10), target)


FACADE_TARGETS = {
    "occlusion": (lambda ex, x, t: ex.occlusion(x, t, window=4, stride=3, progress=False), "attribution"),
    "saliency": (lambda ex, x, t: ex.saliency(x, t, progress=False), "attribution"),
    "grad_cam": (lambda ex, x, t: ex.grad_cam(x, t), "attribution"),
    "sanity_check": (lambda ex, x, t: ex.sanity_check(x, "gradient", t, progress=False), "maps"),
}


@pytest.mark.parametrize("name", list(FACADE_TARGETS))
def test_class_names_through_the_facade(name):
    model, x = _seeded(TinyNet), torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    call, field = FACADE_TARGETS[name]
    ex = explain(model, class_names=NAMES)
    by_index = call(explain(model), x, [3, 1])
    for target in (["horse", "dog"], ["horse", 1], torch.tensor([3, 1])):
        r = call(ex, x, target)
        assert r.target.tolist() == [3, 1]
        assert torch.equal(getattr(r, field), getattr(by_index, field))
    assert call(ex, x, "frog").target.tolist() == [4, 4]


def test_an_unknown_class_name_lists_close_matches():
    ex = explain(_seeded(TinyNet), class_names=NAMES)
    with pytest.raises(ValueError, match=r"target='horce' is not one of .* did you mean 'horse'"):
        ex.saliency(torch.rand(1, 3, 12, 10), target="horce", progress=False)
    with pytest.raises(ValueError, match=r"target\[1\]='zebra' is not one of"):
        ex.grad_cam(torch.rand(2, 3, 12, 10), target=["cat", "zebra"])


def test_a_class_name_without_class_names():
    with pytest.raises(ValueError, match=r"target='cat' is a class name, but this explainer has no class names"):
        explain(_seeded(TinyNet)).saliency(torch.rand(1, 3, 12, 10), target="cat", progress=False)


def test_facade_out_of_range_is_a_value_error_naming_the_classes():
    with pytest.raises(ValueError, match="model's 5 classes"):
        explain(_seeded(TinyNet), class_names=NAMES).saliency(torch.rand(1, 3, 12, 10), target=5, progress=False)


# ----------------------------------------------------------------------------- devices
def test_cpu_is_always_a_device():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    assert available_devices()[0] == "cpu"


def _missing_devices() -> list[str]:
    missing = [f"cuda:{torch.cuda.device_count()}"]
    if not torch.cuda.is_available():
        missing.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        missing.append("mps")
    return missing


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "nonsense"] + _missing_devices())
def test_a_missing_device_lists_those_available(device):
    listed = re.escape(", ".join(available_devices()))
    with pytest.raises(ValueError, match=rf"device={device!r}.*available here: {listed}$"):
        check_device(device)
    with pytest.raises(ValueError, match=rf"device={device!r}"):
        explain(_seeded(TinyNet), device=device)
    with pytest.raises(ValueError, match=rf"device={device!r}"):
        extract(_seeded(TinyNet), torch.rand(2, 3, 12, 10), device=device, progress=False)


@pytest.mark.parametrize("device", [0, None, 1.5, ["cpu"]])
def test_a_device_of_another_type(device):
    with pytest.raises(TypeError, match="device must be a string"):
        check_device(device)


def test_results_of_a_cpu_explainer_match_the_function():
    ex = explain(_seeded(TinyNet), device="cpu")
    x = torch.rand(2, 3, 12, 10)
    assert ex.device == torch.device("cpu")
    assert torch.equal(ex.saliency(x, progress=False).attribution, saliency(ex.model, x, progress=False).attribution)
