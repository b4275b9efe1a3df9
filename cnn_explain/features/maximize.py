"""Activation maximization: images that make a channel fire (Erhan et al. 2009; Olah et al. 2017).

Starting from faint noise, gradient ascent changes an image ``x`` to raise an
objective, by default the mean activation of channel ``k`` of a layer::

    x* = argmax_x  mean_{h,w} a_k(x)[h, w]  − tv·TV(x) − l2·‖x − 0.5‖²

The image is parameterized in Fourier space with decorrelated colours (or as plain
pixels) and randomly jittered, scaled and rotated at every step; see
:mod:`cnn_explain.features.param`. Objectives compose
(:mod:`cnn_explain.objectives`)::

    maximize(model, "conv3", [5], objective=channel("conv3") - 1e-3 * total_variation())

All requested channels are optimized **together as one batch**: image ``i``
maximizes channel ``channels[i]``, the loss is the sum of the per-image
objectives, and each step is one forward and one backward for the whole layer.
Each image has its own random generator seeded from ``(seed, channel)``, so the
result for a channel is the same whether it is optimized alone or in a batch (up
to float rounding of batched convolutions). The model is frozen and in eval mode
during the run, and comes back unchanged; gradients are taken with
``torch.autograd.grad`` with respect to the image parameters only.

Default ``input_shape``: the first conv layer's ``in_channels`` and the first
size among 64×64, 32×32, 224×224, 28×28 (28×28 first for one-channel models) at
which the model runs — pass ``input_shape`` for anything else.

Example:
    >>> from cnn_explain.models import tiny_vgg
    >>> r = maximize(tiny_vgg(), "features.2", [0, 3], steps=8, progress=False)
    >>> tuple(r.images.shape), r.channels
    ((2, 3, 64, 64), (0, 3))
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..plotting._display import Displayable
from .. import objectives as obj
from .._utils import model_device, model_dtype, positive_int
from ..roles import first_conv_module as first_conv
from ..hooks import LayerSpec, _check_model, capture, preserved, resolve_layer, select_output
from ..optimize import OptimizeSettings, Optimizer, optimize_image
from . import param as prm

__all__ = ["MaximizeResult", "maximize"]


@dataclass(frozen=True)
class MaximizeResult(Displayable):
    """Images that maximize channels of one layer.

    Attributes:
        images: ``(len(channels), C, H, W)`` in the model's input space (after
            ``(pixels − mean) / std`` when ``mean``/``std`` were given), in the order requested.
        pixels: the same images in ``[0, 1]`` (for display).
        layer: the layer's name.
        channels: the channel each image maximizes.
        history: ``(steps, len(channels))`` the objective of each image at each step.
        settings: the arguments of the run.
    """

    images: torch.Tensor
    pixels: torch.Tensor
    layer: str
    channels: tuple[int, ...]
    history: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)


def maximize(model: nn.Module, layer: LayerSpec, channels: int | Sequence[int] | None = None, *, steps: int = 256,
             seed: int = 0, input_shape: Sequence[int] | None = None, objective: obj.Objective | None = None,
             param: str = "fourier", lr: float = 0.05, transforms: Sequence[prm.Transform] | None = None,
             tv: float = 0.0, l2: float = 0.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             decorrelate: bool = True, progress: bool = True, batch_size: int | None = None) -> MaximizeResult:
    """Optimize one image per channel of ``layer`` to maximize it.

    Args:
        model: the network (frozen, eval mode during the run; restored after).
        layer: the layer whose channels are maximized (name, module, glob, type).
        channels: channel indices (units for a ``(N, F)`` output such as a Linear
            layer's logits); None for all channels of the layer.
        steps: optimization steps (``torch.optim.Adam``, see :func:`cnn_explain.optimize.optimize_image`).
        seed: seeds each image's generator together with its channel.
        input_shape: ``(C, H, W)`` of the optimized images (default: see module docs).
        objective: an :class:`~cnn_explain.objectives.Objective` evaluated
            per image; default ``channel(layer)`` (each image its own channel's mean).
        param: ``"fourier"`` (spectral, decorrelated colour) or ``"pixel"``.
        lr: Adam learning rate.
        transforms: random transforms per step; None for
            :func:`~cnn_explain.features.param.default_transforms`, ``()`` for none.
        tv, l2: weights of :func:`~cnn_explain.objectives.total_variation`
            and :func:`~cnn_explain.objectives.l2`, subtracted from the objective.
        mean, std: per-channel normalization the model expects; images are
            ``(pixels − mean) / std``.
        decorrelate: decorrelate RGB colours (ignored for other channel counts).
        progress: show a progress bar.
        batch_size: optimize at most this many channels at a time (same result).

    Returns:
        A :class:`MaximizeResult`.

    Raises:
        ValueError: a channel outside the layer, bad ``param``/``steps``/``lr``,
            or no input size at which the model runs.
    """
    _check_model(model)
    name, _ = resolve_layer(model, layer)
    steps = positive_int(steps, "steps", minimum=0)
    if param not in ("fourier", "pixel"):
        raise ValueError(f"param must be 'fourier' or 'pixel', got {param!r}")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    shape, out_shape = _probe(model, name, input_shape)
    chans = _channels(channels, out_shape, name)
    batch = len(chans) if batch_size is None else positive_int(batch_size, "batch_size")
    transforms = prm.default_transforms() if transforms is None else tuple(transforms)
    objective = obj.channel(name) if objective is None else objective
    if not isinstance(objective, obj.Objective):
        raise TypeError(f"objective must be an Objective (see cnn_explain.objectives), got {type(objective).__name__}")
    if tv:
        objective = objective - tv * obj.total_variation(norm="l1")
    if l2:
        objective = objective - l2 * obj.l2()
    names = {obj.spec_key(s): resolve_layer(model, s, argname="objective")[0] for s in objective.layers}
    mean_t, std_t = _norm(mean, shape[0], "mean", 0.0), _norm(std, shape[0], "std", 1.0)
    run = _Run(model=model, shape=shape, seed=seed, objective=objective, names=names, param=param,
               transforms=transforms, mean=mean_t, std=std_t, decorrelate=decorrelate,
               optim=OptimizeSettings(steps=steps, optimizer=Optimizer.ADAM, lr=float(lr)))
    pixels, history = [], []
    with preserved(model, eval=True, freeze=True):
        for start in range(0, len(chans), batch):
            rows = list(range(start, min(start + batch, len(chans))))
            p, h = _optimize(run, rows, [chans[r] for r in rows], progress, f"maximize {name}")
            pixels.append(p)
            history.append(h)
    pixels_t = torch.cat(pixels)
    images = (pixels_t - mean_t.view(1, -1, 1, 1).cpu()) / std_t.view(1, -1, 1, 1).cpu()
    settings = dict(steps=steps, seed=seed, input_shape=tuple(shape), objective=repr(objective), param=param, lr=lr,
                    transforms=transforms, tv=tv, l2=l2, mean=mean, std=std, decorrelate=decorrelate,
                    batch_size=batch_size)
    return MaximizeResult(images=images, pixels=pixels_t, layer=name, channels=tuple(chans),
                          history=torch.cat(history, dim=1), settings=settings)


# --------------------------------------------------------------------------- helpers
def _norm(values: Sequence[float] | None, c: int, argname: str, default: float) -> torch.Tensor:
    if values is None:
        return torch.full((c,), default)
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(c).clone()
    if t.numel() != c or (argname == "std" and (t <= 0).any()):
        raise ValueError(f"{argname} must give {c} {'positive ' if argname == 'std' else ''}values, got {values!r}")
    return t


def _candidates(model: nn.Module) -> list[tuple[int, int, int]]:
    conv = first_conv(model)
    if conv is None:
        raise ValueError("the model has no conv layer to infer input_shape from; pass input_shape=(C, H, W)")
    c = conv.in_channels
    sizes = (28, 64, 32, 224) if c == 1 else (64, 32, 224, 28)
    return [(c, s, s) for s in sizes]


def _probe(model: nn.Module, name: str, input_shape: Sequence[int] | None):
    """Find (or check) the input shape; return it and the layer's output shape for one image."""
    if input_shape is not None:
        if len(input_shape) != 3 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in input_shape):
            raise ValueError(f"input_shape must be (C, H, W) positive integers, got {input_shape!r}")
        candidates = [tuple(int(v) for v in input_shape)]
    else:
        candidates = _candidates(model)
    errors = []
    for shape in candidates:
        x = torch.zeros((1, *shape), device=model_device(model), dtype=model_dtype(model))
        try:
            # the whole forward (no stop=True): a shape is right when the classifier accepts it too
            with preserved(model, eval=True), capture(model, name) as rec, torch.inference_mode():
                model(x)
        except RuntimeError as exc:
            if input_shape is not None:
                raise ValueError(f"the model does not run on input_shape={tuple(input_shape)}: {exc}") from exc
            errors.append(f"{shape}: {str(exc).splitlines()[0]}")
            continue
        if name not in rec:
            raise ValueError(f"layer {name!r} was not called in the model's forward")
        return shape, tuple(rec.tensor(name).shape[1:])  # a tuple/dataclass output: refused, naming a selector
    raise ValueError("could not infer input_shape (tried " + "; ".join(errors) + "); pass input_shape=(C, H, W)")


def _channels(channels: Any, out_shape: tuple[int, ...], name: str) -> list[int]:
    if not out_shape:
        raise ValueError(f"layer {name!r} outputs one value per image; it has no channels to maximize")
    n = out_shape[0]
    if channels is None:
        return list(range(n))
    try:
        items = [channels] if isinstance(channels, numbers.Integral) else list(channels)
    except TypeError:
        raise TypeError(f"channels must be an int, a sequence of ints or None, got {type(channels).__name__}") from None
    if not items:
        raise ValueError("channels is empty; give at least one channel")
    for c in items:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise TypeError(f"channels must be integers, got {type(c).__name__}")
        if not 0 <= c < n:
            raise ValueError(f"channels: {c} is outside layer {name!r}'s channels, valid range 0..{n - 1}")
    return [int(c) for c in items]


@dataclass(frozen=True)
class _Run:
    """The checked settings of one :func:`maximize` call (shared by its batches)."""

    model: nn.Module
    shape: tuple[int, int, int]
    seed: int
    objective: obj.Objective
    names: dict[Any, str]
    param: str
    transforms: tuple[prm.Transform, ...]
    mean: torch.Tensor
    std: torch.Tensor
    decorrelate: bool
    optim: OptimizeSettings


def _evaluate(model, x, pixels, objective, names, *, channels, rows) -> torch.Tensor:
    """One forward of the batch; the objective's ``(B,)`` values, attached to the graph."""
    layers = sorted(set(names.values()))
    # a new capture per step keeps the recorded names plain (no name#k for repeated forwards)
    # without logits in the objective the forward ends after the last layer it reads (stop=True)
    out = None
    with (capture(model, layers, grads=True, stop=not objective.needs_logits) if layers
          else contextlib.nullcontext()) as rec:
        out = model(x)
    logits = select_output(out).reshape(x.shape[0], -1) if objective.needs_logits else None
    acts = {n: rec.live(n) for n in layers}
    values = objective(obj.Context(acts, pixels, names, logits, channels, rows))
    if not isinstance(values, torch.Tensor) or values.shape != (x.shape[0],):
        raise ValueError(f"the objective must give one value per image, shape ({x.shape[0]},); "
                         f"got {getattr(values, 'shape', type(values).__name__)}")
    return values


def _optimize(run: _Run, rows: list[int], chans: list[int], progress: bool, desc: str):
    """Optimize one batch of images together; returns ((B, C, H, W) pixels, (steps, B) history)."""
    device = model_device(run.model)
    gens = prm.image_generators(run.seed, chans)
    make = prm.fourier_image if run.param == "fourier" else prm.pixel_image
    params, to_image = make(run.shape, gens, decorrelate=run.decorrelate, device=device)
    mean, std = run.mean.to(device).view(1, -1, 1, 1), run.std.to(device).view(1, -1, 1, 1)
    chan_t, rows_t = torch.tensor(chans, device=device), torch.tensor(rows, device=device)

    def loss() -> tuple[torch.Tensor, torch.Tensor]:
        pixels = to_image()
        x = ((prm.apply_transforms(pixels, run.transforms, gens) - mean) / std).to(model_dtype(run.model))
        values = _evaluate(run.model, x, pixels, run.objective, run.names, channels=chan_t, rows=rows_t)
        return -values, values.detach().cpu()  # maximize the objective: minimize its negative

    trace = optimize_image(params, loss, run.optim, progress=progress, desc=desc)
    with torch.no_grad():
        final = to_image().detach().cpu()
    hist = torch.stack(trace.history) if trace.history else torch.zeros(0, len(chans))
    return final, hist
