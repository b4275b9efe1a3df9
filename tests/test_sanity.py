"""sanity_check (Adebayo et al.), its similarity measures (vs scipy / by hand), and deletion/insertion
curves on a linear model where the right order is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnn_explain import explain
from cnn_explain.attribution import deletion_insertion, saliency, sanity_check
from cnn_explain.attribution._similarity import normalize, spearman, ssim
from cnn_explain.attribution.result import Attribution

from conftest import Boom


# ----------------------------------------------------------------------------- similarity
def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged, by brute force: rank = 1 + #smaller + (#equal - 1) / 2."""
    return np.array([1 + (a < v).sum() + ((a == v).sum() - 1) / 2 for v in a])


def test_spearman_is_pearson_of_average_ranks_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 200).astype(float)   # many ties
    b = rng.normal(size=200)
    b[:50] = 0.0                                 # guided-backprop-like exact zeros
    expected = np.corrcoef(_average_ranks(a), _average_ranks(b))[0, 1]
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert spearman(torch.tensor(a), torch.tensor(-a)) == pytest.approx(-1.0)
    # by hand: ranks (1, 2.5, 2.5, 4) and (4, 3, 2, 1): rho = -4.5 / sqrt(4.5 * 5)
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([4.0, 3, 2, 1])) == pytest.approx(-4.5 / np.sqrt(22.5))
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    with pytest.raises(ValueError, match="differ in size"):
        spearman(np.ones(3), np.ones(4))


