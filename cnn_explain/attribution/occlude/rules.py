"""Region rules: the `OpSpec` of every node, read from the operator table `cnn_explain.ops`.

The table says what an operation is; this module says what incremental
occlusion can do with it:

* ``CONV``: 2-D convolutions only (module or ``F.conv2d``, zero padding); 1-D, 3-D
  and transposed convolutions have no rule;
* ``POOL_MAX`` / ``POOL_AVG``: 2-D max / average pooling (LP pooling has no rule);
* ``NORM``: BatchNorm in eval mode with running statistics is elementwise
  (``POINTWISE``) on 4-D maps; a norm over several positions (LayerNorm,
  GroupNorm, InstanceNorm, local response) is *not* elementwise: it runs on the
  batch of full maps (``TAIL``: exact, the region becomes the whole map);
  batch statistics mix the images of a batch and have no rule;
* ``RELU`` / ``ACTIVATION`` / ``POINTWISE``: elementwise (PReLU's per-channel
  slope and a broadcast per-channel gate included); a function with a
  ``training`` argument (dropout, rrelu) only when it is False (else random);
* ``TAIL`` and adaptive pooling, ``LINEAR``: full maps;
* ``F.pad`` / ``ZeroPad2d`` / ``ConstantPad2d``: constant padding (``PAD``).

Everything else (``Category.OTHER``, e.g. ``Tensor.permute``) raises `Unsupported`.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ... import ops
from ...geometry import pair, same_padding
from .graph import OpKind, OpSpec, Unsupported, describe

__all__ = ["classify"]

C = ops.Category
_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training")
_PAD_ARGS = ("input", "pad", "mode", "value")
_SPLIT_FUNCS = (torch.narrow, torch.Tensor.narrow)  # channel slices made by the recorder
_ELEMENTWISE = (C.RELU, C.ACTIVATION, C.POINTWISE)


def classify(node: fx.Node, modules: dict[str, nn.Module], cache: dict[fx.Node, Any]) -> OpSpec:
    """The `OpSpec` of one node (``cache`` holds the clean values, to know shapes); `Unsupported` if none."""
    if node.op in ("placeholder", "output", "get_attr"):
        return OpSpec(OpKind(node.op))
    if node.op == "call_module":
        return _classify_module(node, modules[node.target])
    if node.op == "call_method" and node.target in ("size", "dim"):
        return OpSpec(OpKind.META)
    if node.op == "call_function":
        return _classify_function(node, cache)
    if node.op == "call_method":
        kind = _by_category(ops.category(node.target))
        if kind is not None:
            return OpSpec(kind)
    raise Unsupported(f"no region rule for {describe(node, modules)}")


def _by_category(cat: ops.Category) -> OpKind | None:
    """The kind of a node without geometry, from its category (None: no rule)."""
    if cat in _ELEMENTWISE:
        return OpKind.POINTWISE
    if cat in (C.TAIL, C.POOL_ADAPTIVE, C.LINEAR):
        return OpKind.TAIL
    return None


def _classify_module(node: fx.Node, m: nn.Module) -> OpSpec:
    cat = ops.category(m)
    name = f"{type(m).__name__} ({node.target})"
    if isinstance(m, nn.Conv2d) and cat is C.CONV:
        if m.padding_mode != "zeros":
            raise Unsupported(f"{name} uses padding_mode={m.padding_mode!r}; only zero padding has a rule")
        return _conv_spec(pair(m.kernel_size), m.stride, m.padding, m.dilation)
    if isinstance(m, nn.MaxPool2d):
        return _maxpool(node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
    if isinstance(m, nn.AvgPool2d):
        return _avgpool(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
        return _pad_spec(name, m.padding, "constant", m.value)
    if cat is C.NORM:
        return _norm_spec(name, m)
    if cat in (C.CONV, C.POOL_MAX, C.POOL_AVG):
        raise Unsupported(f"no region rule for {name}: only 2-D convolution and pooling have one")
    if isinstance(m, (nn.RReLU, nn.modules.dropout._DropoutNd)):
        if m.training:  # occlusion sets eval mode; a caller of the engine may not
            raise Unsupported(f"{name} is in training mode (random)")
        return OpSpec(OpKind.POINTWISE)  # eval: a fixed slope / the identity
    kind = _by_category(cat)
    if kind is None:
        raise Unsupported(f"no region rule for {name}")
    return OpSpec(kind)


def _norm_spec(name: str, m: nn.Module) -> OpSpec:
    """BatchNorm in eval: elementwise on 4-D maps; norms over positions: full maps; batch statistics: no rule."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.training or m.running_mean is None:
            raise Unsupported(f"{name} uses batch statistics (no running statistics in eval mode)")
        return OpSpec(OpKind.POINTWISE if isinstance(m, nn.BatchNorm2d) else OpKind.TAIL)
    return OpSpec(OpKind.TAIL)  # LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm: not elementwise


def _conv_spec(kernel: tuple[int, int], stride: Any, padding: Any, dilation: Any) -> OpSpec:
    dilation = pair(dilation)
    if padding == "same":
        padding = (same_padding(kernel[0], dilation[0]), same_padding(kernel[1], dilation[1]))
    else:
        padding = (0, 0) if padding == "valid" else pair(padding)
    return OpSpec(OpKind.CONV, kernel, pair(stride), padding, dilation)


