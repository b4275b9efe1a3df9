"""The worked arithmetic behind one output value (seed 000, section 5 and figure 4).

For output channel ``k`` at position ``(h, w)`` of a Conv2d layer::

    z[k, h, w] = Σ_c Σ_{i,j} x_pad[c, h·s_h + i·d_h, w·s_w + j·d_w] · W[k, c, i, j] + b[k]

where ``c`` runs over the input channels of ``k``'s group (``C_in / groups`` of them),
``s`` is the stride, ``d`` the dilation and ``x_pad`` the input with the layer's
padding. :func:`arithmetic` returns every piece of that sum — the input slice the
filter reads, the kernel, their elementwise products, the sum per input channel,
the bias — and the value the model actually produced there; they agree to 1e-5.
If the next module the model calls is an activation (``nn.ReLU``, ...) applied to
this output, its value is given too: the bias is added *before* the activation
(seed 000's text adds it after; the layer computes ``relu(Σ + b)``).

The sum is written with the operands of the ``F.conv2d`` call that actually
produced the layer's output (recorded while the model runs), so a conv module
whose ``forward`` pads its input itself (EfficientNet's static "same" padding),
standardizes its weight or calls the convolution with other arguments is
explained as it computes; a layer whose output no single convolution explains
(a ``forward`` that adds to the result) raises a ``ValueError`` instead.

Max pooling says which input won and where; average pooling gives the sum and
the divisor (``count_include_pad`` / ``divisor_override`` as PyTorch); a Linear
layer gives the dot product ``Σ_i x_i·W[k, i] + b[k]``.

Example:
    >>> from cnn_explain.models import cifar10_cnn
    >>> a = arithmetic(cifar10_cnn(), torch.rand(1, 3, 32, 32), "0", channel=5, h=0, w=0)
    >>> abs(a.computed - a.actual) < 1e-5, tuple(a.input_slice.shape)
    (True, (3, 3, 3))
    >>> print(a)  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..plotting._display import Displayable
from .._utils import model_input
from .. import geometry, ops
from ..hooks import LayerSpec, _check_model, capture, preserved, resolve_layer
from ._conv_calls import ConvCalls

__all__ = ["Arithmetic", "Activation", "arithmetic"]

_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_SUPPORTED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Linear) + _ADAPTIVE


class Activation(NamedTuple):
    """The activation module applied next: its class name and its value at the same position."""

    name: str
    value: float


@dataclass(frozen=True)
class Arithmetic(Displayable):
    """The worked computation of one output value. Tensors are float64 CPU copies.

    Attributes:
        layer: the layer's dotted name; ``kind``: ``"conv"``, ``"maxpool"``,
            ``"avgpool"``, ``"adaptive_maxpool"``, ``"adaptive_avgpool"`` or ``"linear"``.
        channel: output channel (output feature for Linear).
        position: ``(h, w)`` in the output (None for Linear).
        computed: the worked value (conv / linear: products summed plus bias;
            max pool: the winner; average pool: sum / divisor).
        actual: what the layer produced there.
        input_slice: what the output reads: conv ``(C_in/groups, kh, kw)``, pool
            ``(kh, kw)`` of ``channel``, linear ``(in_features,)``. Padding appears
            as its value (0 for zero padding, -inf for max pooling).
        kernel: conv ``(C_in/groups, kh, kw)`` = ``weight[channel]``; linear the row
            ``weight[channel]``; None for pools.
        products: ``input_slice * kernel`` (None for pools).
        per_channel_sums: conv: ``products.sum((1, 2))`` ``(C_in/groups,)``; else None.
        bias: the bias added (None without one).
        activation: :class:`Activation` ``(name, value)`` when the next module is
            an activation applied to this output, else None.
        input_channels: input channels read (conv: the group's; pools: ``(channel,)``).
        rows, cols: input coordinates read, in the layer's input (outside ``[0, H)`` = padding,
            also padding the layer's ``forward`` adds itself with ``F.pad``).
        winner: max pools: ``(row, col)`` of the winning input; else None.
        divisor: average pools: the count the sum is divided by; else None.
        output_shape: the layer output shape for one image; ``input_shape`` likewise.
        module: ``repr`` of the layer.
        index: which image of ``x`` was used.
    """

    layer: str
    kind: str
    channel: int
    position: tuple[int, int] | None
    computed: float
    actual: float
    input_slice: torch.Tensor
    kernel: torch.Tensor | None = None
    products: torch.Tensor | None = None
    per_channel_sums: torch.Tensor | None = None
    bias: float | None = None
    activation: Activation | None = None
    input_channels: tuple[int, ...] = ()
    rows: tuple[int, ...] = ()
    cols: tuple[int, ...] = ()
    winner: tuple[int, int] | None = None
    divisor: int | None = None
    output_shape: tuple[int, ...] = ()
    input_shape: tuple[int, ...] = ()
    module: str = ""
    index: int = 0

    @property
    def difference(self) -> float:
        """``|computed − actual|``."""
        return abs(self.computed - self.actual)

    def to_text(self, max_channels: int = 4) -> str:
        """Plain-text layout like seed 000's figure 4 (slices, kernels, products, sums + bias = value)."""
        return _render(self, max_channels)

    def __str__(self) -> str:
        return self.to_text()


# --------------------------------------------------------------------------- public
def arithmetic(model: nn.Module, x: Any, layer: LayerSpec, channel: int = 0, h: int | None = None,
               w: int | None = None, *, index: int = 0) -> Arithmetic:
    """Work out one output value of a Conv2d, pooling or Linear layer by hand.

    Args:
        model: any ``nn.Module`` (run in eval mode, without gradients).
        x: ``(N, C, H, W)`` images (or one image; see :func:`cnn_explain.images.to_batch`).
        layer: a Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvg/MaxPool2d or Linear layer
            (name, glob, module or type).
        channel: output channel (output feature for Linear).
        h, w: output position; default the centre ``(H_out // 2, W_out // 2)``.
            Must be None for Linear.
        index: which image of ``x`` to use.

    Returns:
        An :class:`Arithmetic`; ``str(result)`` lays the computation out.

    Raises:
        ValueError: ``layer`` is not one of the supported kinds; ``channel``, ``h``,
            ``w`` or ``index`` outside the valid range (the message gives it).
    """
    _check_model(model)
    name, module = resolve_layer(model, layer)
    if not isinstance(module, _SUPPORTED):
        raise ValueError(
            f"layer {name!r} is a {type(module).__name__}; arithmetic works on Conv2d, MaxPool2d, "
            "AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d and Linear layers"
        )
    x = model_input(model, x)
    index = _in_range(index, x.shape[0], "index", "images in x")
    calls = ConvCalls()
    inp, out, act = _run(model, x[index:index + 1], name, module, calls)
    if isinstance(module, nn.Linear):
        if h is not None or w is not None:
            raise ValueError(f"h and w do not apply to the Linear layer {name!r}; leave them None")
        fields = _linear(module, inp, out, _in_range(channel, out.shape[-1], "channel", f"outputs of {name!r}"))
    else:
        if out.dim() != 3:
            raise ValueError(f"layer {name!r} produced shape {tuple(out.shape)}; expected (C, H, W) per image")
        channel = _in_range(channel, out.shape[0], "channel", f"output channels of {name!r}")
        h = _in_range(out.shape[1] // 2 if h is None else h, out.shape[1], "h", f"output rows of {name!r}")
        w = _in_range(out.shape[2] // 2 if w is None else w, out.shape[2], "w", f"output columns of {name!r}")
        fields = _conv(name, module, out, calls, k=channel, h=h, w=w) if isinstance(module, nn.Conv2d) \
            else _spatial(module, inp, out, channel, h, w)
    actual = float(out[channel] if out.dim() == 1 else out[channel, h, w])
    _check_agreement(name, fields, actual)
    activation = None
    if act is not None:
        act_name, act_out = act
        activation = Activation(act_name, float(act_out[channel] if act_out.dim() == 1 else act_out[channel, h, w]))
    return Arithmetic(layer=name, channel=channel, actual=actual, activation=activation,
                      output_shape=tuple(out.shape), input_shape=tuple(inp.shape), module=repr(module),
                      index=index, **fields)


# --------------------------------------------------------------------------- helpers
def _in_range(value: Any, size: int, argname: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) and not (
            isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()):
        raise TypeError(f"{argname} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < size:
        raise ValueError(f"{argname}={value} is outside the {what}: valid range 0..{size - 1}")
    return value


def _run(model: nn.Module, x: torch.Tensor, name: str, module: nn.Module, calls: ConvCalls):
    """One forward of one image: the layer's input and output ((C,H,W) or (F,)) and the next activation;
    ``calls`` records the convolutions that ran."""
    acts = [n for n, m in model.named_modules() if ops.category(m) in (ops.Category.RELU, ops.Category.ACTIVATION)]
    with preserved(model, eval=True), torch.no_grad():
        with capture(model, [name] + acts, inputs=True) as rec:
            with calls:
                model(x)
        if name not in rec:
            raise ValueError(f"layer {name!r} was not called by the model's forward")
        inp, out = rec.inputs[name], rec.outputs[name]
        if not isinstance(inp, torch.Tensor) or not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {name!r} does not take and return tensors")
        keys = list(rec.keys())
        following = keys[keys.index(name) + 1] if keys.index(name) + 1 < len(keys) else None
        activation = None
        if following is not None:
            act_module, act_out = rec.modules[following], rec.outputs[following]
            expected = act_module(out.clone())  # is it this layer's output the activation received?
            if act_out.shape == out.shape and torch.allclose(expected, act_out, atol=1e-6, rtol=1e-5):
                activation = (type(act_module).__name__, act_out[0].double().cpu())
    return inp[0].double().cpu(), out[0].double().cpu(), activation


def _window(x: torch.Tensor, rows: list[int], cols: list[int], fill: float) -> torch.Tensor:
    """``x[:, rows][:, :, cols]`` of ``(C, H, W)`` with ``fill`` where a row/col is outside the input."""
    H, W = x.shape[-2:]
    top, left = max(0, -min(rows)), max(0, -min(cols))
    bottom, right = max(0, max(rows) - H + 1), max(0, max(cols) - W + 1)
    xp = F.pad(x, (left, right, top, bottom), value=fill)
    r = torch.tensor(rows) + top
    c = torch.tensor(cols) + left
    return xp[:, r][:, :, c]


def _spatial(module: nn.Module, inp: torch.Tensor, out: torch.Tensor, k: int, h: int, w: int) -> dict:
    H, W = inp.shape[-2:]
    if isinstance(module, _ADAPTIVE):
        oh, ow = out.shape[-2:]
        rows = list(range(*_inclusive(geometry.adaptive_window(h, H, oh))))
        cols = list(range(*_inclusive(geometry.adaptive_window(w, W, ow))))
    else:
        size, pad = geometry.pair(module.kernel_size), geometry.pair(module.padding)
        stride, dil = geometry.pair(module.stride or module.kernel_size), geometry.pair(getattr(module, "dilation", 1))
        rows = geometry.taps(h, size[0], stride[0], pad[0], dil[0])
        cols = geometry.taps(w, size[1], stride[1], pad[1], dil[1])
    is_max = isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d))
    window = _window(inp[k:k + 1], rows, cols, float("-inf") if is_max else 0.0)[0]
    kind = ("adaptive_" if isinstance(module, _ADAPTIVE) else "") + ("maxpool" if is_max else "avgpool")
    common = dict(kind=kind, position=(h, w), input_slice=window, input_channels=(k,),
                  rows=tuple(rows), cols=tuple(cols))
    if is_max:
        flat = int(window.reshape(-1).argmax())
        return dict(common, computed=float(window.max()), winner=(rows[flat // len(cols)], cols[flat % len(cols)]))
    if isinstance(module, _ADAPTIVE):
        divisor = len(rows) * len(cols)
    else:
        divisor = geometry.avg_divisor((h, w), (H, W), size, stride, pad, count_include_pad=module.count_include_pad,
                                       divisor_override=module.divisor_override)
    return dict(common, computed=float(window.sum() / divisor), divisor=divisor)


def _inclusive(first_last: tuple[int, int]) -> tuple[int, int]:
    """``(first, last)`` -> the ``range`` arguments ``(first, last + 1)``."""
    return first_last[0], first_last[1] + 1


def _conv(name: str, conv: nn.Conv2d, out: torch.Tensor, calls: ConvCalls, *, k: int, h: int, w: int) -> dict:
    """The worked sum of the ``F.conv2d`` call that produced the layer's output, with its own operands."""
    call = calls.producing(out, conv.weight)
    if call is None:
        raise ValueError(
            f"layer {name!r} ({type(conv).__name__}): its output is not what any convolution in the forward "
            "returned (its forward does more than the convolution, e.g. adds to or scales the result), so no "
            "worked sum of one convolution explains its values")
    kh, kw = call.weight.shape[-2:]
    rows = geometry.taps(h, kh, call.stride[0], call.padding[0], call.dilation[0])
    cols = geometry.taps(w, kw, call.stride[1], call.padding[1], call.dilation[1])
    per_group = call.weight.shape[0] // call.groups
    cin_g = call.weight.shape[1]
    first = (k // per_group) * cin_g
    channels = list(range(first, first + cin_g))
    window = _window(call.input[channels], rows, cols, 0.0)
    kernel = call.weight[k]
    products = window * kernel
    sums = products.sum(dim=(1, 2))
    bias = None if call.bias is None else float(call.bias[k])
    computed = float(sums.sum()) + (bias or 0.0)
    top, left = call.shift  # rows/cols in the coordinates of the tensor before the forward's own F.pad calls
    return dict(kind="conv", position=(h, w), computed=computed, input_slice=window, kernel=kernel,
                products=products, per_channel_sums=sums, bias=bias, input_channels=tuple(channels),
                rows=tuple(r - top for r in rows), cols=tuple(c - left for c in cols))


def _check_agreement(name: str, fields: dict, actual: float) -> None:
    """Raise rather than return a worked sum that disagrees with the layer (float32 rounding allowed)."""
    terms = fields.get("products")
    scale = 1.0 + abs(actual) + (float(terms.abs().sum()) if terms is not None else 0.0)
    if abs(fields["computed"] - actual) > 1e-5 * scale:
        raise ValueError(
            f"layer {name!r}: the worked value {fields['computed']:.6g} disagrees with what the layer produced "
            f"({actual:.6g}); its forward computes something else than its attributes say, so no worked sum is given")


def _linear(linear: nn.Linear, inp: torch.Tensor, out: torch.Tensor, k: int) -> dict:
    if inp.dim() != 1:
        raise ValueError(f"arithmetic supports Linear layers fed (N, features); this one gets (N, {tuple(inp.shape)})")
    kernel = linear.weight[k].detach().double().cpu()
    products = inp * kernel
    bias = None if linear.bias is None else float(linear.bias.detach()[k])
    computed = float(products.sum()) + (bias or 0.0)
    return dict(kind="linear", position=None, computed=computed, input_slice=inp, kernel=kernel,
                products=products, bias=bias)


# --------------------------------------------------------------------------- text
def _fmt(v: float) -> str:
    return "pad" if v == float("-inf") else f"{v:8.4f}"


def _matrices(blocks: list[torch.Tensor], titles: list[str]) -> list[str]:
    """Side-by-side 2-D matrices with titles."""
    width = [max(len(t), 9 * b.shape[1]) for t, b in zip(titles, blocks)]
    lines = ["   ".join(t.center(wd) for t, wd in zip(titles, width))]
    for r in range(blocks[0].shape[0]):
        cells = [" ".join(f"{_fmt(float(v)):>8}" for v in b[r]).ljust(wd) for b, wd in zip(blocks, width)]
        lines.append("   ".join(cells))
    return lines


def _render(a: Arithmetic, max_channels: int) -> str:
    where = f"channel {a.channel}" if a.position is None else f"channel {a.channel} at (h={a.position[0]}, w={a.position[1]})"
    lines = [f"{a.layer}: {a.module}", f"output {where}; output shape {a.output_shape}"]
    if a.position is not None:
        lines.append(f"reads input rows {a.rows[0]}..{a.rows[-1]}, cols {a.cols[0]}..{a.cols[-1]} "
                     "(outside the input = padding)")
    if a.kind == "conv":
        lines += _render_conv(a, max_channels)
    elif a.kind == "linear":
        lines += _render_linear(a)
    else:
        lines.append("")
        lines += _matrices([a.input_slice], [f"input channel {a.channel}"])
        if a.winner is not None:
            lines.append(f"max = {a.computed:.6g}, won by input (row {a.winner[0]}, col {a.winner[1]})   (computed)")
        else:
            lines.append(f"mean = sum {float(a.input_slice.sum()):.6g} / {a.divisor} = {a.computed:.6g}   (computed)")
    lines.append(f"the layer produced {a.actual:.6g}   (actual; |difference| = {a.difference:.1e})")
    if a.activation is not None:
        lines.append(f"{a.activation.name}({a.actual:.6g}) = {a.activation.value:.6g}   (the next layer's input)")
    return "\n".join(lines)


def _render_conv(a: Arithmetic, max_channels: int) -> list[str]:
    lines: list[str] = []
    n = len(a.input_channels)
    shown = n if n <= max_channels else max_channels - 1
    for i in range(shown):
        lines.append("")
        lines.append(f"input channel {a.input_channels[i]}")
        lines += _matrices([a.input_slice[i], a.kernel[i], a.products[i]], ["input slice", "kernel", "products"])
        lines.append(f"sum of products = {float(a.per_channel_sums[i]):.6g}")
    sums = [float(v) for v in a.per_channel_sums]
    if shown < n:
        rest = ", ".join(f"{v:.4g}" for v in sums[shown:])
        lines += ["", f"input channels {a.input_channels[shown]}..{a.input_channels[-1]}: sums {rest}"]
    terms = " + ".join(f"{v:.4g}" for v in sums) if n <= 8 else f"{n} channel sums"
    lines += ["", f"{terms} = {sum(sums):.6g}"]
    if a.bias is not None:
        lines.append(f"{sum(sums):.6g} + bias {a.bias:.6g} = {a.computed:.6g}   (computed)")
    else:
        lines.append(f"no bias: {a.computed:.6g}   (computed)")
    return lines


def _render_linear(a: Arithmetic, top: int = 8) -> list[str]:
    order = a.products.abs().argsort(descending=True)[:top].tolist()
    lines = ["", f"dot product over {a.input_slice.numel()} inputs; largest |x_i·w_i|:"]
    for i in order:
        lines.append(f"  x[{i}] = {float(a.input_slice[i]):9.4f}  ×  w[{a.channel}, {i}] = {float(a.kernel[i]):9.4f}"
                     f"  =  {float(a.products[i]):9.4f}")
    total = float(a.products.sum())
    lines.append(f"Σ x_i·w_i = {total:.6g}")
    bias = f" + bias {a.bias:.6g}" if a.bias is not None else " (no bias)"
    lines.append(f"{total:.6g}{bias} = {a.computed:.6g}   (computed)")
    return lines
