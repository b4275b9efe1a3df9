"""Composable objectives for activation maximization (the idea of lucent / Lucid).

An :class:`Objective` maps what one forward pass produced (a :class:`Context`) to
one value **per image**, shape ``(B,)``; :func:`~cnn_explain.features.maximize.maximize`
raises the sum over the batch. Objectives add, subtract and scale::

    channel("conv3", 5) - 1e-3 * total_variation()

Because every term is per image and the model runs in eval mode, image ``i``'s
gradient depends on image ``i`` only: many images optimize together as one batch
exactly as they would one by one.

* :func:`channel` — mean activation of a channel (Erhan et al. 2009; Olah et al. 2017);
* :func:`neuron` — one spatial position of a channel;
* :func:`class_logit` — a score of the model's output;
* :func:`total_variation`, :func:`l2` — image regularizers (subtract them).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

__all__ = ["Context", "Objective", "channel", "neuron", "class_logit", "total_variation", "l2", "spec_key"]

ChannelSpec = Union[int, Sequence[int], None]


def spec_key(spec: Any) -> Any:
    """Hashable key of a layer specification (modules by identity)."""
    return spec if isinstance(spec, (str, type)) else ("module", id(spec))


@dataclass
class Context:
    """What the objectives can read after one forward pass of a batch of ``B`` images.

    Attributes:
        activations: layer name -> live (graph-attached) output ``(B, ...)``.
        names: :func:`spec_key` of each layer spec used by the objective -> layer name.
        image: ``(B, C, H, W)`` the images in [0, 1] before transforms and normalization.
        logits: ``(B, K)`` the model's scores (when an objective needs them).
        channels: ``(B,)`` the channel each image maximizes (``channels`` of ``maximize``).
        rows: ``(B,)`` position of each image in the full request (to index per-image lists).
    """

    activations: Mapping[str, torch.Tensor]
    names: Mapping[Any, str]
    image: torch.Tensor
    logits: torch.Tensor | None
    channels: torch.Tensor
    rows: torch.Tensor

    def act(self, layer: Any) -> torch.Tensor:
        return self.activations[self.names[spec_key(layer)]]

    def pick(self, n: ChannelSpec, size: int, what: str) -> torch.Tensor:
        """Per-image indices ``(B,)``: ``n`` for all, ``n[row]`` from a list, or each image's own channel."""
        if n is None:
            idx = self.channels
        elif isinstance(n, numbers.Integral):
            idx = torch.full_like(self.channels, int(n))
        else:
            full = torch.as_tensor(list(n), dtype=torch.long)
            if int(self.rows.max()) >= len(full):
                raise ValueError(f"{what}: a list of {len(full)} indices, but there are more images; give one per channel")
            idx = full[self.rows]
        bad = (idx < 0) | (idx >= size)
        if bad.any():
            raise ValueError(f"{what}={int(idx[bad][0])} is outside the valid range 0..{size - 1}")
        return idx.to(self.image.device)


class Objective:
    """A per-image score to maximize; combine with ``+``, ``-``, ``*``/``/`` by numbers.

    Args:
        fn: ``Context -> (B,)`` tensor.
        description: shown by ``repr``.
        layers: layer specs whose outputs ``fn`` reads.
        needs_logits: whether ``fn`` reads ``ctx.logits``.
    """

    def __init__(self, fn: Callable[[Context], torch.Tensor], description: str, layers: tuple = (),
                 needs_logits: bool = False) -> None:
        self.fn, self.description, self.layers, self.needs_logits = fn, description, tuple(layers), needs_logits

    def __call__(self, ctx: Context) -> torch.Tensor:
        return self.fn(ctx)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def _join(self, other: Objective, sign: float, symbol: str) -> Objective:
        return Objective(lambda ctx: self(ctx) + sign * other(ctx), f"{self.description} {symbol} {other.description}",
                         self.layers + other.layers, self.needs_logits or other.needs_logits)

    def __add__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return self._join(other, 1.0, "+")
        if isinstance(other, numbers.Real):
            return Objective(lambda ctx: self(ctx) + float(other), f"{self.description} + {other}",
                             self.layers, self.needs_logits)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return self._join(other, -1.0, "-")
        return self + (-other) if isinstance(other, numbers.Real) else NotImplemented

    def __rsub__(self, other: Any) -> Objective:
        return (-self) + other if isinstance(other, numbers.Real) else NotImplemented

    def __mul__(self, k: Any) -> Objective:
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return Objective(lambda ctx: float(k) * self(ctx), f"{k} * ({self.description})", self.layers, self.needs_logits)

    __rmul__ = __mul__

    def __truediv__(self, k: Any) -> Objective:
        return self * (1.0 / k) if isinstance(k, numbers.Real) else NotImplemented

    def __neg__(self) -> Objective:
        return self * -1.0


