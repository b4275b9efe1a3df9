"""The per-layer table: shapes, neurons, parameters with their formula, receptive fields, MACs.

Parameters are written out the way seed 000 teaches them:

* convolution with bias: ``(kh×kw×Cin/groups+1)×Cout``, e.g. ``(3×3×3+1)×32 = 896``;
  without bias ``kh×kw×Cin×Cout`` (``3×3×3×32 = 864``);
* dense layer: ``(inputs+1)×outputs``, e.g. ``(2048+1)×128 = 262,272``;
* batch normalization: ``2×C`` (a scale and a shift per channel);
* layers without parameters: ``—``.

"Neurons" are the values a layer outputs for one image, as seed 001 counts
them: a 28×28 map of 32 channels holds 28×28×32 = 25,088 neurons. Shapes are
written height×width×channels like the seeds (``Row.output_shape`` itself is
PyTorch's ``(C, H, W)``).

Example:
    >>> from cnn_explain.models import cifar10_cnn
    >>> s = summarize(cifar10_cnn(), (3, 32, 32))
    >>> s.rows[0].formula, s.total_params
    ('(3×3×3+1)×32 = 896', 550570)
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from . import ops
from .layers import LayerInfo, check_input_shape, row_names, trace

__all__ = ["Row", "Summary", "summarize", "param_formula", "shape_text"]


@dataclass(frozen=True)
class Row:
    """One layer call of the summary (see :class:`cnn_explain.layers.LayerInfo` for the geometry fields).

    Attributes:
        name: dotted module name (``name#k`` for a repeated call).
        kind: the module's class name.
        output_shape: per-image output shape in PyTorch order, ``(C, H, W)`` or ``(F,)``.
        shape: the output shape as the seeds write it: ``"32×32×32"`` (H×W×C), ``"2048"``.
        neurons: number of output values per image (``math.prod(output_shape)``).
        params: parameters this row owns: the module's own, not its children's (a block's
            layer-scale vector is on the block's row), each parameter in exactly one row
            (0 on a repeated call: the weights are shared); the column sums to ``total_params``.
        formula: the parameter count written out, e.g. ``"(3×3×3+1)×32 = 896"``, or ``"—"``.
        kernel, stride, padding, dilation: ``(h, w)`` for conv/pool layers, else None.
        rf: receptive field ``(height, width)`` in input pixels at this layer's output.
        jump: input pixels between neighbouring outputs ``(h, w)``; None once the map is global.
        macs: multiply-accumulates per image of this call: the convolutions and matrix products
            that ran inside it (``FlopCounterMode``'s FLOPs / 2), less those of rows inside it.
        category: the row's kind in the operator table (:class:`cnn_explain.ops.Category`).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    shape: str
    neurons: int
    params: int
    trainable: int
    formula: str
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    padding: tuple[int, int] | str | None
    dilation: tuple[int, int] | None
    rf: tuple[int, int]
    jump: tuple[int, int] | None
    macs: int
    category: ops.Category = ops.Category.OTHER


def shape_text(shape: Sequence[int]) -> str:
    """``(C, H, W)`` -> ``"H×W×C"`` (the seeds' order); ``(F,)`` -> ``"F"``; anything else joined by ×."""
    shape = tuple(shape)
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(str(d) for d in shape) or "—"


def param_formula(module: nn.Module, params: Sequence[torch.Tensor] | None = None) -> str:
    """The layer's parameter count written out as seed 000 does: ``"(3×3×3+1)×32 = 896"``.

    Conv (also grouped and transposed): ``(kh×kw×Cin/groups+1)×Cout``; Linear:
    ``(in+1)×out``; BatchNorm (affine): ``2×C``; other layers: the product of each
    parameter's shape, summed; no parameters: ``"—"``. The written expression
    always evaluates to the real count (otherwise the generic form is used).

    Args:
        module: the layer.
        params: the parameters to count (default all of ``module.parameters()``); a summary
            row passes the ones it owns.
    """
    params = list(module.parameters()) if params is None else list(params)
    total = sum(p.numel() for p in params)
    if total == 0:
        return "—"
    expr, value = _specific_formula(module)
    if expr is None or value != total or len(params) != len(list(module.parameters())):
        terms = ["×".join(str(d) for d in p.shape) or "1" for p in params]
        expr = " + ".join(terms)
    return f"{expr} = {total:,}"


def _specific_formula(m: nn.Module) -> tuple[str | None, int]:
    has_bias = getattr(m, "bias", None) is not None
    kind = ops.category(m)
    if kind is ops.Category.CONV:
        cin = m.in_channels // m.groups
        body = "×".join(str(k) for k in m.kernel_size) + f"×{cin}"
        n = math.prod(m.kernel_size) * cin
        if has_bias:
            return f"({body}+1)×{m.out_channels}", (n + 1) * m.out_channels
        return f"{body}×{m.out_channels}", n * m.out_channels
    if kind is ops.Category.LINEAR:
        if has_bias:
            return f"({m.in_features}+1)×{m.out_features}", (m.in_features + 1) * m.out_features
        return f"{m.in_features}×{m.out_features}", m.in_features * m.out_features
    if kind is ops.Category.NORM and isinstance(m, nn.modules.batchnorm._NormBase) and m.affine:
        return f"2×{m.num_features}", 2 * m.num_features
    return None, 0


def _shape(info: LayerInfo) -> str:
    """H×W×C; a channels-last ``(N, H, W, C)`` output (ConvNeXt's LayerNorm, Linear) is already in that order."""
    dims = info.rf_field.dims if info.rf_field is not None else None
    if dims == (1, 2) and len(info.output_shape) == 3:
        return "×".join(str(d) for d in info.output_shape)
    return shape_text(info.output_shape)


def _row(info: LayerInfo, owners: dict[int, str]) -> Row:
    own = list(info.module.parameters(recurse=False))
    if info.owned or not own:
        formula = param_formula(info.module, info.owned)
    else:
        formula = f"shared with {owners[id(own[0])]}"
    return Row(
        name=info.name, kind=info.kind, input_shape=info.input_shape, output_shape=info.output_shape,
        shape=_shape(info), neurons=math.prod(info.output_shape) if info.output_shape else 0,
        params=info.params, trainable=info.trainable, formula=formula, kernel=info.kernel, stride=info.stride,
        padding=info.padding, dilation=info.dilation, rf=info.rf, jump=info.jump, macs=info.macs,
        category=info.category,
    )


# --------------------------------------------------------------------------- formatting
def _pair_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return str(v[0]) if v[0] == v[1] else f"{v[0]}×{v[1]}"


def _geometry_text(r: Row) -> str:
    if r.kernel is None:
        return ""
    parts = [f"{r.kernel[0]}×{r.kernel[1]}", f"s{_pair_text(r.stride)}", f"p{_pair_text(r.padding)}"]
    if r.dilation and r.dilation != (1, 1):
        parts.append(f"d{_pair_text(r.dilation)}")
    return " ".join(parts)


_COLUMNS = ("Layer", "Type", "Output (H×W×C)", "Neurons", "Params", "Formula", "Kernel", "RF", "Jump", "MACs")


def _cells(r: Row) -> list[str]:
    rf = f"{r.rf[0]}×{r.rf[1]}"
    jump = "—" if r.jump is None else _pair_text(r.jump)
    return [r.name or "(model)", r.kind, r.shape, f"{r.neurons:,}", f"{r.params:,}", r.formula,
            _geometry_text(r), rf, jump, f"{r.macs:,}"]


@dataclass(frozen=True)
class Summary:
    """What :func:`summarize` returns.

    Attributes:
        rows: one :class:`Row` per layer call, in execution order (leaves and modules owning
            parameters themselves), then modules with parameters the forward never called
            (``shape == "not called"``).
        total_params: parameters of the whole model (each shared tensor counted once).
        trainable_params: those with ``requires_grad``.
        total_macs: multiply-accumulates per image of the whole forward, as
            ``torch.utils.flop_counter.FlopCounterMode`` counts them (FLOPs / 2): the rows'
            MACs plus any convolution or matrix product a parent module calls itself.
        input_shape: the ``(C, H, W)`` the table was computed for.
        model_name: the model's class name.
    """

    rows: list[Row]
    total_params: int
    trainable_params: int
    total_macs: int
    input_shape: tuple[int, int, int]
    model_name: str = ""

    @property
    def input_neurons(self) -> int:
        """Values in one input image (seed 001: 28×28 = 784 for one grey channel)."""
        return math.prod(self.input_shape)

    def footer(self) -> list[str]:
        c, h, w = self.input_shape
        return [
            f"Input: {h}×{w}×{c} = {self.input_neurons:,} neurons",
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"MACs per image: {self.total_macs:,}",
        ]

    def __str__(self) -> str:
        table = [list(_COLUMNS)] + [_cells(r) for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
        numeric = {3, 4, 9}
        lines = []
        for k, row in enumerate(table):
            cells = [c.rjust(wd) if (i in numeric and k) else c.ljust(wd) for i, (c, wd) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        rule = "-" * max(len(line) for line in lines)
        title = f"{self.model_name} summary" if self.model_name else "Summary"
        return "\n".join([title, rule, lines[0], rule, *lines[1:], rule, *self.footer()])

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _cells(r)) + "</tr>" for r in self.rows)
        foot = "<br>".join(esc(line) for line in self.footer())
        return (f"<table class=\"cnn-explain-summary\"><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table><p>{foot}</p>")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (tuples become lists)."""
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "rows": [_jsonable(asdict(r)) for r in self.rows],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def summarize(model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None = None) -> Summary:
    """Per-layer table of a model, from one forward pass on a zero image.

    Args:
        model: any ``nn.Module`` taking ``(N, C, H, W)`` images (residual adds,
            ``F.relu`` in forward, BatchNorm, adaptive pooling all fine). It comes
            back unchanged.
        input_shape: one image's shape ``(C, H, W)``, without the batch dimension.
        device: where to run the forward pass (default: the model's device).

    Returns:
        A :class:`Summary`: ``.rows`` (one per leaf-module call), ``.total_params``,
        ``str()`` an aligned text table, ``_repr_html_()`` for notebooks, ``.to_dict()``.

    Raises:
        TypeError / ValueError: ``model`` is not a module, ``input_shape`` is not
            three positive ints, or the model cannot run on that shape.

    Example:
        >>> from cnn_explain.models import mnist_cnn
        >>> summarize(mnist_cnn(), (1, 28, 28)).rows[0].neurons      # seed 001: 28×28×32
        25088
    """
    shape = check_input_shape(input_shape)
    walked = trace(model, shape, device=device)
    owners = {id(p): i.name for i in walked.infos for p in i.owned}
    rows = [_row(i, owners) for i in walked.infos] + _uncalled(model, owners)
    params = {id(p): p for p in model.parameters()}.values()
    return Summary(
        rows=rows,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=walked.total_macs,
        input_shape=shape,
        model_name=type(model).__name__,
    )


def _uncalled(model: nn.Module, owners: dict[int, str]) -> list[Row]:
    """Rows for parameters of modules the forward never called (so the Params column adds up)."""
    rows = []
    named = dict(model.named_modules())
    for name in row_names(model):
        module = named[name]
        owned = [p for p in module.parameters(recurse=False) if id(p) not in owners]
        if not owned:
            continue
        owners.update((id(p), name) for p in owned)
        n = sum(p.numel() for p in owned)
        rows.append(Row(name=name, kind=type(module).__name__, input_shape=(), output_shape=(), shape="not called",
                        neurons=0, params=n, trainable=sum(p.numel() for p in owned if p.requires_grad),
                        formula=param_formula(module, owned), kernel=None, stride=None, padding=None,
                        dilation=None, rf=(0, 0), jump=None, macs=0, category=ops.category(module)))
    return rows
