r"""Integrated Gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks").

For an image $x$, a baseline $b$ and the class score $S_c$:

\[ \mathrm{IG}_i(x) = (x_i - b_i) \int_0^1 \frac{\partial S_c}{\partial x_i}\big(b + t\,(x - b)\big)\,dt \]

With ``exact=False`` the integral is a quadrature rule with weights $w_s$ at
points $t_s$ (the rules and points of captum's ``IntegratedGradients``:
``"gausslegendre"``, ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
``"riemann_trapezoid"``). With ``exact=True`` (piecewise-linear networks only) the
path is split at every point where the network changes linear region and the
integral is a finite sum (see `cnn_explain.attribution.exact_ig`).

The interpolated images (images × steps rows) are run in chunks whose size is
``internal_batch_size`` or, by default, what fits in ``memory_budget`` bytes.
Completeness, $\sum_i \mathrm{IG}_i = S_c(x) - S_c(b)$, is checked per image:
``result.convergence_delta`` is $|\sum_i \mathrm{IG}_i - (S_c(x) - S_c(b))|$.

Example:
    >>> from cnn_explain.models import tiny_vgg
    >>> r = integrated_gradients(tiny_vgg().eval(), torch.rand(2, 3, 16, 16), steps=8, progress=False)
    >>> r.attribution.shape, r.convergence_delta.shape
    (torch.Size([2, 3, 16, 16]), torch.Size([2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import forward_logits, model_input, positive_int, progress_bar, resolve_target
from ..hooks import capture, preserved
from .exact_ig import exact_integrated_gradients, path_gradients
from .result import Attribution

__all__ = ["integrated_gradients", "IntegratedGradients", "IGMethod", "quadrature", "blur_baseline",
           "rows_per_chunk"]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes for one chunk of interpolated images (activations and their gradients)


class IGMethod(str, Enum):
    """Quadrature rule for the path integral (captum's names)."""

    GAUSS_LEGENDRE = "gausslegendre"
    RIEMANN_LEFT = "riemann_left"
    RIEMANN_RIGHT = "riemann_right"
    RIEMANN_MIDDLE = "riemann_middle"
    RIEMANN_TRAPEZOID = "riemann_trapezoid"


@dataclass(frozen=True, eq=False)
class IntegratedGradients(Attribution):
    """An Integrated Gradients result (see `~cnn_explain.attribution.result.Attribution`).

    Attributes:
        attribution: ``(N, C, H, W)`` signed attributions; they sum to about ``S(x) - S(b)``.
        convergence_delta: ``(N,)`` float64, ``|sum(attribution) - (S(x) - S(baseline))|``.
        pieces: ``(N,)`` int64 number of linear pieces of the path (``exact=True``), else None.
        baseline: ``(N, C, H, W)`` the baselines used.
        steps: quadrature points (``exact=False``) or gradient evaluations (``exact=True``, summed over images).
    """

    convergence_delta: torch.Tensor | None = None
    pieces: torch.Tensor | None = None
    baseline: torch.Tensor | None = None
    steps: int = 0


def quadrature(method: IGMethod | str, steps: int) -> tuple[list[float], list[float]]:
    """Points ``t_s`` in [0, 1] and weights ``w_s`` of a rule, exactly as captum computes them.

    Returns:
        ``(alphas, weights)``, two lists of ``steps`` floats.
    """
    m = _method(method)
    if m is IGMethod.GAUSS_LEGENDRE:
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * w).tolist()
    if steps < 2:
        raise ValueError(f"steps must be >= 2 for the Riemann rules, got {steps}")
    w = [1.0 / steps] * steps
    if m is IGMethod.RIEMANN_TRAPEZOID:
        w[0] /= 2
        w[-1] /= 2
        return torch.linspace(0, 1, steps).tolist(), w
    lo, hi = {IGMethod.RIEMANN_LEFT: (0, 1 - 1 / steps), IGMethod.RIEMANN_RIGHT: (1 / steps, 1),
              IGMethod.RIEMANN_MIDDLE: (1 / (2 * steps), 1 - 1 / (2 * steps))}[m]
    return torch.linspace(lo, hi, steps).tolist(), w


def _method(method: Any) -> IGMethod:
    try:
        return IGMethod(method)
    except ValueError:
        names = ", ".join(repr(m.value) for m in IGMethod)
        raise ValueError(f"method must be one of {names}, got {method!r}") from None


