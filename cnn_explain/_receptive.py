"""Receptive-field propagation while a forward runs (used by :mod:`cnn_explain.layers`).

A ``TorchFunctionMode`` (:class:`RFMode`) gives every spatial tensor, for each
output row and column, the inclusive range of input rows/columns it depends on;
convolutions and poolings transform it, element-wise ops take the union of
their arguments' ranges, and layout-changing ops count as global. See the
:mod:`cnn_explain.layers` docstring for the formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import geometry


_NONE = 1 << 40  # sentinel: no input pixel reached


def _at(arr: np.ndarray, idx: np.ndarray, jump: int) -> np.ndarray:
    """``arr[idx]``, extrapolated with ``jump`` per step for indices in the padding."""
    inside = np.clip(idx, 0, len(arr) - 1)
    return arr[inside] + (idx - inside) * jump


@dataclass(frozen=True)
class _Axis:
    """One axis of a map: position i sees input ``lo[i]..hi[i]`` (extrapolated into padding)
    and actually reaches input pixels ``rlo[i]..rhi[i]`` (``rlo > rhi``: none)."""

    lo: np.ndarray
    hi: np.ndarray
    rlo: np.ndarray
    rhi: np.ndarray
    jump: int

    @classmethod
    def identity(cls, n: int) -> "_Axis":
        a = np.arange(n)
        return cls(a, a, a, a, 1)

    @classmethod
    def full(cls, n: int, size: int) -> "_Axis":
        z, e = np.zeros(n, np.int64), np.full(n, size - 1)
        return cls(z, e, z, e, 0)

    def window(self, n_out: int, k: int, s: int, p: int, d: int) -> "_Axis":
        """Conv / pool: output o reads positions ``o·s − p + d·t``, t = 0..k−1 (:func:`geometry.taps`)."""
        n, o = len(self.lo), np.arange(n_out)
        first, last = geometry.input_window(o, o, k, s, p, d)
        taps = first[:, None] + d * np.arange(k)[None, :]
        inside, t = (taps >= 0) & (taps < n), np.clip(taps, 0, n - 1)
        rlo = np.where(inside, self.rlo[t], _NONE).min(1)
        rhi = np.where(inside, self.rhi[t], -_NONE).max(1)
        return _Axis(_at(self.lo, first, self.jump), _at(self.hi, last, self.jump), rlo, rhi, self.jump * s)

    def pad(self, n_out: int, before: int, mode: str) -> "_Axis":
        """``F.pad``: output o is input ``o − before``; padded positions read mirrored /
        repeated / wrapped input pixels (``reflect`` / ``replicate`` / ``circular``) or none."""
        n, idx = len(self.lo), np.arange(n_out) - before
        inside = (idx >= 0) & (idx < n)
        if mode == "reflect":
            src = np.abs(idx)
            src = np.where(src >= n, 2 * (n - 1) - src, src)
        elif mode == "circular":
            src = idx % n
        else:
            src = np.clip(idx, 0, n - 1)
        real = inside | (mode in ("reflect", "replicate", "circular"))
        src = np.clip(src, 0, n - 1)
        rlo, rhi = np.where(real, self.rlo[src], _NONE), np.where(real, self.rhi[src], -_NONE)
        return _Axis(_at(self.lo, idx, self.jump), _at(self.hi, idx, self.jump), rlo, rhi, self.jump)

    def adaptive(self, n_out: int) -> "_Axis":
        """Adaptive pooling: output o reads ``floor(o·n/n_out) .. ceil((o+1)·n/n_out) − 1``."""
        n, o = len(self.lo), np.arange(n_out)
        start, end = geometry.adaptive_window(o, n, n_out)
        rlo = np.array([self.rlo[a:b + 1].min() for a, b in zip(start, end)])
        rhi = np.array([self.rhi[a:b + 1].max() for a, b in zip(start, end)])
        jump = self.jump * n // n_out if n % n_out == 0 else max(1, round(self.jump * n / n_out))
        return _Axis(self.lo[start], self.hi[end], rlo, rhi, jump)

    @staticmethod
    def union(axes: list["_Axis"], n: int) -> "_Axis":
        """Element-wise ops: the union of the arguments' ranges (size-1 axes broadcast)."""
        def stack(attr: str) -> np.ndarray:
            return np.stack([np.broadcast_to(getattr(a, attr), n) for a in axes])

        return _Axis(stack("lo").min(0), stack("hi").max(0), stack("rlo").min(0), stack("rhi").max(0),
                     max(a.jump for a in axes))


