"""Gram matrices and the composable losses of neural style transfer.

Gatys, Ecker & Bethge ("Image Style Transfer Using Convolutional Neural
Networks", CVPR 2016) describe an image by a CNN's feature maps: the maps of a
deep layer keep its *content*; the correlations between the maps of a layer —
the Gram matrix — keep its *style* (textures and colours, without where they
are). Style transfer optimizes an image so that its content matches one image
and its Gram matrices match another's.

Every loss here is an :class:`Objective`: a scalar function of the captured
feature maps ``{layer name: (N, C, H, W)}`` and of the image being optimized.
Objectives compose with ``+``, ``-`` and ``*``/``/`` by numbers (the idea of
lucent's ``Objective``)::

    loss = content_loss(content_maps) + 1e3 * style_loss(style_maps) + 10 * total_variation()
    total, parts = loss.terms(feats, image)      # parts == {"content": .., "style": .., "tv": ..}

Each loss is *normalized* so that it is about 1 when the image is unrelated to
its target, whatever the network: the raw Gram losses of a random-weight network
are around 1e-5, small enough that L-BFGS would stop on its default tolerances
after a single evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Real

import torch

__all__ = ["gram_matrix", "Objective", "content_loss", "style_loss", "total_variation"]

Feats = Mapping[str, torch.Tensor]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of each image's feature maps, normalized by ``C·H·W``.

    With ``F`` the ``(C, H·W)`` matrix of one image's maps (one row per channel),

        ``G = F · Fᵀ / (C · H · W)``,  i.e.  ``G[i, j] = Σ_p F[i, p] F[j, p] / (C·H·W)``.

    ``G[i, j]`` is the (scaled) correlation of channels ``i`` and ``j`` summed
    over every position: it says which features occur together, not where.
    ``G`` is symmetric and positive semi-definite.

    Args:
        features: ``(N, C, H, W)`` feature maps.

    Returns:
        ``(N, C, C)`` Gram matrices, one per image (differentiable).

    Raises:
        TypeError: ``features`` is not a tensor.
        ValueError: it is not 4-D.

    Example:
        >>> g = gram_matrix(torch.ones(1, 2, 3, 3))
        >>> g[0]                      # each entry: 9 products of 1·1, divided by C·H·W = 18
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a tensor (N, C, H, W), got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W); got shape {tuple(features.shape)}")
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class Objective:
    """A scalar loss of the feature maps and the image, composable with ``+ - * /``.

    Args:
        fn: ``fn(feats, image) -> 0-d tensor`` where ``feats`` maps layer names
            to ``(N, C, H, W)`` maps and ``image`` is the ``(N, 3, H, W)`` image.
        name: the key of this term in :meth:`terms` (``"content"``, ``"style"``...).
        layers: the layer names ``fn`` reads.

    Combinations (``a + b``, ``2 * a``, ``a - 0.1 * b``) are Objectives whose
    :attr:`layers` is the union of their parts'. Each leaf is evaluated once per
    call, even when it appears several times.
    """

    def __init__(self, fn: Callable[[Feats, torch.Tensor], torch.Tensor], name: str, layers: Sequence[str] = ()) -> None:
        self._fn = fn
        self.name = name
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self._leaves: tuple[Objective, ...] = (self,)
        self._combine: Callable[[dict[int, torch.Tensor]], torch.Tensor] | None = None

    @classmethod
    def _composite(cls, parts: Sequence["Objective"], combine, name: str) -> "Objective":
        obj = cls(lambda feats, image: torch.zeros(()), name, [layer for p in parts for layer in p.layers])
        leaves = {id(leaf): leaf for p in parts for leaf in p._leaves}
        obj._leaves = tuple(leaves.values())
        obj._combine = combine
        return obj

    def _value(self, cache: dict[int, torch.Tensor]) -> torch.Tensor:
        return cache[id(self)] if self._combine is None else self._combine(cache)

    def _evaluate(self, feats: Feats, image: torch.Tensor) -> dict[int, torch.Tensor]:
        return {id(leaf): leaf._fn(feats, image) for leaf in self._leaves}

    def __call__(self, feats: Feats, image: torch.Tensor) -> torch.Tensor:
        """The loss value, a 0-d tensor attached to the graph."""
        return self._value(self._evaluate(feats, image))

    def terms(self, feats: Feats, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``(total, {leaf name: unweighted value})``; leaves sharing a name are summed."""
        cache = self._evaluate(feats, image)
        parts: dict[str, float] = {}
        for leaf in self._leaves:
            parts[leaf.name] = parts.get(leaf.name, 0.0) + float(cache[id(leaf)].detach())
        return self._value(cache), parts

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: "Objective | float") -> "Objective":
        if isinstance(other, Real):
            return Objective._composite([self], lambda c: self._value(c) + float(other), f"{self.name} + {other}")
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective._composite([self, other], lambda c: self._value(c) + other._value(c), f"{self.name} + {other.name}")

    __radd__ = __add__  # sum([...]) starts from 0

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, Real):
            return NotImplemented
        return Objective._composite([self], lambda c: float(k) * self._value(c), f"{k} * {self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return -1.0 * self

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-other)

    def __rsub__(self, other: float) -> "Objective":
        return (-self) + other

    def __truediv__(self, k: float) -> "Objective":
        if not isinstance(k, Real):
            return NotImplemented
        return self * (1.0 / float(k))

    def __repr__(self) -> str:
        return f"Objective({self.name!r}, layers={list(self.layers)})"


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
    """Content loss: relative squared distance to target feature maps, averaged over layers.

        ``L_content = (1/|layers|) Σ_l ‖F_l(x) − F_l(c)‖² / ‖F_l(c)‖²``

    Gatys et al. use one layer (``conv4_2`` of VGG-19). The value is 0 at the
    content image and about 1 for an unrelated image.

    Args:
        targets: ``{layer name: (1, C, H, W)}`` maps of the content image.

    Example:
        >>> loss = content_loss({"conv3": torch.ones(1, 2, 4, 4)})
        >>> float(loss({"conv3": torch.zeros(1, 2, 4, 4)}, image=None))
        1.0
    """
    targets = _check_maps(targets, "targets")
    norms = {name: _squared_norm(t) for name, t in targets.items()}

    def fn(feats: Feats, image: torch.Tensor) -> torch.Tensor:
        losses = [(feats[n] - t).square().sum() / norms[n] for n, t in targets.items()]
        return torch.stack(losses).mean()

    return Objective(fn, "content", list(targets))


