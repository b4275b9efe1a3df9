"""The engines that compute occlusion drops, behind one contract.

An `Engine` turns window positions into score drops. The loop is shared
(`Engine.drops`: every image, batches of positions, the progress bar, the
``(N, rows, cols)`` assembly); each engine overrides one function, `Engine.logits`,
the model's scores for one batch of positions of one image:

* `BatchedEngine`: plain forward passes over occluded copies of the image;
* `IncrementalEngine`: Krypton's incremental inference (`.incremental`), exact
  or with projective-field thresholding and bfloat16 changes (``mode="approx"``).

`choose_engine` picks the incremental one when the model allows it and says why not otherwise.
"""

from __future__ import annotations

import abc
import enum
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..._utils import forward_logits, progress_bar
from ...hooks import select_output
from .cost import predict
from .incremental import IncrementalOcclusion, Unsupported, graph_key
from .regions import Box, read_windows
from .windows import Grid, window_mask

__all__ = ["Measure", "Job", "target_scores", "Engine", "BatchedEngine", "IncrementalEngine", "Budget", "Choice",
           "choose", "choose_engine"]


# the most positions per batch when the budget allows more: larger batches ran slower, not faster (EfficientNet-like
# 64², 225 positions, fastest of 12 runs: batches of 16 / 32 / 64 / 225 took 0.27 / 0.22 / 0.42 / 0.42+ s batched,
# 0.26 / 0.23 / 0.33 / 0.29+ s incremental; captum at 16 / 64 per batch 0.31 / 0.42 s)
MAX_BATCH = 32


class Measure(enum.Enum):
    """The score whose drop is measured."""

    PROB = "prob"  # the target's softmax probability
    LOGIT = "logit"  # the target's raw score


@dataclass(frozen=True)
class Job:
    """Everything fixed about one occlusion computation.

    Attributes:
        model: the network (in eval mode).
        images: ``(N, C, H, W)``.
        baselines: ``(N, C, H, W)`` values that fill the window.
        grid: the window positions.
        measure: see `Measure`.
        output: which part of the model's output holds the scores.
        targets: ``(N,)`` class per image.
        clean: ``(N,)`` float64 score of each unoccluded image.
        batch_size: positions per batch (None: the most that fit ``memory_budget``).
        memory_budget: bytes a batch may use.
        progress: show a progress bar.
    """

    model: nn.Module
    images: torch.Tensor
    baselines: torch.Tensor
    grid: Grid
    measure: Measure
    output: Any
    targets: torch.Tensor
    clean: torch.Tensor
    batch_size: int | None
    memory_budget: int
    progress: bool

    def score(self, logits: torch.Tensor, image: int) -> torch.Tensor:
        """``(B,)`` float64 target score of image ``image`` in every row of ``logits`` ``(B, classes)``."""
        return _scores(logits, self.measure)[:, self.targets[image]].double()


