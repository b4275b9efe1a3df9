"""Feature maps: what every chosen layer computes for an image (seed 000, section 6).

A convolution layer with ``C`` filters turns its input into ``C`` feature maps,
one per filter: channel ``k`` at ``(h, w)`` is filter ``k``'s dot product with
the input window under ``(h, w)`` (plus bias). Early layers respond to edges and
colours, deeper ones to larger, more abstract patterns.

Maps are taken in **eval mode** (dropout off, BatchNorm with its running
statistics), without gradients, and equal what the layer produced even when a
later in-place operation reuses that memory (see :mod:`cnn_explain.hooks`).

Example:
    >>> from cnn_explain.models import cifar10_cnn
    >>> maps = feature_maps(cifar10_cnn(), torch.rand(1, 3, 32, 32), layers=nn.Conv2d)
    >>> {k: tuple(v.shape) for k, v in maps.items()}["0"]
    (1, 32, 32, 32)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._utils import model_input
from ..hooks import LayerSpec, _check_model, capture, preserved, select_output

__all__ = ["feature_maps"]


def feature_maps(model: nn.Module, x: Any, layers: LayerSpec = None, *, output: Any = None) -> dict[str, torch.Tensor]:
    """Record the output of each chosen layer for the images ``x``.

    Args:
        model: any ``nn.Module``.
        x: ``(N, C, H, W)`` images (a ``(C, H, W)`` tensor, PIL image or array is
            converted by :func:`cnn_explain.images.to_batch`).
        layers: ``None`` (every Conv / Pool / Linear / activation layer), a name,
            a glob, a module, a module type, or a list (see
            :func:`cnn_explain.hooks.resolve_layers`). A layer returning a tuple,
            dict or dataclass takes a selector: ``"stage2.last_hidden_state"``.
        output: selector for models returning tuples or dicts (see
            :func:`cnn_explain.hooks.select_output`); the maps do not depend on it,
            but a selector that does not fit the model's output is an error.

    Returns:
        ``{layer name: CPU tensor}`` in forward order; conv / pool / activation
        layers give ``(N, C, H, W)``, linear layers ``(N, features)``. A module
        called twice appears as ``name`` and ``name#1``. With ``layers=None``,
        layers whose output is not a tensor are left out.

    Raises:
        ValueError: an unknown layer name, a chosen layer whose output is not a
            tensor and that has no selector (the message names the layer, the
            type and what to pass), or ``x`` with the wrong number of channels.
    """
    _check_model(model)
    x = model_input(model, x)
    # the whole forward, even for early layers: a module may be called again later (``name#1``)
    with preserved(model, eval=True), capture(model, layers) as rec, torch.inference_mode():
        select_output(model(x), output)
    if layers is not None:  # a layer chosen by the user must give a tensor (or be given with a selector)
        for name in rec:
            rec.tensor(name)
    # cloned outside inference mode: ordinary tensors the user may use with autograd later
    return {name: t.cpu().clone() for name, t in rec.items() if isinstance(t, torch.Tensor)}
