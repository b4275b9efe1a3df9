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

Score-CAM, SS-CAM and IS-CAM can run their masked inputs in lower precision
(`Precision`, ``cam(..., precision="low")``): bfloat16 autocast in channels-last
layout where the hardware multiplies bfloat16 natively (CPUs with AMX or
AVX512-BF16, CUDA), otherwise the model's dtype in channels-last layout. Their
weights are a softmax over score *differences* between channels, which bfloat16
keeps (on the benchmark's ResNet-18 the map's Pearson correlation to the exact
one is 0.99999). Ablation-CAM divides small score drops by the score, which
bfloat16 does not keep, so it runs exactly always.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass, field

from .._utils import forward_logits, progress_bar
from ..hooks import intervene

__all__ = ["channel_masks", "score_weights", "ablation_weights", "Precision"]

PRECISIONS = ("exact", "low")


@dataclass
class Precision:
    """How the masked inputs run: the model's dtype as is (``exact``), or ``low``.

    Attributes:
        autocast: the dtype of ``torch.autocast`` (``None``: none, the model's dtype).
        channels_last: feed the masked inputs in channels-last layout (faster
            convolutions on CPU); dropped for the rest of the call if the model
            raises on it (a ``view`` that needs contiguous maps), and the batch rerun.
    """

    autocast: torch.dtype | None = None
    channels_last: bool = False
    _failed_layout: bool = field(default=False, repr=False)

    @classmethod
    def choose(cls, precision: str, device: torch.device, dtype: torch.dtype = torch.float32) -> Precision:
        """``"exact"`` or ``"low"`` for a model of ``dtype`` on ``device`` (bfloat16 only where it is native).

        Autocast lowers float32 only, so a float64 (or already half) model keeps its dtype.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be 'exact' or 'low', got {precision!r}")
        if precision == "exact":
            return cls()
        if dtype != torch.float32:
            return cls(None, device.type == "cpu")
        if device.type == "cuda":
            return cls(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, True)
        from .occlude.lowp import native_bfloat16

        return cls(torch.bfloat16 if native_bfloat16() else None, device.type == "cpu")

    @property
    def name(self) -> str:
        """What ran, e.g. ``"bfloat16 autocast, channels-last"`` or ``"exact"``."""
        if self.autocast is None and not self.channels_last:
            return "exact"
        dtype = f"{str(self.autocast).removeprefix('torch.')} autocast" if self.autocast else "model dtype"
        return f"{dtype}, {'channels-last' if self.channels_last and not self._failed_layout else 'contiguous'}"

    def scores(self, model: nn.Module, rows: torch.Tensor, tgt: torch.Tensor, output: Any) -> torch.Tensor:
        """The target scores of ``rows`` ``(R,)``, in ``rows``' dtype."""
        if self.autocast is None and not self.channels_last:
            return _scores(model, rows, tgt, output)
        if self.channels_last and not self._failed_layout and rows.dim() == 4:
            try:
                return self._run(model, rows.contiguous(memory_format=torch.channels_last), tgt, output)
            except Exception:  # noqa: BLE001 - the layout, not the model, may be at fault: rerun contiguous
                self._failed_layout = True
        return self._run(model, rows, tgt, output)

    def _run(self, model, rows, tgt, output) -> torch.Tensor:
        if self.autocast is None:
            return _scores(model, rows, tgt, output)
        with torch.autocast(device_type=rows.device.type, dtype=self.autocast):
            return _scores(model, rows, tgt, output).to(rows.dtype)


def channel_masks(acts: torch.Tensor, size: tuple[int, int], eps: float = 1e-8) -> torch.Tensor:
    """Each channel min-max normalized (``eps`` as torch-cam), upsampled bilinearly: ``(N, K, H, W)``."""
    a = acts - acts.amin((2, 3), keepdim=True)
    a = a / (a.amax((2, 3), keepdim=True) + eps)
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)


