"""How each op transforms a receptive field (the rules :class:`cnn_explain._receptive.RFMode` applies).

An op's output gets a :class:`~cnn_explain._rf_field.Field` from the fields of
its tensor arguments:

* convolution, pooling, ``F.pad``: their windows (exact, padding included);
* element-wise ops (activations, ``+ - * /``, BatchNorm in eval, dropout,
  ``torch.cat`` / ``split`` along channels), with broadcasting: the union of
  their arguments' ranges, position by position;
* layout ops: ``permute`` / ``transpose`` move the rows and columns to other
  dimensions, ``reshape`` / ``view`` / ``flatten`` keep them when the grid
  survives (the dimensions before and after it keep their products),
  ``x[..., a:b:s]`` slices them;
* ops over some dimensions (``F.linear`` and ``F.layer_norm`` on the last ones,
  ``mean`` / ``sum`` / ``amax`` / ``softmax``, GroupNorm, InstanceNorm): nothing
  changes when they act on channels; an image axis they act on is merged (every
  position sees the union of all positions along it);
* once the grid is gone (flatten, global pooling) the tensor is global: every
  value sees the union of everything it came from.

Anything else (transposed convolution, interpolation, a split along an image
axis, an op the table does not list) gives the whole input and a reason: the
field is then conservative, never too small.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import geometry, ops
from ._rf_field import Field, _Axis, _bind

_T = torch.Tensor
Known = list[tuple[torch.Tensor, Field]]


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _grid(t: torch.Tensor, f: Field) -> bool:
    """Whether ``f`` describes ``t`` as a map with rows and columns at ``f.dims``."""
    return f.dims is not None and max(f.dims) < t.dim()


# --------------------------------------------------------------------------- generic results
def conservative(mode: Any, func: Any, out: torch.Tensor, why: str = "") -> Field:
    """The whole input for every position, flagged with the reason (an ``(N, C, H, W)`` output keeps its grid)."""
    reason = why or f"{_name(func)} is not an op the receptive-field rules follow exactly"
    if out.dim() == 4:
        return Field.full(out.shape[2], out.shape[3], mode.H, mode.W, dims=(2, 3), reason=reason)
    return Field.full(1, 1, mode.H, mode.W, dims=None, reason=reason)


def global_union(mode: Any, known: Known) -> Field:
    """A value that depends on everything its arguments depend on (no grid left)."""
    parts = [f.collapse((mode.H, mode.W)) for _, f in known]
    fld = Field(_Axis.union([p.h for p in parts], 1), _Axis.union([p.w for p in parts], 1), True, None)
    return fld.flagged(next((f.reason for f in parts if f.reason), None))


def _merge(mode: Any, f: Field, rows: bool, cols: bool) -> Field:
    """Every position sees the union of all positions along the merged axes (an op over those axes)."""
    n_h, n_w = f.size
    h = f.h.collapse(mode.H).repeat(n_h) if rows else f.h
    w = f.w.collapse(mode.W).repeat(n_w) if cols else f.w
    return Field(h, w, f.whole or (rows and cols), f.dims, f.reason)


# --------------------------------------------------------------------------- element-wise
def elementwise(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """Union of the arguments' ranges at each position, with broadcasting (right-aligned dimensions)."""
    dims: tuple[int, int] | None = None
    for t, f in known:
        if not _grid(t, f):
            continue
        shift = out.dim() - t.dim()
        d = (f.dims[0] + shift, f.dims[1] + shift)
        if shift < 0 or (dims is not None and d != dims):
            return conservative(mode, func, out, f"{_name(func)} combines maps whose image axes do not line up")
        dims = d
    if dims is None:
        return global_union(mode, known)
    n_h, n_w = out.shape[dims[0]], out.shape[dims[1]]
    hs, ws = [], []
    for t, f in known:
        if not _grid(t, f):
            f = f.collapse((mode.H, mode.W))
        if f.size[0] not in (1, n_h) or f.size[1] not in (1, n_w):
            return conservative(mode, func, out, f"{_name(func)} changes the size of the image axes")
        hs.append(f.h)
        ws.append(f.w)
    whole = any(f.whole for _, f in known)
    return Field(_Axis.union(hs, n_h), _Axis.union(ws, n_w), whole, dims)


