r"""Exact Integrated Gradients for piecewise-linear networks (ExactLine: Sotoudeh & Thakur 2019,
"Computing Linear Restrictions of Neural Networks").

A network made of conv, linear, ReLU, max / average pooling, BatchNorm in eval
mode, residual adds, concatenation and flatten is piecewise linear. On the
straight path $x(t) = b + t\,(x - b)$ it is affine between finitely many
breakpoints $0 = t_0 < t_1 < \dots < t_m = 1$, so its gradient is constant on
each piece and the Integrated Gradients integral is a finite sum:

\[ \mathrm{IG}(x) = (x - b) \odot \sum_{p=0}^{m-1} (t_{p+1} - t_p)\,
   \nabla S_c\big(x(\tfrac{t_p + t_{p+1}}{2})\big) \]

The breakpoints are found by running the model on the points found so far
(one batch row per point, $t_0 = 0$, $t_1 = 1$ to start) under a
`torch.overrides.TorchFunctionMode` that sees every call of the real forward:

* at a ReLU call, between two consecutive points every pre-activation is
  affine in $t$ (once all earlier breakpoints are known), so a sign change
  gives the crossing $t^* = t_i + (t_{i+1} - t_i)\,v_i / (v_i - v_{i+1})$;
* at a 2-D max-pooling call, two window elements that cross *at the window's
  maximum* change the winner at that $t^*$.

On a segment where the calls before call $k$ see no sign change, the network
up to call $k$ is affine (an affine function that keeps its sign at both ends
never crosses zero; two affine window elements cross at most once), so call
$k$'s crossings there are exact. Each pass therefore adds, per segment, the
crossings of the first call that has any in it (never a spurious point), and
passes repeat until no segment has any. A pass runs only the ends of the
segments split by the previous one: a segment without any crossing is final. Any other nonlinearity
(sigmoid, GELU, SiLU, softmax, ...) raises a ``ValueError`` naming it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .._utils import active_modes, forward_logits, progress_bar
from ._relu import OTHER_ACTIVATIONS, _relu_call

__all__ = ["exact_integrated_gradients", "path_gradients", "breakpoints", "check_piecewise_linear"]

_REFUSED_FUNCS: dict[Any, str] = {
    **OTHER_ACTIVATIONS,
    F.softmax: "softmax", F.log_softmax: "log_softmax", torch.softmax: "softmax", torch.log_softmax: "log_softmax",
    torch.exp: "exp", torch.Tensor.exp: "exp", torch.log: "log", torch.Tensor.log: "log",
    torch.abs: "abs", torch.Tensor.abs: "abs", torch.sqrt: "sqrt", torch.Tensor.sqrt: "sqrt",
    torch.pow: "pow", torch.Tensor.pow: "pow", torch.Tensor.__pow__: "pow",
    F.adaptive_max_pool2d: "adaptive_max_pool2d", F.adaptive_max_pool1d: "adaptive_max_pool1d",
    F.max_pool1d: "max_pool1d", F.max_pool3d: "max_pool3d", F.lp_pool2d: "lp_pool2d",
    F.layer_norm: "layer_norm", F.group_norm: "group_norm", F.instance_norm: "instance_norm",
    F.logsigmoid: "logsigmoid", F.softsign: "softsign", F.tanhshrink: "tanhshrink", F.softmin: "softmin",
}
_OK_MODULES = (nn.ReLU, nn.MaxPool2d)
_REFUSED_MODULES = (
    nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softmax, nn.LogSoftmax,
    nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LPPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d,
    nn.MaxPool1d, nn.MaxPool3d, nn.FractionalMaxPool2d, nn.MultiheadAttention,
)


def check_piecewise_linear(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first module that is not piecewise linear (ReLU and max-pool are)."""
    for name, m in model.named_modules():
        if isinstance(m, _REFUSED_MODULES) and not isinstance(m, _OK_MODULES):
            raise ValueError(
                f"exact=True needs a piecewise-linear network (conv, linear, ReLU, max/avg pooling, "
                f"BatchNorm in eval, adds, cat, flatten), but module {name!r} is {type(m).__name__}; "
                "use exact=False (quadrature) for this model")
        if isinstance(m, nn.MaxPool2d) and m.ceil_mode:
            raise ValueError(f"exact=True does not support MaxPool2d with ceil_mode=True (module {name!r})")


