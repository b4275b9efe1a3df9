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
  recomputed — where a cost model predicts it faster than batched; falls back to
  ``"batched"`` (with a warning and ``result.fallback_reason``) when the model can be
  neither traced by ``torch.fx`` nor recorded on real tensors, or uses an operation
  without a region rule (``mode="incremental"``: the same without the cost model);
* ``mode="batched"``: plain forward passes over batches of occluded images;
* ``mode="approx"``: Krypton's approximations — projective-field thresholding
  (``approx_tau``) and adaptive drill-down (a checkerboard of positions first,
  the others interpolated, then computed only where the estimated drops are
  largest, ``approx_drill``).

The model runs in eval mode (BatchNorm running statistics, no dropout) under
``torch.inference_mode``; its training flags are restored afterwards.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..._utils import model_input, positive_int, resolve_target
from ...hooks import _check_model, preserved
from ..result import Attribution
from .approx import drill_down
from .engines import Budget, Engine, Job, Measure, choose, choose_engine, target_scores
from .lowp import native_bfloat16
from .windows import assemble, make_grid, pair_arg, resolve_baseline

__all__ = ["occlusion", "OcclusionResult", "Mode", "Precision"]


class Mode(enum.Enum):
    """How the drops are computed (the public ``mode`` argument)."""

    EXACT = "exact"  # incremental inference where the model allows it and the cost model predicts it faster
    INCREMENTAL = "incremental"  # exact; incremental inference whenever the model allows it (no cost model)
    APPROX = "approx"  # drill-down, projective-field thresholding, bfloat16 changes
    BATCHED = "batched"  # plain forward passes


class Precision(enum.Enum):
    """The dtype of convolution changes in approximate mode (the public ``approx_precision`` argument)."""

    AUTO = "auto"  # bfloat16 where the CPU multiplies it natively and the model is float32 on the CPU
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"  # the model's own dtype


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
        engine_reason: why ``engine`` ran: the cost model's prediction (``mode="exact"``),
            the fallback reason, or the mode asked for.
        drops: ``(N, rows, cols)`` score drop at every window position.
        batch_size: positions per batch.
        extra: ``winograd_layers``: the convolutions whose changes ran by Winograd
            F(4×4, 3×3) (empty when none did, or the batched engine ran);
            ``mode="approx"`` also: ``positions_computed``, ``positions`` and
            ``precision`` (``"bfloat16"`` when convolution changes ran in bfloat16,
            else the model's dtype).
            Which engine ran and why is in ``engine`` and ``fallback_reason``.
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
    engine_reason: str = ""
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
    winograd: bool | None = None,
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
        mode: ``"exact"`` (incremental inference where the model allows it and a cost model
            predicts it faster than batched, else batched), ``"incremental"`` (exact, incremental
            whenever the model allows it), ``"batched"`` or ``"approx"``.
        batch_size: window positions per batch; None picks the largest that fits ``memory_budget``
            (at most 32).
        memory_budget: bytes occlusion's working memory may use (default 1 GiB): the batch's tensors
            and the incremental engine's clean maps and padded copies; the model's weights, the
            images and the result are not counted. When the incremental engine's maps leave no room
            for one position, plain batched inference runs.
        progress: show a progress bar.
        output: which part of the model's output holds the scores (see `cnn_explain.hooks.select_output`).
        approx_tau: ``mode="approx"``: projective-field threshold in (0, 1] (None: off);
            maps smaller than 16×16 are never truncated.
        approx_drill: ``mode="approx"``: fraction of the positions left out of the
            first (checkerboard) pass that are computed afterwards, those with the
            largest estimated drops; 1.0 computes them all.
        approx_precision: ``mode="approx"``: ``"bfloat16"`` computes the *changes*
            of convolution outputs in bfloat16 (clean values stay float32, see
            `cnn_explain.attribution.occlude.lowp`), ``"float32"`` in the model's
            dtype, ``"auto"`` in bfloat16 when the CPU multiplies it natively
            (AMX / AVX512-BF16) and the model is float32 on the CPU.
        compare_exact: ``mode="approx"``: also compute the exact map and report ``deviation``.
        winograd: incremental inference computes the changes of 3×3 convolutions with at
            least 256 channels by Winograd's F(4×4, 3×3) (2.25× fewer multiplications,
            float32 rounding of the same order: on VGG-11 at 128², the exact map's largest
            deviation from a float64 one was 4.0e-5 of its maximum against 3.6e-5 direct;
            see `cnn_explain.attribution.occlude.winograd`). None: for float32 models on
            the CPU, except where approximate mode computes changes in bfloat16.

    Returns:
        `OcclusionResult`; ``attribution`` is ``(N, C, H, W)`` with the
        same map in every channel.

    Raises:
        ValueError / TypeError: a bad argument (named in the message).

    Example:
        >>> from cnn_explain.models import tiny_vgg
        >>> net = tiny_vgg().eval()
        >>> r = occlusion(net, torch.rand(1, 3, 16, 16), window=4, stride=2, progress=False)
        >>> r.attribution.shape, r.engine_reason.startswith("cost model")  # incremental or batched: predicted faster
        (torch.Size([1, 3, 16, 16]), True)
    """
    model = _check_model(model)
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = model_input(model, x)
    window, stride = pair_arg(window, "window"), pair_arg(stride, "stride")
    score_measure = _choice(Measure, measure, "measure")
    run_mode = _choice(Mode, mode, "mode")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    memory_budget = positive_int(memory_budget, "memory_budget")
    _check_approx(approx_tau, approx_drill)
    if winograd is not None and not isinstance(winograd, bool):
        raise TypeError(f"winograd must be True, False or None, got {winograd!r}")
    precision = _choice(Precision, approx_precision, "approx_precision")
    lowp = _changes(run_mode, precision, winograd, dtype, param)
    grid = make_grid(tuple(x.shape[-2:]), window, stride)
    with preserved(model, eval=True), torch.inference_mode():
        x = x.to(param.device if param is not None else x.device)
        choice = choose(model, x, grid, incremental=run_mode is not Mode.BATCHED,
                        tau=approx_tau if run_mode is Mode.APPROX else None, lowp=lowp,
                        budget=Budget(memory_budget, batch_size, cost_model=run_mode is Mode.EXACT))
        engine, fallback_reason = choice.engine, choice.fallback_reason
        logits = engine.clean_logits(model, x, output)
        tgt = resolve_target(target, logits)
        job = Job(model, x, resolve_baseline(baseline, x, window), grid, score_measure, output, tgt.to(x.device),
                  target_scores(logits, score_measure, tgt.to(x.device)), batch_size, memory_budget, progress)
        drops, extra, last_count = _drops(engine, job, run_mode, approx_drill)
        extra.update(_convolutions_used(engine, lowp, dtype, approx=run_mode is Mode.APPROX))
        deviation = None
        if run_mode is Mode.APPROX and compare_exact:
            exact_lowp = _changes(Mode.EXACT, precision, winograd, dtype, param)
            engine = choose_engine(model, x, grid, incremental=True, lowp=exact_lowp, warn=False)[0]
            exact = engine.drops(job, torch.arange(len(grid)))
            last_count = len(grid)
            deviation = _deviation(assemble(drops, grid, x.shape[-2:]), assemble(exact, grid, x.shape[-2:]))
        batch = engine.positions_per_batch(job, last_count)
    heat = assemble(drops, grid, x.shape[-2:]).to(x.dtype)
    attribution = heat[:, None].expand(-1, x.shape[1], -1, -1).contiguous()
    params = {"window": window, "stride": stride, "measure": measure, "mode": mode}
    return OcclusionResult(
        attribution, tgt, "occlusion", inputs=x.detach().cpu(), params=params, window=window, stride=stride,
        baseline=baseline if not isinstance(baseline, torch.Tensor) else "tensor", measure=measure, mode=mode,
        engine=engine.name, fallback_reason=fallback_reason, engine_reason=choice.reason, drops=drops.to(x.dtype),
        batch_size=batch, deviation=deviation, extra=extra,
    )


def _choice(kind: type[enum.Enum], value: Any, argname: str) -> Any:
    """The member of ``kind`` whose value is ``value``; `ValueError` naming the choices otherwise."""
    for member in kind:
        if value == member.value:
            return member
    names = [m.value for m in kind]
    listed = ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"
    raise ValueError(f"{argname} must be {listed}, got {value!r}")


def _drops(engine: Engine, job: Job, mode: Mode, drill: float) -> tuple[torch.Tensor, dict[str, Any], int]:
    """``(N, rows, cols)`` drops, the result's ``extra``, and the positions of the last pass."""
    if mode is not Mode.APPROX:
        return engine.drops(job, torch.arange(len(job.grid))), {}, len(job.grid)
    drilled = drill_down(engine, job, drill)
    extra = {"positions_computed": drilled.positions_computed, "positions": drilled.positions}
    return drilled.drops, extra, drilled.last_count


