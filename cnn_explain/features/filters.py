"""Filters: the learned weights of a convolution layer (seed 000, section 3).

A Conv2d layer with ``C_out`` filters over ``C_in`` input channels holds a weight
tensor ``(C_out, C_in / groups, kh, kw)``: filter ``k`` is a stack of ``C_in / groups``
kernels, one per input channel, plus one bias. In the first layer of an RGB
network each filter is a small ``kh × kw`` colour image (its three kernels are the
red, green and blue planes), which is why first-layer filters can be looked at
directly; deeper filters are drawn as a grid of kernels × input channels.

Example:
    >>> from cnn_explain.models import cifar10_cnn
    >>> r = filters(cifar10_cnn())
    >>> r.layer, tuple(r.weight.shape), r.rgb
    ('0', (32, 3, 3, 3), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..plotting._display import Displayable
from ..hooks import LayerSpec, _check_model, resolve_layer
from ..roles import first_conv

__all__ = ["FilterResult", "filters"]


@dataclass(frozen=True)
class FilterResult(Displayable):
    """The weights of one convolution layer.

    Attributes:
        weight: ``(C_out, C_in / groups, kh, kw)`` CPU tensor (a copy).
        layer: the layer's dotted name.
        rgb: True when every filter has exactly 3 input channels (drawn in colour).
        bias: ``(C_out,)`` CPU tensor or None.
        groups: the layer's ``groups`` (1 for an ordinary convolution).
    """

    weight: torch.Tensor
    layer: str
    rgb: bool
    bias: torch.Tensor | None = None
    groups: int = 1

    def normalized(self) -> torch.Tensor:
        """Weights scaled to ``[0, 1]`` per filter: ``(w − min_k) / (max_k − min_k)`` over filter ``k``'s kernels.

        A constant filter maps to 0.5. This is the scaling the figure uses.
        """
        w = self.weight.float()
        flat = w.reshape(w.shape[0], -1)
        lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
        span = hi - lo
        out = (w - lo) / torch.where(span > 0, span, torch.ones_like(span))
        return torch.where(span > 0, out, torch.full_like(out, 0.5))


def _default(model: nn.Module) -> tuple[str, nn.Module]:
    try:
        site = first_conv(model)
    except ValueError as exc:
        raise ValueError(f"layer=None selects the first Conv2d layer, but the model has none; "
                         f"name a layer ({exc})") from None
    return site.name, site.module


def filters(model: nn.Module, layer: LayerSpec = None) -> FilterResult:
    """Return the kernels of a Conv2d layer (the first one by default).

    Args:
        model: any ``nn.Module``.
        layer: a Conv2d given as a name, glob, module or type (a selection matching
            several layers picks the last); ``None`` for the first convolution
            (:func:`cnn_explain.roles.first_conv`).

    Returns:
        A :class:`FilterResult` with ``weight`` ``(C_out, C_in / groups, kh, kw)``.

    Raises:
        ValueError: ``layer`` has no 4-D convolution weight (e.g. a ReLU, a pool or
            a Linear layer), or the model has no Conv2d when ``layer=None``.
    """
    _check_model(model)
    name, module = _default(model) if layer is None else resolve_layer(model, layer)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        found = "no weights" if not isinstance(weight, torch.Tensor) else f"a {weight.dim()}-D weight"
        raise ValueError(
            f"layer {name!r} is a {type(module).__name__} with {found}; "
            "filters needs a Conv2d layer (weight shaped (C_out, C_in/groups, kh, kw))"
        )
    bias = getattr(module, "bias", None)
    return FilterResult(
        weight=weight.detach().cpu().clone(),
        layer=name,
        rgb=weight.shape[1] == 3,
        bias=bias.detach().cpu().clone() if isinstance(bias, torch.Tensor) else None,
        groups=int(getattr(module, "groups", 1)),
    )
