r"""Weights from forward passes only: Score-CAM, SS-CAM, IS-CAM and Ablation-CAM.

Each channel $k$ of the layer's maps $A$ (`(N, K, h, w)`) costs one forward
pass (SS-CAM and IS-CAM: one per sample). The masked inputs of all images and
channels are stacked and run ``batch_size`` rows at a time; a channel whose map
is constant gives the all-zero mask, so all such channels of an image share one
forward pass (on the zero image).

* Score-CAM (Wang et al. 2020): $M_k = U\big(\frac{A_k - \min A_k}{\max A_k - \min A_k}\big)$,
  $w_k = \mathrm{softmax}_k\big(S_c(M_k \odot x) - S_c(x)\big)$.
* SS-CAM (Wang et al. 2020b): $M_k$ plus Gaussian noise, averaged over samples.
* IS-CAM (Naidu et al. 2020): the masked input scaled by $\sum_{j\le i} j/n$, averaged over $i = 1..n$.
* Ablation-CAM (Desai & Ramaswamy 2020): $w_k = (y_c - y_c^{(k)}) / y_c$, with
  $y_c^{(k)}$ the score when channel $k$ of the layer's output is set to 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import forward_logits, progress_bar
from ..hooks import intervene

__all__ = ["channel_masks", "score_weights", "ablation_weights"]


def channel_masks(acts: torch.Tensor, size: tuple[int, int], eps: float = 1e-8) -> torch.Tensor:
    """Each channel min-max normalized (``eps`` as torch-cam), upsampled bilinearly: ``(N, K, H, W)``."""
    a = acts - acts.amin((2, 3), keepdim=True)
    a = a / (a.amax((2, 3), keepdim=True) + eps)
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)


def _scores(model, rows: torch.Tensor, tgt: torch.Tensor, output) -> torch.Tensor:
    return forward_logits(model, rows, output).gather(1, tgt.to(rows.device)[:, None])[:, 0]


def _masked_scores(model, x, masks, scale: float, tgt, batch_size, output, flat_zero: torch.Tensor) -> torch.Tensor:
    """``S_c(scale * M_k ⊙ x_i)`` for every image ``i`` and channel ``k``: ``(N, K)``.

    Channels flagged in ``flat_zero`` (``(N, K)``, all-zero masks) reuse one forward of the zero image.
    """
    n, k = masks.shape[:2]
    out = torch.empty(n, k, dtype=x.dtype, device=x.device)
    todo = (~flat_zero).nonzero(as_tuple=False)  # (R, 2) rows (image, channel)
    for s in range(0, todo.shape[0], batch_size):
        idx = todo[s:s + batch_size]
        rows = scale * masks[idx[:, 0], idx[:, 1], None] * x[idx[:, 0]]
        out[idx[:, 0], idx[:, 1]] = _scores(model, rows, tgt[idx[:, 0]], output)
    if flat_zero.any():
        zero = _scores(model, torch.zeros_like(x), tgt, output)
        out = torch.where(flat_zero, zero[:, None], out)
    return out


def score_weights(model: nn.Module, x: torch.Tensor, acts: torch.Tensor, tgt: torch.Tensor, *, kind: str,
                  samples: int, noise: float, seed: int, batch_size: int, output: Any = None,
                  progress: bool = False) -> torch.Tensor:
    """Channel weights ``(N, K)`` of Score-CAM (``kind="score"``), SS-CAM (``"ss"``) or IS-CAM (``"is"``).

    Args:
        model: the network (eval mode, frozen).
        x: images ``(N, C, H, W)``; acts: the layer's maps ``(N, K, h, w)``; tgt: ``(N,)`` classes.
        kind: ``"score"``, ``"ss"`` or ``"is"``.
        samples: SS-CAM / IS-CAM samples; noise: SS-CAM noise std (added to the [0, 1] masks).
        seed: seeds SS-CAM's private generator (the global RNG is untouched).
        batch_size: masked inputs per forward pass.
    """
    with torch.inference_mode():
        w = _score_sums(model, x, acts, tgt, kind, samples, noise, seed, batch_size, output,
                        progress)
    return w.clone()  # a normal tensor again


def _score_sums(model, x, acts, tgt, kind, samples, noise, seed, batch_size, output, progress) -> torch.Tensor:
    masks = channel_masks(acts, tuple(x.shape[-2:]))
    base = _scores(model, x, tgt, output)
    total = torch.zeros(masks.shape[:2], dtype=x.dtype, device=x.device)
    zero = masks.flatten(2).amax(2) == 0
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    n = 1 if kind == "score" else samples
    coeff = 0.0
    for i in progress_bar(range(n), enabled=progress and n > 1, desc=f"{kind}-cam samples"):
        if kind == "ss":
            m = masks + torch.normal(0.0, noise, size=masks.shape, generator=g, dtype=masks.dtype).to(masks.device)
            total += _masked_scores(model, x, m, 1.0, tgt, batch_size, output, torch.zeros_like(zero)) - base[:, None]
            continue
        coeff += (i + 1) / n if kind == "is" else 1.0
        total += _masked_scores(model, x, masks, coeff, tgt, batch_size, output, zero) - base[:, None]
    return torch.softmax(total / n, dim=1)


def ablation_weights(model: nn.Module, x: torch.Tensor, module: nn.Module, call: int, tgt: torch.Tensor, *,
                     channels: int, batch_size: int, output: Any = None) -> torch.Tensor:
    """Ablation-CAM weights ``(N, K)``: ``(y_c - y_c^(k)) / y_c``, channel ``k`` of ``module``'s ``call``-th output zeroed.

    :func:`cnn_explain.hooks.intervene` zeroes, in batch row ``r``, the channel ``ablate[r]``.
    """
    n = x.shape[0]
    base = _scores(model, x, tgt, output)
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(channels))  # (N*K, 2)
    out = torch.empty(n, channels, dtype=x.dtype, device=x.device)
    state = {"ablate": None, "calls": 0}

    def ablate(result: torch.Tensor) -> torch.Tensor | None:
        c = state["calls"]
        state["calls"] += 1
        if c != call:
            return None
        keep = torch.ones(result.shape[:2], dtype=result.dtype, device=result.device)
        keep[torch.arange(result.shape[0]), state["ablate"].to(result.device)] = 0
        return result * keep[:, :, None, None]

    with intervene(model, module, ablate):
        for s in range(0, pairs.shape[0], batch_size):
            p = pairs[s:s + batch_size]
            state["ablate"], state["calls"] = p[:, 1], 0
            out[p[:, 0], p[:, 1]] = _scores(model, x[p[:, 0]], tgt[p[:, 0]], output)
    return (base[:, None] - out) / base[:, None]
