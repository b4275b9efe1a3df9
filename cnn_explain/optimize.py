"""The one image-optimization loop, shared by activation maximization and style transfer.

Both change an image (or its parameterization) by gradient steps on a loss of a
fixed network's response: :func:`cnn_explain.features.maximize` raises a
channel's activation with Adam, :func:`cnn_explain.style.transfer` lowers a
content + style loss with L-BFGS or Adam. :func:`optimize_image` is that loop,
written out once, on ``torch.optim``::

    settings = OptimizeSettings(steps=100, optimizer=Optimizer.ADAM, lr=0.05)
    trace = optimize_image(params, lambda: (loss_of(params), record), settings)

The loss closure returns ``(loss, record)``: the 0-d tensor to minimize and
anything to keep for the history (the loss value, the unweighted terms...).
Gradients are taken with ``torch.autograd.grad`` with respect to ``params``
only, so nothing accumulates into a model's ``.grad``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from ._utils import progress_bar

__all__ = ["Optimizer", "OptimizeSettings", "OptimizeTrace", "optimize_image"]

R = TypeVar("R")


class Optimizer(str, enum.Enum):
    """Which ``torch.optim`` optimizer takes the steps."""

    ADAM = "adam"  # torch.optim.Adam: one loss evaluation per step
    LBFGS = "lbfgs"  # torch.optim.LBFGS(max_iter=1): one iteration per step, its line search may evaluate more


@dataclass(frozen=True)
class OptimizeSettings:
    """How :func:`optimize_image` steps.

    Attributes:
        steps: optimizer steps (0: no step, the parameters are returned as they are).
        optimizer: :class:`Optimizer` (or its value, ``"adam"`` / ``"lbfgs"``).
        lr: learning rate.
        lbfgs_history: L-BFGS's ``history_size`` (curvature pairs kept).
    """

    steps: int
    optimizer: Optimizer = Optimizer.ADAM
    lr: float = 0.05
    lbfgs_history: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", Optimizer(self.optimizer))


@dataclass(frozen=True)
class OptimizeTrace(Generic[R]):
    """What the loop saw.

    Attributes:
        history: one record per step, the one returned by the loss closure at the
            parameters that step started from (``len(history) == steps``).
        evaluations: calls of the loss closure (L-BFGS may make several per step).
    """

    history: list[R]
    evaluations: int


def _make_optimizer(params: torch.Tensor, settings: OptimizeSettings) -> torch.optim.Optimizer:
    if settings.optimizer is Optimizer.LBFGS:
        return torch.optim.LBFGS([params], lr=settings.lr, max_iter=1, history_size=settings.lbfgs_history)
    return torch.optim.Adam([params], lr=settings.lr)


def optimize_image(params: torch.Tensor, loss_fn: Callable[[], tuple[torch.Tensor, R]], settings: OptimizeSettings,
                   *, progress: bool = False, desc: str = "optimize",
                   postfix: Callable[[R], dict[str, Any]] | None = None) -> OptimizeTrace[R]:
    """Minimize ``loss_fn()`` over ``params`` (changed in place) for ``settings.steps`` steps.

    Args:
        params: the leaf tensor that is optimized (``requires_grad=True``), e.g.
            an image ``(N, C, H, W)`` or its Fourier coefficients.
        loss_fn: called with no arguments at the current ``params``; returns
            ``(loss, record)`` with ``loss`` a tensor attached to ``params``'s graph
            (summed if it has more than one element) and ``record`` kept in the history.
        settings: steps, optimizer and learning rate.
        progress: show a progress bar.
        desc: the progress bar's label.
        postfix: ``record -> {name: value}`` shown on the progress bar.

    Returns:
        An :class:`OptimizeTrace` with one record per step.

    Raises:
        ValueError: ``params`` is not a leaf tensor that requires grad.
    """
    if not (isinstance(params, torch.Tensor) and params.is_leaf and params.requires_grad):
        raise ValueError("params must be a leaf tensor with requires_grad=True (the tensor to optimize)")
    # the optimizer owns the update rule; we only hand it gradients
    opt = _make_optimizer(params, settings)
    records: list[R] = []

    def closure() -> torch.Tensor:
        # forward: the loss at the current parameters, and what to remember of it
        loss, record = loss_fn()
        loss = loss.sum()
        # backward: the gradient with respect to params only (nothing accumulates in a model's .grad)
        (grad,) = torch.autograd.grad(loss, [params])
        params.grad = grad
        records.append(record)
        return loss.detach()

    history: list[R] = []
    bar = progress_bar(range(settings.steps), enabled=progress, desc=desc, unit="step")
    with torch.enable_grad():
        for _ in bar:
            # one step: Adam evaluates the closure once; L-BFGS once or more (line search)
            first = len(records)
            opt.step(closure)
            # the record where this step started (the first evaluation of the step)
            history.append(records[first])
            if progress and postfix is not None:
                bar.set_postfix(postfix(history[-1]), refresh=False)
    # leave no gradient behind on the caller's tensor
    params.grad = None
    return OptimizeTrace(history, len(records))