def blur_baseline(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """A Gaussian-blurred copy of ``x`` (``(N, C, H, W)``), the "blur" baseline of Sturmfels et al. 2020.

    Args:
        x: images ``(N, C, H, W)``.
        sigma: blur standard deviation in pixels; default ``max(H, W) / 8``.
    """
    sigma = max(x.shape[-2:]) / 8 if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _baseline(baseline: Any, x: torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be a number, a tensor or 'blur', got {baseline!r}")
        return blur_baseline(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, (torch.Tensor, np.ndarray)):
        b = torch.as_tensor(baseline).to(x.device, x.dtype)
        try:
            return torch.broadcast_to(b, x.shape).clone()
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to the images "
                             f"{tuple(x.shape)}; give (C, H, W), (N, C, H, W) or a number") from None
    raise TypeError(f"baseline must be a number, a tensor or 'blur', got {type(baseline).__name__}")


def rows_per_chunk(model: nn.Module, x: torch.Tensor, internal_batch_size: int | None,
                   memory_budget: int | None) -> int:
    """How many interpolated images one forward/backward may take.

    ``internal_batch_size`` wins when given. Otherwise the activations of one
    image are measured (outputs of every leaf module, one forward) and counted
    three times (forward value, gradient, autograd bookkeeping) against
    ``memory_budget`` bytes (default 1 GiB).
    """
    if internal_batch_size is not None:
        return positive_int(internal_batch_size, "internal_batch_size")
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else positive_int(memory_budget, "memory_budget")
    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    with torch.no_grad(), capture(model, leaves, reduce=lambda t: torch.tensor(t.numel())) as rec:
        forward_logits(model, x[:1])
    numel = x[0].numel() + sum(int(v) for v in rec.outputs.values() if isinstance(v, torch.Tensor))
    return max(1, budget // (3 * numel * x.element_size()))


def _quadrature_ig(model, x, b, tgt, alphas, weights, chunk, output, progress) -> torch.Tensor:
    """Σ_s w_s ∇S(b + t_s (x - b)) × (x - b); the rows (step, image) run in chunks of ``chunk``."""
    n, diff = x.shape[0], x - b
    total = torch.zeros_like(x)
    per = max(1, chunk // n) if chunk >= n else 0
    if per:  # whole steps per chunk: several steps of every image
        for s0 in progress_bar(range(0, len(alphas), per), enabled=progress, desc="Integrated Gradients"):
            a = torch.tensor(alphas[s0:s0 + per], dtype=x.dtype, device=x.device)
            w = torch.tensor(weights[s0:s0 + per], dtype=x.dtype, device=x.device)
            pts = (b[None] + a.view(-1, 1, 1, 1, 1) * diff[None]).reshape(-1, *x.shape[1:])
            g = path_gradients(model, pts, tgt.repeat(len(a)), pts.shape[0], output)
            total += (w.view(-1, 1, 1, 1, 1) * g.view(len(a), *x.shape)).sum(0)
    else:  # a chunk smaller than the batch: one step of a few images at a time
        for a, w in progress_bar(list(zip(alphas, weights)), enabled=progress, desc="Integrated Gradients"):
            total += w * path_gradients(model, b + a * diff, tgt, chunk, output)
    return total * diff


def _scores(model, x, b, tgt, output) -> torch.Tensor:
    with torch.no_grad():
        logits = forward_logits(model, torch.cat([x, b]), output)
    s = logits.gather(1, torch.cat([tgt, tgt]).to(logits.device)[:, None])[:, 0].double()
    return s[: x.shape[0]] - s[x.shape[0]:]


def integrated_gradients(model: nn.Module, x: Any, *, target: Any = None, baseline: Any = 0.0,
                         steps: int = 64, method: IGMethod | str = "gausslegendre",
                         internal_batch_size: int | None = None, memory_budget: int | None = None,
                         exact: bool = False, output: Any = None, progress: bool = True) -> IntegratedGradients:
    """Integrated Gradients of the target class for each image.

    Args:
        model: a CNN returning ``(N, num_classes)`` scores (see ``output``).
        x: images ``(N, C, H, W)`` (a single ``(C, H, W)`` image gets a batch of 1);
            a float64 tensor is kept in float64 (the model must then be float64 too).
        target: class per image: int, list of ints, or None (the predicted class).
        baseline: a number, a tensor broadcastable to ``x`` (``(C, H, W)`` or
            ``(N, C, H, W)``), or ``"blur"`` (`blur_baseline`, sigma ``max(H, W)/8``).
        steps: quadrature points (``exact=False``; ignored with ``exact=True``).
        method: the quadrature rule, an `IGMethod` or its name.
        internal_batch_size: interpolated images per forward/backward.
        memory_budget: bytes for one chunk when ``internal_batch_size`` is None (default 1 GiB).
        exact: the exact integral for piecewise-linear networks (conv, linear,
            ReLU, max/avg pooling, BatchNorm in eval, adds, cat, flatten).
        output: selects the score tensor from a model returning a tuple/dict.
        progress: show a progress bar.

    Returns:
        `IntegratedGradients`: ``.attribution`` ``(N, C, H, W)``, ``.target`` ``(N,)``,
        ``.convergence_delta`` ``(N,)``, ``.pieces`` ``(N,)`` (exact only), ``.baseline``,
        ``.method`` (``"integrated_gradients"`` or ``"exact_integrated_gradients"``).

    Raises:
        ValueError: a bad ``steps``, ``method``, ``baseline``, ``target``; with
            ``exact=True``, a nonlinearity other than ReLU / max-pooling (named).
    """
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be True or False, got {type(exact).__name__}")
    steps = positive_int(steps, "steps")
    m = _method(method)
    x = model_input(model, x)
    b = _baseline(baseline, x)
    with preserved(model, eval=True, freeze=True):
        with torch.no_grad():
            tgt = resolve_target(target, forward_logits(model, x, output)).clone()
        chunk = rows_per_chunk(model, x, internal_batch_size, memory_budget)
        if exact:
            att, pieces = exact_integrated_gradients(model, x, b, tgt, chunk=chunk, output=output, progress=progress)
            evals = int(pieces.sum())
        else:
            alphas, weights = quadrature(m, steps)
            att, pieces, evals = _quadrature_ig(model, x, b, tgt, alphas, weights, chunk, output, progress), None, steps
        delta = (att.double().flatten(1).sum(1) - _scores(model, x, b, tgt, output)).abs()
    name = "exact_integrated_gradients" if exact else "integrated_gradients"
    params = {"steps": steps, "method": m.value, "exact": exact, "chunk": chunk}
    return IntegratedGradients(att, tgt, name, inputs=x, params=params, convergence_delta=delta.cpu(),
                               pieces=pieces, baseline=b, steps=evals)
