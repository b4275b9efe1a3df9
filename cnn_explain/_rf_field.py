"""The receptive field of one tensor: for each row and column, the input range it depends on.

(Propagated while a forward runs by :mod:`cnn_explain._receptive`.)

A :class:`Field` says which of its dimensions are the image rows and columns
(``dims``; ``(2, 3)`` for ``(N, C, H, W)``, ``(1, 2)`` after a permute to
channels-last) and, for each row and column, the inclusive range of input
rows/columns it depends on (``lo..hi``, extrapolated into the padding) and
really reaches (``rlo..rhi``, inside the image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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

    def collapse(self, size: int) -> "_Axis":
        """Every position at once (a global op): one position seeing the union of all ranges,
        cut to the ``size`` input pixels (a global value's box holds no padding)."""
        lo, hi = max(int(self.lo.min()), 0), min(int(self.hi.max()), size - 1)
        return _Axis(np.array([lo]), np.array([hi]), np.array([self.rlo.min()]), np.array([self.rhi.max()]), 0)

    def repeat(self, n: int) -> "_Axis":
        """A one-position axis repeated ``n`` times (jump 0)."""
        return _Axis(*(np.repeat(a, n) for a in (self.lo, self.hi, self.rlo, self.rhi)), 0)

    @staticmethod
    def union(axes: list["_Axis"], n: int) -> "_Axis":
        """Element-wise ops: the union of the arguments' ranges (size-1 axes broadcast)."""
        def stack(attr: str) -> np.ndarray:
            return np.stack([np.broadcast_to(getattr(a, attr), n) for a in axes])

        return _Axis(stack("lo").min(0), stack("hi").max(0), stack("rlo").min(0), stack("rhi").max(0),
                     max(a.jump for a in axes))


class Field:
    """The receptive field of every row and column of one tensor.

    Attributes:
        h, w: the row and column axes (:class:`_Axis`).
        whole: the tensor is global (every value may depend on the whole map; no jump).
        dims: which tensor dimensions hold the rows and columns (``(2, 3)`` for ``(N, C, H, W)``,
            ``(1, 2)`` channels-last); None once the grid is gone (flatten, global pooling).
        reason: None when the ranges are exact; else why they had to be conservative (larger
            than the true dependence, never smaller).
    """

    __slots__ = ("h", "w", "whole", "dims", "reason")

    def __init__(self, h: _Axis, w: _Axis, whole: bool = False, dims: tuple[int, int] | None = (2, 3),
                 reason: str | None = None) -> None:
        self.h, self.w, self.whole, self.dims, self.reason = h, w, whole, dims, reason

    @classmethod
    def identity(cls, H: int, W: int) -> "Field":
        return cls(_Axis.identity(H), _Axis.identity(W))

    @classmethod
    def full(cls, n_h: int, n_w: int, H: int, W: int, *, dims: tuple[int, int] | None = (2, 3),
             reason: str | None = None) -> "Field":
        """Every position sees the whole ``H × W`` input."""
        return cls(_Axis.full(n_h, H), _Axis.full(n_w, W), True, dims, reason)

    def collapse(self, image: tuple[int, int], dims: tuple[int, int] | None = None,
                 size: tuple[int, int] = (1, 1)) -> "Field":
        """A global op over this map: each of ``size`` positions sees the union of all positions
        (cut to the ``image = (H, W)`` input)."""
        h, w = self.h.collapse(image[0]).repeat(size[0]), self.w.collapse(image[1]).repeat(size[1])
        return Field(h, w, True, dims, self.reason)

    def moved(self, dims: tuple[int, int] | None) -> "Field":
        """The same ranges on a tensor whose rows and columns sit at ``dims``."""
        return Field(self.h, self.w, self.whole, dims, self.reason)

    def flagged(self, reason: str | None) -> "Field":
        """This field marked conservative (the first reason is kept)."""
        if reason is None or self.reason is not None:
            return self
        return Field(self.h, self.w, self.whole, self.dims, reason)

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


def tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in tensors(item)]
    return []


def _bind(args: tuple, kwargs: dict, names: list[str], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    bound = dict(defaults or {})
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound
