"""Occlusion heatmaps (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014).

Slide a window of ``baseline`` values over the image; for each position record
how much the target's score drops; each pixel gets the mean drop over the
windows that cover it:

    A[c, h, w] = Σ_q (s(x) - s(x_q)) [h, w ∈ window_q]  /  Σ_q [h, w ∈ window_q]

with ``s`` the target's softmax probability (``measure="prob"``) or raw logit
(``measure="logit"``) and ``x_q`` the image occluded at position ``q`` (all
channels). Windows are placed and truncated at the border exactly as
``captum.attr.Occlusion`` places them, so the maps equal captum's.

Three ways to compute the same map:

* ``mode="exact"`` (default): incremental inference (Krypton, Nakandala et al.,
  SIGMOD 2019) — only the part of every layer a window can change is
  recomputed; falls back to ``"batched"`` (with a warning and
  ``result.fallback_reason``) when the model cannot be traced by ``torch.fx``
  or uses an operation without a region rule;
* ``mode="batched"``: plain forward passes over batches of occluded images;
* ``mode="approx"``: Krypton's approximations — projective-field thresholding
  (``approx_tau``) and adaptive drill-down (a checkerboard of positions first,
  the others interpolated, then computed only where the estimated drops are
  largest, ``approx_drill``).

The model runs in eval mode (BatchNorm running statistics, no dropout) under
``torch.inference_mode``; its training flags are restored afterwards.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import as_batch, check_channels, forward_logits, positive_int, progress_bar, resolve_target
from ..hooks import _check_model, preserved, select_output
from ._regions import read
from ._windows import Grid, assemble, make_grid, pair_arg, resolve_baseline, window_mask
from ._lowp import native_bfloat16
from .incremental import IncrementalOcclusion, Unsupported
from .result import Attribution

__all__ = ["occlusion", "OcclusionResult"]

_MODES = ("exact", "approx", "batched")
_MEASURES = ("prob", "logit")


@dataclass(frozen=True, eq=False)
class OcclusionResult(Attribution):
    """An occlusion map and how it was made.

    Attributes (besides ``attribution`` ``(N, C, H, W)``, ``target`` ``(N,)``, ``method="occlusion"``):
        window, stride: ``(h, w)``.
        baseline: the number, ``"mean"``, ``"blur"`` or ``"tensor"``.
        measure: ``"prob"`` or ``"logit"``.
        mode: ``"exact"``, ``"approx"`` or ``"batched"`` (as asked).
        engine: ``"incremental"`` or ``"batched"`` (as run).
        fallback_reason: why incremental inference was not used, or None.
        drops: ``(N, rows, cols)`` score drop at every window position.
        batch_size: positions per batch.
        extra: ``mode="approx"``: ``positions_computed``, ``positions`` and
            ``precision`` (``"bfloat16"`` when convolution changes ran in bfloat16).
        deviation: for ``mode="approx"`` with ``compare_exact=True``: ``max_abs``,
            ``rel_max_abs`` (÷ the exact map's max |value|) and ``pearson`` against the exact map.
    """

    window: tuple[int, int] = (8, 8)
    stride: tuple[int, int] = (4, 4)
    baseline: Any = 0.0
    measure: str = "prob"
    mode: str = "exact"
    engine: str = "batched"
    fallback_reason: str | None = None
    drops: torch.Tensor | None = None
    batch_size: int = 1
    deviation: Mapping[str, float] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def occlusion(
    model: nn.Module,
    x: Any,
    *,
    target: Any = None,
    window: int | tuple[int, int] = 8,
    stride: int | tuple[int, int] = 4,
    baseline: float | str | torch.Tensor = 0.0,
    measure: str = "prob",
    mode: str = "exact",
    batch_size: int | None = None,
    memory_budget: int = 2**30,
    progress: bool = True,
    output: Any = None,
    approx_tau: float | None = 0.75,
    approx_drill: float = 0.2,
    approx_precision: str = "auto",
    compare_exact: bool = False,
) -> OcclusionResult:
    """Occlusion heatmap of the target class for each image.

    Args:
        model: a CNN returning ``(N, num_classes)`` scores (see ``output``).
        x: ``(N, C, H, W)`` images (``(C, H, W)``, a PIL image or an ``H×W×C`` array is one image).
        target: None (each image's predicted class), an int, or one class per image.
        window: occluding window ``(h, w)`` or an int; it covers every channel.
        stride: step between windows, ``(h, w)`` or an int (may exceed the window).
        baseline: value put in the window: a number, ``"mean"`` (the image's
            per-channel mean), ``"blur"`` (a Gaussian-blurred copy) or a tensor
            broadcastable to ``x``.
        measure: ``"prob"`` (softmax probability drop) or ``"logit"`` (raw score drop).
        mode: ``"exact"`` (incremental when possible), ``"batched"`` or ``"approx"``.
        batch_size: window positions per batch; None picks the largest that fits ``memory_budget``.
        memory_budget: bytes a batch may use (default 1 GiB).
        progress: show a progress bar.
        output: which part of the model's output holds the scores (see `cnn_explain.hooks.select_output`).
        approx_tau: ``mode="approx"``: projective-field threshold in (0, 1] (None: off);
            maps smaller than 16×16 are never truncated.
        approx_drill: ``mode="approx"``: fraction of the positions left out of the
            first (checkerboard) pass that are computed afterwards, those with the
            largest estimated drops; 1.0 computes them all.
        approx_precision: ``mode="approx"``: ``"bfloat16"`` computes the *changes*
            of convolution outputs in bfloat16 (clean values stay float32, see
            `cnn_explain.attribution._lowp`), ``"float32"`` does not, ``"auto"``
            uses bfloat16 when the CPU multiplies it natively (AMX / AVX512-BF16)
            and the model is float32 on the CPU.
        compare_exact: ``mode="approx"``: also compute the exact map and report ``deviation``.

    Returns:
        `OcclusionResult`; ``attribution`` is ``(N, C, H, W)`` with the
        same map in every channel.

    Raises:
        ValueError / TypeError: a bad argument (named in the message).

    Example:
        >>> from cnn_explain.models import tiny_vgg
        >>> net = tiny_vgg().eval()
        >>> r = occlusion(net, torch.rand(1, 3, 16, 16), window=4, stride=2, progress=False)
        >>> r.attribution.shape, r.engine
        (torch.Size([1, 3, 16, 16]), 'incremental')
    """
    model = _check_model(model)
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = as_batch(x, argname="x", dtype=dtype)
    check_channels(model, x)
    window, stride = pair_arg(window, "window"), pair_arg(stride, "stride")
    if measure not in _MEASURES:
        raise ValueError(f"measure must be 'prob' or 'logit', got {measure!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'exact', 'approx' or 'batched', got {mode!r}")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    memory_budget = positive_int(memory_budget, "memory_budget")
    _check_approx(approx_tau, approx_drill)
    lowp = _lowp_dtype(approx_precision, dtype, param) if mode == "approx" else None
    grid = make_grid(tuple(x.shape[-2:]), window, stride)
    with preserved(model, eval=True), torch.inference_mode():
        x = x.to(param.device if param is not None else x.device)
        base = resolve_baseline(baseline, x, window)
        run = _Run(model, x, base, None, grid, measure, output, batch_size, memory_budget, progress)
        engine = run.engine(mode, approx_tau, lowp)
        logits = run.clean_logits(engine)
        tgt = resolve_target(target, logits)
        run.target = tgt.to(x.device)
        clean = run.score(logits)
        drops, extra = run.drops(mode, clean, approx_drill, engine)
        if mode == "approx":
            used = lowp if lowp is not None and run.engine_name == "incremental" else dtype
            extra["precision"] = str(used).removeprefix("torch.")
        deviation = None
        if mode == "approx" and compare_exact:
            exact = run.drops("exact", clean, 1.0, run.engine("exact", None, None))[0]
            deviation = _deviation(assemble(drops, grid, x.shape[-2:]), assemble(exact, grid, x.shape[-2:]))
    heat = assemble(drops, grid, x.shape[-2:]).to(x.dtype)
    attribution = heat[:, None].expand(-1, x.shape[1], -1, -1).contiguous()
    params = {"window": window, "stride": stride, "measure": measure, "mode": mode}
    return OcclusionResult(
        attribution, tgt, "occlusion", inputs=x.detach().cpu(), params=params, window=window, stride=stride,
        baseline=baseline if not isinstance(baseline, torch.Tensor) else "tensor", measure=measure, mode=mode,
        engine=run.engine_name, fallback_reason=run.fallback_reason, drops=drops.to(x.dtype),
        batch_size=run.batch, deviation=deviation, extra=extra,
    )


def _check_approx(tau: Any, drill: Any) -> None:
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1):
        raise ValueError(f"approx_tau must be a number in (0, 1] or None, got {tau!r}")
    if isinstance(drill, bool) or not isinstance(drill, (int, float)) or not 0 <= drill <= 1:
        raise ValueError(f"approx_drill must be a number in [0, 1], got {drill!r}")


def _lowp_dtype(precision: Any, dtype: torch.dtype, param: torch.Tensor | None) -> torch.dtype | None:
    """The dtype approximate occlusion computes convolution changes in (None: the model's own)."""
    if precision not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"approx_precision must be 'auto', 'bfloat16' or 'float32', got {precision!r}")
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    on_cpu = param is None or param.device.type == "cpu"
    return torch.bfloat16 if dtype == torch.float32 and on_cpu and native_bfloat16() else None


def _deviation(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    a, e = approx.reshape(-1).double(), exact.reshape(-1).double()
    diff = float((a - e).abs().max())
    scale = float(e.abs().max())
    ac, ec = a - a.mean(), e - e.mean()
    denom = float(ac.norm() * ec.norm())
    pearson = float((ac * ec).sum()) / denom if denom > 0 else float("nan")
    return {"max_abs": diff, "rel_max_abs": diff / scale if scale > 0 else 0.0, "pearson": pearson}


class _Run:
    """One occlusion computation: the engines, batching and progress for a batch of images."""

    def __init__(self, model, x, base, target, grid: Grid, measure, output, batch_size, budget, progress):
        self.model, self.x, self.base, self.target, self.grid = model, x, base, target, grid
        self.measure, self.output, self.budget, self.progress = measure, output, budget, progress
        self.batch_size = batch_size
        self.batch = batch_size or 1
        self.engine_name, self.fallback_reason = "batched", None
        self.prepared: int | None = None  # the image the engine's cache holds

    def score(self, logits: torch.Tensor, image: int | None = None) -> torch.Tensor:
        """Target score per row of ``logits`` (one image's target, or each row's own image)."""
        s = torch.softmax(logits, dim=1) if self.measure == "prob" else logits
        if image is None:
            return s.gather(1, self.target[:, None])[:, 0].double()
        return s[:, self.target[image]].double()

    def engine(self, mode: str, tau: float | None, lowp=None) -> IncrementalOcclusion | None:
        """The incremental engine for ``mode``, prepared on image 0 (None: plain batched inference)."""
        return None if mode == "batched" else self._incremental(tau if mode == "approx" else None, lowp)

    def clean_logits(self, engine: IncrementalOcclusion | None) -> torch.Tensor:
        """``(N, classes)`` scores of the unoccluded images (one image: the engine's clean pass, not a second one)."""
        if engine is not None and self.x.shape[0] == 1:
            out = select_output(self.clean_out, self.output)
            return out.reshape(out.shape[0], -1)
        return forward_logits(self.model, self.x, self.output)

    def drops(self, mode: str, clean: torch.Tensor, drill: float, engine: IncrementalOcclusion | None):
        """``(N, rows, cols)`` drops computed with ``engine`` (from `engine`), and extra information."""
        if mode != "approx":
            return self._compute(engine, clean, torch.arange(len(self.grid))), {}
        return _drill_down(self, engine, clean, drill)

    def _incremental(self, tau: float | None, lowp=None) -> IncrementalOcclusion | None:
        try:
            rows, cols = self.grid.positions()
            engine = IncrementalOcclusion(self.model, tuple(self.x.shape[1:]), rows, cols, tau=tau, lowp=lowp)
            self.clean_out = engine.prepare(self.x[:1])
            self.prepared = 0
            self.engine_name = "incremental"
            return engine
        except Unsupported as exc:
            if self.fallback_reason is None:
                warnings.warn(f"occlusion: incremental inference is not possible: {exc}; "
                              "using plain batched inference", stacklevel=4)
            self.fallback_reason = str(exc)
            self.engine_name = "batched"
            return None

    def _batch_for(self, engine, n_positions: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        per = engine.bytes_per_position() if engine is not None else _plain_bytes(self.model, self.x[:1], self.output)
        self.batch = max(1, min(n_positions, self.budget // max(per, 1)))
        return self.batch

    def _compute(self, engine, clean: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Drops of the positions ``idx`` (others NaN) for every image."""
        n = self.x.shape[0]
        out = torch.full((n, len(self.grid)), float("nan"), dtype=torch.float64)
        batch = self._batch_for(engine, len(idx))
        bar = progress_bar(total=n * len(idx), enabled=self.progress, desc="occlusion", unit="pos")
        try:
            for i in range(n):
                if engine is not None and self.prepared != i:
                    engine.prepare(self.x[i:i + 1])
                    self.prepared = i
                for chunk in torch.split(idx if engine is None else engine.sort(idx), batch):
                    logits = self._logits(engine, i, chunk)
                    out[i, chunk] = clean[i] - self.score(logits, i)
                    bar.update(len(chunk))
        finally:
            bar.close()
        return out.reshape(n, *self.grid.shape)

    def _logits(self, engine, i: int, idx: torch.Tensor) -> torch.Tensor:
        x, base = self.x[i], self.base[i]
        if engine is None:
            h, w = x.shape[-2:]
            zero = torch.zeros(len(idx), dtype=torch.long)
            mask = window_mask(self.grid, idx, zero, zero, (h, w))
            return forward_logits(self.model, torch.where(mask, base, x), self.output)

        def make_input(pos: torch.Tensor, box) -> torch.Tensor:
            start = (box.top, box.left)
            return torch.where(window_mask(self.grid, pos, box.top, box.left, box.size),
                               read(base, None, None, start, box.size), read(x, None, None, start, box.size))

        out = select_output(engine.run(idx, make_input), self.output)
        return out.reshape(out.shape[0], -1)


def _plain_bytes(model: nn.Module, x1: torch.Tensor, output: Any) -> int:
    """Bytes one occluded image needs in a plain forward: the sum of every tensor the forward creates."""
    from torch.overrides import TorchFunctionMode

    class _Sizes(TorchFunctionMode):
        total = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                _Sizes.total += out.numel() * out.element_size()
            return out

    with _Sizes():
        forward_logits(model, x1, output)
    return int(_Sizes.total + 2 * x1.numel() * x1.element_size())


def _drill_down(run: _Run, engine, clean: torch.Tensor, drill: float):
    """Adaptive drill-down: a checkerboard of the window grid first, then the most affected other positions.

    The checkerboard (grid row + column even, half the positions) is computed;
    every other position gets the mean of its computed 4-neighbours; the fraction
    ``drill`` of those with the largest estimated |drop| is then computed.
    A checkerboard was chosen over Krypton's stride × 2 grid by measurement:
    at the same cost its estimate is much closer to the exact map (Pearson 0.94
    vs 0.90 on VGG-11 128², random weights, computing 50 % vs 45 % of positions).
    """
    nr, nc = run.grid.shape
    q = torch.arange(nr * nc)
    coarse = ((q // nc) + (q % nc)) % 2 == 0
    d = run._compute(engine, clean, q[coarse])
    est = _interpolate(d, coarse.reshape(nr, nc))
    rest = q[~coarse]
    k = math.ceil(drill * len(rest))
    if k > 0:
        score = est.reshape(est.shape[0], -1)[:, rest].abs().amax(0)
        pick = rest[torch.argsort(score, descending=True, stable=True)[:k]].sort().values
        fine = run._compute(engine, clean, pick)
        est.reshape(est.shape[0], -1)[:, pick] = fine.reshape(fine.shape[0], -1)[:, pick]
    return est, {"positions_computed": int(coarse.sum()) + k, "positions": nr * nc}


def _interpolate(d: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``(N, nr, nc)`` drops with the unknown positions set to the mean of their known 4-neighbours."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=d.dtype)[None, None]
    vals = torch.where(known, d, torch.zeros((), dtype=d.dtype))[:, None]
    total = F.conv2d(vals, kernel, padding=1)[:, 0]
    count = F.conv2d(known.to(d.dtype)[None, None], kernel, padding=1)[:, 0]
    return torch.where(known, d, total / count.clamp(min=1))
