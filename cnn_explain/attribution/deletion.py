"""Deletion and insertion curves (Petsiuk et al. 2018, "RISE: Randomized Input
Sampling for Explanation of Black-box Models").

Pixels are ranked by their attribution (channels summed, largest first). With
``n_k = ⌊k · HW / steps⌋`` of the top pixels (all channels):

* **deletion**: the ``n_k`` top pixels are replaced by ``baseline``; a good map
  makes the target's score fall fast (low area under the curve);
* **insertion**: starting from ``baseline``, the ``n_k`` top pixels get their
  values back; a good map makes the score rise fast (high area).

The AUC is the trapezoid area over the fraction of pixels changed, in [0, 1].

The map is a result (or tensor) you computed, or a method computed here by name:
``method="integrated_gradients"`` (``"ig"``), a CAM-family method
(``"grad-cam++"``, ``"score-cam"``, ...), ``"gradient"``, ``"guided"``, ... (see
`cnn_explain.attribution._by_name`), with ``method_options`` for its function.

Example:
    >>> from cnn_explain.attribution import saliency, deletion_insertion
    >>> r = saliency(model, images, method="guided")          # doctest: +SKIP
    >>> deletion_insertion(model, images, r).deletion_auc     # doctest: +SKIP
    >>> deletion_insertion(model, images, method="ig", method_options={"steps": 32})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ..plotting._display import Displayable
from .._utils import forward_logits, model_input, positive_int, progress_bar, resolve_target
from ..hooks import preserved
from ._by_name import canonical, compute
from .result import Attribution

__all__ = ["deletion_insertion", "DeletionInsertion"]


@dataclass(frozen=True, eq=False)
class DeletionInsertion(Displayable):
    """Deletion / insertion curves for a batch.

    Attributes:
        fractions: ``(steps + 1,)`` fraction of pixels deleted / inserted, 0 … 1.
        deletion: ``(N, steps + 1)`` target score as top pixels are deleted.
        insertion: ``(N, steps + 1)`` target score as top pixels are inserted.
        deletion_auc: ``(N,)`` area under each deletion curve (lower is better).
        insertion_auc: ``(N,)`` area under each insertion curve (higher is better).
        target: ``(N,)`` class scored.
        method: the attribution's method (``""`` for a bare tensor).
        measure: ``"prob"`` (softmax probability) or ``"logit"``.
        params: ``steps``, ``baseline``.
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor
    target: torch.Tensor
    method: str = ""
    measure: str = "prob"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __len__(self) -> int:
        return self.deletion.shape[0]


def _scores(attribution: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """``(N, H*W)`` pixel scores, the result's target (or None) and its method name."""
    tgt, method = None, ""
    if isinstance(attribution, Attribution):
        attribution, tgt, method = attribution.attribution, attribution.target, attribution.method
    if not isinstance(attribution, torch.Tensor):
        raise TypeError(f"attribution must be an Attribution result or a tensor, got {type(attribution).__name__}")
    a = attribution.detach().cpu().double()
    if a.dim() == 3:
        a = a[:, None]
    if a.dim() != 4 or a.shape[0] != x.shape[0] or tuple(a.shape[-2:]) != tuple(x.shape[-2:]):
        raise ValueError(f"attribution must be (N, C, H, W) or (N, H, W) matching x {tuple(x.shape)}, "
                         f"got {tuple(attribution.shape)}")
    return a.sum(1).reshape(a.shape[0], -1), tgt, method


def _baseline(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(x.device, x.dtype), x.shape)
        except RuntimeError as exc:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to x {tuple(x.shape)}") from exc
    raise TypeError(f"baseline must be a number or a tensor broadcastable to x, got {type(baseline).__name__}")


def _attribution_of(model: nn.Module, x: torch.Tensor, attribution: Any, method: Any, target: Any, output: Any,
                    options: Mapping[str, Any] | None) -> Any:
    """The map to rank pixels by: ``attribution`` as given, or ``method``'s result computed on ``x``."""
    if isinstance(attribution, str) and method is None:  # deletion_insertion(model, x, "ig")
        attribution, method = None, attribution
    if (attribution is None) == (method is None):
        raise ValueError("give the map as attribution=<a result or tensor> or a method name as method=... "
                         "(e.g. method='integrated_gradients'), not " + ("both" if method is not None else "neither"))
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"method_options must be a mapping of keyword arguments, got {type(options).__name__}")
    if method is None:
        if options:
            raise ValueError("method_options is for method=...; the attribution was given as a result")
        return attribution
    return compute(model, x, target, canonical(method), output, options)