class Field:
    """The receptive field of every position of one ``(N, C, H, W)`` map (rows ``h``, columns ``w``)."""

    __slots__ = ("h", "w", "whole")

    def __init__(self, h: _Axis, w: _Axis, whole: bool = False) -> None:
        self.h, self.w, self.whole = h, w, whole

    @classmethod
    def identity(cls, H: int, W: int) -> "Field":
        return cls(_Axis.identity(H), _Axis.identity(W))

    @classmethod
    def full(cls, n_h: int, n_w: int, H: int, W: int) -> "Field":
        return cls(_Axis.full(n_h, H), _Axis.full(n_w, W), whole=True)

    @property
    def size(self) -> tuple[int, int]:
        return len(self.h.lo), len(self.w.lo)

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        return int(self.h.lo[i]), int(self.h.hi[i]), int(self.w.lo[j]), int(self.w.hi[j])

    def support(self, i: int, j: int) -> tuple[int, int, int, int] | None:
        b = int(self.h.rlo[i]), int(self.h.rhi[i]), int(self.w.rlo[j]), int(self.w.rhi[j])
        return None if b[0] > b[1] or b[2] > b[3] else b

    def summary(self) -> tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int]]:
        """``(rf size, jump or None when global, (top, left) of position (0, 0))``."""
        rf = tuple(int((ax.hi - ax.lo).max()) + 1 for ax in (self.h, self.w))
        jump = None if self.whole else (int(self.h.jump), int(self.w.jump))
        return rf, jump, (int(self.h.lo[0]), int(self.w.lo[0]))  # type: ignore[return-value]


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _bind(args: tuple, kwargs: dict, names: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _spatial_op(func: Any) -> tuple[list[str], dict[str, Any]] | None:
    """Argument names of the conv/pool functions whose geometry is known, else None."""
    pool = ["input", "kernel_size", "stride", "padding", "dilation"]
    table = {
        F.conv2d: (["input", "weight", "bias", "stride", "padding", "dilation"], {}),
        F.max_pool2d: (pool, {}), F.max_pool2d_with_indices: (pool, {}), torch.max_pool2d: (pool, {}),
        F.avg_pool2d: (pool[:4], {}),
        F.lp_pool2d: (["input", "norm_type", "kernel_size", "stride"], {}),
        F.adaptive_avg_pool2d: (["input", "output_size"], {"adaptive": True}),
        F.adaptive_max_pool2d: (["input", "output_size"], {"adaptive": True}),
        F.adaptive_max_pool2d_with_indices: (["input", "output_size"], {"adaptive": True}),
    }
    return table.get(func)


class RFMode(TorchFunctionMode):
    """While active, gives every tensor derived from the seeded input a :class:`Field` (keyed by identity)."""

    def __init__(self, H: int, W: int) -> None:
        super().__init__()
        self.H, self.W = H, W
        self._fields: dict[int, tuple[torch.Tensor, Field]] = {}  # holds refs: ids are never reused

    def seed(self, x: torch.Tensor) -> None:
        self._fields[id(x)] = (x, Field.identity(self.H, self.W))

    def field_of(self, t: torch.Tensor) -> Field | None:
        entry = self._fields.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def clear(self) -> None:
        self._fields.clear()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        known = [(t, f) for t in _tensors((args, kwargs)) if (f := self.field_of(t)) is not None]
        if known:
            for t in _tensors(out):
                self._fields[id(t)] = (t, self._propagate(func, args, kwargs, known, t))
        return out

    def _propagate(self, func, args, kwargs, known, out: torch.Tensor) -> Field:
        if out.dim() != 4:
            return Field.full(1, 1, self.H, self.W)
        n_h, n_w = out.shape[-2:]
        if func is F.pad:
            return self._padded(args, kwargs, known, n_h, n_w)
        spec = _spatial_op(func)
        if spec is not None:
            a = _bind(args, kwargs, spec[0], {"stride": None, "padding": 0, "dilation": 1})
            src = a["input"]
            fld = self.field_of(src) if isinstance(src, torch.Tensor) else None
            if fld is not None and src.dim() == 4 and not fld.whole:
                if spec[1].get("adaptive") and (n_h, n_w) == (1, 1):
                    return Field.full(1, 1, self.H, self.W)
                if spec[1].get("adaptive"):
                    return Field(fld.h.adaptive(n_h), fld.w.adaptive(n_w))
                return self._windowed(fld, a, n_h, n_w)
        return self._union(known, n_h, n_w)

    def _padded(self, args, kwargs, known, n_h: int, n_w: int) -> Field:
        a = _bind(args, kwargs, ["input", "pad", "mode"], {"mode": "constant"})
        src, pad = a["input"], tuple(a["pad"])
        fld = self.field_of(src) if isinstance(src, torch.Tensor) else None
        if fld is None or src.dim() != 4 or fld.whole or len(pad) not in (2, 4):
            return self._union(known, n_h, n_w)
        top = pad[2] if len(pad) == 4 else 0
        return Field(fld.h.pad(n_h, top, a["mode"]), fld.w.pad(n_w, pad[0], a["mode"]))

    def _windowed(self, fld: Field, a: dict[str, Any], n_h: int, n_w: int) -> Field:
        k = tuple(a["weight"].shape[-2:]) if "weight" in a else geometry.pair(a["kernel_size"])
        stride = a["stride"]
        s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else geometry.pair(stride)
        d = geometry.pair(a["dilation"])
        p = a["padding"]
        if p == "same":
            p = tuple(geometry.same_padding(ki, di) for ki, di in zip(k, d))
        p = (0, 0) if p == "valid" else geometry.pair(p)
        return Field(fld.h.window(n_h, k[0], s[0], p[0], d[0]), fld.w.window(n_w, k[1], s[1], p[1], d[1]))

    def _union(self, known, n_h: int, n_w: int) -> Field:
        for t, f in known:
            fits = t.dim() == 4 and t.shape[-2] in (1, n_h) and t.shape[-1] in (1, n_w)
            if f.whole or not fits:
                return Field.full(n_h, n_w, self.H, self.W)
        return Field(_Axis.union([f.h for _, f in known], n_h), _Axis.union([f.w for _, f in known], n_w))
