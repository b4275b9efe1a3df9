"""Changed-region geometry and patch gathering for incremental occlusion.

An occluding window changes a small box of the image. Through each layer that
change spreads over a box of the layer's output: a convolution or pooling with
kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` maps the changed
input rows ``[lo, hi]`` to the output rows

    lo' = ceil((lo + p - (k - 1) d) / s),    hi' = floor((hi + p) / s)

(clipped to the map). Elementwise layers keep the box; an addition takes the
union of its operands' boxes.

Every window position ``q`` gets its own *region* (inclusive bounds, one per
position). To recompute a whole batch of positions with one batched op, the
region is enlarged to a *box* of the same size for every position, placed at
the region's corner and shifted inside the map at the borders.

`read_windows` cuts, for every position of a batch, a window of a feature map as it
would be after occlusion: the changed patch where it lies, the cached clean map
elsewhere, and a padding value outside the map: the windows are copied out of
a padded copy of the clean map (whole windows from a bank of the distinct ones
when the starts lie on a small lattice, else one indexing op), then each
position's patch is scattered in. (Stacking per-position slices was 10× faster on a quiet machine but
its hundreds of small parallel copies stalled for seconds when other processes
held the cores.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Region", "Box", "conv_range", "cap_range", "read_windows", "materialize", "max_pool", "read_change"]


@dataclass(frozen=True)
class Box:
    """Same-size boxes of one map for a set of positions.

    Attributes:
        size: ``(h, w)``, shared by every position.
        top, left: ``(P,)`` int64 corners, so that the box lies inside the map.
    """

    size: tuple[int, int]
    top: torch.Tensor
    left: torch.Tensor

    def take(self, idx: torch.Tensor) -> "Box":
        """The boxes of the positions ``idx``."""
        return Box(self.size, self.top[idx], self.left[idx])


@dataclass(frozen=True)
class Region:
    """Changed region of one ``H × W`` map for each of ``P`` positions (inclusive bounds)."""

    rows: tuple[torch.Tensor, torch.Tensor]
    cols: tuple[torch.Tensor, torch.Tensor]
    shape: tuple[int, int]

    @property
    def area(self) -> torch.Tensor:
        """``(P,)`` number of changed values per channel, per position."""
        return (self.rows[1] - self.rows[0] + 1) * (self.cols[1] - self.cols[0] + 1)

    def box(self) -> Box:
        """The smallest same-size boxes holding every position's region."""
        sizes, corners = [], []
        for (lo, hi), n in zip((self.rows, self.cols), self.shape):
            s = int((hi - lo + 1).max()) if lo.numel() else 1
            s = max(1, min(s, n))
            sizes.append(s)
            corners.append(lo.clamp(0, n - s))
        return Box((sizes[0], sizes[1]), corners[0], corners[1])

    def union(self, other: "Region") -> "Region":
        """Bounding box of both regions (same map size)."""
        return Region(
            (torch.minimum(self.rows[0], other.rows[0]), torch.maximum(self.rows[1], other.rows[1])),
            (torch.minimum(self.cols[0], other.cols[0]), torch.maximum(self.cols[1], other.cols[1])),
            self.shape,
        )

    def capped(self, tau: float | None, min_side: int = 16) -> "Region":
        """Krypton's projective-field threshold: no side longer than ``ceil(tau * map side)``.

        Maps with a side below ``min_side`` are left alone: there the cap is about
        one kernel's reach and truncating erases the signal (Pearson 0.06 to the
        exact map on VGG-11 at 64×64 when 4×4 / 2×2 maps were capped too).
        """
        if tau is None or min(self.shape) < min_side:
            return self
        rows = cap_range(*self.rows, max(1, math.ceil(tau * self.shape[0])), self.shape[0])
        cols = cap_range(*self.cols, max(1, math.ceil(tau * self.shape[1])), self.shape[1])
        return Region(rows, cols, self.shape)


def _ceil_div(a: torch.Tensor, b: int) -> torch.Tensor:
    return -torch.div(-a, b, rounding_mode="floor")