def test_ssim_by_hand():
    """A 5x5 map with a 5x5 Gaussian window has one window position: SSIM is the weighted formula."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 5, generator=g).double(), torch.rand(5, 5, generator=g).double()
    r = np.arange(5) - 2.0
    w = np.exp(-r ** 2 / (2 * 1.5 ** 2))
    w = np.outer(w, w) / np.outer(w, w).sum()
    A, B = a.numpy(), b.numpy()
    ma, mb = (w * A).sum(), (w * B).sum()
    va, vb, cov = (w * A * A).sum() - ma ** 2, (w * B * B).sum() - mb ** 2, (w * A * B).sum() - ma * mb
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(b, a))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 1 - a) < 0
    assert torch.equal(normalize(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))


# ----------------------------------------------------------------------------- the cascade
def test_cascade_steps_are_what_they_say(tiny_net, images, snapshot):
    snap = snapshot(tiny_net)
    rng = torch.get_rng_state()
    s = sanity_check(tiny_net, images, method="gradient", seed=5, progress=False)
    snap.assert_unchanged()
    assert torch.equal(torch.get_rng_state(), rng)
    assert s.layers == ("fc", "conv2", "conv1") and s.steps == ["original", "+fc", "+conv2", "+conv1"]
    assert s.maps.shape == (4, 3, 3, 12, 10) and s.spearman.shape == s.ssim.shape == (4, 3)
    torch.testing.assert_close(s.spearman[0], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(s.ssim[0], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(s.maps[0], saliency(tiny_net, images, method="gradient").attribution)
    # step 2 by hand: re-initialize fc then conv2 from the same seed, recompute
    work = copy.deepcopy(tiny_net)
    torch.manual_seed(5)
    work.fc.reset_parameters()
    work.conv2.reset_parameters()
    torch.set_rng_state(rng)
    torch.testing.assert_close(s.maps[2], saliency(work, images, target=s.target, method="gradient").attribution)
    a, b = s.maps[0, 1].abs().amax(0), s.maps[2, 1].abs().amax(0)
    assert s.spearman[2, 1].item() == pytest.approx(spearman(a, b))
    assert s.ssim[2, 1].item() == pytest.approx(ssim(normalize(a), normalize(b)))
    assert "spearman" in str(s) and "+conv2" in str(s)


def test_orders_seed_and_facade(tiny_net, images):
    bottom = sanity_check(tiny_net, images, method="guided", order="bottom-up", progress=False)
    assert bottom.layers == ("conv1", "conv2", "fc")
    indep = sanity_check(tiny_net, images, method="deconv", order="independent", progress=False)
    assert indep.steps == ["original", "fc", "conv2", "conv1"]
    a = sanity_check(tiny_net, images, method="grad_cam", seed=1, progress=False)
    b = explain(tiny_net).sanity_check(images, method="grad_cam", seed=1, progress=False)
    c = sanity_check(tiny_net, images, method="grad_cam", seed=2, progress=False)
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=0)
    assert not torch.allclose(a.maps[1:], c.maps[1:])
    assert a.maps.shape[2] == 1  # Grad-CAM maps have one channel


def test_bad_arguments_and_exception(tiny_net, exploding_net, images, snapshot):
    with pytest.raises(ValueError, match="method"):
        sanity_check(tiny_net, images, method="lime")
    with pytest.raises(ValueError, match="order"):
        sanity_check(tiny_net, images, order="random")
    with pytest.raises(ValueError, match="layers"):
        sanity_check(tiny_net, images, layers="conv9")
    snap = snapshot(exploding_net)
    with pytest.raises(Boom):
        sanity_check(exploding_net, images, progress=False)
    snap.assert_unchanged()


@pytest.mark.slow
def test_paper_finding_on_trained_digits():
    """Adebayo et al. Fig. 2: re-initializing the top (dense) layers decorrelates the gradient map,
    while guided backprop barely changes."""
    from cnn_explain.data import load_digits
    from cnn_explain.train import pretrained_digits_cnn

    model = pretrained_digits_cnn()  # trained once (~15 s), then cached
    x, y = load_digits("test").tensors
    x, y = x[:8], y[:8]
    assert (model(x).argmax(1) == y).float().mean() >= 0.75  # the model is trained
    grad = sanity_check(model, x, method="gradient", progress=False)
    guided = sanity_check(model, x, method="guided", progress=False)
    print(grad, guided, sep="\n")
    top2 = slice(1, 3)  # after re-initializing the last dense layer, then the one before
    assert guided.spearman[top2].mean() > 0.8
    assert grad.spearman[top2].mean() < guided.spearman[top2].mean() - 0.2
    assert grad.ssim[top2].mean() < guided.ssim[top2].mean() - 0.2
    # per image, too: guided stays more similar than the gradient after the top layer
    assert (guided.spearman[1] > grad.spearman[1]).float().mean() >= 0.75


# ----------------------------------------------------------------------------- deletion / insertion
def _linear(w: torch.Tensor) -> nn.Module:
    fc = nn.Linear(w.numel(), 2, bias=False)
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[0] = w.flatten()
    return nn.Sequential(nn.Flatten(), fc).eval()


def test_deletion_insertion_by_hand():
    """Score = sum_i w_i x_i: with attribution w*x (the exact contributions), deleting the top n
    pixels leaves total - (sum of the n largest contributions); inserting them gives that sum."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(1, 4, 5, generator=g), torch.rand(2, 1, 4, 5, generator=g)
    model = _linear(w)
    contrib = (w * x).reshape(2, -1).double()
    r = deletion_insertion(model, x, w * x, target=0, steps=10, measure="logit", progress=False)
    top = contrib.sort(dim=1, descending=True).values
    cum = torch.cat([torch.zeros(2, 1, dtype=torch.float64), top.cumsum(1)], 1)
    counts = [(k * 20) // 10 for k in range(11)]
    torch.testing.assert_close(r.fractions, torch.tensor(counts, dtype=torch.float64) / 20)
    torch.testing.assert_close(r.insertion, cum[:, counts], atol=1e-5, rtol=0)
    torch.testing.assert_close(r.deletion, contrib.sum(1, keepdim=True) - cum[:, counts], atol=1e-5, rtol=0)
    np.testing.assert_allclose(r.deletion_auc.numpy(), np.trapezoid(r.deletion.numpy(), r.fractions.numpy(), axis=1))
    # the exact map beats the reversed one on both curves
    worse = deletion_insertion(model, x, -(w * x), target=0, steps=10, measure="logit", progress=False)
    assert (r.deletion_auc < worse.deletion_auc).all() and (r.insertion_auc > worse.insertion_auc).all()


def test_deletion_insertion_reads_the_result(tiny_net, images, snapshot):
    snap = snapshot(tiny_net)
    res = saliency(tiny_net, images, target=[1, 2, 3], method="guided")
    r = deletion_insertion(tiny_net, images, res, steps=4, baseline=torch.zeros(3, 1, 1), progress=False)
    snap.assert_unchanged()
    assert r.target.tolist() == [1, 2, 3] and r.method == "guided" and r.deletion.shape == (3, 5)
    probs = tiny_net(images).softmax(1)[[0, 1, 2], [1, 2, 3]].detach().double()
    torch.testing.assert_close(r.deletion[:, 0], probs, atol=1e-6, rtol=0)   # nothing deleted yet
    torch.testing.assert_close(r.insertion[:, -1], probs, atol=1e-6, rtol=0)  # everything inserted
    torch.testing.assert_close(r.deletion[:, -1], r.insertion[:, 0])          # all baseline


@pytest.mark.parametrize("kwargs,err,word", [
    ({"steps": 0}, ValueError, "steps"),
    ({"measure": "auc"}, ValueError, "measure"),
    ({"baseline": "blur"}, TypeError, "baseline"),
    ({"baseline": torch.zeros(2, 1, 1)}, ValueError, "baseline"),
])
def test_deletion_bad_arguments(tiny_net, images, kwargs, err, word):
    a = Attribution(torch.rand(3, 3, 12, 10), [0, 1, 2], "random")
    with pytest.raises(err, match=word):
        deletion_insertion(tiny_net, images, a, progress=False, **kwargs)
    with pytest.raises(ValueError, match="attribution"):
        deletion_insertion(tiny_net, images, torch.rand(3, 1, 6, 5), progress=False)


# ----------------------------------------------------------------------------- Integrated Gradients and the CAM family
@pytest.mark.parametrize("method,canonical", [("ig", "integrated_gradients"), ("integrated_gradients",
                                                                                "integrated_gradients"),
                                              ("grad-cam++", "grad-cam++"), ("score-cam", "score-cam")])
def test_sanity_check_runs_ig_and_cam_family(tiny_net, images, snapshot, method, canonical):
    """Step 0 is the map of the function itself on the trained model; later steps change it."""
    from cnn_explain.attribution.cam_family import cam
    from cnn_explain.attribution.integrated_gradients import integrated_gradients

    snap = snapshot(tiny_net)
    s = sanity_check(tiny_net, images, method=method, seed=3, progress=False, ig_steps=8, cam_layer="conv2")
    snap.assert_unchanged()
    assert s.method == canonical and s.steps == ["original", "+fc", "+conv2", "+conv1"]
    if canonical == "integrated_gradients":
        ref = integrated_gradients(tiny_net, images, steps=8, progress=False)
    else:
        ref = cam(tiny_net, images, method=method, layer="conv2", progress=False)
    assert s.target.tolist() == ref.target.tolist()
    torch.testing.assert_close(s.maps[0], ref.attribution, rtol=0, atol=0)
    torch.testing.assert_close(s.spearman[0], torch.ones(3, dtype=torch.float64))
    assert s.maps.shape[2] == (3 if canonical == "integrated_gradients" else 1)
    assert not torch.allclose(s.maps[1], s.maps[0])  # re-initializing the classifier changes the map
    # step 1 by hand: the classifier re-initialized from the same seed, the map recomputed for the same targets
    work = copy.deepcopy(tiny_net)
    rng = torch.get_rng_state()
    torch.manual_seed(3)
    work.fc.reset_parameters()
    torch.set_rng_state(rng)
    if canonical == "integrated_gradients":
        again = integrated_gradients(work, images, target=s.target, steps=8, progress=False)
    else:
        again = cam(work, images, target=s.target, method=method, layer="conv2", progress=False)
    torch.testing.assert_close(s.maps[1], again.attribution, rtol=0, atol=0)


def test_sanity_check_facade_takes_the_new_methods(tiny_net, images):
    a = explain(tiny_net).sanity_check(images, method="ig", ig_steps=4, progress=False)
    b = sanity_check(tiny_net, images, method="integrated_gradients", ig_steps=4, progress=False)
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=0)
    with pytest.raises(ValueError, match="grad-cam\\+\\+"):  # the message lists the CAM family
        sanity_check(tiny_net, images, method="gradcam++")