def target_scores(logits: torch.Tensor, measure: Measure, targets: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float64 score of ``targets`` ``(N,)`` in each row of ``logits`` ``(N, classes)``."""
    return _scores(logits, measure).gather(1, targets[:, None])[:, 0].double()


def _scores(logits: torch.Tensor, measure: Measure) -> torch.Tensor:
    return torch.softmax(logits, dim=1) if measure is Measure.PROB else logits


class Engine(abc.ABC):
    """Score drops of occluded images; subclasses override `logits` (template method).

    Attributes:
        name: ``"incremental"`` or ``"batched"`` (the result's ``engine``).
    """

    name: str

    def drops(self, job: Job, positions: torch.Tensor) -> torch.Tensor:
        """``(N, rows, cols)`` float64 score drops at ``positions`` ``(P,)``; NaN at the other positions."""
        n_images = job.images.shape[0]
        out = torch.full((n_images, len(job.grid)), float("nan"), dtype=torch.float64)
        batch = self.positions_per_batch(job, len(positions))
        bar = progress_bar(total=n_images * len(positions), enabled=job.progress, desc="occlusion", unit="pos")
        try:
            for image in range(n_images):
                self.load(job, image)
                for chunk in torch.split(self.order(positions), batch):
                    out[image, chunk] = job.clean[image] - job.score(self.logits(job, image, chunk), image)
                    bar.update(len(chunk))
        finally:
            bar.close()
        return out.reshape(n_images, *job.grid.shape)

    @abc.abstractmethod
    def logits(self, job: Job, image: int, positions: torch.Tensor) -> torch.Tensor:
        """``(B, classes)`` scores of image ``image`` occluded at each of ``positions`` ``(B,)``."""

    @abc.abstractmethod
    def bytes_per_position(self, job: Job) -> int:
        """Memory one position needs while a batch runs."""

    def clean_logits(self, model: nn.Module, images: torch.Tensor, output: Any) -> torch.Tensor:
        """``(N, classes)`` scores of the unoccluded images."""
        return forward_logits(model, images, output)

    def load(self, job: Job, image: int) -> None:
        """Get ready for the positions of image ``image`` (nothing by default)."""

    def order(self, positions: torch.Tensor) -> torch.Tensor:
        """The order in which ``positions`` are batched (as given by default)."""
        return positions

    def fixed_bytes(self) -> int:
        """Memory the engine holds whatever the batch (none by default)."""
        return 0

    def positions_per_batch(self, job: Job, n_positions: int) -> int:
        """``job.batch_size``, or the most of ``n_positions`` (at most `MAX_BATCH`) that fit ``job.memory_budget``
        after `fixed_bytes`."""
        if job.batch_size is not None:
            return job.batch_size
        room = job.memory_budget - self.fixed_bytes()
        return max(1, min(n_positions, MAX_BATCH, room // max(self.bytes_per_position(job), 1)))


class BatchedEngine(Engine):
    """Plain forward passes over batches of occluded copies of the image."""

    name = "batched"

    def __init__(self) -> None:
        self.plain_bytes: int | None = None  # measured once

    def logits(self, job: Job, image: int, positions: torch.Tensor) -> torch.Tensor:
        x, baseline = job.images[image], job.baselines[image]
        zero = torch.zeros(len(positions), dtype=torch.long)
        mask = window_mask(job.grid, positions, zero, zero, tuple(x.shape[-2:]))
        return forward_logits(job.model, torch.where(mask, baseline, x), job.output)

    def bytes_per_position(self, job: Job) -> int:
        """Bytes one occluded image needs in a plain forward: the sum of every tensor the forward creates."""
        if self.plain_bytes is None:
            self.plain_bytes = _plain_bytes(job.model, job.images[:1], job.output)
        return self.plain_bytes


class _TensorBytes(TorchFunctionMode):
    """Adds up the bytes of every tensor a torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.total += out.numel() * out.element_size()
        return out


def _plain_bytes(model: nn.Module, x1: torch.Tensor, output: Any) -> int:
    """Bytes a forward of the one image ``x1`` creates, plus the occluded input and its mask."""
    with _TensorBytes() as sizes:
        forward_logits(model, x1, output)
    return int(sizes.total + 2 * x1.numel() * x1.element_size())


class IncrementalEngine(Engine):
    """Incremental inference (`.incremental.IncrementalOcclusion`); the clean pass of image 0 runs at construction.

    Args:
        model: the network (in eval mode).
        images: ``(N, C, H, W)``.
        grid: the window positions.
        tau: projective-field threshold (None: exact).
        lowp: the dtype of convolution changes, ``"winograd"`` (see `.winograd`) or None (exact).

    Raises:
        Unsupported: the model cannot be run incrementally.
    """

    name = "incremental"

    def __init__(self, model: nn.Module, images: torch.Tensor, grid: Grid, tau: float | None,
                 lowp: torch.dtype | str | None) -> None:
        rows, cols = grid.positions()
        self.network = IncrementalOcclusion(model, images[:1], rows, cols, tau=tau, lowp=lowp)
        self.loaded = 0  # the image whose clean values the network holds

    def clean_logits(self, model: nn.Module, images: torch.Tensor, output: Any) -> torch.Tensor:
        """One image: the scores of the clean pass already run (no second forward)."""
        if images.shape[0] != 1:
            return super().clean_logits(model, images, output)
        out = select_output(self.network.clean_output, output)
        return out.reshape(out.shape[0], -1)

    def load(self, job: Job, image: int) -> None:
        if self.loaded != image:
            self.network.prepare(job.images[image:image + 1])
            self.loaded = image

    def order(self, positions: torch.Tensor) -> torch.Tensor:
        return self.network.sort(positions)

    def bytes_per_position(self, job: Job) -> int:
        return self.network.bytes_per_position()

    def fixed_bytes(self) -> int:
        """The clean maps of every node and the padded copies windows are read from."""
        return self.network.fixed_bytes()

    def logits(self, job: Job, image: int, positions: torch.Tensor) -> torch.Tensor:
        x, baseline = job.images[image], job.baselines[image]

        def occluded_input(pos: torch.Tensor, box: Box) -> torch.Tensor:
            start = (box.top, box.left)
            inside = window_mask(job.grid, pos, box.top, box.left, box.size)
            return torch.where(inside, read_windows(baseline, None, None, start, box.size),
                               read_windows(x, None, None, start, box.size))

        out = select_output(self.network.run(positions, occluded_input), job.output)
        return out.reshape(out.shape[0], -1)


@dataclass(frozen=True)
class Choice:
    """The engine to run and why.

    Attributes:
        engine: the engine.
        fallback_reason: why incremental inference is not used (None when it is, or when it was not asked for).
        reason: why this engine runs (the cost model's prediction, the fallback reason, or the mode).
    """

    engine: Engine
    fallback_reason: str | None
    reason: str


def choose_engine(model: nn.Module, images: torch.Tensor, grid: Grid, *, incremental: bool, tau: float | None = None,
                  lowp: torch.dtype | str | None = None, warn: bool = True, budget: Budget | None = None
                  ) -> tuple[Engine, str | None]:
    """The engine to use, and why incremental inference is not used (None when it is or was not asked for).

    Args:
        model, images, grid: as in `IncrementalEngine`.
        incremental: try incremental inference (else plain batched inference).
        tau, lowp: as in `IncrementalEngine`.
        warn: warn when incremental inference is asked for but not possible.
        budget: with it, incremental inference must fit ``budget.memory_budget`` and, if
            ``budget.cost_model``, be predicted faster than batched (`.cost`).
    """
    choice = choose(model, images, grid, incremental=incremental, tau=tau, lowp=lowp, warn=warn, budget=budget)
    return choice.engine, choice.fallback_reason


@dataclass(frozen=True)
class Budget:
    """What decides between the engines beyond feasibility.

    Attributes:
        memory_budget: bytes occlusion may use (the incremental cache included).
        batch_size: positions per batch (None: sized by the budget).
        cost_model: fall back to batched where incremental is predicted slower.
    """

    memory_budget: int
    batch_size: int | None
    cost_model: bool


def choose(model: nn.Module, images: torch.Tensor, grid: Grid, *, incremental: bool, tau: float | None = None,
           lowp: torch.dtype | str | None = None, warn: bool = True, budget: Budget | None = None) -> Choice:
    """Like `choose_engine`, with the reason for the engine that runs (`Choice`)."""
    if not incremental:
        return Choice(BatchedEngine(), None, "mode='batched'")
    key = _decision_key(model, images, grid, budget)
    known = _DECISIONS.get(model, {}).get(key) if budget is not None and budget.cost_model else None
    if known is not None:  # the cost model chose batched for these shapes before: skip the clean pass and plan
        return Choice(BatchedEngine(), known, known)
    try:
        engine = IncrementalEngine(model, images, grid, tau, lowp)
    except Unsupported as exc:
        if warn:
            warnings.warn(f"occlusion: incremental inference is not possible: {exc}; "
                          "using plain batched inference", stacklevel=3)
        return Choice(BatchedEngine(), str(exc), str(exc))
    if budget is None:
        return Choice(engine, None, "incremental inference asked for")
    choice = _weigh(engine, images, grid, budget)
    if budget.cost_model and choice.engine.name == "batched":
        _DECISIONS[model] = {key: choice.reason}
    return choice


# model -> {shapes, grid and budget: why the cost model chose batched}. The prediction depends on shapes only,
# so a repeated call skips building the incremental engine (15 ms of a 175 ms job on the EfficientNet-like net)
_DECISIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _decision_key(model: nn.Module, images: torch.Tensor, grid: Grid, budget: Budget | None) -> tuple:
    bounds = tuple(tuple(t.tolist()) for t in (*grid.rows, *grid.cols))
    return graph_key(model, images[:1]), bounds, budget


def _batched(plain_bytes: int | None) -> BatchedEngine:
    engine = BatchedEngine()
    engine.plain_bytes = plain_bytes
    return engine


def _weigh(engine: IncrementalEngine, images: torch.Tensor, grid: Grid, budget: Budget) -> Choice:
    """Keep ``engine`` if it fits the memory budget and (with the cost model) is predicted faster.

    The clean pass has run: the maps it cached are every tensor one plain forward makes, so
    they also give the batched engine's bytes per position (no extra forward).
    """
    fixed, per_position = engine.fixed_bytes(), engine.network.bytes_per_position()
    plain = fixed // 2 + 2 * images[:1].numel() * images.element_size()
    if budget.batch_size is None and fixed + per_position > budget.memory_budget:
        why = (f"the incremental engine's clean maps and padded copies ({fixed / 2**20:.1f} MiB) and one position "
               f"({per_position / 2**20:.1f} MiB) do not fit memory_budget ({budget.memory_budget / 2**20:.1f} MiB)")
        return Choice(_batched(plain), why, why)
    if not budget.cost_model:
        return Choice(engine, None, "incremental inference asked for")
    per_plain, batched, n = plain, _batched(plain), len(grid)

    def fit(room: int, each: int) -> int:
        return budget.batch_size or max(1, min(n, MAX_BATCH, room // max(each, 1)))

    prediction = predict(engine.network, n, fit(budget.memory_budget - fixed, per_position),
                         fit(budget.memory_budget, per_plain))
    if prediction.incremental_faster:
        return Choice(engine, None, prediction.describe())
    return Choice(batched, prediction.describe(), prediction.describe())
