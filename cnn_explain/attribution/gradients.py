r"""Gradient saliency: vanilla gradient, guided backprop, deconvnet, SmoothGrad.

For a class score $S_c(x)$ (the logit of class $c$) the saliency map is built
from its gradient with respect to the input pixels (Simonyan et al. 2014,
"Deep Inside Convolutional Networks"):

$$ M_c(x) = \left| \frac{\partial S_c}{\partial x} \right| $$

The methods differ only in the backward pass through each ReLU $y = \max(x, 0)$,
for an incoming gradient $g$:

| method     | backward through ReLU       | paper                     |
|------------|-----------------------------|---------------------------|
| `gradient` | $g \cdot [x > 0]$           | Simonyan et al. 2014      |
| `guided`   | $\max(g, 0) \cdot [x > 0]$  | Springenberg et al. 2015  |
| `deconv`   | $\max(g, 0)$                | Zeiler & Fergus 2014      |

SmoothGrad (Smilkov et al. 2017) averages the maps of $n$ noisy copies,
$\hat M_c(x) = \frac1n \sum_{j=1}^{n} M_c(x + \sigma z_j)$, $z_j \sim \mathcal N(0, I)$,
with $\sigma$ = `noise` × (max − min) of each image.

Guided backprop and deconvnet rectify **every** ReLU call of the forward pass —
`nn.ReLU` modules (in place or not, reused), `F.relu`, `torch.relu`,
`x.relu_()`, an `nn.ReLU()` created inside `forward` — by intercepting the
calls (see `cnn_explain.attribution._relu`); the count is in
`result.relu_calls`. captum rectifies registered `nn.ReLU` modules only.

Example:
    >>> from cnn_explain.models import tiny_vgg
    >>> from cnn_explain.attribution import saliency
    >>> r = saliency(tiny_vgg().eval(), torch.rand(2, 3, 16, 16), method="guided")
    >>> r.attribution.shape, r.relu_calls
    (torch.Size([2, 3, 16, 16]), 4)
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._utils import forward_logits, model_input, positive_int, progress_bar, resolve_target
from ..hooks import preserved
from ._relu import RectifyReLU
from .result import Attribution

__all__ = ["saliency", "Saliency", "METHODS", "input_gradient"]

METHODS = ("gradient", "guided", "deconv")


@dataclass(frozen=True, eq=False)
class Saliency(Attribution):
    """A gradient saliency result (see `~cnn_explain.attribution.result.Attribution`).

    Attributes:
        relu_calls: ReLU calls rectified in one forward pass (0 for ``"gradient"``).
        other_activations: non-ReLU activations seen, for which guided backprop
            and deconvnet are not defined (their gradient passes unchanged).
    """

    relu_calls: int = 0
    other_activations: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Pass:
    grad: torch.Tensor
    target: torch.Tensor
    relu_calls: int
    others: frozenset[str]


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def input_gradient(model: nn.Module, x: torch.Tensor, target: Any, method: str = "gradient",
                   output: Any = None) -> _Pass:
    """One forward and one backward pass: ``d S_target / d x`` for the whole batch.

    The caller must have frozen the model (``preserved(model, freeze=True)``).
    ``x`` is not modified: the model runs on a copy (so in-place operations on
    the input are allowed). With ``method`` ``"guided"``/``"deconv"`` every ReLU
    call of the forward is rectified.

    Returns:
        ``_Pass`` with ``grad`` ``(N, C, H, W)`` (same device as ``x``), ``target``
        ``(N,)``, the number of rectified ReLU calls and other activations seen.
    """
    mode = RectifyReLU(method) if method != "gradient" else contextlib.nullcontext()
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)  # a normal tensor even if x is an inference tensor
        with mode:
            logits = forward_logits(model, leaf.clone(), output)
        tgt = resolve_target(target, logits).clone()  # never an inference tensor
        score = logits.gather(1, tgt.to(logits.device)[:, None]).sum()
        if not score.requires_grad:
            raise ValueError("the model's output does not depend on x through differentiable operations")
        (grad,) = torch.autograd.grad(score, leaf)
    calls = mode.calls if isinstance(mode, RectifyReLU) else 0
    others = frozenset(mode.others) if isinstance(mode, RectifyReLU) else frozenset()
    return _Pass(grad.detach(), tgt, calls, others)


def smooth_noise(x: torch.Tensor, samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothGrad's noise: ``(z, sigma)`` with ``z`` ``(samples, C, H, W)`` and ``sigma`` ``(N, 1, 1, 1)``.

    Sample ``j`` of image ``i`` is ``x[i] + sigma[i] * z[j]``: every image uses the
    same ``samples`` standard-normal patterns (drawn from a private generator
    seeded with ``seed``; torch's global RNG is not used), so an image's map does
    not depend on the other images of the batch. ``sigma[i] = noise * (max - min)``
    of image ``i``. ``z`` is drawn in ``x``'s dtype (so it does not depend on
    ``torch.get_default_dtype()``) as ``torch.normal(0, ones)``, the call captum's
    ``NoiseTunnel`` makes with the global RNG.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    ones = torch.ones((samples,) + tuple(x.shape[1:]), dtype=x.dtype)  # x's dtype, never the default dtype
    z = torch.normal(0.0, ones, generator=g).to(x.device)
    flat = x.detach().reshape(x.shape[0], -1)
    sigma = noise * (flat.amax(1) - flat.amin(1))
    return z, sigma.reshape(-1, 1, 1, 1)


def _check_args(abs: Any, smooth: Any, noise: Any, seed: Any) -> tuple[int, float]:
    if not isinstance(abs, bool):
        raise TypeError(f"abs must be True or False, got {type(abs).__name__}")
    smooth = positive_int(smooth, "smooth", minimum=0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0 (a fraction of each image's value range), got {noise!r}")
    positive_int(seed, "seed", minimum=0)
    return smooth, float(noise)


def saliency(model: nn.Module, x: Any, *, target: Any = None, method: str = "gradient", abs: bool = True,
             smooth: int = 0, noise: float = 0.15, seed: int = 0, output: Any = None,
             progress: bool = True) -> Saliency:
    """Gradient saliency map of the target class for each image.

    The model runs in eval mode (dropout off, BatchNorm on its running
    statistics; every module's flag is put back afterwards) with its parameters
    frozen, so nothing reaches any ``.grad``. captum runs the model in whatever
    mode it is in: for a model in eval mode the two agree.

    Args:
        model: a network returning ``(N, num_classes)`` scores (see ``output``).
        x: images ``(N, C, H, W)`` (a single ``(C, H, W)`` image gets a batch of 1).
        target: class per image: int, list of ints, or None (the predicted class).
        method: ``"gradient"`` (Simonyan et al.), ``"guided"`` (guided backprop,
            Springenberg et al.) or ``"deconv"`` (deconvnet, Zeiler & Fergus).
        abs: return ``|gradient|`` (the usual saliency map); False keeps the sign.
        smooth: SmoothGrad sample count ``n`` (0 = off). With ``abs=True`` each
            sample's map is made absolute before averaging (as captum's NoiseTunnel does).
        noise: SmoothGrad noise std as a fraction of each image's (max − min)
            (Smilkov et al. recommend 0.1–0.2).
        seed: seeds SmoothGrad's private generator (the global RNG is untouched).
        output: selects the score tensor from a model returning a tuple/dict.
        progress: show a progress bar over SmoothGrad samples.

    Returns:
        `Saliency`: ``.attribution`` ``(N, C, H, W)`` on the CPU,
        ``.target`` ``(N,)``, ``.method``, ``.relu_calls``, ``.inputs``.

    Raises:
        ValueError / TypeError: a bad ``method``, ``target``, ``smooth``, ``noise``, ``x``.

    Example:
        >>> r = saliency(model, images, method="guided", smooth=20)   # doctest: +SKIP
    """
    method = _check_method(method)
    smooth, noise = _check_args(abs, smooth, noise, seed)
    x = model_input(model, x)
    with preserved(model, eval=True, freeze=True):
        if smooth == 0:
            p = input_gradient(model, x, target, method, output)
            att, calls, others = (p.grad.abs() if abs else p.grad), p.relu_calls, p.others
            tgt = p.target
        else:
            att, tgt, calls, others = _smoothgrad(model, x, target, method, abs=abs, samples=smooth, noise=noise, seed=seed,
                                                      output=output, progress=progress)
    _warn(method, calls, others)
    params = {"abs": abs, "smooth": smooth, "noise": noise, "seed": seed}
    return Saliency(att, tgt, method, inputs=x, params=params, relu_calls=calls,
                    other_activations=tuple(sorted(others)))


def _smoothgrad(model, x, target, method, *, abs, samples, noise, seed, output, progress):
    with torch.no_grad():
        tgt = resolve_target(target, forward_logits(model, x, output))
    z, sigma = smooth_noise(x, samples, noise, seed)
    total = torch.zeros_like(x)
    calls, others = 0, frozenset()
    for j in progress_bar(range(samples), enabled=progress, desc=f"SmoothGrad ({method})"):
        p = input_gradient(model, x + sigma * z[j], tgt, method, output)
        total += p.grad.abs() if abs else p.grad
        calls, others = (p.relu_calls, p.others) if j == 0 else (calls, others)
    return total / samples, tgt, calls, others


def _warn(method: str, calls: int, others: frozenset[str]) -> None:
    if method == "gradient":
        return
    if others:
        warnings.warn(
            f"{method} backprop is defined for ReLU only; the model also uses {', '.join(sorted(others))}, "
            "whose gradient passes through unchanged", stacklevel=3)
    if calls == 0:
        warnings.warn(
            f"method={method!r}: no ReLU call was seen in the forward pass (a scripted/compiled model, "
            "or no ReLU at all), so the result is the plain gradient", stacklevel=3)
