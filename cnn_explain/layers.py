"""Walking a model: per-layer shapes, parameters, MACs and receptive fields.

:func:`walk` runs **one** forward pass on a zero input of ``input_shape``
``(C, H, W)`` and returns one :class:`LayerInfo` per leaf module call, in
execution order (a module called twice gives ``name`` and ``name#1``).

Receptive fields are propagated tensor by tensor while the forward runs (a
``TorchFunctionMode``, not a hook): every spatial tensor carries, for each output row and
column, the inclusive range of input rows/columns it depends on. Convolutions
and poolings transform it,

    first = o·s − p,   last = o·s − p + d·(k − 1),
    box(o) = [lo_in(first), hi_in(last)],   jump_out = jump_in · s,

element-wise ops (ReLU, BatchNorm, ``+`` of a residual block, ``torch.cat``
along channels) take the union of their arguments' boxes, permutes to
channels-last and back (a ConvNeXt ``LayerNorm`` or ``Linear`` over channels)
and reshapes that keep the grid carry the boxes along, and flatten / global
pooling make the field the union of everything (the whole input). Residual
networks are therefore right: the downsample branch is a parallel path, joined
by ``+``, never chained after the main path. Boxes may extend into the padding
(negative or ``>= H``). Ops the rules cannot follow exactly (interpolation,
transposed convolution, an unknown op) give the whole input: the box is then
marked conservative, with the reason (:mod:`cnn_explain._rf_rules`).

MACs are what ``torch.utils.flop_counter.FlopCounterMode`` counts for the
convolutions and matrix products that really ran (FLOPs / 2), per module call
(:mod:`cnn_explain._macs`).

Example:
    >>> from cnn_explain.models import cifar10_cnn
    >>> box = receptive_field(cifar10_cnn(), "4", 0, 0)      # first max-pool
    >>> (box.top, box.bottom, box.height)
    (-2, 3, 6)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field as dc_field
from typing import Any

import torch
from torch import nn

from ._utils import check_device, model_device, positive_int
from . import geometry, ops
from ._macs import MacCounter
from ._receptive import Field, RFMode
from .hooks import _check_model, capture, preserved, resolve_layer, resolve_layers

__all__ = ["Box", "LayerInfo", "Walk", "walk", "trace", "receptive_field", "check_input_shape", "leaf_names",
           "row_names"]


@dataclass(frozen=True)
class Box:
    """Inclusive input region seen by one output position of a layer.

    Attributes:
        top, bottom: first and last input row (inclusive; may lie in the padding).
        left, right: first and last input column (inclusive).
        layer: the layer name (``name#k`` for the k-th repeated call).
        h, w: the output position the box belongs to.
        input_shape: the ``(C, H, W)`` input the box refers to.
        support: ``(top, bottom, left, right)`` of the input pixels that really
            reach this output (inside the image); None when none does (an output
            that sees only padding) or when unknown. It equals
            the box cut to the image except where a layer drops border pixels
            (a pooling or strided conv whose windows do not cover the last rows).
        exact: False when the box had to be conservative (it then contains the
            true field; :attr:`reason` says why).
        reason: why the box is conservative (None when exact).
    """

    top: int
    bottom: int
    left: int
    right: int
    layer: str = ""
    h: int = 0
    w: int = 0
    input_shape: tuple[int, int, int] = (3, 32, 32)
    support: tuple[int, int, int, int] | None = None
    exact: bool = True
    reason: str | None = None

    @property
    def height(self) -> int:
        """Number of rows, padding included: ``bottom - top + 1``."""
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        """Number of columns, padding included: ``right - left + 1``."""
        return self.right - self.left + 1

    def clipped(self) -> "Box":
        """The input pixels inside the image that reach this output: :attr:`support`
        if known, else the box cut to the image (no padding rows/columns)."""
        _, H, W = self.input_shape
        t, b, l, r = self.support or (max(self.top, 0), min(self.bottom, H - 1), max(self.left, 0), min(self.right, W - 1))
        return Box(t, b, l, r, self.layer, self.h, self.w, self.input_shape, (t, b, l, r), self.exact, self.reason)


@dataclass(frozen=True)
class LayerInfo:
    """One call of one leaf module during the forward pass.

    Attributes:
        name: dotted module name, ``name#k`` for the k-th repeated call.
        module_name: the dotted name without ``#k``.
        call: 0 for the first call, k for ``name#k``.
        kind: the module's class name (``"Conv2d"``).
        input_shape, output_shape: per-image shapes (batch dimension dropped), ``(C, H, W)`` for maps.
        params, trainable: parameters this row owns: the module's own (not its children's), each
            counted in the first row that uses it (0 on repeated calls: the weights are shared).
        kernel, stride, padding, dilation: ``(h, w)`` pairs for conv/pool layers, else None
            (padding may be a string such as ``"same"``).
        groups: conv groups (1 otherwise).
        bias: whether the layer has a bias.
        macs: multiply-accumulates per image of this call, as ``FlopCounterMode`` counts the
            convolutions and matrix products that ran (FLOPs / 2), less those of row modules inside it.
        rf: receptive field ``(height, width)`` at this layer's output (the whole input for global layers).
        jump: distance in input pixels between neighbouring outputs ``(h, w)``; None for global layers.
        start: ``(top, left)`` of the box of output ``(0, 0)``.
        category: what the module does, from the operator table (:func:`cnn_explain.ops.category`).
    """

    name: str
    module_name: str
    call: int
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    trainable: int
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    padding: tuple[int, int] | str | None
    dilation: tuple[int, int] | None
    groups: int
    bias: bool
    macs: int
    rf: tuple[int, int]
    jump: tuple[int, int] | None
    start: tuple[int, int]
    category: ops.Category = ops.Category.OTHER
    rf_field: "Field | None" = dc_field(default=None, repr=False, compare=False)
    module: nn.Module | None = dc_field(default=None, repr=False, compare=False)
    owned: tuple[nn.Parameter, ...] = dc_field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Walk:
    """What :func:`trace` returns.

    Attributes:
        infos: one :class:`LayerInfo` per recorded call, in execution order.
        total_macs: MACs of the whole forward (also work done outside any row's module).
        reasons: why some receptive fields are conservative (empty when all are exact).
    """

    infos: list[LayerInfo]
    total_macs: int
    reasons: tuple[str, ...] = ()


# --------------------------------------------------------------------------- checks
def check_input_shape(input_shape: Any, *, argname: str = "input_shape") -> tuple[int, int, int]:
    """Validate an image shape ``(C, H, W)`` (no batch dimension) and return it as a tuple of ints."""
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"{argname} must be a sequence (C, H, W) of positive ints, got {type(input_shape).__name__}")
    if len(input_shape) != 3:
        hint = " (leave out the batch dimension)" if len(input_shape) == 4 else ""
        raise ValueError(f"{argname} must be (C, H, W), three positive ints{hint}; got {tuple(input_shape)}")
    return tuple(positive_int(v, f"{argname}[{i}]") for i, v in enumerate(input_shape))  # type: ignore[return-value]


def leaf_names(model: nn.Module) -> list[str]:
    """Dotted names of the modules without children (``[""]`` when the model is itself a leaf)."""
    return [n for n, m in model.named_modules() if next(m.children(), None) is None]


def row_names(model: nn.Module) -> list[str]:
    """The modules that get a row: leaves, and modules that own parameters themselves (a layer-scale
    vector on a block, a ``Conv2d`` subclass that owns its padding module), in model order."""
    return [n for n, m in model.named_modules()
            if next(m.children(), None) is None or next(m.parameters(recurse=False), None) is not None]


def _geometry(m: nn.Module) -> dict[str, Any]:
    g: dict[str, Any] = {"kernel": None, "stride": None, "padding": None, "dilation": None}
    kernel = getattr(m, "kernel_size", None)
    if kernel is None or (isinstance(kernel, (tuple, list)) and len(kernel) > 2):  # not a 1-D/2-D window
        return g
    stride, padding = getattr(m, "stride", None), getattr(m, "padding", 0)
    g["kernel"] = geometry.pair(kernel)
    g["stride"] = g["kernel"] if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else geometry.pair(stride)
    g["padding"] = padding if isinstance(padding, str) else geometry.pair(padding)  # "same" / "valid" kept
    g["dilation"] = geometry.pair(getattr(m, "dilation", 1))
    return g


def _first_tensor(v: Any) -> torch.Tensor | None:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (tuple, list)):
        for item in v:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


# --------------------------------------------------------------------------- walk
def walk(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32), *, layers: Any = None,
         device: str | torch.device | None = None) -> list[LayerInfo]:
    """One forward pass on zeros; one :class:`LayerInfo` per recorded module call, in execution order.

    Args:
        model: any ``nn.Module`` taking ``(N, C, H, W)`` images. It comes back
            unchanged (training flags, ``requires_grad``, ``.grad``, RNG, no hooks).
        input_shape: one image's shape ``(C, H, W)``, without the batch dimension.
        layers: which modules to record (see :func:`cnn_explain.hooks.resolve_layers`);
            default :func:`row_names` (leaves and modules owning parameters themselves).
        device: where to run (default: the model's device).

    Returns:
        A list of :class:`LayerInfo`; modules never called are absent.

    Raises:
        TypeError / ValueError: bad ``input_shape`` or a forward that fails on it.

    Example:
        >>> walk(nn.Sequential(nn.Conv2d(1, 4, 3)), (1, 8, 8))[0].output_shape
        (4, 6, 6)
    """
    return trace(model, input_shape, layers=layers, device=device).infos


def trace(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32), *, layers: Any = None,
          device: str | torch.device | None = None) -> Walk:
    """:func:`walk` plus the MACs of the whole forward and the reasons of conservative fields."""
    _check_model(model)
    shape = check_input_shape(input_shape)
    names = row_names(model) if layers is None else layers
    device = check_device(device) if device is not None else model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros((1, *shape), device=device, dtype=dtype)
    mode = RFMode(shape[1], shape[2])
    with preserved(model, eval=True, rng=True), torch.no_grad():
        with capture(model, names, inputs=True) as rec:
            counter = MacCounter(model, resolve_layers(model, names).values())
            mode.seed(x)
            try:
                with counter, mode:
                    model(x)
            except RuntimeError as exc:
                raise ValueError(
                    f"input_shape={shape}: the model's forward failed on a zero input of shape "
                    f"{tuple(x.shape)} (expected (C, H, W) the model accepts): {exc}"
                ) from exc
        seen: set[int] = set()
        infos = [_info(key, rec, mode, counter, seen) for key in rec.outputs]
    mode.clear()
    return Walk(infos, counter.total, tuple(mode.reasons))


def _info(key: str, rec: Any, mode: RFMode, counter: MacCounter, seen: set[int]) -> LayerInfo:
    module = rec.modules[key]
    base, _, k = key.partition("#")
    call = int(k) if k else 0
    out = _first_tensor(rec.outputs[key])
    inp = _first_tensor(rec.inputs.get(key))
    out_shape = tuple(out.shape[1:]) if out is not None else ()
    in_shape = tuple(inp.shape[1:]) if inp is not None else ()
    fld = mode.field_of(out) if out is not None else None
    owned = tuple(p for p in module.parameters(recurse=False) if id(p) not in seen)
    seen.update(id(p) for p in owned)
    calls = counter.calls.get(id(module), [])
    rf, jump, start = fld.summary() if fld is not None else ((0, 0), None, (0, 0))
    return LayerInfo(
        name=key, module_name=base, call=call, kind=type(module).__name__,
        input_shape=in_shape, output_shape=out_shape, params=sum(p.numel() for p in owned),
        trainable=sum(p.numel() for p in owned if p.requires_grad),
        groups=int(getattr(module, "groups", 1)), bias=getattr(module, "bias", None) is not None,
        macs=calls[call] if call < len(calls) else 0, rf=rf, jump=jump, start=start,
        category=ops.category(module), rf_field=fld, module=module, owned=owned, **_geometry(module),
    )


# --------------------------------------------------------------------------- receptive field
_CALL = re.compile(r"^(.*)#(\d+)$")


def receptive_field(model: nn.Module, layer: Any, h: int, w: int, *,
                    input_shape: Sequence[int] | None = None) -> Box:
    """The inclusive input box that output position ``(h, w)`` of ``layer`` depends on.

    Args:
        model: any ``nn.Module``; unchanged afterwards.
        layer: a module, a dotted name (``"features.3"``; ``"relu#1"`` for a
            module's second call), a glob or a type (the last match is used).
        h, w: output row and column of that layer (``0, 0`` for layers without
            spatial axes, such as Linear: their field is the whole input).
        input_shape: the image shape ``(C, H, W)``; default ``(C, 32, 32)`` with ``C`` the
            ``in_channels`` of the model's first ``Conv2d``.

    Returns:
        A :class:`Box` in input coordinates; it may extend into the padding
        (``box.clipped()`` cuts it to the image). ``box.exact`` is False (and a
        ``UserWarning`` says why) when an op on the way could only be followed
        conservatively: the box then contains the true field.

    Raises:
        ValueError: unknown layer, a layer not called in forward, ``h``/``w``
            outside the layer's output (the valid range is given), or no
            ``input_shape`` for a model without a ``Conv2d``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2))
        >>> b = receptive_field(net, "1", 1, 1, input_shape=(1, 8, 8))
        >>> (b.top, b.bottom, b.left, b.right)
        (1, 4, 1, 4)
    """
    h = positive_int(h, "h", minimum=0)
    w = positive_int(w, "w", minimum=0)
    shape = check_input_shape(_default_shape(model) if input_shape is None else input_shape)
    call = 0
    if isinstance(layer, str) and _CALL.match(layer):
        layer, k = _CALL.match(layer).groups()  # type: ignore[union-attr]
        call = int(k)
    name, _ = resolve_layer(model, layer, argname="layer")
    infos = {i.call: i for i in walk(model, shape, layers=[name])}
    if call not in infos:
        calls = ", ".join(repr(i.name) for i in infos.values()) or "none"
        raise ValueError(f"layer {name!r} has no call #{call} in forward (recorded calls: {calls})")
    info = infos[call]
    if info.rf_field is None:
        raise ValueError(f"layer {info.name!r}: its output does not depend on the input")
    fld = info.rf_field
    n_h, n_w = fld.size
    if h >= n_h:
        raise ValueError(f"h={h} is outside layer {info.name!r}'s output rows: expected 0 <= h <= {n_h - 1}")
    if w >= n_w:
        raise ValueError(f"w={w} is outside layer {info.name!r}'s output columns: expected 0 <= w <= {n_w - 1}")
    top, bottom, left, right = fld.box(h, w)
    if fld.reason is not None:
        warnings.warn(f"the receptive field of {info.name!r} at ({h}, {w}) is conservative (it contains the "
                      f"true one): {fld.reason}", UserWarning, stacklevel=2)
    return Box(top, bottom, left, right, info.name, h, w, shape, fld.support(h, w), fld.reason is None, fld.reason)


def _default_shape(model: nn.Module) -> tuple[int, int, int]:
    """``(C, 32, 32)`` with ``C`` the input channels of the first ``Conv2d``."""
    _check_model(model)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("input_shape=None needs a Conv2d to read the channel count from; "
                         "give input_shape=(C, H, W)")
    return (conv.in_channels, 32, 32)
