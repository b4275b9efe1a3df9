"""saliency(): equal to captum (Saliency, GuidedBackprop, Deconvolution, NoiseTunnel), every ReLU
rectified (F.relu, torch.relu_, ReLU made in forward, inplace reused modules), batch invariance,
nothing of the user's changed (model, inputs, RNG, grad mode), also after an exception."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain import explain
from cnn_explain.attribution import saliency
from cnn_explain.attribution.gradients import smooth_noise
from cnn_explain.hooks import hook_count

from conftest import Boom, TinyNet, TinyResNet, _seeded

captum_attr = pytest.importorskip("captum.attr")
TARGETS = [0, 3, 4]
EXACT = dict(rtol=0, atol=1e-6)



def close(a, b, rel=1e-5):
    """|a - b| <= rel * max|b| (the issue's 1e-5 tolerance, relative to the map's scale)."""
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(b.detach().abs().max()) + 1e-12)


# ----------------------------------------------------------------------------- captum equality
@pytest.mark.parametrize("abs_", [True, False])
def test_gradient_equals_captum_saliency(tiny_net, images, abs_):
    ref = captum_attr.Saliency(tiny_net).attribute(images, target=TARGETS, abs=abs_)
    r = saliency(tiny_net, images, target=TARGETS, method="gradient", abs=abs_)
    close(r.attribution, ref)
    assert r.method == "gradient" and r.relu_calls == 0 and r.target.tolist() == TARGETS


@pytest.mark.parametrize("method,cls", [("guided", "GuidedBackprop"), ("deconv", "Deconvolution")])
@pytest.mark.parametrize("model", ["tiny_net", "tiny_resnet"])
def test_guided_and_deconv_equal_captum(request, images, method, cls, model):
    net = request.getfixturevalue(model)
    ref = getattr(captum_attr, cls)(net).attribute(images, target=TARGETS)
    r = saliency(net, images, target=TARGETS, method=method, abs=False)
    close(r.attribution, ref)
    close(saliency(net, images, target=TARGETS, method=method).attribution, ref.abs())
    # TinyResNet: stem ReLU + one inplace ReLU module called twice in each of two blocks
    assert r.relu_calls == (2 if model == "tiny_net" else 5)
    assert not torch.allclose(ref, captum_attr.Saliency(net).attribute(images, target=TARGETS, abs=False))


@pytest.mark.parametrize("method,cls,abs_", [("gradient", "Saliency", True), ("guided", "GuidedBackprop", False)])
def test_smoothgrad_equals_captum_noise_tunnel(tiny_net, images, method, cls, abs_):
    """captum draws torch.normal(0, std) from the global RNG; we draw the same call from a seeded
    generator, so with the global seed equal to ours the noisy inputs are the same."""
    x = images[1:2]
    sigma = 0.2 * float(x.max() - x.min())
    algo = getattr(captum_attr, cls)(tiny_net)
    kwargs = {"abs": abs_} if cls == "Saliency" else {}
    torch.manual_seed(7)
    ref = captum_attr.NoiseTunnel(algo).attribute(x, nt_type="smoothgrad", nt_samples=6, stdevs=sigma,
                                                  target=2, **kwargs)
    r = saliency(tiny_net, x, target=2, method=method, abs=abs_, smooth=6, noise=0.2, seed=7, progress=False)
    close(r.attribution, ref)


def test_smoothgrad_is_the_mean_over_the_same_noise(tiny_net, images):
    """Batch of 3 (captum cannot give a per-image std): the mean of our own maps on x + sigma_i z_j."""
    z, sigma = smooth_noise(images, 4, 0.1, seed=3)
    assert z.shape == (4, 3, 12, 10) and sigma.shape == (3, 1, 1, 1)
    torch.testing.assert_close(sigma.flatten(), 0.1 * (images.amax((1, 2, 3)) - images.amin((1, 2, 3))))
    manual = sum(saliency(tiny_net, images + sigma * z[j], target=TARGETS, method="guided").attribution
                 for j in range(4)) / 4
    r = saliency(tiny_net, images, target=TARGETS, method="guided", smooth=4, noise=0.1, seed=3, progress=False)
    torch.testing.assert_close(r.attribution, manual, **EXACT)
    other = saliency(tiny_net, images, target=TARGETS, method="guided", smooth=4, noise=0.1, seed=4, progress=False)
    assert not torch.allclose(other.attribution, r.attribution)


# ----------------------------------------------------------------------------- every ReLU
class ReluZoo(TinyNet):
    """TinyNet's computation with the other ways of writing ReLU."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant

    def forward(self, x):
        if self.variant == "made_in_forward":
            h, r2 = nn.ReLU()(self.conv1(x)), nn.ReLU(inplace=True)
        elif self.variant == "inplace_functional":
            h, r2 = F.relu(self.conv1(x), inplace=True), torch.relu_
        else:  # tensor methods
            h, r2 = self.conv1(x).relu(), torch.Tensor.relu_
        h = self.gap(r2(self.conv2(self.pool(h))))
        return self.fc(torch.flatten(h, 1))


