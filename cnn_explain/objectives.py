"""One composable objective algebra for image optimization (the idea of lucent / Lucid).

An :class:`Objective` maps what one forward pass produced (a :class:`Context`:
the captured feature maps, the image, the logits) to a value **per image**,
shape ``(B,)`` (or a 0-d tensor for a loss of the whole batch). Objectives add,
subtract and scale by numbers, so regularizers and weighted losses read as
formulas::

    channel("conv3", 5) - 1e-3 * total_variation()                 # maximized by maximize()
    content_loss(c_maps) + 10 * style_loss(s_maps) + total_variation(norm="squared")  # minimized by transfer()

Each leaf is evaluated once per call, even when it appears several times, and
:meth:`Objective.terms` gives every leaf's unweighted value by name.

* activation maximization (Erhan et al. 2009; Olah et al. 2017): :func:`channel`,
  :func:`neuron`, :func:`class_logit`;
* style transfer (Gatys, Ecker & Bethge, CVPR 2016): :func:`gram_matrix`,
  :func:`content_loss`, :func:`style_loss`;
* image regularizers: :func:`total_variation` (L1 or squared), :func:`l2`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch

__all__ = ["Context", "Objective", "channel", "neuron", "class_logit", "total_variation", "l2", "spec_key",
           "gram_matrix", "content_loss", "style_loss"]

ChannelSpec = Union[int, Sequence[int], None]


def spec_key(spec: Any) -> Any:
    """Hashable key of a layer specification (modules by identity)."""
    return spec if isinstance(spec, (str, type)) else ("module", id(spec))


@dataclass
class Context:
    """What the objectives can read after one forward pass of a batch of ``B`` images.

    Attributes:
        activations: layer name -> live (graph-attached) output ``(B, ...)``.
        image: ``(B, C, H, W)`` the images in [0, 1] before transforms and normalization.
        names: :func:`spec_key` of each layer spec used by the objective -> layer name
            (None: the specs are the layer names themselves).
        logits: ``(B, K)`` the model's scores (when an objective needs them).
        channels: ``(B,)`` the channel each image maximizes (``channels`` of ``maximize``).
        rows: ``(B,)`` position of each image in the full request (to index per-image lists).
    """

    activations: Mapping[str, torch.Tensor]
    image: torch.Tensor | None
    names: Mapping[Any, str] | None = None
    logits: torch.Tensor | None = None
    channels: torch.Tensor | None = None
    rows: torch.Tensor | None = None

    def act(self, layer: Any) -> torch.Tensor:
        """The output of ``layer`` (a name, or a spec listed in :attr:`names`)."""
        return self.activations[layer if self.names is None else self.names[spec_key(layer)]]

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


Combine = Callable[[dict[int, torch.Tensor]], torch.Tensor]


class Objective:
    """A differentiable score of one forward pass; combine with ``+``, ``-``, ``*``/``/`` by numbers.

    Args:
        fn: ``Context -> tensor``, ``(B,)`` per image (or 0-d for the batch).
        name: this leaf's key in :meth:`terms` and its ``repr``.
        layers: layer specs whose outputs ``fn`` reads.
        needs_logits: whether ``fn`` reads ``ctx.logits``.

    Combinations are Objectives whose :attr:`layers` is the union of their
    parts'; each leaf is evaluated once per call.

    Example:
        >>> a = Objective(lambda ctx: torch.tensor(2.0), "a")
        >>> float((3 * a - a / 2 + 1)({}, None))
        6.0
    """

    def __init__(self, fn: Callable[[Context], torch.Tensor], name: str, layers: Sequence[Any] = (),
                 needs_logits: bool = False) -> None:
        self._fn, self.name, self.needs_logits = fn, name, needs_logits
        self.layers: tuple[Any, ...] = tuple({spec_key(x): x for x in layers}.values())
        self._leaves: tuple[Objective, ...] = (self,)
        self._combine: Combine | None = None

    @staticmethod
    def _composite(parts: Sequence[Objective], combine: Combine, name: str) -> Objective:
        obj = Objective(lambda ctx: torch.zeros(()), name, [layer for p in parts for layer in p.layers],
                        any(p.needs_logits for p in parts))
        obj._leaves = tuple({id(leaf): leaf for p in parts for leaf in p._leaves}.values())
        obj._combine = combine
        return obj

    def _value(self, cache: dict[int, torch.Tensor]) -> torch.Tensor:
        return cache[id(self)] if self._combine is None else self._combine(cache)

    def _evaluate(self, ctx: Context | Mapping[str, torch.Tensor], image: torch.Tensor | None) -> dict[int, torch.Tensor]:
        ctx = ctx if isinstance(ctx, Context) else Context(ctx, image)
        return {id(leaf): leaf._fn(ctx) for leaf in self._leaves}

    def __call__(self, ctx: Context | Mapping[str, torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        """The value, attached to the graph; ``obj(feats, image)`` is ``obj(Context(feats, image))``."""
        return self._value(self._evaluate(ctx, image))

    def terms(self, ctx: Context | Mapping[str, torch.Tensor],
              image: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``(value, {leaf name: unweighted value summed over the batch})``; leaves sharing a name are summed."""
        cache = self._evaluate(ctx, image)
        parts: dict[str, float] = {}
        for leaf in self._leaves:
            parts[leaf.name] = parts.get(leaf.name, 0.0) + float(cache[id(leaf)].detach().sum())
        return self._value(cache), parts

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: Any) -> Objective:
        if isinstance(other, numbers.Real):
            return Objective._composite([self], lambda c: self._value(c) + float(other), f"{self.name} + {other}")
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective._composite([self, other], lambda c: self._value(c) + other._value(c),
                                    f"{self.name} + {other.name}")

    __radd__ = __add__  # sum([...]) starts from 0

    def __mul__(self, k: Any) -> Objective:
        if not isinstance(k, numbers.Real):
            return NotImplemented
        return Objective._composite([self], lambda c: float(k) * self._value(c), f"{k} * ({self.name})")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Any) -> Objective:
        if isinstance(other, Objective):
            return Objective._composite([self, other], lambda c: self._value(c) - other._value(c),
                                        f"{self.name} - {other.name}")
        return self + (-other) if isinstance(other, numbers.Real) else NotImplemented

    def __rsub__(self, other: Any) -> Objective:
        return (-self) + other if isinstance(other, numbers.Real) else NotImplemented

    def __truediv__(self, k: Any) -> Objective:
        return self * (1.0 / float(k)) if isinstance(k, numbers.Real) else NotImplemented

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _label(layer: Any) -> str:
    return layer if isinstance(layer, str) else getattr(layer, "__name__", type(layer).__name__)


