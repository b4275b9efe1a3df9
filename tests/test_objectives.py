"""The one objective algebra: hand-worked values, both total-variation norms, leaf caching, layer union."""

from __future__ import annotations

import pytest
import torch

from cnn_explain import objectives as O


def _image() -> torch.Tensor:
    return torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))


def test_total_variation_both_norms_by_hand():
    x = torch.tensor([[[[0.0, 2.0, 2.0], [1.0, 2.0, 4.0]]]])  # (1, 1, 2, 3)
    # vertical differences 1, 0, 2; horizontal 2, 0, 1, 2
    l1 = O.total_variation("l1")({}, x)
    sq = O.total_variation("squared")({}, x)
    assert l1.shape == (1,) and sq.shape == (1,)
    assert float(l1) == pytest.approx(3 / 3 + 5 / 4)
    assert float(sq) == pytest.approx(5 / 3 + 9 / 4)
    with pytest.raises(ValueError, match="norm must be 'l1' or 'squared'"):
        O.total_variation("l2")


def test_total_variation_equals_both_former_definitions():
    """norm='l1' is activation maximization's per-image TV, norm='squared' style transfer's batch TV."""
    x = _image()
    l1_old = (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1) + (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)
    assert torch.equal(O.total_variation("l1")({}, x), l1_old)
    one = x[:1]
    sq_old = (one[:, :, 1:] - one[:, :, :-1]).square().mean() + (one[..., 1:] - one[..., :-1]).square().mean()
    assert torch.equal(O.total_variation("squared")({}, one).reshape(()), sq_old)
    # per image: batch-size invariance
    assert torch.equal(O.total_variation("squared")({}, x)[1:], O.total_variation("squared")({}, x[1:]))


def test_algebra_hand_values_and_terms():
    a = O.Objective(lambda ctx: torch.tensor([1.0, 2.0]), "a", ["conv1"])
    b = O.Objective(lambda ctx: torch.tensor([10.0, 20.0]), "b", ["conv2", "conv1"])
    combo = 2 * a - b / 10 + 1.5 - (-a)
    torch.testing.assert_close(combo({}, None), torch.tensor([2 - 1 + 1.5 + 1, 4 - 2 + 1.5 + 2]))
    assert combo.layers == ("conv1", "conv2")
    total, parts = combo.terms({}, None)
    assert parts == {"a": 3.0, "b": 30.0}  # unweighted, summed over the batch
    torch.testing.assert_close(total, combo({}, None))
    torch.testing.assert_close((3 - a)({}, None), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(sum([a, b])({}, None), torch.tensor([11.0, 22.0]))
    with pytest.raises(TypeError):
        a * "x"


def test_activation_and_style_objectives_in_one_expression():
    """Objectives of both former algebras compose: one class, one Context."""
    g = torch.Generator().manual_seed(1)
    feats = {"conv": torch.rand(1, 4, 3, 3, generator=g)}
    target = {"conv": torch.rand(1, 4, 3, 3, generator=g)}
    image = torch.rand(1, 3, 6, 6, generator=g)
    ctx = O.Context(feats, image, channels=torch.tensor([2]), rows=torch.tensor([0]))
    obj = O.channel("conv") - 0.5 * O.content_loss(target) - 0.1 * O.total_variation(norm="squared")
    c = (feats["conv"] - target["conv"]).square().sum() / target["conv"].square().sum()
    tv = (image[:, :, 1:] - image[:, :, :-1]).square().mean() + (image[..., 1:] - image[..., :-1]).square().mean()
    expected = feats["conv"][0, 2].mean() - 0.5 * c - 0.1 * tv
    torch.testing.assert_close(obj(ctx), expected.reshape(1))
    assert obj.terms(ctx)[1].keys() == {"channel('conv', None)", "content", "tv"}


def test_style_loss_by_hand_against_einsum():
    g = torch.Generator().manual_seed(2)
    t = {"a": torch.rand(1, 3, 4, 4, generator=g), "b": torch.rand(1, 2, 2, 2, generator=g)}
    f = {"a": torch.rand(1, 3, 4, 4, generator=g), "b": torch.rand(1, 2, 2, 2, generator=g)}

    def gram(x):
        return torch.einsum("nchw,ndhw->ncd", x, x) / x[0].numel()

    expected = sum(w * (gram(f[n]) - gram(t[n])).square().sum() / gram(t[n]).square().sum()
                   for n, w in (("a", 0.25), ("b", 0.75)))
    torch.testing.assert_close(O.style_loss(t, [0.25, 0.75])(f, None), expected)
    torch.testing.assert_close(O.style_loss(t, {"a": 1, "b": 3})(f, None), 4 * expected)  # weights are not rescaled
