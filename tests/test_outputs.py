"""Models and layers whose outputs are not tensors: ``output=`` and layer selectors.

The reference for every capability run with ``output="logits"`` on a model that returns a dataclass is the same
capability on a wrapper whose forward returns ``.logits`` (a plain tensor model); a layer given with a selector
(``"stage2.last_hidden_state"``) is the same tensor as the module that produced it (``"stage2.pool"``); a layer
chosen without a selector is refused with the layer, the type it returned and what to pass.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch
from realnets import Logits, real_net
from torch import nn

from cnn_explain import explain
from cnn_explain.attribution import deletion_insertion, grad_cam, occlusion, saliency, sanity_check
from cnn_explain.attribution.integrated_gradients import integrated_gradients
from cnn_explain.embedding import extract
from cnn_explain.features import feature_maps, maximize
from cnn_explain.hooks import capture, resolve_layer, select_output

captum_attr = pytest.importorskip("captum.attr")
TARGETS = [1, 3]



@pytest.fixture
def nets():
    model, x = real_net("dataclass_out")
    return model, Logits(model).eval(), x


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_select_output_reads_every_kind_of_container():
    t = torch.arange(6.0).reshape(2, 3)
    Pair = namedtuple("Pair", "scores extra")

    @dataclass(frozen=True)
    class Out:
        logits: torch.Tensor
        other: torch.Tensor

    assert select_output(Out(t, t + 1)) is t and select_output(Out(t, t + 1), "other").equal(t + 1)
    assert select_output({"a": t + 1, "b": t}, "b") is t
    assert select_output((t + 1, t), 1) is t and select_output(Pair(t + 1, t), "extra") is t
    assert select_output((t, t + 1), lambda o: o[0] * 2).equal(2 * t)
    with pytest.raises(ValueError, match="output='nope'.*Out.*logits \\(2, 3\\), other \\(2, 3\\)"):
        select_output(Out(t, t), "nope")
    with pytest.raises(ValueError, match="output=5 does not select anything from a tuple"):
        select_output((t,), 5)
    with pytest.raises(TypeError, match="output must be an index"):
        select_output((t,), 1.5)


def test_gradient_methods_and_occlusion_equal_the_plain_model(nets):
    model, plain, x = nets
    for kw in ({"method": "gradient"}, {"method": "guided"}, {"method": "gradient", "smooth": 4}):
        a = saliency(model, x, target=TARGETS, output="logits", progress=False, **kw)
        b = saliency(plain, x, target=TARGETS, progress=False, **kw)
        assert a.attribution.abs().max() > 0
        same(a.attribution, b.attribution)
    a = occlusion(model, x, target=TARGETS, window=4, stride=4, output="logits", progress=False)
    b = occlusion(plain, x, target=TARGETS, window=4, stride=4, progress=False)
    same(a.attribution, b.attribution)
    a = integrated_gradients(model, x, target=TARGETS, steps=8, output="logits", progress=False)
    b = integrated_gradients(plain, x, target=TARGETS, steps=8, progress=False)
    same(a.attribution, b.attribution)
    d1 = deletion_insertion(model, x, a, steps=4, output="logits", progress=False)
    d2 = deletion_insertion(plain, x, b, steps=4, progress=False)
    same(d1.deletion, d2.deletion)
    same(d1.insertion, d2.insertion)


def test_grad_cam_with_a_selector_is_the_layer_that_made_the_tensor(nets):
    model, plain, x = nets
    sel = grad_cam(model, x, target=TARGETS, layer="stage2.last_hidden_state", output="logits")
    pool = grad_cam(model, x, target=TARGETS, layer="stage2.pool", output="logits")
    ref = grad_cam(plain, x, target=TARGETS, layer="m.stage2.last_hidden_state")
    default = grad_cam(model, x, target=TARGETS, output="logits")
    assert sel.layer == "stage2.last_hidden_state" and default.layer == "stage2.pool"
    assert sel.cam.abs().max() > 0
    for r in (pool, ref, default):
        same(sel.cam, r.cam)
        same(sel.attribution, r.attribution)
    captum = captum_attr.LayerGradCam(plain, plain.m.stage2.pool).attribute(x, target=TARGETS, relu_attributions=True)
    same(sel.cam, captum)
    guided = grad_cam(model, x, target=TARGETS, layer="stage2.last_hidden_state", guided=True, output="logits")
    same(guided.attribution, grad_cam(plain, x, target=TARGETS, layer="m.stage2.pool", guided=True).attribution)


def test_feature_maps_extract_and_sanity_equal_the_plain_model(nets):
    model, plain, x = nets
    maps = feature_maps(model, x, layers=["stage1.last_hidden_state", "stage2.conv"], output="logits")
    ref = feature_maps(plain, x, layers=["m.stage1.pool", "m.stage2.conv"])
    assert list(maps) == ["stage1.last_hidden_state", "stage2.conv"]
    same(maps["stage1.last_hidden_state"], ref["m.stage1.pool"])
    same(maps["stage2.conv"], ref["m.stage2.conv"])
    f = extract(model, x, layer="stage2.last_hidden_state", output="logits", progress=False)
    g = extract(plain, x, layer="m.stage2.pool", progress=False)
    assert f.layer == "stage2.last_hidden_state"
    same(f.features, g.features)
    assert torch.equal(f.predictions, g.predictions)
    r = maximize(model, "stage2.last_hidden_state", [0, 5], steps=3, input_shape=(3, 16, 16), progress=False)
    q = maximize(plain, "m.stage2.pool", [0, 5], steps=3, input_shape=(3, 16, 16), progress=False)
    same(r.images, q.images)
    same(r.history, q.history)
    for method, extra in (("gradient", {}), ("grad_cam", {"cam_layer": "stage2.last_hidden_state"})):
        s = sanity_check(model, x, method=method, output="logits", progress=False, **extra)
        if extra:
            extra = {"cam_layer": "m." + extra["cam_layer"]}
        t = sanity_check(plain, x, method=method, progress=False, **extra)
        assert [f"m.{n}" for n in s.layers] == list(t.layers)
        same(s.maps, t.maps)


def test_the_facade_passes_output_on(nets):
    model, plain, x = nets
    ex = explain(model, output="logits")
    same(ex.saliency(x, TARGETS, "guided").attribution, saliency(plain, x, target=TARGETS, method="guided").attribution)
    same(ex.grad_cam(x, TARGETS, "stage2.last_hidden_state").cam, grad_cam(plain, x, target=TARGETS).cam)
    same(ex.occlusion(x, TARGETS, window=4, progress=False).attribution,
         occlusion(plain, x, target=TARGETS, window=4, progress=False).attribution)
    same(ex.feature_maps(x, "stage2.last_hidden_state")["stage2.last_hidden_state"],
         feature_maps(plain, x, "m.stage2.pool")["m.stage2.pool"])
    assert torch.equal(ex.predict(x).indices[:, 0], plain(x).argmax(1))


def test_a_layer_without_a_selector_is_refused_with_what_to_pass(nets):
    model, _, x = nets
    expected = ("layer 'stage2' returned a StageOutput, not a tensor; pass layer='stage2.last_hidden_state'"
                ".*last_hidden_state \\([12], 12, 4, 4\\), pooled \\([12], 12\\)")
    for call in (lambda: grad_cam(model, x, layer="stage2", output="logits"),
                 lambda: feature_maps(model, x, layers="stage2", output="logits"),
                 lambda: extract(model, x, layer="stage2", output="logits", progress=False),
                 lambda: maximize(model, "stage2", 0, steps=1, input_shape=(3, 16, 16), progress=False)):
        with pytest.raises(ValueError, match=expected):
            call()
    with pytest.raises(ValueError, match="'stage2.hidden'.*StageOutput.*last_hidden_state"):
        grad_cam(model, x, layer="stage2.hidden", output="logits")
    with pytest.raises(ValueError, match="no layer named 'stage9.last_hidden_state'"):
        grad_cam(model, x, layer="stage9.last_hidden_state", output="logits")


class TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y, {"gate": torch.sigmoid(y)}


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleBlock()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y, extra = self.block(x)
        y.mul_(2)  # in place on what the block returned: the recorded tensor must not change
        return self.fc(torch.relu(y * extra["gate"]).mean((2, 3)))


def test_capture_selects_tuple_items_and_dict_keys_with_gradients():
    torch.manual_seed(0)
    net, x = TupleNet().eval(), torch.rand(2, 3, 6, 6)
    assert resolve_layer(net, "block.1.gate") == ("block.1.gate", net.block)
    with torch.enable_grad(), capture(net, ["block.0", "block.1.gate"], grads=True) as rec:
        out = net(x)
        grads = rec.gradients(out[:, 0])
    y = net.block.conv(x).requires_grad_(True)  # the reference: the same network written out, by autograd
    g = torch.sigmoid(y)
    ref_out = net.fc(torch.relu(y * 2 * g).mean((2, 3)))
    gy, gg = torch.autograd.grad(ref_out[:, 0].sum(), [y, g])
    same(rec["block.0"], y.detach())
    same(rec["block.1.gate"], g.detach())
    same(out, ref_out)
    same(grads["block.1.gate"], gg)
    same(grads["block.0"], gy)  # every path through the block's first output, the gate's too
