"""Neural style transfer with Gram matrices, on any CNN (Gatys, Ecker & Bethge, CVPR 2016).

Seed 002 explains it: as a CNN gets deeper its feature maps keep an image's
*content* and lose its texture; the correlations between the feature maps of a
layer — the Gram matrix :func:`gram_matrix` — keep its *style*. Starting from the
content image (or noise), :func:`transfer` optimizes the pixels so that

    ``L = α·L_content + β·Σ_l w_l L_style,l + γ·L_tv``

is small: the content loss compares one layer's maps with the content image's,
the style loss compares Gram matrices of several layers with the style image's
(:mod:`cnn_explain.objectives`). Only the image changes; the network is fixed.

Any CNN works: layers are read through :func:`cnn_explain.hooks.capture` by
name. Without a model, :func:`cnn_explain.models.random_texture_net` — random
multi-scale filters, which are known to synthesize natural textures
(Ustyuzhaninov et al., "What does it take to generate natural textures?",
ICLR 2017) — is used, so nothing is downloaded.

Example:
    >>> from cnn_explain.style import transfer
    >>> res = transfer("photo.jpg", "painting.jpg", size=128, steps=50)   # doctest: +SKIP
    >>> final = res.history[-1]                                         # doctest: +SKIP
    >>> res.image.shape, final["total"]                                 # doctest: +SKIP
    (torch.Size([3, 128, 128]), 0.41...)

With VGG-19 weights of your own (layer names of ``torchvision.models.vgg19``;
the model expects ImageNet-normalized inputs)::

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    res = transfer(content, style, model=vgg19,
                   content_layers="features.22",                      # relu4_2
                   style_layers=["features.1", "features.6", "features.11", "features.20", "features.29"],
                   transform=lambda x: (x - mean) / std)
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ..plotting._display import Displayable
from .._utils import model_device, positive_int
from .. import ops
from ..hooks import capture, preserved, resolve_layers
from ..models import RandomTextureNet, random_texture_net
from ..objectives import Context, Objective, content_loss, layer_weights, style_loss, total_variation
from ..optimize import OptimizeSettings, Optimizer, optimize_image
from ._forward import Forward, target_maps
from .images import Size, fit, load_rgb, warn_if_sizes_differ, working_size

__all__ = ["transfer", "StyleResult", "StyleSettings", "Init", "layer_features", "DEFAULTS"]

#: The defaults of :func:`transfer`'s numeric options, read-only (a command line reads its defaults here).
#: ``DEFAULTS["lr"]`` maps each optimizer (``"lbfgs"``, ``"adam"``) to its default learning rate.
DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "content_weight": 1.0, "style_weight": 1000.0, "tv_weight": 1.0, "steps": 30,
    "lr": MappingProxyType({"lbfgs": 1.0, "adam": 0.02}),
})


class Init(str, enum.Enum):
    """Where the optimized image starts."""

    CONTENT = "content"  # the content image itself
    NOISE = "noise"  # uniform noise in [0, 1] from a private generator


@dataclass(frozen=True)
class StyleSettings:
    """The checked arguments of one :func:`transfer` (``StyleResult.settings`` is this as a dict).

    Attributes:
        model_name: the model's class name.
        content_layers, style_layers: resolved layer names.
        style_weights: ``{style layer: w_l}``.
        content_weight, style_weight, tv_weight: ``α``, ``β``, ``γ``.
        steps, optimizer, lr: the optimization (:class:`cnn_explain.optimize.OptimizeSettings`).
        size: the ``size`` argument (the result holds the working ``(H, W)``).
        init: :class:`Init`.
        seed: seed of the noise initialization.
    """

    model_name: str
    content_layers: list[str]
    style_layers: list[str]
    style_weights: dict[str, float]
    content_weight: float
    style_weight: float
    tv_weight: float
    steps: int
    optimizer: Optimizer
    lr: float
    size: Size
    init: Init
    seed: int

    @property
    def optim(self) -> OptimizeSettings:
        return OptimizeSettings(steps=self.steps, optimizer=self.optimizer, lr=self.lr)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (enums as their strings), as stored in :attr:`StyleResult.settings`."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v.value if isinstance(v, enum.Enum) else v for k, v in d.items()}


@dataclass(frozen=True)
class StyleResult(Displayable):
    """What :func:`transfer` made.

    Attributes:
        image: ``(3, H, W)`` CPU tensor in ``[0, 1]``, the stylized image.
        history: one dict per optimizer step with the loss at the image that step
            started from: ``"total"`` (weighted sum) and the unweighted,
            normalized ``"content"``, ``"style"`` and ``"tv"`` terms.
        settings: the arguments that made it (layer names, weights, steps, ...).
        seconds: wall time of the optimization.
        setup_seconds: wall time of the target forwards (content maps, style Grams)
            before the first step; ``setup_seconds + seconds`` of a one-step run
            is the time to the first result.
        evaluations: loss-and-gradient evaluations (L-BFGS's line search may
            take more than one per step; Adam takes exactly one).
        content: ``(3, H, W)`` the content image as used (resized, RGB).
        style: ``(3, H, W)`` the style image as used.
        style_drop: how much closer the result's style is to the style image than
            the content image's own: ``L_style(content) / L_style(result)`` with
            the unweighted Gram loss of the style layers (``>= 10``: the style
            is plainly visible; ``~1``: the result is the content photo).
    """

    image: torch.Tensor
    history: list[dict[str, float]]
    settings: dict[str, Any]
    seconds: float
    evaluations: int = 0
    content: torch.Tensor = field(repr=False, default=None)
    style: torch.Tensor = field(repr=False, default=None)
    style_drop: float = float("nan")
    setup_seconds: float = 0.0


def transfer(
    content: Any,
    style: Any,
    *,
    model: nn.Module | None = None,
    content_layers: str | Sequence[str] | None = None,
    style_layers: str | Sequence[str] | None = None,
    style_weights: Mapping[str, float] | Sequence[float] | None = None,
    content_weight: float = DEFAULTS["content_weight"],
    style_weight: float = DEFAULTS["style_weight"],
    tv_weight: float = DEFAULTS["tv_weight"],
    steps: int = DEFAULTS["steps"],
    optimizer: str = "lbfgs",
    lr: float | None = None,
    size: Size = 256,
    init: str = "content",
    seed: int = 0,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> StyleResult:
    """Paint ``content`` in the style of ``style`` by optimizing the image's pixels.

    Minimizes ``content_weight·L_content + style_weight·L_style + tv_weight·L_tv``
    (see :func:`content_loss`, :func:`style_loss`, :func:`total_variation`) over
    the image's pixels, with ``torch.autograd.grad`` with respect to the image
    only. As in Gatys et al. the pixels are free during the optimization
    (clamping inside the loop breaks L-BFGS's curvature estimates and makes it
    diverge); the result is clamped to ``[0, 1]``.

    Args:
        content: the content image: a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in
            ``[0, 1]``, a PIL image, an ``(H, W[, C])`` array or a file path.
            Grayscale is repeated to RGB, RGBA loses its alpha channel.
        style: the style image, same forms.
        model: any CNN; default :func:`cnn_explain.models.random_texture_net`.
        content_layers: layer name(s) whose maps must match the content image
            (default for the random net: ``"relu3"``; for another CNN the convolution
            at 60 % of its depth, as VGG-19's ``conv4_2`` is for Gatys et al.).
        style_layers: layer names whose Gram matrices must match the style image
            (default for the random net: every ``"relu{k}"``; for another CNN five
            convolutions spread from the first to the last, like ``conv1_1 … conv5_1``).
        style_weights: per-style-layer weights (mapping or sequence); default equal, summing to 1.
        content_weight, style_weight, tv_weight: ``α``, ``β``, ``γ`` above.
        steps: optimizer steps; one step is one evaluation of the loss and its gradient.
        optimizer: ``"lbfgs"`` (``torch.optim.LBFGS``, one iteration per step)
            or ``"adam"``.
        lr: learning rate; default 1.0 for L-BFGS, 0.02 for Adam.
        size: working size: an int ``s`` gives ``s×s`` (each image is
            centre-cropped to a square, then resized), ``(H, W)`` gives that
            size, ``None`` keeps the content image's size. Content and style
            images of different sizes are both resized (with a ``UserWarning``).
        init: start from the ``"content"`` image or from uniform ``"noise"``.
        seed: seed of the noise initialization (a private ``torch.Generator``;
            the global random state is not touched).
        transform: applied to the ``[0, 1]`` image batch before the model, e.g.
            ImageNet normalization for a pretrained VGG.
        progress: show a progress bar.

    Returns:
        A :class:`StyleResult`; ``len(result.history) == steps``.

    Raises:
        ValueError: unknown layer names (close names are suggested), a path
            that does not open, bad sizes, weights, steps or option names.
        TypeError: inputs of the wrong type.
    """
    net = _model(model)
    cfg = _settings(net, content_layers=content_layers, style_layers=style_layers, style_weights=style_weights,
                    content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight, steps=steps,
                    optimizer=optimizer, lr=lr, size=size, init=init, seed=seed)
    c_img, s_img = load_rgb(content, "content"), load_rgb(style, "style")
    hw = working_size(size, c_img)
    warn_if_sizes_differ(c_img, s_img, hw)
    c_img, s_img = fit(c_img, hw), fit(s_img, hw)
    device = model_device(net)
    pre = transform if transform is not None else (lambda x: x)
    layers = list(dict.fromkeys(cfg.content_layers + cfg.style_layers))
    with preserved(net, eval=True, freeze=True, rng=True), torch.enable_grad():
        forward = Forward(net, layers, pre)
        setup = time.perf_counter()
        image = _init(c_img, cfg).to(device).requires_grad_(True)
        if cfg.init is Init.CONTENT:
            # the first step's forward runs on the content image itself: its maps are the content targets
            first = forward.prime(image)
            c_maps = {n: first[n].detach() for n in cfg.content_layers}
        else:
            c_maps = target_maps(forward, c_img.to(device), cfg.content_layers)
        s_maps = target_maps(forward, s_img.to(device), cfg.style_layers)
        style_term = style_loss(s_maps, cfg.style_weights)
        objective = (cfg.content_weight * content_loss(c_maps)
                     + cfg.style_weight * style_term
                     + cfg.tv_weight * total_variation(norm="squared"))
        del c_maps, s_maps
        start = time.perf_counter()
        setup = start - setup
        history, evaluations = _optimize(forward, objective, image, cfg, progress)
        seconds = time.perf_counter() - start
        image = image.detach().clamp(0, 1)
        # style_drop: the Gram loss of the content image (the first step's, when it started there) and of the result
        before = (history[0]["style"] if cfg.init is Init.CONTENT
                  else float(style_term(target_maps(forward, c_img.to(device), cfg.style_layers), c_img)))
        after = float(style_term(target_maps(forward, image, cfg.style_layers), image))
        drop = before / after if after > 0 else float("inf")
    settings = {**cfg.as_dict(), "size": hw}
    return StyleResult(image[0].detach().cpu(), history, settings, seconds, evaluations, c_img[0], s_img[0], drop, setup)


def _init(content: torch.Tensor, cfg: StyleSettings) -> torch.Tensor:
    if cfg.init is Init.CONTENT:
        return content.clone()
    g = torch.Generator().manual_seed(cfg.seed)
    return torch.rand(content.shape, generator=g)


def _optimize(forward: Forward, objective: Objective, image: torch.Tensor, cfg: StyleSettings,
              progress: bool) -> tuple[list[dict[str, float]], int]:
    """Run ``cfg.steps`` optimizer steps on the pixels of the leaf ``image`` (changed in place).

    Returns (history, number of loss evaluations).
    """

    def loss() -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = objective.terms(Context(forward(image), image))
        return total, {"total": float(total.detach().sum()), **parts}

    trace = optimize_image(image, loss, cfg.optim, progress=progress, desc="style transfer",
                           postfix=lambda rec: {"loss": f"{rec['total']:.4g}"})
    return trace.history, trace.evaluations


def _model(model: nn.Module | None) -> nn.Module:
    if model is None:
        return random_texture_net()  # built without drawing from the global random state
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    return model


def _settings(model, *, content_layers, style_layers, style_weights, content_weight, style_weight,
              tv_weight, steps, optimizer, lr, size, init, seed) -> StyleSettings:
    default_c, default_s = _default_layers(model, RandomTextureNet)
    c_names = _layer_names(model, content_layers, default_c, "content_layers")
    s_names = _layer_names(model, style_layers, default_s, "style_layers")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    lr = DEFAULTS["lr"][optimizer] if lr is None else _nonneg(lr, "lr")
    if lr == 0:
        raise ValueError("lr must be > 0")
    return StyleSettings(
        model_name=type(model).__name__, content_layers=c_names, style_layers=s_names,
        style_weights=layer_weights(s_names, style_weights, "style_weights"),
        content_weight=_nonneg(content_weight, "content_weight"), style_weight=_nonneg(style_weight, "style_weight"),
        tv_weight=_nonneg(tv_weight, "tv_weight"), steps=positive_int(steps, "steps"),
        optimizer=Optimizer(optimizer), lr=lr, size=size, init=Init(init), seed=positive_int(seed, "seed", minimum=0),
    )


def _default_layers(model: nn.Module, texture_cls: type) -> tuple[list[str] | None, list[str] | None]:
    """The texture net's own layers; for any other CNN, Gatys et al.'s choice transposed to its convolutions.

    VGG-19's ``conv1_1 … conv5_1`` (style) and ``conv4_2`` (content) are the first
    convolution of each of five depths and one at ~60 % of the depth; here: five
    convolutions spread evenly from the first to the last, and the one at 60 %.
    """
    if isinstance(model, texture_cls):
        return model.content_layers, model.style_layers
    convs = [n for n, m in model.named_modules() if ops.category(m) is ops.Category.CONV]
    if not convs:
        return None, None
    picks = sorted({round(i * (len(convs) - 1) / 4) for i in range(5)})
    return [convs[round(0.6 * (len(convs) - 1))]], [convs[i] for i in picks]


def _layer_names(model: nn.Module, spec, default: list[str] | None, argname: str) -> list[str]:
    if spec is None:
        if default is None:
            sample = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ReLU))][:8]
            raise ValueError(
                f"{argname} is required for a model other than random_texture_net(): name its layers, "
                f"e.g. {sample} (for VGG-19: content 'features.22', style 'features.1', 'features.6', ...)"
            )
        spec = default
    return list(resolve_layers(model, spec, argname=argname))


def _nonneg(value: Any, argname: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argname} must be a number, got {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{argname} must be a finite number >= 0, got {value}")
    return float(value)


def layer_features(model: nn.Module, image: Any, layers: str | Sequence[str], *,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Feature maps ``{name: (1, C, H, W)}`` of one image (any accepted form) at the given layers.

    Handy to compare Gram matrices before and after a transfer:
    ``gram_matrix(layer_features(net, res.image, "relu5")["relu5"])``.
    """
    names = list(resolve_layers(model, layers, argname="layers"))
    x = load_rgb(image, "image").to(model_device(model))
    pre = transform if transform is not None else (lambda t: t)
    with preserved(model, eval=True, freeze=True, rng=True), torch.no_grad():
        with capture(model, names) as rec:
            model(pre(x))
        return {n: rec[n].cpu() for n in names}