def deletion_insertion(model: nn.Module, x: Any, attribution: Any = None, *, method: str | None = None,
                       target: Any = None, steps: int = 20, baseline: Any = 0.0, measure: str = "prob",
                       output: Any = None, progress: bool = True,
                       method_options: Mapping[str, Any] | None = None) -> DeletionInsertion:
    """Deletion and insertion curves of an attribution map (Petsiuk et al. 2018).

    Args:
        model: the classifier (run in eval mode under ``torch.inference_mode``;
            its flags are put back).
        x: images ``(N, C, H, W)``.
        attribution: an `Attribution` result or a tensor ``(N, C, H, W)`` /
            ``(N, H, W)`` with ``x``'s height and width; channels are summed to
            rank pixels (ties keep row-major order); or a method name (as ``method``).
        method: instead of ``attribution``, the name of a method to compute the map
            with here: ``"integrated_gradients"`` / ``"ig"``, a CAM-family method
            (``"grad-cam++"``, ...), ``"gradient"``, ``"guided"``, ``"deconv"``,
            ``"grad_cam"``, ``"guided_grad_cam"`` (for ``target``, without progress bar).
        target: class per image; default the result's ``.target`` (else the
            predicted class).
        steps: number of steps ``k = 1 … steps`` (curves have ``steps + 1`` points).
        baseline: value of a deleted pixel (number or tensor broadcastable to x).
        measure: ``"prob"`` (softmax probability of the target) or ``"logit"``.
        output: selects the score tensor from a model returning a tuple/dict.
        progress: show a progress bar over the steps.
        method_options: keyword arguments of the method's function (e.g. ``{"steps": 32}``
            for Integrated Gradients, ``{"layer": "conv2"}`` for a CAM).

    Returns:
        `DeletionInsertion` (``.method`` names the map's method).

    Raises:
        ValueError: neither or both of ``attribution`` and ``method``, an unknown
            ``method``, a bad ``steps`` / ``measure`` / ``baseline`` / map shape.
    """
    steps = positive_int(steps, "steps")
    if measure not in ("prob", "logit"):
        raise ValueError(f"measure must be 'prob' or 'logit', got {measure!r}")
    x = model_input(model, x)
    attribution = _attribution_of(model, x, attribution, method, target, output, method_options)
    scores, result_target, method = _scores(attribution, x)
    base = _baseline(baseline, x)
    n, hw = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(hw).expand(n, hw).contiguous())
    rank = rank.reshape(n, 1, *x.shape[-2:]).to(x.device)
    counts = [(k * hw) // steps for k in range(steps + 1)]
    dele, ins = [], []
    with preserved(model, eval=True), torch.inference_mode():
        logits = forward_logits(model, x, output)
        tgt = resolve_target(result_target if target is None else target, logits)
        idx = tgt.to(logits.device)[:, None]
        for c in progress_bar(counts, enabled=progress, desc="deletion/insertion"):
            mask = rank < c
            batch = torch.cat([torch.where(mask, base, x), torch.where(mask, x, base)])
            out = forward_logits(model, batch, output).float()
            out = out.softmax(1) if measure == "prob" else out
            dele.append(out[:n].gather(1, idx)[:, 0].cpu())
            ins.append(out[n:].gather(1, idx)[:, 0].cpu())
    fr = torch.tensor(counts, dtype=torch.float64) / hw
    d, i = torch.stack(dele, 1).double(), torch.stack(ins, 1).double()
    return DeletionInsertion(fr, d, i, torch.trapezoid(d, fr, dim=1), torch.trapezoid(i, fr, dim=1), tgt.clone(),
                             method, measure, {"steps": steps, "baseline": baseline})
