"""Saliency, guided backprop, SmoothGrad and Grad-CAM on look-alikes of real CNNs, against captum.

Each model of ``tests/realnets.py`` (EfficientNet's static-padding convs and autograd-Function Swish, ConvNeXt's
channels-last LayerNorm, DenseNet's concatenations and ``F.relu``, torchvision's ResNet block order, a dataclass
output, shape control flow) is explained by cnn_explain and by captum (``Saliency``, ``GuidedBackprop``,
``NoiseTunnel`` fed the same noise, ``LayerGradCam`` + ``LayerAttribution.interpolate``) and the maps must agree.
Grad-CAM's default layer is checked by name: the map the global pooling reads, on the main path.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from realnets import Logits, REAL_NETS, real_net
from torch import nn

from cnn_explain.attribution import grad_cam, saliency
from cnn_explain.attribution.gradients import smooth_noise
from cnn_explain.roles import classifier_input

captum_attr = pytest.importorskip("captum.attr")

# Grad-CAM's default layer per model (the module captum hooks; the name cnn_explain reports)
DEFAULT_LAYER = {
    "efficientnet": "swish",  # the head's activation (its last call), which avg_pooling reads
    "convnext": "stage2",  # x.mean([-2, -1]) reads the last stage's output
    "densenet": "features",  # F.relu(features(x)) in forward: the features after the final norm
    "resnet_tv": "layer2",  # the block's output, not layer2.0.downsample.0 which runs last
    "dataclass_out": "stage2.pool",  # the tensor stage2 returns as .last_hidden_state
    "control_flow": "branches.1",  # relu(cat(...)) made in forward, read by no module: the last conv run
}
# guided backprop: captum rectifies nn.ReLU modules only; these models call F.relu / torch.relu in forward
FUNCTIONAL_RELU = {"densenet", "control_flow"}



@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _nets(name: str):
    model, x = real_net(name)
    if name == "dataclass_out":
        return model, Logits(model).eval(), x, "logits", "m."
    return model, model, x, None, ""


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.detach().abs().max()) + 1e-12)


@pytest.mark.parametrize("name", list(REAL_NETS))
def test_saliency_and_guided_backprop_equal_captum(name):
    model, ref_model, x, output, _ = _nets(name)
    target = [1, 2]
    ours = saliency(model, x, target=target, output=output, progress=False).attribution
    ref = captum_attr.Saliency(ref_model).attribute(x.clone().requires_grad_(True), target=target)
    assert ref.abs().max() > 0
    close(ours, ref)
    guided = saliency(model, x, target=target, method="guided", abs=False, output=output, progress=False)
    ref = captum_attr.GuidedBackprop(ref_model).attribute(x.clone().requires_grad_(True), target=target)
    if name in FUNCTIONAL_RELU:  # captum leaves these ReLU calls alone; cnn_explain rectifies them
        assert guided.relu_calls > sum(isinstance(m, nn.ReLU) for m in model.modules())
        assert not torch.allclose(guided.attribution, ref)
    else:
        close(guided.attribution, ref)


@pytest.mark.parametrize("name", list(REAL_NETS))
def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(name):
    """captum draws ``torch.normal(0, stdev)`` from the global RNG; seeded like cnn_explain's private generator,
    one image at a time, it draws the same noise."""
    model, ref_model, x, output, _ = _nets(name)
    samples, noise, seed = 4, 0.1, 7
    ours = saliency(model, x, target=[0, 4], smooth=samples, noise=noise, seed=seed, output=output, progress=False)
    for i, t in enumerate([0, 4]):
        _, sigma = smooth_noise(x[i:i + 1], samples, noise, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ref = captum_attr.NoiseTunnel(captum_attr.Saliency(ref_model)).attribute(
                x[i:i + 1].clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=samples,
                stdevs=float(sigma), target=t)
        close(ours.attribution[i:i + 1], ref, rel=1e-4)


@pytest.mark.parametrize("name", list(REAL_NETS))
def test_grad_cam_default_layer_equals_captum_layer_grad_cam(name):
    model, ref_model, x, output, prefix = _nets(name)
    target = [3, 0]
    r = grad_cam(model, x, target=target, output=output)
    assert r.layer.partition("#")[0] == DEFAULT_LAYER[name]
    layer = ref_model.get_submodule(prefix + DEFAULT_LAYER[name])
    ref = captum_attr.LayerGradCam(ref_model, layer).attribute(x, target=target, relu_attributions=True)
    assert ref.abs().max() > 0
    close(r.cam, ref)
    close(r.attribution, captum_attr.LayerAttribution.interpolate(ref, tuple(x.shape[-2:]), "bilinear"))


@pytest.mark.parametrize("name", list(REAL_NETS))
def test_classifier_input_is_the_map_the_head_collapses(name):
    model, _, x, _, _ = _nets(name)
    if name == "control_flow":
        with pytest.raises(ValueError, match="ControlFlowNet.*computed by a function inside forward.*layer="):
            classifier_input(model, x)
        return
    site = classifier_input(model, x)
    assert site == (DEFAULT_LAYER[name], model.get_submodule(DEFAULT_LAYER[name]), False)