# --------------------------------------------------------------------------- activation maximization
def channel(layer: Any, n: ChannelSpec = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` over all positions (one unit of a ``(B, F)`` output).

    ``n=None``: each image maximizes its own requested channel; an int: all the
    same channel; a list: one channel per requested image. Returns ``(B,)``.
    """
    def fn(ctx: Context) -> torch.Tensor:
        a = ctx.act(layer)
        idx = ctx.pick(n, a.shape[1], "channel")
        sel = a[torch.arange(a.shape[0], device=a.device), idx]
        return sel.reshape(sel.shape[0], -1).mean(dim=1)

    return Objective(fn, f"channel({_label(layer)!r}, {n})", (layer,))


def neuron(layer: Any, n: ChannelSpec = None, h: int | None = None, w: int | None = None) -> Objective:
    """Activation of channel ``n`` at one position ``(h, w)`` (default: the centre) of ``layer``; ``(B,)``."""
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
    """The model's score for class ``n`` (``None``: each image's requested channel used as the class); ``(B,)``."""
    def fn(ctx: Context) -> torch.Tensor:
        idx = ctx.pick(n, ctx.logits.shape[1], "class")
        return ctx.logits[torch.arange(ctx.logits.shape[0], device=ctx.logits.device), idx]

    return Objective(fn, f"class_logit({n})", needs_logits=True)


# --------------------------------------------------------------------------- image regularizers
def total_variation(norm: Literal["l1", "squared"] = "l1", *, name: str = "tv") -> Objective:
    """Per-image total variation of the [0, 1] image, ``(B,)``: how much neighbouring pixels differ.

    With ``d_y = x[:, :, i+1, j] − x[:, :, i, j]`` and ``d_x = x[:, :, i, j+1] − x[:, :, i, j]``:

    * ``norm="l1"``: ``mean |d_y| + mean |d_x|`` (activation maximization's);
    * ``norm="squared"``: ``mean d_y² + mean d_x²`` (style transfer's; Mahendran & Vedaldi, CVPR 2015).

    Subtract it from an objective that is maximized, add it to a loss that is minimized.

    Example:
        >>> x = torch.tensor([[[[0., 2.], [0., 2.]]]])
        >>> float(total_variation("l1")({}, x)), float(total_variation("squared")({}, x))
        (2.0, 4.0)
    """
    if norm not in ("l1", "squared"):
        raise ValueError(f"norm must be 'l1' or 'squared', got {norm!r}")
    power = (lambda d: d.abs()) if norm == "l1" else (lambda d: d.square())

    def fn(ctx: Context) -> torch.Tensor:
        x = ctx.image
        dy = power(x[:, :, 1:, :] - x[:, :, :-1, :]).flatten(1).mean(1)
        dx = power(x[:, :, :, 1:] - x[:, :, :, :-1]).flatten(1).mean(1)
        return dy + dx

    return Objective(fn, name)


def l2(constant: float = 0.5) -> Objective:
    """Per-image mean squared distance of the [0, 1] image from ``constant``: ``mean (x − c)²``, ``(B,)``."""
    def fn(ctx: Context) -> torch.Tensor:
        return (ctx.image - constant).pow(2).flatten(1).mean(1)

    return Objective(fn, f"l2({constant})")


# --------------------------------------------------------------------------- style transfer
def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of each image's feature maps, normalized by ``C·H·W``.

    With ``F`` the ``(C, H·W)`` matrix of one image's maps (one row per channel),
    ``G = F · Fᵀ / (C · H · W)``: which features occur together, not where.
    ``G`` is symmetric and positive semi-definite.

    Args:
        features: ``(N, C, H, W)`` feature maps.

    Returns:
        ``(N, C, C)`` Gram matrices, one per image (differentiable).

    Raises:
        TypeError: ``features`` is not a tensor.
        ValueError: it is not 4-D.

    Example:
        >>> gram_matrix(torch.ones(1, 2, 3, 3))[0]   # 9 products of 1·1 over C·H·W = 18
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a tensor (N, C, H, W), got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W); got shape {tuple(features.shape)}")
    n, c, h, w = features.shape
    return _Gram.apply(features.reshape(n, c, h * w), 1.0 / (c * h * w))


class _Gram(torch.autograd.Function):
    """``G = s·F·Fᵀ`` with the backward of a symmetric product: ``∂L/∂F = s·(Ḡ + Ḡᵀ)·F``.

    Autograd's own backward of ``bmm(F, Fᵀ)`` runs two batched products (one per
    operand) and adds them; using that both operands are ``F`` takes one product
    and a ``C×C`` add, which is a quarter of a style-transfer step's time saved.
    """

    @staticmethod
    def forward(ctx, f: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(f)
        ctx.scale = scale
        return torch.bmm(f, f.transpose(1, 2)).mul_(scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (f,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), f).mul_(ctx.scale), None


def _squared_norm(t: torch.Tensor) -> torch.Tensor:
    return t.detach().square().sum().clamp_min(1e-30)


def _check_maps(maps: Mapping[str, torch.Tensor], argname: str) -> dict[str, torch.Tensor]:
    if not isinstance(maps, Mapping) or not maps:
        raise TypeError(f"{argname} must be a non-empty mapping {{layer name: (N, C, H, W) tensor}}")
    for name, t in maps.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{argname}[{name!r}] must be an (N, C, H, W) tensor of feature maps, got {shape}")
    return {name: t.detach() for name, t in maps.items()}


def content_loss(targets: Mapping[str, torch.Tensor]) -> Objective:
    """Content loss, 0-d: relative squared distance to target feature maps, averaged over layers.

        ``L_content = (1/|layers|) Σ_l ‖F_l(x) − F_l(c)‖² / ‖F_l(c)‖²``

    0 at the content image, about 1 for an unrelated image (Gatys et al. use
    one layer, ``conv4_2`` of VGG-19).

    Args:
        targets: ``{layer name: (1, C, H, W)}`` maps of the content image.

    Example:
        >>> loss = content_loss({"conv3": torch.ones(1, 2, 4, 4)})
        >>> float(loss({"conv3": torch.zeros(1, 2, 4, 4)}, None))
        1.0
    """
    targets = _check_maps(targets, "targets")
    norms = {name: _squared_norm(t) for name, t in targets.items()}

    def fn(ctx: Context) -> torch.Tensor:
        return torch.stack([(ctx.act(n) - t).square().sum() / norms[n] for n, t in targets.items()]).mean()

    return Objective(fn, "content", list(targets))


def style_loss(targets: Mapping[str, torch.Tensor],
               weights: Mapping[str, float] | Sequence[float] | None = None) -> Objective:
    """Style loss, 0-d: weighted relative distance between Gram matrices over several layers.

        ``L_style = Σ_l w_l ‖G_l(x) − G_l(s)‖²_F / ‖G_l(s)‖²_F``   (:func:`gram_matrix`)

    Each layer is divided by the squared norm of the style image's Gram matrix,
    so every layer contributes about 1 at an unrelated image whatever the scale
    of its activations (Gatys et al. instead divide by ``4 N_l² M_l²``).

    Args:
        targets: ``{layer name: (1, C, H, W)}`` feature maps of the style image.
        weights: per-layer weights ``w_l``, as a mapping or a sequence in the
            order of ``targets``; default ``1 / number of layers`` each.

    Raises:
        ValueError: weights of the wrong length, unknown names, or negative.
    """
    targets = _check_maps(targets, "targets")
    grams = {name: gram_matrix(t) for name, t in targets.items()}
    norms = {name: _squared_norm(g) for name, g in grams.items()}
    w = layer_weights(list(grams), weights)

    def fn(ctx: Context) -> torch.Tensor:
        losses = [w[n] * (gram_matrix(ctx.act(n)) - g).square().sum() / norms[n] for n, g in grams.items()]
        return torch.stack(losses).sum()

    return Objective(fn, "style", list(targets))


def layer_weights(names: list[str], weights: Mapping[str, float] | Sequence[float] | None,
                  argname: str = "weights") -> dict[str, float]:
    """``{layer: weight}`` from a mapping, a sequence in the order of ``names`` or None (equal, summing to 1)."""
    if weights is None:
        return {n: 1.0 / len(names) for n in names}
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        if unknown:
            raise ValueError(f"{argname} names layers that are not style layers: {sorted(unknown)} (style layers: {names})")
        w = {n: float(weights.get(n, 0.0)) for n in names}
    else:
        try:
            values = [float(v) for v in weights]
        except TypeError as exc:
            raise TypeError(f"{argname} must be a mapping, a sequence of numbers or None") from exc
        if len(values) != len(names):
            raise ValueError(f"{argname} has {len(values)} entries but there are {len(names)} style layers {names}")
        w = dict(zip(names, values))
    if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
        raise ValueError(f"{argname} must be >= 0 with at least one > 0, got {w}")
    return w
