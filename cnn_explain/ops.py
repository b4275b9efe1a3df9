"""One operator table: what kind of operation a module type or a function call is.

Every part of cnn_explain that must know what an operation does reads this
table: the default layer set of :func:`cnn_explain.hooks.capture`, the ReLU
calls guided backprop / deconvnet rectify, the row kinds of the model summary,
the worked arithmetic, and the occlusion graph.

The table is a list of ``(keys, Category)`` rows; the **first row that matches
wins**. A module type matches every subclass of a key (``isinstance``
semantics), so a user's ``class MyReLU(nn.ReLU)`` is a ReLU; a function matches
by identity (``F.relu``, ``torch.relu``, ``torch.Tensor.relu_``,
``operator.add``). Nothing is ever keyed on a class *name*.

Example:
    >>> import torch, operator
    >>> from torch import nn
    >>> category(nn.ReLU()), category(torch.Tensor.relu_), category(operator.add)
    (<Category.RELU: 'relu'>, <Category.RELU: 'relu'>, <Category.POINTWISE: 'pointwise'>)
    >>> category("view")                        # a Tensor method named as torch.fx names it
    <Category.TAIL: 'tail'>
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Category", "TABLE", "category", "module_types", "functions", "DEFAULT_LAYER_CATEGORIES"]


class Category(Enum):
    """What an operation does to a feature map.

    Attributes:
        CONV: convolutions (also transposed, 1-D/3-D): a weighted window sum.
        POOL_MAX: max pooling over a window.
        POOL_AVG: average pooling over a window (LP pooling, a power mean, too).
        POOL_ADAPTIVE: adaptive pooling (the window follows from the output size).
        LINEAR: fully connected layers.
        NORM: normalization layers (batch, instance, layer, group, local response).
        RELU: the rectifiable family, the calls guided backprop and deconvnet rectify.
        ACTIVATION: other pointwise nonlinearities (sigmoid, tanh, GELU, ReLU6, ...).
        POINTWISE: value-preserving or elementwise arithmetic: dropout, identity,
            ``+ - * /``, ``clamp``, ``abs``, ``contiguous``.
        TAIL: layout and reduction ops run on whole maps: flatten, view, reshape,
            mean, sum, softmax, indexing.
        OTHER: anything the table does not list.
    """

    CONV = "conv"
    POOL_MAX = "pool_max"
    POOL_AVG = "pool_avg"
    POOL_ADAPTIVE = "pool_adaptive"
    LINEAR = "linear"
    NORM = "norm"
    RELU = "relu"
    ACTIVATION = "activation"
    POINTWISE = "pointwise"
    TAIL = "tail"
    OTHER = "other"


C = Category
_T = torch.Tensor

#: The table, first match wins. Module types match subclasses; functions match by identity.
TABLE: tuple[tuple[tuple[Any, ...], Category], ...] = (
    ((nn.modules.conv._ConvNd, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
      F.conv_transpose3d), C.CONV),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d,
      F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices,
      torch.max_pool1d, torch.max_pool2d, torch.max_pool3d), C.POOL_MAX),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.LPPool1d, nn.LPPool2d, F.avg_pool1d, F.avg_pool2d,
      F.avg_pool3d, F.lp_pool1d, F.lp_pool2d, torch.avg_pool1d), C.POOL_AVG),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
      nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
      F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
      F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
      F.adaptive_max_pool3d_with_indices), C.POOL_ADAPTIVE),
    ((nn.Linear, F.linear), C.LINEAR),
    ((nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, F.batch_norm,
      F.instance_norm, F.layer_norm, F.group_norm, F.local_response_norm), C.NORM),
    # F.relu_ is torch.relu_; nn.ReLU calls F.relu
    ((nn.ReLU, F.relu, torch.relu, torch.relu_, _T.relu, _T.relu_), C.RELU),
    ((nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
      nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
      F.relu6, F.leaky_relu, F.leaky_relu_, F.prelu, F.elu, F.elu_, F.selu, F.selu_, F.celu, F.celu_,
      F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.hardtanh_, F.softplus,
      F.rrelu, F.rrelu_, F.sigmoid, torch.sigmoid, torch.sigmoid_, _T.sigmoid, _T.sigmoid_,
      F.tanh, torch.tanh, torch.tanh_, _T.tanh, _T.tanh_), C.ACTIVATION),
    ((nn.modules.dropout._DropoutNd, nn.Identity, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
      F.alpha_dropout, F.feature_alpha_dropout,
      operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
      operator.truediv, operator.itruediv, operator.neg,
      torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.abs, torch.exp, torch.square,
      torch.clamp, torch.clip, torch.clamp_min,
      _T.add, _T.add_, _T.sub, _T.sub_, _T.mul, _T.mul_, _T.div, _T.div_, _T.neg, _T.abs, _T.exp,
      _T.clamp, _T.clamp_, _T.clamp_min, _T.clamp_min_, _T.contiguous, _T.clone,
      _T.__add__, _T.__iadd__, _T.__radd__, _T.__sub__, _T.__isub__, _T.__rsub__, _T.__mul__,
      _T.__imul__, _T.__rmul__, _T.__truediv__, _T.__itruediv__, _T.__neg__), C.POINTWISE),
    ((nn.Flatten, nn.Unflatten, nn.Softmax, nn.LogSoftmax, nn.Softmax2d,
      torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.mean, torch.sum, torch.amax,
      F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, operator.getitem,
      _T.view, _T.reshape, _T.flatten, _T.mean, _T.sum, _T.amax, _T.squeeze, _T.unsqueeze, _T.softmax,
      _T.log_softmax, _T.__getitem__), C.TAIL),
)

_FUNCS: dict[Any, Category] = {}
_TYPES: list[tuple[type, Category]] = []
for _keys, _cat in TABLE:
    for _key in _keys:
        if isinstance(_key, type):
            _TYPES.append((_key, _cat))
        else:
            _FUNCS.setdefault(_key, _cat)  # first match wins

#: The categories :func:`cnn_explain.hooks.capture` records when no layer is named.
DEFAULT_LAYER_CATEGORIES: frozenset[Category] = frozenset(
    {C.CONV, C.POOL_MAX, C.POOL_AVG, C.POOL_ADAPTIVE, C.LINEAR, C.RELU, C.ACTIVATION}
)


def category(op: nn.Module | type | Callable[..., Any] | str) -> Category:
    """The :class:`Category` of a module, a module type, a function or a Tensor method name.

    Args:
        op: an ``nn.Module`` instance or subclass (matched with ``issubclass``, first
            table row wins); a function or method (``F.relu``, ``torch.Tensor.view``,
            ``operator.add``; matched by identity); or the name of a ``torch.Tensor``
            method as a ``torch.fx`` ``call_method`` node gives it (``"relu_"``).

    Returns:
        The category; ``Category.OTHER`` for anything the table does not list.

    Example:
        >>> category(nn.Conv2d(1, 1, 3)), category(F.max_pool2d)
        (<Category.CONV: 'conv'>, <Category.POOL_MAX: 'pool_max'>)
    """
    if isinstance(op, str):
        op = getattr(torch.Tensor, op, None)
        if op is None:
            return C.OTHER
    if isinstance(op, nn.Module):
        op = type(op)
    if isinstance(op, type):
        return next((cat for key, cat in _TYPES if issubclass(op, key)), C.OTHER)
    try:
        return _FUNCS.get(op, C.OTHER)
    except TypeError:  # an unhashable callable
        return C.OTHER


def module_types(*categories: Category) -> tuple[type, ...]:
    """The module types the table lists under ``categories``, in table order.

    Membership is best tested with :func:`category` (first match wins); this
    tuple suits ``isinstance`` checks and code that wants the list itself.
    """
    wanted = _check(categories)
    return tuple(t for t, cat in _TYPES if cat in wanted)


def functions(*categories: Category) -> frozenset[Any]:
    """The functions and methods the table lists under ``categories``."""
    wanted = _check(categories)
    return frozenset(f for f, cat in _FUNCS.items() if cat in wanted)


def _check(categories: Iterable[Any]) -> frozenset[Category]:
    out = frozenset(categories)
    bad = [c for c in out if not isinstance(c, Category)]
    if bad:
        raise TypeError(f"categories must be Category members (e.g. Category.CONV), got {bad[0]!r}")
    return out