@pytest.mark.parametrize("method", ["integrated_gradients", "ig", "grad-cam++", "layer-cam"])
def test_deletion_insertion_computes_the_map_by_name(tiny_net, images, method):
    """``method=`` gives the same curves as the map computed by its function and passed in."""
    from cnn_explain.attribution.cam_family import cam
    from cnn_explain.attribution.integrated_gradients import integrated_gradients

    if method in ("ig", "integrated_gradients"):
        opts = {"steps": 8, "baseline": 0.5}
        ref = integrated_gradients(tiny_net, images, target=[1, 2, 3], progress=False, **opts)
    else:
        opts = {"layer": "conv2"}
        ref = cam(tiny_net, images, target=[1, 2, 3], method=method, progress=False, **opts)
    got = deletion_insertion(tiny_net, images, method=method, target=[1, 2, 3], steps=5, method_options=opts,
                             progress=False)
    want = deletion_insertion(tiny_net, images, ref, steps=5, progress=False)
    assert got.method == ref.method and got.target.tolist() == [1, 2, 3]
    torch.testing.assert_close(got.deletion, want.deletion, rtol=0, atol=0)
    torch.testing.assert_close(got.insertion, want.insertion, rtol=0, atol=0)
    short = deletion_insertion(tiny_net, images, method, target=[1, 2, 3], steps=5, method_options=opts,
                               progress=False)  # the name in attribution's place
    torch.testing.assert_close(short.deletion_auc, got.deletion_auc, rtol=0, atol=0)


def test_deletion_insertion_method_errors(tiny_net, images):
    a = Attribution(torch.rand(3, 3, 12, 10), [0, 1, 2], "random")
    with pytest.raises(ValueError, match="not both"):
        deletion_insertion(tiny_net, images, a, method="ig", progress=False)
    with pytest.raises(ValueError, match="neither"):
        deletion_insertion(tiny_net, images, progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        deletion_insertion(tiny_net, images, method="lime", progress=False)
    with pytest.raises(ValueError, match="steps"):  # checked by Integrated Gradients itself
        deletion_insertion(tiny_net, images, method="ig", method_options={"steps": 0}, progress=False)
    with pytest.raises(TypeError, match="method_options"):
        deletion_insertion(tiny_net, images, method="ig", method_options=[("steps", 4)], progress=False)
