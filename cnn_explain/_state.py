"""Saving and restoring a model's state: the ``preserved`` context manager and the per-model lock.

Kept apart from :mod:`cnn_explain.hooks` (which re-exports it) so each stays small.

Several threads may explain one model object at the same time: every state
change and every forward pass of a capability happens while the thread holds
that model's re-entrant lock (:func:`model_lock`), so the calls run one after
the other on that model, each sees the model as the user left it, and each puts
it back before the next one starts. The locks live in a
``weakref.WeakKeyDictionary`` keyed by the model: nothing is stored on the
user's module, and a lock goes away with its model.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` (created on first use; the same object for the model's lifetime).

    Held by :func:`preserved` and :func:`cnn_explain.hooks.capture` for as long
    as they are open; hold it yourself around any other work that must not
    interleave with a capability running on the same model in another thread
    (``with model_lock(model): ...``).
    """
    _check_model(model)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@dataclass
class _State:
    training: list[tuple[nn.Module, bool]]
    params: list[tuple[torch.Tensor, bool, torch.Tensor | None, torch.Tensor | None]]
    rng: torch.Tensor | None

    @classmethod
    def save(cls, model: nn.Module, rng: bool) -> "_State":
        training = [(m, m.training) for m in model.modules()]
        params = []
        for p in model.parameters():
            g = p.grad
            params.append((p, p.requires_grad, g, None if g is None else g.detach().clone()))
        return cls(training, params, torch.get_rng_state() if rng else None)

    def restore(self) -> None:
        for m, flag in self.training:
            m.training = flag
        with torch.no_grad():
            for p, req, g, gval in self.params:
                if p.requires_grad != req:
                    p.requires_grad_(req)
                if g is not None and not torch.equal(g, gval):
                    g.copy_(gval)
                p.grad = g
        if self.rng is not None:
            torch.set_rng_state(self.rng)


@contextlib.contextmanager
def preserved(model: nn.Module, *, eval: bool = False, freeze: bool = False, rng: bool = False) -> Iterator[nn.Module]:
    """Context manager that gives the model back exactly as it was.

    Args:
        model: the user's network.
        eval: put every module in eval mode for the duration.
        freeze: set ``requires_grad=False`` on every parameter for the duration
            (gradients with respect to inputs only; nothing reaches ``.grad``).
        rng: also restore torch's global CPU random state on exit.

    Yields:
        The same model object.

    The model's lock (:func:`model_lock`) is held from entry to exit, so a
    capability running in another thread on the same model waits for this
    block to give the model back before it saves or changes anything.

    Example:
        >>> net = torch.nn.Linear(2, 2).train()
        >>> with preserved(net, eval=True):
        ...     assert not net.training
        >>> net.training
        True
    """
    with model_lock(model):
        state = _State.save(model, rng)
        try:
            if eval:
                model.eval()
            if freeze:
                for p in model.parameters():
                    p.requires_grad_(False)
            yield model
        finally:
            state.restore()
