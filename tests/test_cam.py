"""grad_cam(): equal to captum's LayerGradCam (+ bilinear LayerAttribution.interpolate) and
GuidedGradCam, a hand-worked CAM case, the last *executed* conv by default, batch invariance,
the model left as it was, clear errors."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from cnn_explain import explain
from cnn_explain.attribution import grad_cam, saliency
from cnn_explain.hooks import hook_count

from conftest import Boom

captum_attr = pytest.importorskip("captum.attr")
TARGETS = [0, 3, 4]



def close(a, b, rel=1e-5):
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.detach().abs().max()) + 1e-12)


@pytest.mark.parametrize("model,layer_name", [("tiny_net", "conv2"), ("tiny_resnet", "layer2.conv2"),
                                              ("tiny_net", "relu2")])
def test_equals_captum_layer_grad_cam(request, images, model, layer_name):
    net = request.getfixturevalue(model)
    layer = net.get_submodule(layer_name)
    ref = captum_attr.LayerGradCam(net, layer).attribute(images, target=TARGETS, relu_attributions=True)
    up = captum_attr.LayerAttribution.interpolate(ref, tuple(images.shape[-2:]), "bilinear")
    r = grad_cam(net, images, target=TARGETS, layer=layer_name)
    assert r.layer == layer_name
    assert ref.abs().max() > 0
    close(r.cam, ref)
    close(r.attribution, up)
    assert r.attribution.shape == (3, 1, 12, 10) and r.method == "grad_cam"
    assert (r.attribution >= 0).all() and r.weights.shape == (3, layer.out_channels if hasattr(layer, "out_channels") else 6)


def test_default_layer_is_the_map_the_global_pooling_reads(tiny_net, tiny_functional_net, tiny_resnet, images):
    """The default is roles.classifier_input: the block output on a ResNet (not a conv inside it), the input of
    the pooling module when F.relu made the map; equal to captum's LayerGradCam there."""
    for net, layer, name, attribute_to_input in [(tiny_resnet, tiny_resnet.layer2, "layer2", False),
                                                 (tiny_net, tiny_net.relu2, "relu2", False),
                                                 (tiny_functional_net, tiny_functional_net.gap, "gap (input)", True)]:
        r = grad_cam(net, images, target=TARGETS)
        assert r.layer == name
        ref = captum_attr.LayerGradCam(net, layer).attribute(images, target=TARGETS, relu_attributions=True,
                                                             attribute_to_layer_input=attribute_to_input)
        assert ref.abs().max() > 0
        close(r.cam, ref)
        close(r.attribution, captum_attr.LayerAttribution.interpolate(ref, tuple(images.shape[-2:]), "bilinear"))


@pytest.mark.parametrize("model", ["tiny_net", "tiny_resnet"])
def test_guided_equals_captum_guided_grad_cam(request, images, model):
    net = request.getfixturevalue(model)
    layer = net.conv2 if model == "tiny_net" else net.layer2.conv2
    ref = captum_attr.GuidedGradCam(net, layer).attribute(images, target=TARGETS, interpolate_mode="bilinear")
    r = grad_cam(net, images, target=TARGETS, guided=True, layer=layer)
    close(r.attribution, ref)
    assert r.method == "guided_grad_cam" and r.attribution.shape == images.shape
    assert r.relu_calls == (2 if model == "tiny_net" else 5)


def test_hand_worked_cam():
    """conv (identity 1x1 on 2 channels) -> GAP -> linear W: dS_c/dA_k = W[c,k]/(h w) everywhere, so
    Grad-CAM = ReLU(sum_k W[c,k] A_k) / (h w) — the CAM of Zhou et al. up to the 1/(hw) factor."""
    conv = nn.Conv2d(2, 2, 1, bias=False)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2)[:, :, None, None])
        fc.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()
    x = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]], [[3.0, 0.0], [1.0, 1.0]]]])
    r = grad_cam(net, x, target=0)
    expected = torch.tensor([[2 * 1 - 3, 2 * 2 - 0], [0 - 1, 2 * 4 - 1]]).clamp(min=0) / 4.0
    torch.testing.assert_close(r.cam[0, 0], expected)
    torch.testing.assert_close(r.weights, torch.tensor([[0.5, -0.25]]))
    torch.testing.assert_close(r.attribution, r.cam)  # same size: bilinear resize is the identity


def test_batch_size_does_not_matter(tiny_resnet, images):
    whole = grad_cam(tiny_resnet, images, target=TARGETS, guided=True)
    parts = torch.cat([grad_cam(tiny_resnet, images[i:i + 1], target=t, guided=True).attribution
                       for i, t in enumerate(TARGETS)])
    torch.testing.assert_close(whole.attribution, parts, rtol=0, atol=1e-6)


def test_layer_by_module_type_and_facade(tiny_net, images):
    a = grad_cam(tiny_net, images, layer=tiny_net.conv1)
    b = grad_cam(tiny_net, images, layer="conv1")
    c = explain(tiny_net).grad_cam(images, layer="conv1")
    assert a.layer == b.layer == c.layer == "conv1" and a.cam.shape == (3, 1, 12, 10)
    torch.testing.assert_close(a.attribution, b.attribution, rtol=0, atol=0)
    torch.testing.assert_close(a.attribution, c.attribution, rtol=0, atol=0)
    assert torch.equal(a.target, tiny_net(images).argmax(1))


def test_model_unchanged_after_success_and_exception(tiny_resnet, exploding_net, images, snapshot):
    tiny_resnet.train()
    snap = snapshot(tiny_resnet)
    grad_cam(tiny_resnet, images, guided=True)
    snap.assert_unchanged()
    snap = snapshot(exploding_net)
    with pytest.raises(Boom):
        grad_cam(exploding_net, images, guided=True)
    snap.assert_unchanged()
    assert hook_count(exploding_net) == 0 and torch._C._len_torch_function_stack() == 0


def test_errors_name_the_argument(tiny_net, images):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 10, 4))
    with pytest.raises(ValueError, match="layer"):
        grad_cam(mlp, images)
    with pytest.raises(ValueError, match="layer 'fc'.*feature map"):
        grad_cam(tiny_net, images, layer="fc")
    with pytest.raises(ValueError, match="layer.*conv3"):
        grad_cam(tiny_net, images, layer="conv3")
    with pytest.raises(ValueError, match="target"):
        grad_cam(tiny_net, images, target=[1, 2])
    with pytest.raises(TypeError, match="guided"):
        grad_cam(tiny_net, images, guided="yes")


def test_guided_part_is_guided_backprop(tiny_net, images):
    r = grad_cam(tiny_net, images, target=TARGETS, guided=True)
    gb = saliency(tiny_net, images, target=TARGETS, method="guided", abs=False).attribution
    plain = grad_cam(tiny_net, images, target=TARGETS).attribution
    torch.testing.assert_close(r.attribution, gb * plain, rtol=0, atol=1e-7)