def _check_approx(tau: Any, drill: Any) -> None:
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1):
        raise ValueError(f"approx_tau must be a number in (0, 1] or None, got {tau!r}")
    if isinstance(drill, bool) or not isinstance(drill, (int, float)) or not 0 <= drill <= 1:
        raise ValueError(f"approx_drill must be a number in [0, 1], got {drill!r}")


def _changes(mode: Mode, precision: Precision, winograd: bool | None, dtype: torch.dtype,
             param: torch.Tensor | None) -> torch.dtype | str | None:
    """How incremental inference computes convolution changes: ``torch.bfloat16``, ``"winograd"`` or None
    (the model's own convolutions)."""
    float32_cpu = dtype == torch.float32 and (param is None or param.device.type == "cpu")
    if mode is Mode.APPROX and (precision is Precision.BFLOAT16
                                or (precision is Precision.AUTO and float32_cpu and native_bfloat16())):
        return torch.bfloat16
    return "winograd" if (float32_cpu if winograd is None else winograd) else None


def _convolutions_used(engine: Engine, lowp: torch.dtype | str | None, dtype: torch.dtype,
                       approx: bool) -> dict[str, Any]:
    """``winograd_layers`` (and for approximate mode ``precision``) of what ran; the batched engine runs
    the model's own layers."""
    network = getattr(engine, "network", None)
    changes = getattr(network, "lowp", None)
    ran = getattr(changes, "used", ())
    out: dict[str, Any] = {"winograd_layers": tuple(name for name, m in network.modules.items() if id(m) in ran)
                           if ran else ()}
    if approx:
        used = lowp if isinstance(lowp, torch.dtype) and changes is not None else dtype
        out["precision"] = str(used).removeprefix("torch.")
    return out


def _deviation(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """``max_abs``, ``rel_max_abs`` (÷ the exact map's max |value|) and ``pearson`` of two maps."""
    a, e = approx.reshape(-1).double(), exact.reshape(-1).double()
    diff = float((a - e).abs().max())
    scale = float(e.abs().max())
    ac, ec = a - a.mean(), e - e.mean()
    denom = float(ac.norm() * ec.norm())
    pearson = float((ac * ec).sum()) / denom if denom > 0 else float("nan")
    return {"max_abs": diff, "rel_max_abs": diff / scale if scale > 0 else 0.0, "pearson": pearson}
