"""The result every attribution method returns: `Attribution`.

Occlusion, gradient saliency (vanilla, guided backprop, deconvnet, SmoothGrad)
and Grad-CAM all return an `Attribution` (or a subclass adding fields),
so every heatmap figure works for every method.

Example:
    >>> import torch
    >>> from cnn_explain.attribution.result import Attribution
    >>> r = Attribution(torch.zeros(2, 1, 4, 4), torch.tensor([3, 1]), "gradient")
    >>> len(r), r.shape, r.signed
    (2, (2, 1, 4, 4), False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from ..plotting._display import Displayable

__all__ = ["Attribution"]


def _cpu(t: torch.Tensor | None, name: str) -> torch.Tensor | None:
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    t = t.detach().cpu()
    if t.is_inference():  # made under torch.inference_mode: a normal tensor can join autograd later
        with torch.inference_mode(False):
            t = t.clone()
    return t


@dataclass(frozen=True, eq=False)
class Attribution(Displayable):
    """How much each input pixel matters for a class score, for a batch of images.

    Attributes:
        attribution: ``(N, C, H, W)`` CPU tensor. ``C`` is the input's channel
            count for pixel-level methods (gradients, occlusion) and 1 for
            Grad-CAM (one map per image, upsampled to ``H × W``).
        target: ``(N,)`` int64, the class explained for each image.
        method: the method's name, e.g. ``"gradient"``, ``"guided"``,
            ``"deconv"``, ``"occlusion"``, ``"grad_cam"``, ``"guided_grad_cam"``.
        inputs: the ``(N, C, H, W)`` images that were explained (CPU copy), or
            None; figures overlay the map on them.
        params: the other arguments that made the result (read-only mapping).
    """

    attribution: torch.Tensor
    target: torch.Tensor
    method: str
    inputs: torch.Tensor | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = _cpu(self.attribution, "attribution")
        if a.dim() != 4:
            raise ValueError(f"attribution must be (N, C, H, W), got shape {tuple(a.shape)}")
        t = _cpu(torch.as_tensor(self.target), "target").long().reshape(-1)
        if t.numel() != a.shape[0]:
            raise ValueError(f"target has {t.numel()} entries for {a.shape[0]} maps; give one per image")
        x = _cpu(self.inputs, "inputs")
        if x is not None and (x.dim() != 4 or x.shape[0] != a.shape[0] or x.shape[-2:] != a.shape[-2:]):
            raise ValueError(
                f"inputs must be (N, C, H, W) matching the maps {tuple(a.shape)}, got {tuple(x.shape)}"
            )
        object.__setattr__(self, "attribution", a)
        object.__setattr__(self, "target", t)
        object.__setattr__(self, "inputs", x)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    # ------------------------------------------------------------------ helpers
    def __len__(self) -> int:
        return self.attribution.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`attribution`, ``(N, C, H, W)``."""
        return tuple(self.attribution.shape)

    @property
    def signed(self) -> bool:
        """True when some value is negative (figures then use a diverging colormap centred at 0)."""
        return bool((self.attribution < 0).any())

    def map(self, index: int = 0, reduce: str = "auto") -> torch.Tensor:
        """One image's map as an ``(H, W)`` tensor.

        Args:
            index: which image of the batch.
            reduce: how channels are combined: ``"sum"``, ``"max_abs"`` (the
                largest magnitude, Simonyan et al.'s choice), ``"mean"``, or
                ``"auto"`` (``"sum"`` for signed maps, ``"max_abs"`` otherwise;
                a single-channel map is returned as is).
        """
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise ValueError(f"index must be an int in [0, {n - 1}], got {index!r}")
        a = self.attribution[index]
        if a.shape[0] == 1:
            return a[0]
        if reduce == "auto":
            reduce = "sum" if self.signed else "max_abs"
        if reduce == "sum":
            return a.sum(0)
        if reduce == "mean":
            return a.mean(0)
        if reduce == "max_abs":
            return a.abs().amax(0)
        raise ValueError(f"reduce must be 'auto', 'sum', 'mean' or 'max_abs', got {reduce!r}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method!r}, shape={self.shape}, "
                f"target={self.target.tolist()})")
