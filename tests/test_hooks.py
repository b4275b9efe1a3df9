"""hooks.capture / preserved / resolve_layers: what is recorded, and that the model comes back as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain.hooks import capture, hook_count, preserved, resolve_layer, resolve_layers, select_output, split_selector

from conftest import Boom


def test_records_true_outputs_despite_inplace_ops(tiny_resnet, images):
    """Inplace ReLU and `out += identity` reuse memory; the recording must hold what the layer produced."""
    m = tiny_resnet
    blk = m.layer1
    with capture(m, ["layer1.bn2", "layer1.conv1", "layer1.bn1"]) as rec:
        m(images)
    # independent recomputation, step by step, without hooks
    with torch.no_grad():
        x = m.relu(m.bn(m.stem(images)))
        c1 = blk.conv1(x)
        b1 = blk.bn1(c1)
        b2 = blk.bn2(blk.conv2(F.relu(b1)))
    torch.testing.assert_close(rec["layer1.conv1"], c1, rtol=0, atol=0)
    torch.testing.assert_close(rec["layer1.bn1"], b1, rtol=0, atol=0)  # before the inplace ReLU
    torch.testing.assert_close(rec["layer1.bn2"], b2, rtol=0, atol=0)  # before `out += identity`


def test_module_called_twice_recorded_per_call(tiny_resnet, images):
    m = tiny_resnet
    with capture(m, "layer1.relu") as rec:
        m(images)
    assert list(rec.keys()) == ["layer1.relu", "layer1.relu#1"]
    with torch.no_grad():
        x = m.relu(m.bn(m.stem(images)))
        blk = m.layer1
        first = F.relu(blk.bn1(blk.conv1(x)))
        second = F.relu(blk.bn2(blk.conv2(first)) + x)
    torch.testing.assert_close(rec["layer1.relu"], first)
    torch.testing.assert_close(rec["layer1.relu#1"], second)


def test_gradients_match_autograd_and_leave_grad_untouched(tiny_resnet, images, snapshot):
    m = tiny_resnet
    snap = snapshot(m)
    x = images.clone().requires_grad_(True)
    with capture(m, ["layer1.bn1", "layer2.conv2"], grads=True) as rec:
        out = m(x)
        grads = rec.gradients(out[:, 2], retain_graph=True)
        # independent check: gradient via a hand-made graph where the layer output is a leaf
    with torch.no_grad():
        x0 = m.relu(m.bn(m.stem(images)))
        b1 = m.layer1.bn1(m.layer1.conv1(x0))
    leaf = b1.clone().requires_grad_(True)
    blk = m.layer1
    o = blk.bn2(blk.conv2(F.relu(leaf))) + x0
    y = m.fc(torch.flatten(m.gap(m.layer2(F.relu(o))), 1))
    (g,) = torch.autograd.grad(y[:, 2].sum(), leaf)
    torch.testing.assert_close(grads["layer1.bn1"], g, rtol=1e-5, atol=1e-6)
    assert grads["layer2.conv2"].shape == rec["layer2.conv2"].shape
    snap.assert_unchanged()


def test_reduce_keeps_only_pooled(tiny_net, images):
    with capture(tiny_net, "conv1", reduce=lambda t: t.mean((2, 3))) as rec:
        tiny_net(images)
    full = tiny_net.conv1(images).detach()
    torch.testing.assert_close(rec["conv1"], full.mean((2, 3)))


def test_inputs_recorded(tiny_net, images):
    with capture(tiny_net, "fc", inputs=True, keep_outputs=False) as rec:
        out = tiny_net(images)
    assert "fc" not in rec.outputs
    torch.testing.assert_close(tiny_net.fc(rec.inputs["fc"]), out)


@pytest.mark.parametrize("train_mode", [True, False])
def test_restores_everything_after_exception(exploding_net, images, snapshot, train_mode):
    m = exploding_net.train(train_mode)
    m.conv2.weight.requires_grad_(False)
    m.fc.weight.grad = torch.ones_like(m.fc.weight)
    snap = snapshot(m)
    with pytest.raises(Boom):
        with capture(m, grads=True), preserved(m, eval=True, freeze=True):
            m(images.requires_grad_(True))
    snap.assert_unchanged()
    assert hook_count(m) == 0


def test_preserved_restores_grad_values_and_rng(tiny_net, images, snapshot):
    m = tiny_net.train()
    m.fc.bias.grad = torch.zeros_like(m.fc.bias)
    snap = snapshot(m)
    rng = torch.get_rng_state()
    with preserved(m, eval=True, freeze=True, rng=True):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        torch.rand(3)
        m.fc.bias.grad.add_(1.0)  # something accumulates into the user's grad
    snap.assert_unchanged()
    assert torch.equal(torch.get_rng_state(), rng)


def test_default_selection_and_kinds(tiny_net):
    names = list(resolve_layers(tiny_net))
    assert names == ["conv1", "relu1", "pool", "conv2", "relu2", "gap", "fc"]
    assert list(resolve_layers(tiny_net, nn.Conv2d)) == ["conv1", "conv2"]
    assert list(resolve_layers(tiny_net, "conv*")) == ["conv1", "conv2"]
    assert resolve_layer(tiny_net, nn.Conv2d)[0] == "conv2"
    assert list(resolve_layers(tiny_net, [tiny_net.fc, "conv1"])) == ["conv1", "fc"]


def test_bad_layer_names_suggest_close_ones(tiny_net):
    with pytest.raises(ValueError, match=r"conv1"):
        resolve_layers(tiny_net, "convv1")
    with pytest.raises(ValueError, match="empty"):
        resolve_layers(tiny_net, [])
    with pytest.raises(TypeError, match="layers"):
        resolve_layers(tiny_net, 3.5)
    with pytest.raises(ValueError, match="not part of the model"):
        resolve_layers(tiny_net, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="layers items"):
        resolve_layers(tiny_net, [3.5])
    with pytest.raises(TypeError, match="nn.Module"):
        resolve_layers(object())  # type: ignore[arg-type]


def test_select_output_tuple_and_dict():
    t = torch.ones(2, 3)
    assert select_output((t, 5)) is t
    assert select_output({"logits": t, "aux": 1}) is t
    assert select_output({"a": 1, "b": t}, "b") is t
    with pytest.raises(ValueError, match="output="):
        select_output({"a": t})
    with pytest.raises(ValueError, match="output=3"):
        select_output((t,), 3)


def test_capture_works_with_tuple_returning_model(tiny_net, images):
    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"logits": self.inner(x), "aux": x.mean()}

    w = Wrapper(tiny_net)
    with capture(w, "inner.conv1") as rec:
        out = select_output(w(images))
    assert out.shape == (3, 5)
    assert rec["inner.conv1"].shape == (3, 4, 12, 10)


def test_clear_between_batches_restarts_call_names(tiny_net, images):
    """A loop of clear() + forward inside one capture records each batch under the plain name."""
    with capture(tiny_net, "conv1") as rec:
        for i in range(3):
            rec.clear()
            tiny_net(images[i : i + 1])
            assert list(rec.keys()) == ["conv1"]
            torch.testing.assert_close(rec["conv1"], tiny_net.conv1(images[i : i + 1]).detach())


def test_a_selector_follows_the_layer_name_and_a_submodule_name_wins(tiny_resnet):
    by_name = dict(tiny_resnet.named_modules())
    assert split_selector(by_name, "layer2.conv2") == ("layer2.conv2", ())  # a submodule, never a selector
    assert split_selector(by_name, "layer2.conv2.0.x") == ("layer2.conv2", ("0", "x"))
    assert split_selector(by_name, "nothing.here") == ("nothing.here", ())
    assert resolve_layers(tiny_resnet, ["fc", "layer1.out"]) == {"layer1.out": tiny_resnet.layer1, "fc": tiny_resnet.fc}


def test_inputs_are_taken_before_the_layer_runs_and_kept_attached_with_grads(tiny_resnet, images):
    """layer2.relu is an in-place ReLU called twice: its recorded inputs are what it received (negatives
    included), and with grads the gradient with respect to the second one (the block's sum) equals autograd
    through the rest of the network written out by hand."""
    net = tiny_resnet
    with torch.enable_grad(), capture(net, "layer2.relu", grads=True, inputs=True, keep_outputs=False) as rec:
        out = net(images)
        (g,) = torch.autograd.grad(out[:, 1].sum(), rec.live("layer2.relu#1", input=True))
    with torch.no_grad():
        blk = net.layer2
        first = blk.bn1(blk.conv1(net.layer1(net.relu(net.bn(net.stem(images))))))
    torch.testing.assert_close(rec.inputs["layer2.relu"], first)
    assert (rec.inputs["layer2.relu"] < 0).any()  # taken before the in-place ReLU ran
    pre = rec.inputs["layer2.relu#1"].clone().requires_grad_(True)
    ref = net.fc(torch.flatten(net.gap(torch.relu(pre)), 1))
    torch.testing.assert_close(ref, out.detach())
    (g_ref,) = torch.autograd.grad(ref[:, 1].sum(), pre)
    assert g_ref.abs().max() > 0
    torch.testing.assert_close(g, g_ref)
    assert list(rec.modules) == ["layer2.relu", "layer2.relu#1"] and not rec.outputs


def test_hooks_are_registered_in_one_module_only():
    """`hooks.py` is the one owner: no other module of the package registers a hook."""
    import pathlib
    import re

    import cnn_explain

    root = pathlib.Path(cnn_explain.__file__).parent
    pattern = re.compile(r"register_(module_)?(forward|backward|full_backward)(_pre)?_hook")
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "hooks.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_intervene_and_observe_calls_leave_no_hook_after_an_exception(tiny_net):
    from cnn_explain.hooks import intervene, observe_calls

    x = torch.rand(2, 3, 8, 8)
    with intervene(tiny_net, tiny_net.conv1, lambda out: out * 0):
        zeroed = tiny_net(x)
    # conv1's output zeroed: what follows sees only relu(0) -> the same logits for both images
    torch.testing.assert_close(zeroed[0], zeroed[1])
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        with observe_calls(tiny_net, lambda m: seen.append(("in", m)), lambda m: seen.append(("out", m))):
            tiny_net(x)
            raise RuntimeError("boom")
    assert hook_count(tiny_net) == 0
    assert seen[0] == ("in", tiny_net) and seen[-1] == ("out", tiny_net)
    with pytest.raises(ValueError, match="not part of the model"):
        with intervene(tiny_net, nn.ReLU(), lambda out: out):
            pass


def test_copy_false_keeps_the_layers_own_tensor_and_says_when_an_in_place_op_changed_it(tiny_resnet, images):
    """copy=False records by reference: equal to the copied recording when nothing writes over it, and
    Recording.changed() names the layer a later in-place ReLU overwrote (torchvision's block order)."""
    with torch.no_grad():
        with capture(tiny_resnet, ["stem", "bn"]) as copied:
            tiny_resnet(images)
        with capture(tiny_resnet, ["stem", "bn"], copy=False) as ref:
            tiny_resnet(images)
    assert torch.equal(ref["stem"], copied["stem"])  # the stem's output is only read by bn
    assert ref.changed() == ["bn"]  # self.relu(inplace=True) ran on bn's output
    assert not torch.equal(ref["bn"], copied["bn"]) and torch.equal(ref["bn"], copied["bn"].clamp(min=0))
    with capture(tiny_resnet, ["stem"], grads=True, copy=False) as live:
        tiny_resnet(images)
    assert live.changed() == [] and live.live("stem").requires_grad


class _Counting(nn.Module):
    """conv -> relu -> head, counting head calls; forward swallows Exception like careless user code."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.head = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2)
        self.head_calls = 0

    def forward(self, x):
        try:
            y = self.relu(self.conv(x))
        except Exception:  # noqa: BLE001 - the point: capture's stop must not be swallowed here
            y = x
        self.head_calls += 1
        return self.head(y.mean((2, 3)))


def test_stop_ends_the_forward_after_the_last_chosen_layer(images):
    net = _Counting()
    with torch.no_grad():
        with capture(net, ["conv", "relu"], stop=True) as rec:
            out = net(images)
            after = True  # skipped: the forward ended inside the block
        assert net.head_calls == 0 and "out" not in dir() and "after" not in dir()
        assert torch.equal(rec["relu"], F.relu(net.conv(images)))
        with capture(net, ["conv"], stop=False) as rec:
            net(images)
        assert net.head_calls == 1 and hook_count(net) == 0
    with capture(net, ["relu"], stop=True, grads=True) as rec:  # the graph up to the layer is whole
        net(images)
    (g,) = torch.autograd.grad(rec.live("relu").sum(), [net.conv.weight])
    w = net.conv.weight.detach().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.relu(F.conv2d(images, w, net.conv.bias)).sum(), [w])
    assert torch.allclose(g, ref) and net.conv.weight.grad is None
