"""Winograd F(4×4, 3×3) convolution of changes for incremental occlusion (exact and approximate).

Incremental occlusion of VGG-like nets spends most of its time in 3×3
convolutions with hundreds of channels on small maps that every window changes
entirely (VGG-11 at 128²: the two 512-channel layers on 8×8 maps are about three
quarters of the multiply-accumulates per position). Those convolutions already
run near the CPU's float32 peak, so the only way to make them faster in float32
is to do fewer multiplications.

Winograd's minimal filtering algorithm F(4×4, 3×3) (Lavin & Gray, *Fast
Algorithms for Convolutional Neural Networks*, CVPR 2016) computes a 4×4 output
tile from a 6×6 input tile with 36 multiplications per input/output channel
pair instead of 144: every tile of every channel is transformed (``Bᵀ d B``),
the 36 transformed positions become 36 independent matrix products over the
channels (one ``bmm``), and the products are transformed back (``Aᵀ m A``).
Measured on 2 threads (float32, batch of 32-64 positions, against
``F.conv2d``): 512 → 512 channels on 8×8 maps 1.6× faster with AVX-512 and
2.0× with AVX2; on 16×16 maps 1.5× / 1.8×; 256 → 512 on 16×16 2.0× / 2.4×.
It loses where the transforms' memory traffic outweighs the saved
multiplications: 128 channels on 64×64 maps ran 0.5-0.8× as fast, and the
CIFAR-10 net's one 128-channel layer (8×8 maps, small changed boxes) made its
exact occlusion 1.2× slower (0.065 → 0.079 s) while VGG-11's 128 → 256 layer
gained nothing measurable; so `eligible` asks for at least 256 channels each
side, and maps larger than ``MAX_PIXELS`` run a direct convolution. Two
refinements were measured and left out: F(6×6, 3×3) for outputs that waste most of a 4×4 tile (6×6, 10×10:
2.25× fewer products on a 6×6 output) — the patch phase's small batches are
bound by reading the transformed weights, 1.8× larger for 6×6 tiles, and
VGG-11 / ResNet-18 ran equally fast (2.08-2.38 s against 2.12-2.24 s);
separable transforms (two 6×6 products instead of one 36×36) — no change.

Its rounding error is larger than a direct convolution's (relative error
2-4e-6 against float64 here, about 10× the direct one), but `WinogradChanges`
only convolves the *change* of a map (``conv(x + d) = conv(x) + conv(d)``), so
the error scales with the change and vanishes where nothing changed: VGG-11's
exact occlusion map at 128² deviated from a float64 one by 4.0e-5 of its
maximum, against 3.6e-5 with direct convolutions.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> x, w = torch.randn(2, 8, 9, 7), torch.randn(5, 8, 3, 3)
    >>> out = winograd_conv(x, transform_weight(w), (1, 1))
    >>> out.shape, bool(torch.allclose(out, F.conv2d(x, w, padding=1), atol=1e-4))
    (torch.Size([2, 5, 9, 7]), True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .lowp import LowPrecision

__all__ = ["winograd_conv", "transform_weight", "eligible", "WinogradChanges", "MIN_CHANNELS", "MAX_PIXELS"]

MIN_CHANNELS = 256  # fewer input or output channels: the transforms cost about what they save
MAX_PIXELS = 48 * 48  # larger input maps (per position): the transforms' memory traffic dominates

# Lavin & Gray's F(4×4, 3×3) matrices (interpolation points 0, ±1, ±2, ∞).
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
_MATRICES: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kron(Bᵀ, Bᵀ) (36, 36), kron(Aᵀ, Aᵀ) (16, 36))`` in ``dtype`` on ``device``: each 2-D transform
    as one product."""
    key = (dtype, device)
    if key not in _MATRICES:
        bt, at = torch.tensor(_BT, dtype=torch.float64), torch.tensor(_AT, dtype=torch.float64)
        _MATRICES[key] = (torch.kron(bt, bt).to(dtype=dtype, device=device),
                          torch.kron(at, at).to(dtype=dtype, device=device))
    return _MATRICES[key]


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(K, C, 3, 3)`` filters as ``(36, C, K)``: ``G g Gᵀ`` per filter, as one product with ``kron(G, G)``."""
    if weight.dim() != 4 or tuple(weight.shape[-2:]) != (3, 3):
        raise ValueError(f"weight must be (K, C, 3, 3), got {tuple(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64)
    kg = torch.kron(g, g).to(dtype=weight.dtype, device=weight.device)  # (36, 9)
    k, c = weight.shape[:2]
    taps = weight.detach().reshape(k, c, 9).permute(2, 1, 0).reshape(9, c * k)
    return torch.mm(kg, taps).view(36, c, k)


def winograd_conv(x: torch.Tensor, u: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d(x, w, padding=padding)`` (stride 1, no bias) by F(4×4, 3×3), with ``u = transform_weight(w)``.

    Args:
        x: ``(B, C, H, W)``, any memory layout (channels-last input needs no reorder).
        u: ``(36, C, K)`` from `transform_weight`.
        padding: zero padding ``(top/bottom, left/right)``.

    Returns:
        ``(B, K, H + 2·padding[0] - 2, W + 2·padding[1] - 2)``, a channels-last view.
    """
    b, c, h, w = x.shape
    k = u.shape[2]
    oh, ow = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
    th, tw = -(-oh // 4), -(-ow // 4)
    hp, wp = 4 * th + 2, 4 * tw + 2  # the padded map the tiles cover (≥ h + 2·padding)
    buf = x.new_empty(b, hp, wp, c)
    top, left = padding
    buf[:, :top].zero_()
    buf[:, top + h:].zero_()
    buf[:, top:top + h, :left].zero_()
    buf[:, top:top + h, left + w:].zero_()
    buf[:, top:top + h, left:left + w] = x.permute(0, 2, 3, 1)
    s = buf.stride()
    n = b * th * tw
    # 6×6 tiles with step 4; the tile's 36 positions lead, channels stay innermost
    tiles = buf.as_strided((6, 6, b, th, tw, c), (s[1], s[2], s[0], 4 * s[1], 4 * s[2], 1)).reshape(36, n * c)
    kb, ka = _matrices(x.dtype, x.device)
    products = torch.bmm(torch.mm(kb, tiles).view(36, n, c), u)  # (36, n, K)
    y = torch.mm(ka, products.view(36, n * k))  # (16, n·K): the 4×4 output tiles
    out = x.new_empty(b, 4 * th, 4 * tw, k)
    out.view(b, th, 4, tw, 4, k).permute(2, 4, 0, 1, 3, 5).copy_(y.view(4, 4, b, th, tw, k))
    return out.permute(0, 3, 1, 2)[:, :, :oh, :ow]


def _numeric_padding(padding: Any) -> tuple[int, int] | None:
    """A 3×3 convolution's padding as ``(h, w)`` ints (None: not symmetric zero padding we can express)."""
    if padding == "same":
        return (1, 1)
    if padding == "valid":
        return (0, 0)
    if isinstance(padding, int):
        return (padding, padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return (int(padding[0]), int(padding[1]))
    return None


def eligible(m: nn.Module) -> bool:
    """Whether ``m`` is a convolution `WinogradChanges` runs by Winograd (on maps of at most `MAX_PIXELS`).

    Eligible: a plain ``nn.Conv2d`` (its own forward, zero padding) with 3×3 kernels,
    stride 1, dilation 1, no groups, and at least `MIN_CHANNELS` input and output channels.
    """
    if not isinstance(m, nn.Conv2d) or type(m).forward is not nn.Conv2d.forward:
        return False
    if (tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation), m.groups) != ((3, 3), (1, 1), (1, 1), 1):
        return False
    return m.padding_mode == "zeros" and min(m.in_channels, m.out_channels) >= MIN_CHANNELS


def _tiling(x: torch.Tensor, padding: Any) -> tuple[int, int] | None:
    """The padding to run Winograd with on ``x``; None where a direct convolution is faster (maps over
    `MAX_PIXELS`, outputs under 4 pixels a side: most of a tile wasted) or the padding is not plain."""
    pad = _numeric_padding(padding)
    if pad is None or min(pad) < 0 or x.dim() != 4 or not x.is_floating_point():
        return None
    h, w = x.shape[-2:]
    if h * w > MAX_PIXELS or min(h + 2 * pad[0], w + 2 * pad[1]) - 2 < 4:
        return None
    return pad


class WinogradChanges(LowPrecision):
    """Convolutions of changes in the model's dtype by Winograd F(4×4, 3×3), for the `eligible` ones.

    Same interface as `LowPrecision`; the engine asks `handles` which convolutions
    to give it (the others run the model's own convolutions, exactly as in exact
    mode). ``used`` holds the ``id`` of every module that ran by Winograd.
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dtype)
        self._transformed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.used: set[int] = set()

    def handles(self, m: nn.Module) -> bool:
        return eligible(m)

    def memory(self, convs: list[tuple[nn.Module, tuple[int, int], int]]) -> tuple[int, int]:
        """The transformed weights (36 per input/output channel pair, held for the call) and the largest
        convolution's temporaries per position: on the output rounded up to whole 4×4 tiles, the tiles
        and their transform 2.25× the input channels each, the products 2.25× the output channels, the
        output tiles and the result."""
        held = work = 0
        for m, (h, w), size in convs:
            c, k = m.in_channels, m.out_channels
            held += 36 * c * k * size
            area = (-(-h // 4) * 4) * (-(-w // 4) * 4)
            work = max(work, int(area * size * (2.25 * (2 * c + k) + 2 * k)))
        return held, work

    def conv(self, m: nn.Conv2d, clean_out: torch.Tensor, x: torch.Tensor, clean_x: torch.Tensor | None,
             padding=0) -> torch.Tensor:
        d = x if clean_x is None else x - clean_x
        pad = _tiling(d, padding)  # the engine gives only `handles` modules
        if pad is None:  # a map too large, or an output too small, for Winograd to pay
            return clean_out + F.conv2d(d, m.weight, None, m.stride, padding, m.dilation, m.groups)
        known = self._transformed.get(id(m))
        if known is None or known[0] is not m.weight or known[1].dtype != d.dtype:
            known = self._transformed[id(m)] = (m.weight, transform_weight(m.weight.to(d.dtype)))
        self.used.add(id(m))
        return clean_out + winograd_conv(d, known[1], pad)
