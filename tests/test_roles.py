"""The named default layers: what each finds on hand-read models, that the features really are
there (compared with the model's own computation), errors naming the model, the model left as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import Boom
from torch import nn

from cnn_explain import roles
from cnn_explain.hooks import capture
from cnn_explain.models import cifar10_cnn, tiny_vgg


class ConvLast(nn.Module):
    """conv_a is defined last but runs first: module order and execution order differ."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_b = nn.Conv2d(4, 4, 3, padding=1)
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv_b(self.conv_a(x))
        return self.fc(x.mean((2, 3)))


def test_on_the_test_models(tiny_net, tiny_functional_net, tiny_resnet, images, snapshot):
    for model, first, last, feeds, pen in [
        (tiny_net, "conv1", "conv2", roles.Site("relu2", tiny_net.relu2), "fc"),
        (tiny_functional_net, "conv1", "conv2", roles.Site("gap", tiny_functional_net.gap, True), "fc"),
        (tiny_resnet, "stem", "layer2.conv2", roles.Site("layer2", tiny_resnet.layer2), "fc"),
    ]:
        snap = snapshot(model)
        assert roles.first_conv(model).name == first
        assert roles.first_conv_module(model) is dict(model.named_modules())[first]
        assert roles.last_conv(model, images).name == last
        assert roles.classifier_input(model, images) == feeds
        assert roles.penultimate(model, images) == roles.Site("fc", model.fc, True)
        assert roles.penultimate(model).name == pen
        snap.assert_unchanged()


def test_sequential_models():
    net = cifar10_cnn()
    x = torch.rand(2, 3, 32, 32)
    assert roles.first_conv(net).name == "0" and roles.last_conv(net, x).name == "12"
    assert roles.classifier_input(net, x) == roles.Site("14", net[14])  # the last max-pool feeds Flatten
    # 15 Flatten, 16 Linear, 17 ReLU, 18 Linear
    assert roles.penultimate(net).name == "18" and roles.penultimate(net, x).name == "18"
    vgg = tiny_vgg()
    assert roles.classifier_input(vgg, torch.rand(1, 3, 16, 16)).name == "features"


def test_execution_order_not_module_order():
    net = ConvLast()
    x = torch.rand(1, 3, 6, 6)
    assert roles.first_conv(net).name == "conv_b"  # module order: the first one defined
    assert roles.last_conv(net, x).name == "conv_b"  # ran last
    assert roles.classifier_input(net, x) == roles.Site("conv_b", net.conv_b)  # x.mean((2, 3)) collapses it


def test_the_features_are_what_the_model_computes(tiny_net, images):
    """classifier_input's map, pooled, is what fc reads; penultimate's input is that too."""
    site = roles.classifier_input(tiny_net, images)
    pen = roles.penultimate(tiny_net, images)
    with torch.no_grad(), capture(tiny_net, [site.name, pen.name], inputs=True) as rec:
        logits = tiny_net(images)
    fmap = rec[site.name]
    manual = F.relu(tiny_net.conv2(tiny_net.pool(F.relu(tiny_net.conv1(images)))))
    torch.testing.assert_close(fmap, manual)
    torch.testing.assert_close(rec.inputs[pen.name], fmap.mean((2, 3)))
    torch.testing.assert_close(tiny_net.fc(rec.inputs[pen.name]), logits)


def test_errors_name_the_model_and_the_model_is_restored(exploding_net, images, snapshot):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 10, 2))
    for call in (lambda: roles.first_conv(plain), lambda: roles.last_conv(plain, images)):
        with pytest.raises(ValueError, match="Sequential.*convolution|convolution.*Sequential"):
            call()
    assert roles.first_conv_module(plain) is None
    with pytest.raises(ValueError, match="model Sequential has no nn.Linear"):
        roles.penultimate(nn.Sequential(nn.Conv2d(3, 2, 3)))
    with pytest.raises(ValueError, match="Sequential.*collapses"):
        roles.classifier_input(nn.Sequential(nn.Conv2d(3, 2, 3)), images)
    with pytest.raises(TypeError, match="x must be a tensor"):
        roles.last_conv(tiny_vgg(), [1, 2])
    snap = snapshot(exploding_net)
    with pytest.raises(Boom):
        roles.classifier_input(exploding_net, images)
    snap.assert_unchanged()