def no_dependence(*_: Any) -> None:
    """``zeros_like`` and friends: the values do not depend on the input."""
    return None


# --------------------------------------------------------------------------- windows
_POOL = ["input", "kernel_size", "stride", "padding", "dilation"]
_WINDOWED: dict[Any, list[str]] = {
    F.conv2d: ["input", "weight", "bias", "stride", "padding", "dilation"],
    F.max_pool2d: _POOL, F.max_pool2d_with_indices: _POOL, torch.max_pool2d: _POOL,
    F.avg_pool2d: _POOL[:4], F.lp_pool2d: ["input", "norm_type", "kernel_size", "stride"],
}
_ADAPTIVE = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices}


def _nchw(mode: Any, func: Any, src: Any, out: torch.Tensor) -> Field | None:
    fld = mode.field_of(src)
    if fld is None or src.dim() != 4 or fld.dims != (2, 3) or out.dim() != 4:
        return None
    return fld


def windowed(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """Conv / pool: output o reads inputs ``o·s − p + d·t`` (:func:`cnn_explain.geometry.taps`)."""
    a = _bind(args, kwargs, _WINDOWED[func], {"stride": None, "padding": 0, "dilation": 1})
    fld = _nchw(mode, func, a["input"], out)
    if fld is None:
        return elementwise(mode, func, args, kwargs, known, out) if func is F.conv2d and out.dim() == 4 \
            else conservative(mode, func, out)
    k = tuple(a["weight"].shape[-2:]) if "weight" in a else geometry.pair(a["kernel_size"])
    stride = a["stride"]
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else geometry.pair(stride)
    d = geometry.pair(a["dilation"])
    p = a["padding"]
    if p == "same":
        p = tuple(geometry.same_padding(ki, di) for ki, di in zip(k, d))
    p = (0, 0) if p == "valid" else geometry.pair(p)
    n_h, n_w = out.shape[-2:]
    h, w = fld.h.window(n_h, k[0], s[0], p[0], d[0]), fld.w.window(n_w, k[1], s[1], p[1], d[1])
    return Field(h, w, fld.whole, (2, 3))


def adaptive(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """Adaptive pooling: PyTorch's windows; a 1×1 output is global."""
    fld = _nchw(mode, func, _bind(args, kwargs, ["input"])["input"], out)
    if fld is None:
        return conservative(mode, func, out)
    n_h, n_w = out.shape[-2:]
    if (n_h, n_w) == (1, 1):
        return fld.collapse((mode.H, mode.W), dims=(2, 3))
    return Field(fld.h.adaptive(n_h), fld.w.adaptive(n_w), fld.whole, (2, 3))


def padded(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``F.pad`` of the last two dimensions (constant, reflect, replicate, circular)."""
    a = _bind(args, kwargs, ["input", "pad", "mode"], {"mode": "constant"})
    pad = tuple(a["pad"])
    fld = _nchw(mode, func, a["input"], out)
    if fld is None or len(pad) not in (2, 4) or any(v < 0 for v in pad):
        return conservative(mode, func, out, "F.pad of a tensor whose last two dimensions are not the image's")
    top = pad[2] if len(pad) == 4 else 0
    n_h, n_w = out.shape[-2:]
    return Field(fld.h.pad(n_h, top, a["mode"]), fld.w.pad(n_w, pad[0], a["mode"]), fld.whole, (2, 3))


# --------------------------------------------------------------------------- layout
def _src(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else next(iter(kwargs.values()), None)


def _dims_arg(args: tuple, kwargs: dict, key: str = "dims") -> list[int]:
    rest = args[1:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        rest = tuple(rest[0])
    return list(rest) if rest else list(kwargs.get(key, ()))


def permuted(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``permute``: the image axes move to where the permutation puts them (channels-last and back)."""
    src = _src(args, kwargs)
    fld = mode.field_of(src)
    if fld is None or not _grid(src, fld):
        return global_union(mode, known)
    perm = [d % src.dim() for d in _dims_arg(args, kwargs)]
    return fld.moved((perm.index(fld.dims[0]), perm.index(fld.dims[1])))


def transposed(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``transpose(d0, d1)`` / ``swapaxes``: the two dimensions trade places."""
    src = _src(args, kwargs)
    fld = mode.field_of(src)
    if fld is None or not _grid(src, fld):
        return global_union(mode, known)
    a = _bind(args, kwargs, ["input", "dim0", "dim1"])
    d0, d1 = a["dim0"] % src.dim(), a["dim1"] % src.dim()
    swap = {d0: d1, d1: d0}
    return fld.moved((swap.get(fld.dims[0], fld.dims[0]), swap.get(fld.dims[1], fld.dims[1])))


def reshaped(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``reshape`` / ``view`` / ``flatten`` / ``(un)squeeze``: the grid survives when rows and columns
    stay adjacent dimensions of the same sizes with the same products before and after them."""
    src = _src(args, kwargs)
    fld = mode.field_of(src)
    if fld is None or not _grid(src, fld) or fld.dims[1] != fld.dims[0] + 1:
        if out.dim() == 4 and tuple(out.shape[-2:]) != (1, 1):  # tokens back to a map: positions unknown
            return conservative(mode, func, out, f"{_name(func)} makes an image grid from a tensor without one")
        return global_union(mode, known)
    shape, new = tuple(src.shape), tuple(out.shape)
    dh = fld.dims[0]
    before, after = math.prod(shape[:dh]), math.prod(shape[dh + 2:])
    for i in range(len(new) - 1):
        if math.prod(new[:i]) == before and new[i:i + 2] == shape[dh:dh + 2] and math.prod(new[i + 2:]) == after:
            return fld.moved((i, i + 1))
    return global_union(mode, known)


def _index_items(index: Any, ndim: int) -> list[Any] | None:
    items = list(index) if isinstance(index, tuple) else [index]
    if any(i is None or isinstance(i, (torch.Tensor, list, bool)) for i in items):
        return None
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (ndim - len(items) + 1) + items[at + 1:]
    return items + [slice(None)] * (ndim - len(items))


def _sliced(ax: _Axis, sl: slice) -> _Axis:
    return _Axis(ax.lo[sl], ax.hi[sl], ax.rlo[sl], ax.rhi[sl], ax.jump * (sl.step or 1))


def indexed(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``x[...]`` with ints and slices: channels picked freely, image axes sliced."""
    src, index = args[0], args[1]
    fld = mode.field_of(src)
    if fld is None or not _grid(src, fld):
        return global_union(mode, known)
    items = _index_items(index, src.dim())
    if items is None:
        return conservative(mode, func, out, "indexing with tensors, lists or None")
    if any(isinstance(items[d], int) for d in fld.dims):
        return conservative(mode, func, out, "an integer index on an image axis")
    h, w = (_sliced(ax, items[d]) for ax, d in ((fld.h, fld.dims[0]), (fld.w, fld.dims[1])))
    gone = [i for i, item in enumerate(items) if isinstance(item, int)]
    dims = tuple(d - sum(g < d for g in gone) for d in fld.dims)
    return Field(h, w, fld.whole, dims, fld.reason)  # type: ignore[arg-type]


def _along(args: tuple, kwargs: dict, dim_at: int, src: torch.Tensor) -> int:
    dim = args[dim_at] if len(args) > dim_at else kwargs.get("dim", 0)
    return int(dim) % max(src.dim(), 1)


def split_along(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``split`` / ``chunk`` / ``tensor_split``: pieces along the channels keep the field."""
    src = _src(args, kwargs)
    fld = mode.field_of(src)
    if fld is None or not _grid(src, fld):
        return global_union(mode, known)
    if _along(args, kwargs, 2, src) in fld.dims:
        return conservative(mode, func, out, f"{_name(func)} along an image axis")
    return fld


def joined(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``torch.cat`` / ``torch.stack``: along the channels, the union of the pieces at each position."""
    pieces = list(args[0]) if args else list(kwargs.get("tensors", ()))
    first = next((t for t, f in known if _grid(t, f)), None)
    if first is None:
        return global_union(mode, known)
    dim = _along(args, kwargs, 1, out if func is torch.stack else first)
    fields = [f for t, f in known if _grid(t, f) and any(t is p for p in pieces)]
    if func is torch.cat and dim in fields[0].dims:
        return conservative(mode, func, out, "torch.cat along an image axis")
    if func is torch.stack:
        known = [(t.unsqueeze(dim) if any(t is p for p in pieces) else t,
                  f.moved(tuple(d + (d >= dim) for d in f.dims)) if _grid(t, f) else f) for t, f in known]
    return elementwise(mode, func, args, kwargs, known, out)


# --------------------------------------------------------------------------- ops over some dimensions
def _over(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor, *,
          reduced: set[int] | None, keepdim: bool) -> Field:
    """An op that mixes the dimensions ``reduced`` (None: all of them) and, unless ``keepdim``, drops them."""
    src = _src(args, kwargs)
    fld = mode.field_of(src)
    if fld is None or not _grid(src, fld):
        return global_union(mode, known)
    reduced = set(range(src.dim())) if reduced is None else {d % src.dim() for d in reduced}
    rows, cols = fld.dims[0] in reduced, fld.dims[1] in reduced
    merged = _merge(mode, fld, rows, cols)
    if keepdim:
        return merged
    if rows and cols:
        return merged.collapse((mode.H, mode.W))
    if rows or cols:
        return conservative(mode, func, out, f"{_name(func)} drops one image axis and keeps the other")
    return merged.moved(tuple(d - sum(r < d for r in reduced) for d in fld.dims))  # type: ignore[arg-type]


def reduction(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``mean`` / ``sum`` / ``amax`` over ``dim`` (all dimensions when not given)."""
    a = _bind(args, kwargs, ["input", "dim", "keepdim"], {"dim": None, "keepdim": False})
    dim = a["dim"]
    if isinstance(dim, torch.dtype):  # x.sum(dtype) style calls
        dim = None
    reduced = None if dim is None else ({dim} if isinstance(dim, int) else set(dim))
    return _over(mode, func, args, kwargs, known, out, reduced=reduced, keepdim=bool(a["keepdim"]))


def softmax(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``softmax`` / ``log_softmax`` over ``dim``: that dimension is mixed, none dropped."""
    dim = _bind(args, kwargs, ["input", "dim"], {"dim": None})["dim"]
    return _over(mode, func, args, kwargs, known, out, reduced=None if dim is None else {dim}, keepdim=True)


def last_dims(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """``F.linear`` (the last dimension) and ``F.layer_norm`` (the last ``len(normalized_shape)``)."""
    src = _src(args, kwargs)
    if not isinstance(src, torch.Tensor) or mode.field_of(src) is None:
        return elementwise(mode, func, args, kwargs, known, out)  # e.g. a weight computed from the input
    n = 1 if func is F.linear else len(tuple(_bind(args, kwargs, ["input", "normalized_shape"])["normalized_shape"]))
    mixed = set(range(src.dim() - n, src.dim()))
    fld = _over(mode, func, args, kwargs, [(src, mode.field_of(src))], out, reduced=mixed, keepdim=True)
    if func is F.linear and out.dim() != src.dim():
        return global_union(mode, known)
    others = [(t, f) for t, f in known if t is not src]
    return elementwise(mode, func, args, kwargs, [(out, fld)] + others, out) if others else fld


def whole_map(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """GroupNorm / InstanceNorm: statistics over the whole map, so every position sees all of it."""
    return _over(mode, func, args, kwargs, known, out, reduced=None, keepdim=True)


def batch_norm(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field:
    """BatchNorm: per channel in eval (element-wise); with batch statistics the whole map counts."""
    training = _bind(args, kwargs, ["input", "running_mean", "running_var", "weight", "bias", "training"],
                     {"training": False})["training"]
    rule = whole_map if training else elementwise
    return rule(mode, func, args, kwargs, known, out)


# --------------------------------------------------------------------------- the table
Rule = Callable[[Any, Any, tuple, dict, Known, torch.Tensor], "Field | None"]

_ELEMENTWISE_EXTRA = (
    F.local_response_norm, _T.to, _T.float, _T.double, _T.half, _T.type_as, _T.detach, _T.expand, _T.expand_as,
    torch.where, torch.maximum, torch.minimum, torch.pow, _T.pow, _T.__pow__, torch.sqrt, _T.sqrt,
    torch.rsqrt, _T.rsqrt, _T.masked_fill, operator.pow, torch.erf, _T.erf, torch.log, _T.log,
)

RULES: dict[Any, Rule] = {
    **{f: elementwise for f in ops.functions(ops.Category.RELU, ops.Category.ACTIVATION, ops.Category.POINTWISE)},
    **{f: elementwise for f in _ELEMENTWISE_EXTRA},
    **{f: windowed for f in _WINDOWED}, **{f: adaptive for f in _ADAPTIVE}, F.pad: padded,
    _T.permute: permuted, torch.permute: permuted, _T.transpose: transposed, torch.transpose: transposed,
    _T.swapaxes: transposed, torch.swapaxes: transposed,
    **{f: reshaped for f in (_T.view, _T.reshape, torch.reshape, _T.flatten, torch.flatten, _T.squeeze,
                             torch.squeeze, _T.unsqueeze, torch.unsqueeze, _T.unflatten, torch.unflatten)},
    _T.__getitem__: indexed,
    **{f: split_along for f in (_T.split, torch.split, _T.chunk, torch.chunk, _T.tensor_split, torch.tensor_split)},
    torch.cat: joined, torch.concat: joined, torch.stack: joined,
    **{f: reduction for f in (_T.mean, torch.mean, _T.sum, torch.sum, _T.amax, torch.amax, _T.amin, torch.amin)},
    **{f: softmax for f in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, _T.softmax,
                            _T.log_softmax)},
    F.linear: last_dims, F.layer_norm: last_dims, F.group_norm: whole_map, F.instance_norm: whole_map,
    F.batch_norm: batch_norm,
    **{f: no_dependence for f in (torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
                                  torch.rand_like, torch.randn_like, _T.new_zeros, _T.new_ones, _T.new_empty,
                                  _T.new_full, _T.new_tensor)},
}


def propagate(mode: Any, func: Any, args: tuple, kwargs: dict, known: Known, out: torch.Tensor) -> Field | None:
    """The field of ``out``, one output of ``func(*args, **kwargs)``; None when it does not depend on the input.

    Args:
        mode: the running :class:`cnn_explain._receptive.RFMode` (``H``, ``W``, ``field_of``).
        func: the function or method called.
        args, kwargs: its arguments.
        known: the tensor arguments that have a field, with their fields.
        out: the output tensor.
    """
    try:
        rule = RULES.get(func)
    except TypeError:  # an unhashable callable
        rule = None
    if rule is None:
        return conservative(mode, func, out)
    return rule(mode, func, args, kwargs, known, out)