def _refused_name(func: Any) -> str | None:
    try:
        return _REFUSED_FUNCS.get(func)
    except TypeError:  # unhashable callable
        return None


def _crossings(a: torch.Tensor, c: torch.Tensor, tol: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows ``i``, columns and fractions ``f`` in (0, 1) where ``a + f (c - a)`` changes sign.

    ``a``, ``c``: ``(R, D)`` values at both ends of ``R`` segments; values within
    ``tol`` (broadcast to ``(R, 1)``) of zero count as zero (rounding of an earlier crossing).
    """
    mask = ((a > tol) & (c < -tol)) | ((a < -tol) & (c > tol))
    rows, cols = mask.nonzero(as_tuple=True)
    fa, fc = a[rows, cols], c[rows, cols]
    return rows, cols, fa / (fa - fc)


class _LineMode(TorchFunctionMode):
    """Runs the forward on points ``t`` (one batch row each) and records, per nonlinear call, new breakpoints."""

    def __init__(self, t: torch.Tensor) -> None:
        super().__init__()
        self.t = t
        self.calls = 0
        self.found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _refused_name(func)
        if name is not None:
            raise ValueError(f"exact=True needs a piecewise-linear network, but the forward calls {name} "
                             f"({getattr(func, '__qualname__', name)}); use exact=False for this model")
        hit = _relu_call(func, args, kwargs)
        if hit is not None:
            self._record(self._relu(hit[0]))
        elif func in (F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d):
            self._record(self._maxpool(*args, **kwargs))
        elif func is F.batch_norm and (kwargs.get("training") or (len(args) > 5 and args[5])):
            raise ValueError("exact=True needs BatchNorm in eval mode (running statistics)")
        return func(*args, **kwargs)

    def _record(self, hits: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.found[self.calls] = hits
        self.calls += 1

    def _at(self, rows: torch.Tensor, frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(segment index, t)`` of crossings at fraction ``frac`` of segments ``rows``."""
        t = self.t.to(frac.device, frac.dtype)
        return rows.cpu(), (t[rows] + frac * (t[rows + 1] - t[rows])).cpu()

    def _relu(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x.detach().reshape(x.shape[0], -1)
        scale = v.abs().amax(1, keepdim=True)
        tol = 100 * torch.finfo(v.dtype).eps * torch.maximum(scale[:-1], scale[1:])
        rows, _, frac = _crossings(v[:-1], v[1:], tol)
        return self._at(rows, frac)

    def _maxpool(self, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        """Winner changes of every pooling window between consecutive points.

        A window whose winner (argmax) is the same element at both ends of a
        segment has no breakpoint inside: the maximum of affine functions is
        convex, and a convex function equal to one of its affine parts at both
        ends equals it in between. Only the other windows are searched, over
        all pairs of their elements, keeping crossings at the window's maximum.
        """
        if ceil_mode:
            raise ValueError("exact=True does not support max-pooling with ceil_mode=True")
        pair = torch.nn.modules.utils._pair
        k, s = pair(kernel_size), pair(stride if stride else kernel_size)
        pad, dil = pair(padding), pair(dilation)
        x = x.detach()
        _, win = F.max_pool2d(x, k, s, pad, dil, return_indices=True)  # (P, C, Ho, Wo) flat argmax
        rows, ch, oh, ow = (win[:-1] != win[1:]).nonzero(as_tuple=True)
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=x.dtype)
        di, dj = torch.meshgrid(torch.arange(k[0]), torch.arange(k[1]), indexing="ij")
        hh = (oh * s[0] - pad[0])[:, None] + (di.reshape(-1) * dil[0]).to(oh.device)  # (M, K) element rows
        ww = (ow * s[1] - pad[1])[:, None] + (dj.reshape(-1) * dil[1]).to(ow.device)
        inb = (hh >= 0) & (hh < x.shape[2]) & (ww >= 0) & (ww < x.shape[3])
        hh, ww = hh.clamp(0, x.shape[2] - 1), ww.clamp(0, x.shape[3] - 1)
        lo = x[rows[:, None], ch[:, None], hh, ww].masked_fill(~inb, -torch.inf)  # (M, K) windows at both ends
        hi = x[rows[:, None] + 1, ch[:, None], hh, ww].masked_fill(~inb, -torch.inf)
        finite = torch.isfinite(lo)
        lo, hi = lo.masked_fill(~finite, 0.0), hi.masked_fill(~finite, 0.0)
        scale = torch.maximum(lo.abs().amax(1), hi.abs().amax(1))
        tol = 100 * torch.finfo(x.dtype).eps * scale
        j, m = torch.triu_indices(lo.shape[1], lo.shape[1], 1)
        ok = finite[:, j] & finite[:, m]
        a = (lo[:, j] - lo[:, m]).masked_fill(~ok, 0.0)
        b = (hi[:, j] - hi[:, m]).masked_fill(~ok, 0.0)
        r2, p2, frac = _crossings(a, b, tol[:, None])
        at = (lo[r2] + frac[:, None] * (hi[r2] - lo[r2])).masked_fill(~finite[r2], -torch.inf)
        keep = at[torch.arange(len(r2)), j[p2]] >= at.amax(1) - 1e3 * tol[r2]
        return self._at(rows[r2[keep]], frac[keep])


def _line_pass(model, x, b, t, dirty, chunk, output) -> torch.Tensor:
    """One forward over the ends of the dirty segments (in chunks overlapping by one point); new breakpoints.

    ``dirty[i]`` marks the segments ``[t_i, t_i+1]`` not yet known to be free of
    breakpoints. Per segment only the crossings of the first call with any
    (farther than a rounding error from both ends) are kept.
    """
    seg_ids = dirty.nonzero()[:, 0]
    pts = torch.unique(torch.cat([seg_ids, seg_ids + 1]))  # sorted point indices to run
    calls, segs, ts = [], [], []
    step = max(1, chunk - 1)
    with torch.no_grad():
        for s in range(0, max(1, len(pts) - 1), step):
            idx = pts[s:s + step + 1]
            mode = _LineMode(t[idx])
            with mode:
                forward_logits(model, b + mode.t.to(x.dtype).view(-1, 1, 1, 1) * (x - b), output)
            for k, (rows, tk) in mode.found.items():
                calls.append(torch.full_like(rows, k))
                segs.append(torch.where(idx[rows + 1] == idx[rows] + 1, idx[rows], -1))  # -1: not a segment
                ts.append(tk.to(t.dtype))
    if not ts:
        return t.new_zeros(0)
    call, seg, tn = torch.cat(calls), torch.cat(segs), torch.cat(ts)
    valid = seg >= 0
    call, seg, tn = call[valid], seg[valid], tn[valid]
    gap = 100 * torch.finfo(t.dtype).eps
    inside = dirty[seg] & (tn > t[seg] + gap) & (tn < t[seg + 1] - gap)
    call, seg, tn = call[inside], seg[inside], tn[inside]
    first = torch.full((len(t),), torch.iinfo(torch.long).max, dtype=torch.long)
    first.scatter_reduce_(0, seg, call, reduce="amin")
    return tn[call == first[seg]]


def _merge(t: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``t`` plus the points of ``new`` farther than a rounding error from every point kept."""
    gap = 100 * torch.finfo(t.dtype).eps
    allt = torch.cat([t, new.to(t.dtype).clamp(0, 1)]).sort().values
    keep = torch.ones_like(allt, dtype=torch.bool)
    keep[1:] = allt[1:] - allt[:-1] > gap
    out = allt[keep]
    out[0], out[-1] = 0.0, 1.0
    return out


def breakpoints(model: nn.Module, x: torch.Tensor, b: torch.Tensor, *, chunk: int = 256,
                output: Any = None, max_passes: int = 10_000) -> torch.Tensor:
    """Every point of [0, 1] where the network changes linear region on the path ``b + t (x - b)``.

    Args:
        model: a piecewise-linear network in eval mode.
        x, b: one image and its baseline, ``(1, C, H, W)`` each.
        chunk: points per forward pass.
        output: selects the score tensor from a model returning a tuple/dict.
        max_passes: a safety limit on forward passes over all points.

    Returns:
        ``(m + 1,)`` float64 CPU tensor ``0 = t_0 < ... < t_m = 1``.
    """
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    dirty = torch.ones(1, dtype=torch.bool)
    for _ in range(max_passes):
        merged = _merge(t, _line_pass(model, x, b, t, dirty, chunk, output))
        if len(merged) == len(t):
            return t
        new = ~torch.isin(merged, t)
        dirty = new[:-1] | new[1:]  # the pieces of split segments; the others have no breakpoint
        t = merged
    raise RuntimeError(f"no fixed point of the breakpoint search after {max_passes} passes")


def path_gradients(model: nn.Module, points: torch.Tensor, target: torch.Tensor, chunk: int,
                   output: Any = None, progress: bool = False, desc: str = "") -> torch.Tensor:
    """``d S_target / d input`` at each row of ``points`` (``(R, C, H, W)``), ``chunk`` rows at a time.

    ``target`` is ``(R,)``. The model must already be frozen and in eval mode.
    """
    grads = torch.empty_like(points)
    for s in progress_bar(range(0, points.shape[0], chunk), enabled=progress, desc=desc, unit="chunk"):
        rows = slice(s, s + chunk)
        with torch.inference_mode(False), torch.enable_grad():
            leaf = points[rows].detach().clone().requires_grad_(True)
            logits = forward_logits(model, leaf.clone(), output)
            score = logits.gather(1, target[rows].to(logits.device)[:, None]).sum()
            if not score.requires_grad:
                raise ValueError("the model's output does not depend on x through differentiable operations")
            (g,) = torch.autograd.grad(score, leaf)
        grads[rows] = g.detach()
    return grads


def exact_integrated_gradients(model: nn.Module, x: torch.Tensor, b: torch.Tensor, target: torch.Tensor, *,
                               chunk: int = 256, output: Any = None,
                               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact IG integral for each image of a piecewise-linear network.

    The caller has put the model in eval mode with frozen parameters.

    Args:
        model: the network.
        x, b: images and baselines ``(N, C, H, W)`` (float64 recommended).
        target: ``(N,)`` classes.
        chunk: rows per forward pass (breakpoint search and gradients).
        output: selects the score tensor from a model returning a tuple/dict.
        progress: a progress bar over images.

    Returns:
        ``(attribution (N, C, H, W), pieces (N,) int64)``.

    Raises:
        ValueError: a module or call that is not piecewise linear (named).
    """
    check_piecewise_linear(model)
    for mode in active_modes():
        raise ValueError(f"exact=True follows the network's own operations, but a {type(mode).__name__} is "
                         "active around the call and may change them; use exact=False, or call outside the mode")
    att, pieces = torch.empty_like(x), torch.zeros(x.shape[0], dtype=torch.long)
    for i in progress_bar(range(x.shape[0]), enabled=progress, desc="exact IG", unit="image"):
        xi, bi = x[i:i + 1], b[i:i + 1]
        t = breakpoints(model, xi, bi, chunk=chunk, output=output)
        mid = ((t[:-1] + t[1:]) / 2).to(x.device, x.dtype)
        length = (t[1:] - t[:-1]).to(x.device, x.dtype)
        pts = bi + mid.view(-1, 1, 1, 1) * (xi - bi)
        g = path_gradients(model, pts, target[i].repeat(len(mid)), chunk, output)
        att[i] = (xi - bi)[0] * (length.view(-1, 1, 1, 1) * g).sum(0)
        pieces[i] = len(mid)
    return att, pieces