def _scores(model, rows: torch.Tensor, tgt: torch.Tensor, output) -> torch.Tensor:
    return forward_logits(model, rows, output).gather(1, tgt.to(rows.device)[:, None])[:, 0]


@dataclass(frozen=True)
class _Scorer:
    """The target scores of masked copies of the images ``x``, ``batch_size`` rows per forward pass."""

    model: nn.Module
    x: torch.Tensor
    tgt: torch.Tensor
    output: Any
    batch_size: int
    run: Precision

    def base(self) -> torch.Tensor:
        """``S_c(x_i)``: ``(N,)``."""
        return self.run.scores(self.model, self.x, self.tgt, self.output)

    def masked(self, masks: torch.Tensor, scale: float, flat_zero: torch.Tensor) -> torch.Tensor:
        """``S_c(scale * M_k ⊙ x_i)`` for every image ``i`` and channel ``k``: ``(N, K)``.

        Channels flagged in ``flat_zero`` (``(N, K)``, all-zero masks) reuse one forward of the zero image.
        """
        x, tgt = self.x, self.tgt
        out = torch.empty(masks.shape[:2], dtype=x.dtype, device=x.device)
        todo = (~flat_zero).nonzero(as_tuple=False)  # (R, 2) rows (image, channel)
        for s in range(0, todo.shape[0], self.batch_size):
            idx = todo[s:s + self.batch_size]
            rows = scale * masks[idx[:, 0], idx[:, 1], None] * x[idx[:, 0]]
            out[idx[:, 0], idx[:, 1]] = self.run.scores(self.model, rows, tgt[idx[:, 0]], self.output)
        if flat_zero.any():
            zero = self.run.scores(self.model, torch.zeros_like(x), tgt, self.output)
            out = torch.where(flat_zero, zero[:, None], out)
        return out


def score_weights(model: nn.Module, x: torch.Tensor, acts: torch.Tensor, tgt: torch.Tensor, *, kind: str,
                  samples: int, noise: float, seed: int, batch_size: int, output: Any = None,
                  progress: bool = False, run: Precision | None = None) -> torch.Tensor:
    """Channel weights ``(N, K)`` of Score-CAM (``kind="score"``), SS-CAM (``"ss"``) or IS-CAM (``"is"``).

    Args:
        model: the network (eval mode, frozen).
        x: images ``(N, C, H, W)``; acts: the layer's maps ``(N, K, h, w)``; tgt: ``(N,)`` classes.
        kind: ``"score"``, ``"ss"`` or ``"is"``.
        samples: SS-CAM / IS-CAM samples; noise: SS-CAM noise std (added to the [0, 1] masks).
        seed: seeds SS-CAM's private generator (the global RNG is untouched).
        batch_size: masked inputs per forward pass.
        run: the precision of the masked forwards (default: exact).
    """
    scorer = _Scorer(model, x, tgt, output, batch_size, Precision() if run is None else run)
    with torch.inference_mode():
        w = _score_sums(scorer, channel_masks(acts, tuple(x.shape[-2:])), kind, samples, noise, seed, progress)
    return w.clone()  # a normal tensor again


def _score_sums(scorer: _Scorer, masks: torch.Tensor, kind: str, samples: int, noise: float, seed: int,
                progress: bool) -> torch.Tensor:
    base = scorer.base()[:, None]  # a shift per image: the softmax over channels does not see it
    total = torch.zeros(masks.shape[:2], dtype=masks.dtype, device=masks.device)
    zero = masks.flatten(2).amax(2) == 0
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    n = 1 if kind == "score" else samples
    coeff = 0.0
    for i in progress_bar(range(n), enabled=progress and n > 1, desc=f"{kind}-cam samples"):
        if kind == "ss":
            m = masks + torch.normal(0.0, noise, size=masks.shape, generator=g, dtype=masks.dtype).to(masks.device)
            total += scorer.masked(m, 1.0, torch.zeros_like(zero)) - base
            continue
        coeff += (i + 1) / n if kind == "is" else 1.0
        total += scorer.masked(masks, coeff, zero) - base
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