@pytest.mark.parametrize("method", ["guided", "deconv"])
def test_functional_relu_equals_its_module_twin(tiny_net, tiny_functional_net, images, method):
    tiny_functional_net.load_state_dict(tiny_net.state_dict())
    twin = saliency(tiny_net, images, target=TARGETS, method=method, abs=False)
    r = saliency(tiny_functional_net, images, target=TARGETS, method=method, abs=False)
    torch.testing.assert_close(r.attribution, twin.attribution, **EXACT)
    assert r.relu_calls == 2
    plain = saliency(tiny_functional_net, images, target=TARGETS, method="gradient", abs=False).attribution
    assert (r.attribution - plain).abs().max() > 0.1 * plain.abs().max()
    # captum silently returns the plain gradient here (it hooks nn.ReLU modules only)
    cls = captum_attr.GuidedBackprop if method == "guided" else captum_attr.Deconvolution
    torch.testing.assert_close(cls(tiny_functional_net).attribute(images, target=TARGETS), plain, **EXACT)


@pytest.mark.parametrize("variant", ["made_in_forward", "inplace_functional", "tensor_methods"])
def test_every_way_of_writing_relu_is_rectified(tiny_net, images, variant):
    zoo = ReluZoo(variant).eval()
    zoo.load_state_dict(tiny_net.state_dict())
    r = saliency(zoo, images, target=TARGETS, method="guided", abs=False)
    torch.testing.assert_close(r.attribution, saliency(tiny_net, images, target=TARGETS, method="guided",
                                                       abs=False).attribution, **EXACT)
    assert r.relu_calls == 2


def test_warns_once_naming_other_activations(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(3)).eval()
    net(images)  # materialize the lazy layer
    with pytest.warns(UserWarning, match="silu") as rec:
        r = saliency(net, images, method="guided", smooth=3, progress=False)
    assert len([w for w in rec if "silu" in str(w.message)]) == 1
    assert r.other_activations == ("silu",) and r.relu_calls == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saliency(net, images, method="gradient")  # plain gradient: nothing to warn about


def test_warns_when_no_relu_is_seen(images):
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 10 * 8, 3)).eval()
    with pytest.warns(UserWarning, match="no ReLU call"):
        r = saliency(net, images, method="guided", abs=False)
    torch.testing.assert_close(r.attribution, saliency(net, images, abs=False).attribution, **EXACT)


# ----------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("method", ["gradient", "guided", "deconv"])
@pytest.mark.parametrize("smooth", [0, 3])
def test_batch_size_does_not_matter(tiny_resnet, images, method, smooth):
    whole = saliency(tiny_resnet, images, target=TARGETS, method=method, smooth=smooth, progress=False)
    parts = [saliency(tiny_resnet, images[i:i + 1], target=t, method=method, smooth=smooth, progress=False)
             for i, t in enumerate(TARGETS)]
    torch.testing.assert_close(whole.attribution, torch.cat([p.attribution for p in parts]), **EXACT)


