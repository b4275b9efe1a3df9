"""Style transfer: Gram matrices, composable losses, transfer() on any CNN, inputs, figure, example."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from PIL import Image

from cnn_explain.hooks import hook_count
from cnn_explain.models import random_texture_net
from cnn_explain.style import (
    StyleResult, content_loss, gram_matrix, layer_features, style_loss, total_variation, transfer,
)

from conftest import Boom

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


@pytest.fixture(scope="module")
def pair():
    """A smooth 'content' image and a stripy, differently coloured 'style' image, (3, 32, 32) in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    content = torch.stack([xx, yy, 0.5 * (xx + yy)]) * 0.8 + 0.1 * torch.rand(3, SIZE, SIZE, generator=g)
    stripes = 0.5 + 0.5 * torch.sin(xx * 25 + yy * 9)
    style = torch.stack([stripes, 1 - stripes, 0.3 * torch.ones_like(stripes)]) * 0.9
    return content.clamp(0, 1), style.clamp(0, 1)


@pytest.fixture(scope="module")
def net():
    return random_texture_net(channels=16)


def plain_maps(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Independent forward through the texture net's branches, without hooks."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    blur = torch.outer(k, k).expand(3, 1, 4, 4)
    out, level, image = {}, 0, x
    for lev, conv, relu in net.branches:
        while level < lev:
            image, level = F.conv2d(F.pad(image, [1] * 4, mode="reflect"), blur, stride=2, groups=3), level + 1
        c = getattr(net, conv)
        out[relu] = F.relu(F.conv2d(F.pad(image, [c.kernel_size[0] // 2] * 4, mode="reflect"), c.weight, c.bias))
    return out


# --------------------------------------------------------------------------- gram matrix
def test_gram_matrix_equals_manual_sum_symmetric_psd():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    got = gram_matrix(f)
    manual = torch.zeros(2, 3, 3, dtype=torch.float64)
    for n in range(2):
        for i in range(3):
            for j in range(3):
                manual[n, i, j] = sum(f[n, i, y, x] * f[n, j, y, x] for y in range(4) for x in range(5)) / (3 * 4 * 5)
    torch.testing.assert_close(got, manual)
    torch.testing.assert_close(got, torch.einsum("nchw,ndhw->ncd", f, f) / 60)
    torch.testing.assert_close(got, got.transpose(1, 2), rtol=0, atol=0)
    assert torch.linalg.eigvalsh(got).min() >= -1e-6
    # per image: batch-size invariance
    torch.testing.assert_close(gram_matrix(f[1:]), got[1:])


def test_gram_matrix_gradient_is_autograds_of_the_plain_product():
    """The symmetric backward (one product) against autograd's through bmm(F, Fᵀ) (two), for an upstream gradient
    that is not symmetric, and torch's numerical gradcheck in float64."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    up = torch.randn(2, 5, 5, dtype=torch.float64, generator=g)
    (ours,) = torch.autograd.grad((gram_matrix(f) * up).sum(), [f])
    flat = f.reshape(2, 5, 12)
    (ref,) = torch.autograd.grad((torch.bmm(flat, flat.transpose(1, 2)) / 60 * up).sum(), [f])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(gram_matrix, (f,))


def test_gram_matrix_bad_input():
    with pytest.raises(TypeError, match="features"):
        gram_matrix([[1.0]])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gram_matrix(torch.ones(3, 4, 4))


# --------------------------------------------------------------------------- losses
def test_losses_hand_values_and_algebra():
    target = {"a": torch.full((1, 2, 2, 2), 2.0)}
    feats = {"a": torch.ones(1, 2, 2, 2)}
    image = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    c = content_loss(target)
    assert float(c(feats, image)) == pytest.approx(8 / 32)  # ‖1−2‖² = 8 over ‖2‖² = 32
    s = style_loss(target)  # grams: all 0.25 vs all 1.0 -> (0.75²·4)/(1·4)
    assert float(s(feats, image)) == pytest.approx(0.5625)
    tv = total_variation(norm="squared")
    assert float(tv(feats, image)) == pytest.approx(1.0)  # rows equal, columns differ by 1
    combo = c + 10 * s - tv / 2 + 1.0
    total, parts = combo.terms(feats, image)
    assert float(total) == pytest.approx(0.25 + 5.625 - 0.5 + 1.0)
    assert parts == pytest.approx({"content": 0.25, "style": 0.5625, "tv": 1.0})
    assert set(combo.layers) == {"a"}
    assert float(sum([c, s])(feats, image)) == pytest.approx(0.8125)


def test_objective_evaluates_each_leaf_once():
    calls = []
    from cnn_explain.objectives import Objective

    leaf = Objective(lambda ctx: calls.append(1) or torch.tensor(2.0), "x")
    assert float((leaf + 3 * leaf - leaf)(None, None)) == 6.0
    assert len(calls) == 1


def test_style_weights_checked():
    t = {"a": torch.ones(1, 2, 2, 2), "b": torch.ones(1, 2, 2, 2)}
    with pytest.raises(ValueError, match="2 style layers"):
        style_loss(t, [1.0])
    with pytest.raises(ValueError, match="not style layers"):
        style_loss(t, {"c": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        style_loss(t, [1.0, -1.0])


# --------------------------------------------------------------------------- transfer
@pytest.mark.slow
def test_content_and_style_losses_fall_from_noise(pair, net):
    res = transfer(*pair, model=net, init="noise", style_weight=1.0, steps=15, size=SIZE, progress=False)
    assert isinstance(res, StyleResult) and res.image.shape == (3, SIZE, SIZE)
    assert res.image.min() >= 0 and res.image.max() <= 1 and res.image.device.type == "cpu"
    first, last = res.history[0], res.history[-1]
    assert set(first) == {"total", "content", "style", "tv"}
    assert last["content"] < 0.75 * first["content"]
    assert last["style"] < 0.5 * first["style"]
    assert last["total"] < 0.5 * first["total"]


@pytest.mark.slow
def test_lbfgs_runs_every_requested_step(pair, net):
    """Normalized losses: L-BFGS does not stop on its tolerances; the image moves at every step."""
    steps = 12
    res = transfer(*pair, model=net, steps=steps, size=SIZE, progress=False)
    totals = [h["total"] for h in res.history]
    assert len(totals) == steps
    assert all(a != b for a, b in zip(totals, totals[1:]))
    assert totals[-1] < totals[0]
    assert res.history[0]["content"] == 0.0  # init="content"
    assert res.settings["steps"] == steps and res.settings["optimizer"] == "lbfgs"


@pytest.mark.slow
def test_style_only_moves_grams_toward_style(pair, net):
    content, style = pair
    res = transfer(content, style, model=net, content_weight=0.0, tv_weight=0.0, steps=20, size=SIZE, progress=False)
    before, after, target = (plain_maps(net, x[None]) for x in (content, res.image, style))
    for name in net.style_layers:
        d0 = (gram_matrix(before[name]) - gram_matrix(target[name])).norm()
        d1 = (gram_matrix(after[name]) - gram_matrix(target[name])).norm()
        assert d1 < 0.5 * d0, name
    # the recorded style loss is the independent computation at the start
    w = 1 / len(net.style_layers)
    expected = sum(w * (gram_matrix(before[n]) - gram_matrix(target[n])).square().sum()
                   / gram_matrix(target[n]).square().sum() for n in net.style_layers)
    assert res.history[0]["style"] == pytest.approx(float(expected), rel=1e-4)


def test_deterministic_under_seed_and_global_rng_untouched(pair, net):
    rng = torch.get_rng_state()
    kw = dict(model=net, init="noise", steps=4, size=SIZE, progress=False)
    a = transfer(*pair, seed=3, **kw)
    b = transfer(*pair, seed=3, **kw)
    c = transfer(*pair, seed=4, **kw)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a.image, b.image) and a.history == b.history
    assert not torch.equal(a.image, c.image)


@pytest.mark.parametrize("bad", [{}, {"optimizer": "sgd"}, {"content": "/no/such/file.jpg"}, {"steps": 0}])
def test_default_network_leaves_global_rng_untouched(pair, bad):
    """Building random_texture_net() draws nothing from the global RNG, also when an argument is rejected."""
    bad = dict(bad)
    rejected = bool(bad)
    content = bad.pop("content", pair[0])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    if rejected:
        with pytest.raises(ValueError):
            transfer(content, pair[1], size=16, progress=False, **bad)
    else:
        res = transfer(content, pair[1], steps=1, size=16, init="noise", progress=False)
        assert res.settings["model_name"] == "RandomTextureNet"
    assert torch.equal(torch.get_rng_state(), state)


def test_adam(pair, net):
    res = transfer(*pair, model=net, optimizer="adam", init="noise", steps=15, lr=0.05, size=SIZE, progress=False)
    assert res.history[-1]["total"] < res.history[0]["total"]
    assert res.settings["lr"] == 0.05


def test_any_cnn_by_layer_names_model_unchanged(pair, tiny_resnet, snapshot):
    m = tiny_resnet.train()
    p = next(m.parameters())
    p.grad = torch.full_like(p, 0.5)
    snap = snapshot(m)
    calls = []

    def transform(x):
        calls.append(x.shape)
        return (x - 0.5) / 0.25

    res = transfer(*pair, model=m, content_layers="layer1.conv2", style_layers=["bn", "layer1.bn1", "layer2.conv1"],
                   style_weights=[1, 1, 2], steps=3, size=SIZE, transform=transform, progress=False)
    snap.assert_unchanged()
    # the first step's forward (on the content image: it also gives the content targets), run again with copies
    # because the model's in-place ReLU changes the recorded "bn" output; the style target; steps 2 and 3; the result
    assert m.training and len(calls) == 2 + 1 + 2 + 1
    assert res.settings["style_weights"] == {"bn": 1.0, "layer1.bn1": 1.0, "layer2.conv1": 2.0}


def test_model_unchanged_after_exception(pair, exploding_net, snapshot):
    snap = snapshot(exploding_net)
    with pytest.raises(Boom):
        # a style layer after the point where forward raises (the forward stops after the last layer it needs)
        transfer(*pair, model=exploding_net, content_layers="conv1", style_layers="relu2", steps=2, progress=False)
    snap.assert_unchanged()
    assert hook_count(exploding_net) == 0


def test_default_model_unchanged(pair, net, snapshot):
    snap = snapshot(net)
    transfer(*pair, model=net, steps=1, size=SIZE, progress=False)
    snap.assert_unchanged()


# --------------------------------------------------------------------------- inputs
def test_inputs_converted_and_resized_with_warning(pair, net, tmp_path):
    content, style = pair
    gray = Image.fromarray((content[0].numpy() * 255).astype(np.uint8), mode="L")
    rgba = np.concatenate([(style.permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                           np.full((SIZE, SIZE, 1), 128, np.uint8)], axis=2)
    big = Image.fromarray(rgba, mode="RGBA").resize((48, 40))
    path = tmp_path / "style.png"
    big.save(path)
    with pytest.warns(UserWarning, match="differ in size"):
        res = transfer(gray, str(path), model=net, steps=1, size=24, progress=False)
    assert res.image.shape == (3, 24, 24) and res.content.shape == (3, 24, 24)
    torch.testing.assert_close(res.content[0], res.content[1])  # gray repeated to RGB
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same sizes: no warning
        res = transfer(content[None], (style * 255).to(torch.uint8), model=net, steps=1, size=None, progress=False)
    assert res.image.shape == (3, SIZE, SIZE)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(content="/no/such/file.jpg"), ValueError, "content='/no/such/file.jpg': no such image file"),
        (dict(style=__file__), ValueError, "style=.*could not be read as an image"),
        (dict(content=[1, 2, 3]), TypeError, "content"),
        (dict(style=torch.rand(2, 3, 8, 8)), ValueError, "style must be one image"),
        (dict(content=torch.rand(3, 8, 8) * 3), ValueError, r"content must hold values in \[0, 1\]"),
        (dict(content=torch.rand(2, 8, 8)), ValueError, "content must have 1 .* 3 .* or 4"),
        (dict(style_layers=["s1_relu4"]), ValueError, "did you mean .*'s1_relu3'"),
        (dict(content_layers="nope"), ValueError, "content_layers: no layer named 'nope'"),
        (dict(optimizer="sgd"), ValueError, "optimizer"),
        (dict(init="zeros"), ValueError, "init"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=2.5), TypeError, "steps"),
        (dict(style_weight=-1.0), ValueError, "style_weight"),
        (dict(size=(4, 4)), ValueError, "size"),
        (dict(size="big"), TypeError, "size"),
        (dict(style_weights=[1.0]), ValueError, "style_weights"),
        (dict(model="vgg"), TypeError, "model"),
    ],
)
def test_bad_inputs(pair, net, kwargs, error, match):
    args = {"content": pair[0], "style": pair[1], "model": net, "steps": 1, "size": SIZE, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        transfer(args.pop("content"), args.pop("style"), **args)


def test_other_model_gets_gatys_like_default_layers_or_a_clear_error(pair, tiny_net):
    res = transfer(*pair, model=tiny_net, steps=2, size=16, progress=False)
    assert res.settings["content_layers"] == ["conv2"] and res.settings["style_layers"] == ["conv1", "conv2"]  # 2 convs
    no_conv = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    with pytest.raises(ValueError, match="content_layers is required"):
        transfer(*pair, model=no_conv, style_layers="1", progress=False)


def test_layer_features_match_plain_forward(pair, net):
    got = layer_features(net, pair[0], ["s1_relu3", "s4_relu5"])
    ref = plain_maps(net, pair[0][None])
    torch.testing.assert_close(got["s1_relu3"], ref["s1_relu3"])
    torch.testing.assert_close(got["s4_relu5"], ref["s4_relu5"])


# --------------------------------------------------------------------------- figure, example
def test_style_figure_shows_result_and_history(pair, net):
    from matplotlib.figure import Figure

    from cnn_explain.plotting import style_figure

    res = transfer(*pair, model=net, init="noise", steps=3, size=SIZE, progress=False)
    fig = style_figure(res)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    shown = fig.axes[2].images[0].get_array()
    np.testing.assert_allclose(shown, res.image.permute(1, 2, 0).numpy(), atol=1e-6)
    lines = {ln.get_label(): ln.get_ydata() for ln in fig.axes[3].get_lines()}
    np.testing.assert_allclose(lines["style"], [h["style"] for h in res.history])
    np.testing.assert_allclose(lines["total (weighted)"], [h["total"] for h in res.history])
    assert fig.axes[3].get_yscale() == "log"
    with pytest.raises(TypeError, match="StyleResult"):
        style_figure("not a result")


@pytest.mark.slow
def test_example_runs_with_tiny_settings(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("style_example", ROOT / "examples" / "style_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, fig = tmp_path / "out.png", tmp_path / "fig.png"
    assert mod.main(["--size", "32", "--steps", "2", "--out", str(out), "--figure", str(fig), "--quiet"]) == 0
    assert Image.open(out).size == (32, 32) and fig.stat().st_size > 0
    assert "2 steps" in capsys.readouterr().out


def test_defaults_make_the_style_plain_on_the_sample_photos():
    """Default weights, layers, steps and start on the sample photos: the Gram loss against the style image
    drops >= 10x from the content photo's own (recomputed here by a plain forward, not by the package)."""
    from cnn_explain.data import sample_image

    res = transfer(sample_image("china"), sample_image("flower"), size=96, progress=False)
    net = random_texture_net()
    s = plain_maps(net, res.style[None])
    weights = res.settings["style_weights"]

    def loss(img: torch.Tensor) -> float:
        f = plain_maps(net, img[None])
        return sum(w * float((gram_matrix(f[n]) - gram_matrix(s[n])).square().sum() / gram_matrix(s[n]).square().sum())
                   for n, w in weights.items())

    drop = loss(res.content) / loss(res.image)
    assert res.style_drop == pytest.approx(drop, rel=1e-3)
    assert drop >= 10.0, drop
    assert res.setup_seconds > 0


def test_forwards_per_run_without_in_place_ops(pair, net):
    """init="content": the first step's forward doubles as the content target; a noise start needs its own."""
    calls = []

    def transform(x):
        calls.append(1)
        return x

    transfer(*pair, model=net, steps=3, size=SIZE, transform=transform, progress=False)
    assert len(calls) == 1 + 1 + 2 + 1  # first step = content target, style target, steps 2-3, result
    calls.clear()
    transfer(*pair, model=net, steps=3, size=SIZE, init="noise", transform=transform, progress=False)
    assert len(calls) == 1 + 1 + 3 + 1 + 1  # content and style targets, 3 steps, content and result for style_drop


@pytest.mark.parametrize("init", ["content", "noise"])
def test_in_place_relu_behind_a_recorded_layer_changes_nothing(pair, tiny_resnet, init):
    """The maps are recorded without a copy; a model whose in-place ReLU overwrites a recorded output must give
    exactly what the same model without in-place ops gives."""
    import copy

    plain = copy.deepcopy(tiny_resnet)
    for mod in plain.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    kw = dict(content_layers="layer1.conv2", style_layers=["bn", "layer1.bn1", "layer2.conv1"], steps=4,
              size=SIZE, init=init, progress=False)
    a, b = transfer(*pair, model=tiny_resnet, **kw), transfer(*pair, model=plain, **kw)
    assert torch.equal(a.image, b.image)
    assert a.history == b.history and a.style_drop == b.style_drop


@pytest.mark.parametrize("init", ["content", "noise"])
def test_history_equals_an_independent_gatys_loop(pair, net, init):
    """transfer() against a hand-written loop (plain forward without hooks, Grams by bmm, autograd's backward,
    torch.optim.LBFGS with one iteration per step): the loss at every step and the result agree. Checks the
    stopped forwards, the symmetric Gram backward and the first step's forward doubling as the content target."""
    from cnn_explain.style import DEFAULTS

    res = transfer(*pair, model=net, steps=5, size=SIZE, init=init, progress=False)
    c_layer, s_layers, w = net.content_layers[0], net.style_layers, res.settings["style_weights"]

    def gram(f):
        n, c, h, wd = f.shape
        f = f.reshape(n, c, h * wd)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * wd)

    with torch.no_grad():
        c_target = plain_maps(net, res.content[None])[c_layer]
        s_grams = {n: gram(f) for n, f in plain_maps(net, res.style[None]).items()}
    img = (res.content[None].clone() if init == "content"
           else torch.rand((1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    opt = torch.optim.LBFGS([img], lr=DEFAULTS["lr"]["lbfgs"], max_iter=1, history_size=20)
    losses = []

    def closure():
        opt.zero_grad()
        f = plain_maps(net, img)
        c_loss = (f[c_layer] - c_target).square().sum() / c_target.square().sum()
        s_loss = sum(w[n] * (gram(f[n]) - g).square().sum() / g.square().sum() for n, g in s_grams.items())
        tv = (img[:, :, 1:] - img[:, :, :-1]).square().mean() + (img[..., 1:] - img[..., :-1]).square().mean()
        loss = res.settings["content_weight"] * c_loss + res.settings["style_weight"] * s_loss + tv
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    for _ in range(5):
        opt.step(closure)
    assert [h["total"] for h in res.history] == pytest.approx(losses, rel=1e-4)
    torch.testing.assert_close(res.image, img.detach()[0].clamp(0, 1), rtol=0, atol=1e-4)