def _pad_spec(name: str, pad: Any, mode: str, value: Any) -> OpSpec:
    """Constant padding of the last two axes by ``pad`` = (left, right, top, bottom) (or 2 values: last axis)."""
    pad = tuple(pad) if isinstance(pad, (tuple, list)) else (pad,) * 4
    if mode != "constant" or len(pad) not in (2, 4) or min(pad) < 0:
        raise Unsupported(f"no region rule for {name} with mode={mode!r}, pad={pad}: only non-negative "
                          "constant padding of the last two axes has one")
    top = pad[2] if len(pad) == 4 else 0
    return OpSpec(OpKind.PAD, padding=(int(top), int(pad[0])), pad_value=float(value or 0.0))


def _maxpool(node, kernel, stride, padding, dilation, ceil_mode, return_indices) -> OpSpec:
    if return_indices:
        raise Unsupported(f"max pooling {node} returns indices")
    k = pair(kernel)
    s = k if stride is None or stride == [] or stride == () else pair(stride)
    return OpSpec(OpKind.MAXPOOL, k, s, pair(padding), pair(dilation), ceil_mode=bool(ceil_mode))


def _avgpool(kernel, stride, padding, ceil_mode, count_include_pad, divisor_override) -> OpSpec:
    k = pair(kernel)
    s = k if stride is None or stride == [] or stride == () else pair(stride)
    return OpSpec(OpKind.AVGPOOL, k, s, pair(padding), (1, 1), bool(count_include_pad), divisor_override,
                  bool(ceil_mode))


def _bind(names: tuple[str, ...], defaults: dict[str, Any], node: fx.Node) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, node.args))
    bound.update(node.kwargs)
    return bound


def _training_arg(t: Any, node: fx.Node) -> bool:
    """Whether a call of ``t`` (a Python function with a ``training`` parameter) has ``training=True``."""
    try:
        b = inspect.signature(t).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return True  # cannot tell: treat as random
    b.apply_defaults()
    return bool(b.arguments.get("training"))


def _classify_function(node: fx.Node, cache: dict[fx.Node, Any]) -> OpSpec:
    t = node.target
    if t is builtins.getattr or (t is operator.getitem and not isinstance(cache.get(node.args[0]), torch.Tensor)):
        return OpSpec(OpKind.META)
    if t is torch.cat:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return OpSpec(OpKind.POINTWISE if dim in (1, -3) else OpKind.TAIL)
    if t in _SPLIT_FUNCS:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return OpSpec(OpKind.POINTWISE if dim in (1, -3) else OpKind.TAIL)
    if t is F.pad:
        b = _bind(_PAD_ARGS, {"mode": "constant", "value": None}, node)
        return _pad_spec("F.pad", b["pad"], b["mode"], b["value"])
    cat = ops.category(t)
    name = f"{getattr(t, '__module__', None) or 'torch'}.{getattr(t, '__qualname__', t)}"
    if t in (F.conv2d, torch.conv2d):
        b = _bind(_CONV_ARGS, {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}, node)
        weight = cache.get(b["weight"]) if isinstance(b["weight"], fx.Node) else b["weight"]
        return _conv_spec(tuple(weight.shape[-2:]), b["stride"], b["padding"], b["dilation"])
    if t is F.max_pool2d or t is torch.max_pool2d:
        b = _bind(_MAXPOOL_ARGS, {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                                  "return_indices": False}, node)
        return _maxpool(node, b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"],
                        b["return_indices"])
    if t is F.avg_pool2d:
        b = _bind(_AVGPOOL_ARGS, {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                                  "divisor_override": None}, node)
        return _avgpool(b["kernel_size"], b["stride"], b["padding"], b["ceil_mode"], b["count_include_pad"],
                        b["divisor_override"])
    if t is F.batch_norm:
        b = _bind(_BN_ARGS, {"weight": None, "bias": None, "training": False}, node)
        if b["training"] or b["running_mean"] is None:
            raise Unsupported(f"{name} uses batch statistics (training=True or no running statistics)")
        value = cache.get(node)
        return OpSpec(OpKind.POINTWISE if isinstance(value, torch.Tensor) and value.dim() == 4 else OpKind.TAIL)
    if cat is C.NORM:
        return OpSpec(OpKind.TAIL)  # layer / group / instance / local response norm: not elementwise
    if cat in _ELEMENTWISE and "training" in _parameters(t) and _training_arg(t, node):
        raise Unsupported(f"{name} is called with training=True (random)")
    kind = _by_category(cat)
    if kind is None:
        raise Unsupported(f"no region rule for {name}")
    return OpSpec(kind)


@functools.lru_cache(maxsize=512)
def _parameters(t: Any) -> tuple[str, ...]:
    """The parameter names of a function (cached: ``inspect.signature`` of a builtin parses its text signature)."""
    try:
        return tuple(inspect.signature(t).parameters)
    except (TypeError, ValueError):
        return ()