def test_default_target_is_the_prediction_and_single_image_accepted(tiny_net, images):
    pred = tiny_net(images).argmax(1)
    r = saliency(tiny_net, images, method="guided")
    assert torch.equal(r.target, pred)
    one = saliency(tiny_net, images[0], method="guided")  # (C, H, W) -> a batch of one
    assert one.attribution.shape == (1, 3, 12, 10)
    torch.testing.assert_close(one.attribution[0], r.attribution[0], **EXACT)
    assert torch.equal(r.inputs, images)


def test_facade_is_the_same_call(tiny_net, images):
    a = explain(tiny_net).saliency(images, target=1, method="deconv", abs=False)
    b = saliency(tiny_net, images, target=1, method="deconv", abs=False)
    torch.testing.assert_close(a.attribution, b.attribution, rtol=0, atol=0)


# ----------------------------------------------------------------------------- nothing changed
def test_model_inputs_rng_and_grad_mode_unchanged(tiny_resnet, images, snapshot):
    """A model in train mode with existing .grad: BatchNorm statistics must not move (we run in eval
    mode and restore the flags), .grad must not accumulate, the global RNG is not consumed."""
    m = tiny_resnet.train()
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    snap = snapshot(m)
    x = images.clone()
    rng = torch.get_rng_state()
    with torch.no_grad():
        r = saliency(m, x, method="guided", smooth=2, progress=False)
        assert not torch.is_grad_enabled()
    snap.assert_unchanged()
    assert torch.equal(x, images) and not x.requires_grad
    assert torch.equal(torch.get_rng_state(), rng)
    assert r.attribution.requires_grad is False and r.attribution.device.type == "cpu"
    m.eval()
    torch.testing.assert_close(r.attribution, saliency(m, x, target=r.target, method="guided", smooth=2,
                                                       progress=False).attribution, **EXACT)


@pytest.mark.parametrize("method,smooth", [("gradient", 0), ("guided", 0), ("deconv", 2)])
def test_unchanged_after_an_exception(exploding_net, images, snapshot, method, smooth):
    exploding_net.train()
    snap = snapshot(exploding_net)
    with pytest.raises(Boom):
        saliency(exploding_net, images, method=method, smooth=smooth, progress=False)
    snap.assert_unchanged()
    assert hook_count(exploding_net) == 0
    assert torch._C._len_torch_function_stack() == 0  # the TorchFunctionMode is gone
    y = torch.tensor([-1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad((F.relu(y) * torch.tensor([3.0, -5.0])).sum(), y)
    assert g.tolist() == [0.0, -5.0]  # plain ReLU gradient again


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,err,word", [
    ({"method": "smooth"}, ValueError, "method"),
    ({"target": 5}, ValueError, "target"),
    ({"target": [0, 1]}, ValueError, "target"),
    ({"smooth": -1}, ValueError, "smooth"),
    ({"smooth": 2.5}, TypeError, "smooth"),
    ({"noise": -0.1}, ValueError, "noise"),
    ({"abs": "yes"}, TypeError, "abs"),
])
def test_bad_arguments_are_named(tiny_net, images, kwargs, err, word):
    with pytest.raises(err, match=word):
        saliency(tiny_net, images, **kwargs)


def test_wrong_channel_count_is_named(tiny_net):
    with pytest.raises(ValueError, match="channels"):
        saliency(tiny_net, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="x='image.png': no such image file"):
        saliency(tiny_net, "image.png")  # a path is read as an image file (cnn_explain.images.to_batch)
    with pytest.raises(TypeError, match="x must be"):
        saliency(tiny_net, {"image": 1})


def test_inference_mode_tensors_are_accepted(tiny_net, images):
    """Results of inference-mode code (e.g. occlusion's .target) may be passed straight in."""
    ref = saliency(tiny_net, images, target=TARGETS, method="guided").attribution
    with torch.inference_mode():
        x, t = images.clone(), torch.tensor(TARGETS)
    torch.testing.assert_close(saliency(tiny_net, x, target=t, method="guided").attribution, ref, **EXACT)
    with torch.inference_mode():
        r = saliency(tiny_net, x, target=t, method="guided")
    assert not r.attribution.is_inference() and not r.target.is_inference()
    torch.testing.assert_close(r.attribution, ref, **EXACT)
