"""The operator table: categories of modules and calls, first match wins, subclasses, what the users read."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from cnn_explain import ops
from cnn_explain.attribution._relu import RectifyReLU
from cnn_explain.hooks import ACTIVATION_TYPES, resolve_layers

C = ops.Category


@pytest.mark.parametrize("op,cat", [
    (nn.Conv2d(1, 1, 3), C.CONV), (nn.ConvTranspose2d(1, 1, 3), C.CONV), (nn.Conv1d(1, 1, 3), C.CONV),
    (F.conv2d, C.CONV), (nn.MaxPool2d(2), C.POOL_MAX), (F.max_pool2d, C.POOL_MAX),
    (torch.max_pool2d, C.POOL_MAX), (nn.AvgPool2d(2), C.POOL_AVG), (F.avg_pool2d, C.POOL_AVG),
    (nn.AdaptiveAvgPool2d(1), C.POOL_ADAPTIVE), (F.adaptive_max_pool2d, C.POOL_ADAPTIVE),
    (nn.Linear(2, 2), C.LINEAR), (F.linear, C.LINEAR), (nn.BatchNorm2d(2), C.NORM), (F.batch_norm, C.NORM),
    (nn.GroupNorm(1, 2), C.NORM), (nn.ReLU(), C.RELU), (F.relu, C.RELU), (torch.relu, C.RELU),
    (torch.relu_, C.RELU), (F.relu_, C.RELU), (torch.Tensor.relu, C.RELU), (torch.Tensor.relu_, C.RELU),
    (nn.ReLU6(), C.ACTIVATION), (nn.GELU(), C.ACTIVATION), (F.silu, C.ACTIVATION), (torch.sigmoid, C.ACTIVATION),
    (nn.Dropout(), C.POINTWISE), (nn.Dropout2d(), C.POINTWISE), (nn.Identity(), C.POINTWISE),
    (operator.add, C.POINTWISE), (operator.iadd, C.POINTWISE), (torch.Tensor.__add__, C.POINTWISE),
    (nn.Flatten(), C.TAIL), (torch.flatten, C.TAIL), (torch.Tensor.view, C.TAIL), (F.softmax, C.TAIL),
    (operator.getitem, C.TAIL), (nn.Embedding(3, 2), C.OTHER), (print, C.OTHER), (nn.Sequential(), C.OTHER),
])
def test_category_of_modules_types_and_calls(op, cat):
    assert ops.category(op) is cat
    if isinstance(op, nn.Module):
        assert ops.category(type(op)) is cat


def test_tensor_method_names_as_torch_fx_gives_them():
    assert ops.category("relu_") is C.RELU
    assert ops.category("view") is C.TAIL and ops.category("add_") is C.POINTWISE
    assert ops.category("no_such_method") is C.OTHER


def test_subclasses_match_and_first_row_wins():
    class MyReLU(nn.ReLU):
        pass

    class Renamed(nn.Conv2d):  # a name that says nothing: the table never reads class names
        pass

    assert ops.category(MyReLU()) is C.RELU
    assert ops.category(Renamed(1, 1, 1)) is C.CONV
    # nn.ReLU6 is a subclass of nn.Hardtanh: both activations; ReLU itself stays apart
    assert issubclass(nn.ReLU6, nn.Hardtanh) and ops.category(nn.ReLU6) is C.ACTIVATION
    for keys, cat in ops.TABLE:  # every key lands where its first row puts it
        for key in keys:
            first = next(c for ks, c in ops.TABLE if any(k is key or (isinstance(k, type) and isinstance(key, type)
                                                                      and issubclass(key, k)) for k in ks))
            assert ops.category(key) is first


def test_no_function_is_listed_twice():
    seen: dict = {}
    for keys, cat in ops.TABLE:
        for key in keys:
            if not isinstance(key, type):
                assert key not in seen or seen[key] is cat, f"{key} in {seen.get(key)} and {cat}"
                seen[key] = cat


def test_every_call_the_mode_sees_from_the_standard_modules_is_categorized():
    """What a TorchFunctionMode sees when the usual layers run: each call is in the table."""
    seen = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    layers = [(nn.Conv2d(2, 2, 3), C.CONV), (nn.MaxPool2d(2), C.POOL_MAX), (nn.AvgPool2d(2), C.POOL_AVG),
              (nn.AdaptiveAvgPool2d(1), C.POOL_ADAPTIVE), (nn.ReLU(), C.RELU), (nn.ReLU(inplace=True), C.RELU),
              (nn.Sigmoid(), C.ACTIVATION), (nn.Flatten(), C.TAIL)]
    for layer, cat in layers:
        x = torch.rand(1, 2, 6, 6)
        seen.clear()
        with Spy():
            layer(x)
        assert ops.category(seen[0]) is cat, (layer, seen)


def test_module_types_and_functions_read_the_table():
    assert set(ACTIVATION_TYPES) == {
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
        nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus}
    assert ops.functions(C.RELU) == {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
    with pytest.raises(TypeError, match="Category"):
        ops.module_types("conv")


def test_users_read_the_same_table(tiny_net):
    # hooks: the default layer set is the table's default categories
    chosen = resolve_layers(tiny_net)
    assert list(chosen) == ["conv1", "relu1", "pool", "conv2", "relu2", "gap", "fc"]
    # guided backprop: every RELU call is rectified, the other activations are reported
    x = torch.randn(4, requires_grad=True)
    with RectifyReLU("guided") as mode:
        y = F.relu(x) + torch.Tensor.relu(x) + torch.sigmoid(x) + F.relu6(x)
    assert mode.calls == 2 and mode.others == {"sigmoid", "relu6"}
    assert y.shape == (4,)


def test_what_the_occlusion_graph_classifies_is_in_the_table():
    """The incremental-occlusion graph's own lists (elementwise / tail), all categorized here."""
    elementwise = {C.RELU, C.ACTIVATION, C.POINTWISE}
    for op in (F.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
               F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid, torch.sigmoid, F.tanh, torch.tanh,
               torch.clamp, torch.clip, torch.abs, torch.exp, torch.square, torch.neg, operator.add, operator.iadd,
               operator.sub, operator.isub, operator.mul, operator.imul, operator.truediv, operator.itruediv,
               operator.neg, torch.add, torch.sub, torch.mul, torch.div, F.dropout, F.dropout2d, F.alpha_dropout,
               nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.LeakyReLU, nn.Softplus):
        assert ops.category(op) in elementwise, op
    for name in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "add", "add_", "sub", "sub_", "mul",
                 "mul_", "div", "div_", "clamp", "clamp_", "clamp_min", "clamp_min_", "neg", "abs", "exp",
                 "contiguous", "clone"):
        assert ops.category(name) in elementwise, name
    tail = {C.TAIL, C.LINEAR, C.POOL_ADAPTIVE}
    for op in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, F.linear, F.adaptive_avg_pool2d,
               F.adaptive_max_pool2d, torch.mean, torch.sum, torch.amax, F.softmax, F.log_softmax, torch.softmax,
               torch.log_softmax, operator.getitem, nn.Flatten, nn.Unflatten, nn.Linear, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.Softmax, nn.LogSoftmax):
        assert ops.category(op) in tail, op
    for name in ("view", "reshape", "flatten", "mean", "sum", "amax", "squeeze", "unsqueeze", "softmax", "log_softmax"):
        assert ops.category(name) is C.TAIL, name
    assert ops.category(nn.BatchNorm1d) is C.NORM  # the graph runs it on whole (N, F) tails
