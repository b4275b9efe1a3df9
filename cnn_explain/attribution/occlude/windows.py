"""Occlusion set-up: argument checks, window positions, baselines, and the captum-style average.

Window positions follow ``captum.attr.Occlusion``: along an axis of length ``n``
with window ``k`` and stride ``s`` there are ``ceil((n - k) / s) + 1`` positions
starting at ``0, s, 2s, …``; the last ones may run past the border and are
truncated there. Each pixel's attribution is the mean score drop over the
windows that cover it (pixels no window covers, possible only when
``stride > window``, get 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F

from ..._utils import positive_int

__all__ = ["Grid", "pair_arg", "make_grid", "resolve_baseline", "assemble"]


@dataclass(frozen=True)
class Grid:
    """Window positions: ``rows`` / ``cols`` are ``(first, last)`` inclusive bounds per grid row / column.

    Position ``q`` is grid row ``q // n_cols`` and grid column ``q % n_cols``.
    """

    rows: tuple[torch.Tensor, torch.Tensor]
    cols: tuple[torch.Tensor, torch.Tensor]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows[0]), len(self.cols[0]))

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def positions(self, idx: torch.Tensor | None = None):
        """Per-position ``(first, last)`` rows and columns (all positions, or ``idx``)."""
        nc = self.shape[1]
        q = torch.arange(len(self)) if idx is None else idx
        i, j = torch.div(q, nc, rounding_mode="floor"), q % nc
        return (self.rows[0][i], self.rows[1][i]), (self.cols[0][j], self.cols[1][j])


def pair_arg(value: Any, argname: str) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair of ints ``>= 1``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{argname} must be an int or a pair (h, w), got {value!r}")
        return positive_int(value[0], argname), positive_int(value[1], argname)
    v = positive_int(value, argname)
    return v, v


def _axis(n: int, k: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    count = math.ceil((n - k) / s) + 1
    first = torch.arange(count) * s
    first = first[first < n]  # stride > window can start a window past the image
    return first, torch.clamp(first + k, max=n) - 1


def make_grid(image_hw: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> Grid:
    """Positions of a window sliding over an ``H × W`` image (captum's count)."""
    for n, k, name in zip(image_hw, window, ("height", "width")):
        if k > n:
            raise ValueError(f"window {window} is larger than the image ({image_hw[0]}×{image_hw[1]}): "
                             f"the window {name} {k} exceeds {n}")
    return Grid(_axis(image_hw[0], window[0], stride[0]), _axis(image_hw[1], window[1], stride[1]))


def _gaussian_blur(x: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    c = x.shape[1]
    for dim, sg in ((2, sigma[0]), (3, sigma[1])):
        r = max(1, math.ceil(3 * sg))
        t = torch.arange(-r, r + 1, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / sg) ** 2)
        k = (k / k.sum()).to(x.device)
        shape = (1, 1, 2 * r + 1, 1) if dim == 2 else (1, 1, 1, 2 * r + 1)
        pad = (0, 0, r, r) if dim == 2 else (r, r, 0, 0)
        x = F.conv2d(F.pad(x, pad, mode="replicate"), k.reshape(shape).expand(c, 1, -1, -1), groups=c)
    return x


def resolve_baseline(baseline: Any, x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """The ``(N, C, H, W)`` values that fill the window.

    ``baseline`` is a number, ``"mean"`` (each image's per-channel mean),
    ``"blur"`` (a Gaussian blur of the image, sigma = window / 4 per axis,
    replicate padding) or a tensor broadcastable to ``x``.
    """
    if isinstance(baseline, bool):
        raise TypeError("baseline must be a number, 'mean', 'blur' or a tensor, got bool")
    if isinstance(baseline, Real):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, str):
        if baseline == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
        if baseline == "blur":
            return _gaussian_blur(x, (window[0] / 4, window[1] / 4))
        raise ValueError(f"baseline must be a number, 'mean', 'blur' or a tensor, got {baseline!r}")
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(x.device, x.dtype), x.shape).contiguous()
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} cannot be broadcast to the "
                             f"input's shape {tuple(x.shape)}") from None
    raise TypeError(f"baseline must be a number, 'mean', 'blur' or a tensor, got {type(baseline).__name__}")


def window_mask(grid: Grid, idx: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]):
    """``(B, 1, h, w)`` bool: which pixels of each box ``[top, top+h) × [left, left+w)`` the window covers."""
    (r0, r1), (c0, c1) = grid.positions(idx)
    rr = top[:, None] + torch.arange(size[0])
    cc = left[:, None] + torch.arange(size[1])
    mr = (rr >= r0[:, None]) & (rr <= r1[:, None])
    mc = (cc >= c0[:, None]) & (cc <= c1[:, None])
    return (mr[:, :, None] & mc[:, None, :])[:, None]


def assemble(drops: torch.Tensor, grid: Grid, image_hw: tuple[int, int]) -> torch.Tensor:
    """Average each pixel's drops over the windows covering it: ``(N, nr, nc)`` -> ``(N, H, W)``.

    ``A[h, w] = Σ_q drop_q [h, w ∈ window_q] / Σ_q [h, w ∈ window_q]`` (0 where no window covers).
    """
    h = torch.arange(image_hw[0])
    w = torch.arange(image_hw[1])
    mr = ((h[None] >= grid.rows[0][:, None]) & (h[None] <= grid.rows[1][:, None])).double()
    mc = ((w[None] >= grid.cols[0][:, None]) & (w[None] <= grid.cols[1][:, None])).double()
    total = mr.T @ drops.double() @ mc
    count = torch.outer(mr.sum(0), mc.sum(0))
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros(()))