def _label(layer: Any) -> str:
    return layer if isinstance(layer, str) else getattr(layer, "__name__", type(layer).__name__)


def channel(layer: Any, n: ChannelSpec = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` over all positions (one unit of a ``(B, F)`` output).

    ``n=None``: each image maximizes its own requested channel; an int: all the
    same channel; a list: one channel per requested image.
    """
    def fn(ctx: Context) -> torch.Tensor:
        a = ctx.act(layer)
        idx = ctx.pick(n, a.shape[1], "channel")
        sel = a[torch.arange(a.shape[0], device=a.device), idx]
        return sel.reshape(sel.shape[0], -1).mean(dim=1)

    return Objective(fn, f"channel({_label(layer)!r}, {n})", (layer,))


def neuron(layer: Any, n: ChannelSpec = None, h: int | None = None, w: int | None = None) -> Objective:
    """Activation of channel ``n`` at one position ``(h, w)`` (default: the centre) of ``layer``."""
    def fn(ctx: Context) -> torch.Tensor:
        a = ctx.act(layer)
        if a.dim() != 4:
            raise ValueError(f"neuron needs a (B, C, H, W) layer output; {_label(layer)!r} gives {tuple(a.shape)}")
        idx = ctx.pick(n, a.shape[1], "channel")
        hh = a.shape[2] // 2 if h is None else h
        ww = a.shape[3] // 2 if w is None else w
        if not (0 <= hh < a.shape[2] and 0 <= ww < a.shape[3]):
            raise ValueError(f"neuron position (h={hh}, w={ww}) is outside the {a.shape[2]}×{a.shape[3]} map")
        return a[torch.arange(a.shape[0], device=a.device), idx, hh, ww]

    return Objective(fn, f"neuron({_label(layer)!r}, {n}, h={h}, w={w})", (layer,))


def class_logit(n: ChannelSpec = None) -> Objective:
    """The model's score for class ``n`` (``None``: each image's requested channel used as the class)."""
    def fn(ctx: Context) -> torch.Tensor:
        idx = ctx.pick(n, ctx.logits.shape[1], "class")
        return ctx.logits[torch.arange(ctx.logits.shape[0], device=ctx.logits.device), idx]

    return Objective(fn, f"class_logit({n})", needs_logits=True)


def total_variation() -> Objective:
    """Per-image total variation of the [0, 1] image: ``mean |x[i+1, j] − x[i, j]| + mean |x[i, j+1] − x[i, j]|``.

    Subtract it (``- k * total_variation()``) to favour smooth images.
    """
    def fn(ctx: Context) -> torch.Tensor:
        x = ctx.image
        dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
        dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
        return dy + dx

    return Objective(fn, "total_variation()")


def l2(constant: float = 0.5) -> Objective:
    """Per-image mean squared distance of the [0, 1] image from ``constant``: ``mean (x − c)²``.

    Subtract it to keep pixel values moderate.
    """
    def fn(ctx: Context) -> torch.Tensor:
        return (ctx.image - constant).pow(2).flatten(1).mean(1)

    return Objective(fn, f"l2({constant})")