def conv_range(lo: torch.Tensor, hi: torch.Tensor, k: int, s: int, p: int, d: int, n_out: int):
    """Output rows of a conv/pool (kernel k, stride s, leading padding p, dilation d) touched by input rows [lo, hi]."""
    lo_out = _ceil_div(lo + p - (k - 1) * d, s).clamp(0, n_out - 1)
    hi_out = torch.div(hi + p, s, rounding_mode="floor")
    hi_out = torch.maximum(hi_out.clamp(max=n_out - 1), lo_out)  # empty (strided gap): keep one row
    return lo_out, hi_out


def cap_range(lo: torch.Tensor, hi: torch.Tensor, cap: int, n: int):
    """Truncate ranges longer than ``cap`` to ``cap`` rows around their centre, inside ``[0, n)``."""
    long = (hi - lo + 1) > cap
    centre = torch.div(lo + hi, 2, rounding_mode="floor")
    new_lo = (centre - cap // 2).clamp(0, max(n - cap, 0))
    return torch.where(long, new_lo, lo), torch.where(long, new_lo + cap - 1, hi)


def _flat_index(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
    """Clamped flat index ``(B, len(rows) * len(cols))`` and in-range mask (same shape) of a grid of rows × cols."""
    ok = ((rows >= 0) & (rows < n_rows))[:, :, None] & ((cols >= 0) & (cols < n_cols))[:, None, :]
    flat = rows.clamp(0, n_rows - 1)[:, :, None] * n_cols + cols.clamp(0, n_cols - 1)[:, None, :]
    return flat.reshape(flat.shape[0], -1), ok.reshape(ok.shape[0], -1)


def _padded_windows(cached: torch.Tensor, start, size, pad: float, padded: dict | None,
                    channels_last: bool) -> torch.Tensor:
    """``(B, C, height, width)`` windows of ``cached`` padded with ``pad`` (NHWC strides if ``channels_last``)."""
    c, n_rows, n_cols = cached.shape
    lo = int(torch.minimum(start[0].min(), start[1].min()))
    margin = max(0, -lo, int(start[0].max()) + size[0] - n_rows, int(start[1].max()) + size[1] - n_cols)
    key = "nhwc" if channels_last else "nchw"
    if padded is None or padded.get(key, (-1, None))[0] < margin:
        full = F.pad(cached, (margin,) * 4, value=pad) if margin else cached
        full = full.permute(1, 2, 0).contiguous() if channels_last else full.contiguous()
        if padded is not None:
            padded[key] = (margin, full)
    else:
        margin, full = padded[key]
    height, width = (full.shape[0], full.shape[1]) if channels_last else full.shape[-2:]  # padded map
    rows, cols = start[0] + margin, start[1] + margin
    bank = _bank(full, rows, cols, size, channels_last)
    if bank is not None:
        return bank
    if channels_last:  # each window row is one contiguous run of width·C values: 3-4× faster to copy
        win = full.as_strided((height - size[0] + 1, width - size[1] + 1, size[0], size[1], c),
                              (width * c, c, width * c, c, 1))
        return win[rows, cols].permute(0, 3, 1, 2)
    win = full.as_strided((height - size[0] + 1, width - size[1] + 1, c, size[0], size[1]),
                          (width, 1, height * width, width, 1))
    return win[rows, cols]


def _bank(full: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, size, channels_last: bool,
          limit: float = 2.0) -> torch.Tensor | None:
    """Windows at ``(rows, cols)`` by way of a contiguous *bank* of the distinct windows, or None.

    The window starts of a batch lie on a lattice ``(r0 + i·row_step, c0 + j·col_step)`` (the
    positions' grid, seen through the layer's stride). Copying the lattice's
    windows once (one strided copy) and then whole windows out of it
    (``index_select``: one memcpy each) was 5-10× faster than indexing the
    windows element by element (``(225, 64, 10, 10)`` out of a ``64 × 18 × 18``
    map: 0.7 ms against 3.6 ms), as long as the lattice has at most ``limit``
    times as many windows as the batch (NHWC: as many; its element-wise path is
    already 3-4× faster).
    """
    count = rows.numel()
    r0, c0 = int(rows.min()), int(cols.min())
    row_step = max(math.gcd(*torch.unique(rows - r0).tolist()), 1)
    col_step = max(math.gcd(*torch.unique(cols - c0).tolist()), 1)
    n_rows, n_cols = (int(rows.max()) - r0) // row_step + 1, (int(cols.max()) - c0) // col_step + 1
    if n_rows * n_cols > count * (1.0 if channels_last else limit):
        return None
    height, width = size
    if channels_last:
        _, padded_width, c = full.shape
        view = full.as_strided((n_rows, n_cols, height, width, c),
                               (row_step * padded_width * c, col_step * c, padded_width * c, c, 1),
                               full.storage_offset() + (r0 * padded_width + c0) * c)
    else:
        c, padded_height, padded_width = full.shape
        view = full.as_strided((n_rows, n_cols, c, height, width),
                               (row_step * padded_width, col_step, padded_height * padded_width, padded_width, 1),
                               full.storage_offset() + r0 * padded_width + c0)
    flat = ((rows - r0) // row_step) * n_cols + (cols - c0) // col_step
    out = view.reshape((n_rows * n_cols,) + tuple(view.shape[2:])).index_select(0, flat)
    return out.permute(0, 3, 1, 2) if channels_last else out


def _paste_index(box: Box, start, size) -> torch.Tensor | None:
    """``(B, h·w)`` flat index of each patch value inside its window, or None if some patch sticks out."""
    (h, w), (n_rows, n_cols) = box.size, size
    dr, dc = box.top - start[0], box.left - start[1]
    if not bool(((dr >= 0) & (dr + h <= n_rows) & (dc >= 0) & (dc + w <= n_cols)).all()):
        return None
    return _flat_index(dr[:, None] + torch.arange(h), dc[:, None] + torch.arange(w), n_rows, n_cols)[0]


def _scatter(out: torch.Tensor, flat: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Write ``values`` ``(B, C, h, w)`` at ``flat`` into the windows ``out`` ``(B, C, height, width)``, in place.

    ``out`` may have NCHW or NHWC strides.
    """
    b, c = out.shape[:2]
    if out.stride(1) == 1 and c > 1:  # NHWC: scatter whole pixels (C contiguous values each)
        base = out.permute(0, 2, 3, 1).view(b, -1, c)
        base.scatter_(1, flat[:, :, None].expand(-1, -1, c), values.permute(0, 2, 3, 1).reshape(b, -1, c))
    else:
        out.view(b, c, -1).scatter_(2, flat[:, None, :].expand(-1, c, -1), values.reshape(b, c, -1))
    return out


def read_windows(
    cached: torch.Tensor,
    patch: torch.Tensor | None,
    box: Box | None,
    start: tuple[torch.Tensor, torch.Tensor],
    size: tuple[int, int],
    pad: float = 0.0,
    padded: dict | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Windows of the occluded map, one per position.

    The windows are indexed out of a padded copy of ``cached`` (kept in
    ``padded`` for the next call); each position's patch values replace them
    where the patch lies.

    Args:
        cached: ``(C, H, W)`` clean map.
        patch: ``(B, C, h, w)`` changed values inside ``box`` (None: nothing changed).
        box: where each position's patch lies (``box.size == (h, w)``, inside the map).
        start: ``(B,)`` first row and first column of each window (may be < 0 or run past the map).
        size: ``(height, width)`` of the windows.
        pad: value outside the map (0 for convolutions, ``-inf`` for max pooling).
        padded: a dict reused across calls for the same ``cached`` and ``pad`` (the padded map).
        channels_last: return NHWC strides (the same values).

    Returns:
        ``(B, C, height, width)``.
    """
    c = cached.shape[0]
    if start[0].numel() == 0:
        return cached.new_empty((0, c, *size))
    out = _padded_windows(cached, start, size, pad, padded, channels_last)
    if patch is None:
        return out
    flat = _paste_index(box, start, size)
    if flat is not None:  # the patch lies inside every window (the usual case): one scatter
        return _scatter(out, flat, patch)
    rows = start[0][:, None] + torch.arange(size[0])
    cols = start[1][:, None] + torch.arange(size[1])
    pflat, inside = _flat_index(rows - box.top[:, None], cols - box.left[:, None], *box.size)
    pvals = _gather(patch.reshape(patch.shape[0], c, -1), pflat)
    return torch.where(inside[:, None, :], pvals, out.reshape(out.shape[0], c, -1)).reshape(out.shape)


def read_change(
    cached: torch.Tensor,
    patch: torch.Tensor,
    box: Box,
    start: tuple[torch.Tensor, torch.Tensor],
    size: tuple[int, int],
    dtype: torch.dtype,
    padded: dict | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Windows of the *change* of the map (occluded − clean), in ``dtype``: zero outside each patch.

    Same arguments as `read_windows` (padding value 0). Equal to
    ``(read_windows(cached, patch, box, ...) - read_windows(cached, None, None, ...)).to(dtype)``
    but only the patch-sized change is computed and scattered into zeros.

    Example:
        >>> cached, patch = torch.rand(2, 6, 6), torch.rand(3, 2, 2, 2)
        >>> box = Box((2, 2), torch.tensor([0, 2, 4]), torch.tensor([1, 3, 4]))
        >>> start = (torch.tensor([-1, 1, 3]), torch.tensor([0, 2, 3]))
        >>> ref = read_windows(cached, patch, box, start, (4, 4)) - read_windows(cached, None, None, start, (4, 4))
        >>> torch.equal(read_change(cached, patch, box, start, (4, 4), torch.float32), ref)
        True
    """
    flat = _paste_index(box, start, size)
    if flat is None:
        clean = read_windows(cached, None, None, start, size, 0.0, padded, channels_last)
        return (read_windows(cached, patch, box, start, size, 0.0, padded, channels_last) - clean).to(dtype)
    change = patch - read_windows(cached, None, None, (box.top, box.left), box.size, 0.0, padded, channels_last)
    b, c = patch.shape[:2]
    shape = (b, size[0], size[1], c) if channels_last else (b, c, size[0], size[1])
    out = torch.zeros(shape, dtype=dtype)
    out = out.permute(0, 3, 1, 2) if channels_last else out
    return _scatter(out, flat, change.to(dtype))


def _gather(src: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``src`` (B, C, n) gathered at ``flat`` (B, m) -> (B, C, m)."""
    b, m = flat.shape
    c = src.shape[1]
    return torch.gather(src, 2, flat[:, None, :].expand(b, c, m))


def materialize(cached: torch.Tensor, patch: torch.Tensor, box: Box) -> torch.Tensor:
    """Full occluded maps ``(B, C, H, W)``: copies of ``cached`` with each position's patch pasted in."""
    b, c = patch.shape[:2]
    n_rows, n_cols = cached.shape[-2:]
    full = cached.reshape(1, c, n_rows, n_cols).repeat(b, 1, 1, 1)  # always a new tensor (never the cache)
    zero = torch.zeros_like(box.top)
    return _scatter(full, _paste_index(box, (zero, zero), (n_rows, n_cols)), patch)


def max_pool(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int] = (0, 0),
             dilation: tuple[int, int] = (1, 1), out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Max pooling as the elementwise maximum of ``kh × kw`` strided views: equal to ``F.max_pool2d``.

    PyTorch's CPU max pooling of contiguous (NCHW) maps was measured 8-12× slower
    than this on the crops incremental occlusion pools (``(225, 32..128, 8..16, 8..16)``:
    2.5-7.3 ms against 0.3-0.9 ms). Positions outside the map count as ``-inf``;
    NaN propagates, as in PyTorch.

    Args:
        x: ``(B, C, H, W)``.
        kernel, stride, padding, dilation: as in ``F.max_pool2d``.
        out_size: the output ``(h, w)``; None computes it without ``ceil_mode``
            (pass the model's output size for ``ceil_mode=True``).

    Example:
        >>> x = torch.randn(2, 3, 9, 7)
        >>> torch.equal(max_pool(x, (3, 2), (2, 2), (1, 1)), F.max_pool2d(x, (3, 2), (2, 2), (1, 1)))
        True
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    h, w = x.shape[-2:]
    if out_size is None:
        out_size = ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    oh, ow = out_size
    need_h, need_w = (oh - 1) * sh + dh * (kh - 1) + 1, (ow - 1) * sw + dw * (kw - 1) + 1
    pad = (pw, need_w - w - pw, ph, need_h - h - ph)
    if any(pad):
        x = F.pad(x, pad, value=float("-inf"))
    views = [x[..., i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw]
             for i in range(kh) for j in range(kw)]
    if len(views) == 1:
        return views[0].clone()
    out = torch.maximum(views[0], views[1])
    for view in views[2:]:
        torch.maximum(out, view, out=out)  # in place: one allocation per pooling
    return out
