"""Named default layers: the one vocabulary every capability uses when no layer is given.

* :func:`first_conv` — the first convolution in module order: the layer that
  reads the image (its ``in_channels`` are the image's channels; its filters
  are the ones worth drawing).
* :func:`last_conv` — the convolution whose call runs last in a forward pass.
* :func:`classifier_input` — the feature map that feeds the spatial collapse
  (global pooling, flatten, a spatial mean) before the classifier head:
  Grad-CAM's default layer.
* :func:`penultimate` — the features the last ``nn.Linear`` reads: the
  default of embeddings.

What counts as a convolution, a pooling or a Linear layer is read from the
operator table :mod:`cnn_explain.ops` (subclasses included). Each function
returns a :class:`Site` and raises a ``ValueError`` naming the model when
nothing fits. Those that take ``x`` run one forward pass on it, in eval mode,
without gradients, and leave the model as they found it.

Example:
    >>> import torch
    >>> from cnn_explain.models import tiny_vgg
    >>> net = tiny_vgg()
    >>> first_conv(net).name, last_conv(net, torch.rand(1, 3, 16, 16)).name
    ('features.0', 'features.7')
    >>> classifier_input(net, torch.rand(1, 3, 16, 16)).name     # the map global pooling reads
    'features'
    >>> p = penultimate(net); (p.name, p.input)                  # record the input of 'classifier'
    ('classifier', True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import ops
from .hooks import capture, preserved

__all__ = ["Site", "first_conv", "first_conv_module", "last_conv", "classifier_input", "penultimate"]

C = ops.Category


class Site(NamedTuple):
    """Where a default layer's features are.

    Attributes:
        name: the module's dotted name in ``model.named_modules()``.
        module: the module.
        input: True when the features are the module's *input* (record them with
            ``capture(model, name, inputs=True)``), False when they are its output.
    """

    name: str
    module: nn.Module
    input: bool = False


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def first_conv(model: nn.Module) -> Site:
    """The first convolution (``ops.Category.CONV``) in ``model.named_modules()`` order.

    Raises:
        ValueError: the model has no convolution.
    """
    for name, module in model.named_modules():
        if ops.category(module) is C.CONV:
            return Site(name, module)
    raise ValueError(f"the model {_model_name(model)} has no convolution layer (nn.Conv1d/2d/3d or a "
                     "subclass), so it has no first conv; name the layer to use")


def first_conv_module(model: nn.Module) -> nn.Module | None:
    """The module of :func:`first_conv`, or None when the model has no convolution (never raises)."""
    try:
        return first_conv(model).module
    except ValueError:
        return None


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_x(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor of images (N, C, H, W), got {type(x).__name__}")
    return x


def last_conv(model: nn.Module, x: torch.Tensor) -> Site:
    """The convolution whose call runs last in ``model(x)`` (execution order, not module order).

    A module called several times counts at its last call.

    Args:
        model: any ``nn.Module``.
        x: an input the model accepts, ``(N, C, H, W)``; one image is enough.

    Raises:
        ValueError: no convolution runs in the forward pass.
    """
    convs = {n: m for n, m in model.named_modules() if ops.category(m) is C.CONV}
    if convs:
        with preserved(model, eval=True), torch.no_grad(), capture(model, list(convs)) as rec:
            model(_check_x(x).to(_device(model)))
        if len(rec):
            key = list(rec.keys())[-1].partition("#")[0]
            return Site(key, convs[key])
    raise ValueError(f"no convolution layer runs in the forward pass of the model {_model_name(model)}; "
                     "pass layer=<a layer with (N, C, h, w) output>")


class _Collapse(NamedTuple):
    map: torch.Tensor  # the (N, C, H, W) map collapsed (a copy)
    pre: torch.Tensor | None  # when an activation produced the map: its input (a copy)
    before: int  # module calls recorded when the collapse ran


class _Collapses(TorchFunctionMode):
    """Every call that turns an ``(N, C, H, W)`` map into one without spatial axes.

    A flatten or view of a map that a collapse already produced (the ``(N, C, 1, 1)``
    result of a global pooling) is not counted again. The last activation call
    (ReLU or another) is remembered so that a map made by ``F.relu(block(x))`` in
    ``forward`` can be traced back to ``block``.
    """

    def __init__(self, rec: Any) -> None:
        super().__init__()
        self.rec = rec
        self.found: list[_Collapse] = []
        self._results: list[torch.Tensor] = []
        self._act: tuple[torch.Tensor, torch.Tensor] | None = None  # (activation output, its input copy)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        src = args[0] if args else None
        is_map = isinstance(src, torch.Tensor) and src.dim() == 4
        pre = src.detach().clone() if is_map and ops.category(func) in (C.RELU, C.ACTIVATION) else None
        out = func(*args, **(kwargs or {}))
        if pre is not None and isinstance(out, torch.Tensor):
            self._act = (out, pre)
        elif (is_map and len(self.rec) and isinstance(out, torch.Tensor)  # a map some layer computed
                and ops.category(func) in (C.POOL_ADAPTIVE, C.TAIL)
                and (out.dim() <= 2 or (out.dim() == 4 and out.shape[-2:] == (1, 1)))
                and not any(src is r for r in self._results)):
            act = self._act[1] if self._act is not None and self._act[0] is src else None
            self.found.append(_Collapse(src.detach().clone(), act, len(self.rec)))
            self._results.append(out)
        return out


def _same(t: Any, ref: torch.Tensor | None) -> bool:
    return ref is not None and isinstance(t, torch.Tensor) and t.shape == ref.shape and torch.equal(t, ref)


def classifier_input(model: nn.Module, x: torch.Tensor) -> Site:
    """The feature map that feeds the spatial collapse before the classifier head.

    Runs ``model(x)`` and finds the last operation that turns an ``(N, C, H, W)``
    map into features without spatial axes: a global (adaptive) pooling to 1×1,
    a flatten / view / reshape, a mean or sum over the spatial axes (the last,
    so that a squeeze-and-excitation gate or a backbone stage's own pooled
    summary does not count; a flatten of an already pooled map is not a
    collapse). The map it reads is, in this order of preference:

    1. the output of the module that produced it (the last module call to
       finish with exactly that output: a block rather than its last leaf, so
       on a ResNet the last block's output, never its shortcut's projection);
    2. the input of the module that collapses it, when a function in
       ``forward`` produced it (``Site.input`` is True);
    3. when an activation function in ``forward`` produced it (DenseNet's
       ``F.relu(self.features(x))``), the output of the module it activates.

    Args:
        model: a CNN classifier.
        x: an input the model accepts, ``(N, C, H, W)``; one image is enough.

    Raises:
        ValueError: nothing collapses a feature map, or the map is neither the
            output nor the input of a module.
    """
    with preserved(model, eval=True), torch.no_grad():
        with capture(model, [n for n, _ in model.named_modules() if n], inputs=True) as rec:
            mode = _Collapses(rec)
            with mode:
                model(_check_x(x).to(_device(model)))
    if not mode.found:
        raise ValueError(f"nothing in the forward pass of the model {_model_name(model)} collapses an "
                         "(N, C, H, W) feature map (global pooling, flatten); pass layer=<a layer>")
    last = mode.found[-1]
    keys = list(rec.keys())
    for key in reversed(keys[:last.before]):
        if _same(rec.outputs[key], last.map):
            return Site(key.partition("#")[0], rec.modules[key])
    for key in keys[last.before:] + keys[:last.before]:
        if _same(rec.inputs.get(key), last.map):
            return Site(key.partition("#")[0], rec.modules[key], input=True)
    for key in reversed(keys[:last.before]):
        if _same(rec.outputs[key], last.pre):
            return Site(key.partition("#")[0], rec.modules[key])
    raise ValueError(f"the feature map the model {_model_name(model)} collapses is computed by a function "
                     "inside forward and read by no module; pass layer=<a layer>")


def penultimate(model: nn.Module, x: torch.Tensor | None = None) -> Site:
    """The features feeding the last Linear layer: its input (``Site.input`` is True).

    Args:
        model: any ``nn.Module``.
        x: optional input ``(N, C, H, W)``: with it, the Linear whose call runs
            last in ``model(x)``; without it, the last in ``model.named_modules()``
            order (the same for the usual ``features -> classifier`` models).

    Raises:
        ValueError: the model has no ``nn.Linear`` (or none runs on ``x``).
    """
    linears = {n: m for n, m in model.named_modules() if ops.category(m) is C.LINEAR}
    if linears and x is None:
        name = list(linears)[-1]
        return Site(name, linears[name], input=True)
    if linears:
        with preserved(model, eval=True), torch.no_grad(), capture(model, list(linears)) as rec:
            model(_check_x(x).to(_device(model)))
        if len(rec):
            key = list(rec.keys())[-1].partition("#")[0]
            return Site(key, linears[key], input=True)
    raise ValueError(f"the model {_model_name(model)} has no nn.Linear layer (none that runs), so it has no "
                     "penultimate features (the input of the last nn.Linear); pass layer=<name of a layer>")