def style_loss(targets: Mapping[str, torch.Tensor], weights: Mapping[str, float] | Sequence[float] | None = None) -> Objective:
    """Style loss: weighted relative distance between Gram matrices over several layers.

        ``L_style = Σ_l w_l ‖G_l(x) − G_l(s)‖²_F / ‖G_l(s)‖²_F``   (:func:`gram_matrix`)

    Each layer is divided by the squared norm of the style image's Gram matrix,
    so every layer contributes about 1 at an unrelated image whatever the scale
    of its activations (Gatys et al. instead divide by ``4 N_l² M_l²``).

    Args:
        targets: ``{layer name: (1, C, H, W)}`` feature maps of the style image
            (their Gram matrices are computed here).
        weights: per-layer weights ``w_l``, as a mapping or a sequence in the
            order of ``targets``; default ``1 / number of layers`` each.

    Raises:
        ValueError: weights of the wrong length, unknown names, or negative.
    """
    targets = _check_maps(targets, "targets")
    grams = {name: gram_matrix(t) for name, t in targets.items()}
    norms = {name: _squared_norm(g) for name, g in grams.items()}
    w = _layer_weights(list(grams), weights)

    def fn(feats: Feats, image: torch.Tensor) -> torch.Tensor:
        losses = [w[n] * (gram_matrix(feats[n]) - g).square().sum() / norms[n] for n, g in grams.items()]
        return torch.stack(losses).sum()

    return Objective(fn, "style", list(targets))


def _layer_weights(names: list[str], weights, argname: str = "weights") -> dict[str, float]:
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


def total_variation() -> Objective:
    """Total-variation smoothness loss: mean squared difference of neighbouring pixels.

        ``L_tv = mean((x[:, :, i+1, j] − x[:, :, i, j])²) + mean((x[:, :, i, j+1] − x[:, :, i, j])²)``

    It discourages the high-frequency noise optimization tends to create
    (Mahendran & Vedaldi, CVPR 2015).

    Example:
        >>> float(total_variation()({}, torch.tensor([[[[0., 1.], [0., 1.]]]])))
        1.0
    """

    def fn(feats: Feats, image: torch.Tensor) -> torch.Tensor:
        dh = (image[:, :, 1:, :] - image[:, :, :-1, :]).square().mean()
        dw = (image[:, :, :, 1:] - image[:, :, :, :-1]).square().mean()
        return dh + dw

    return Objective(fn, "tv", ())
