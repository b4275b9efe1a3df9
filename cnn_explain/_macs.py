"""Multiply-accumulates per module call, as ``torch.utils.flop_counter.FlopCounterMode`` counts them.

:class:`MacCounter` runs the forward under ``FlopCounterMode`` (which counts
the convolutions and matrix products that really run, at the dispatcher: a
``Conv2d`` subclass with its own ``forward``, grouped, depthwise, dilated and
transposed convolutions, ``F.linear`` on channels-last maps, ``matmul``) and
reads its running total when each module call of the model starts and ends
(:func:`cnn_explain.hooks.observe_calls`). A call's MACs are
the FLOPs / 2 counted while it ran, less those of the row modules called inside
it; work done in a module that is not a row goes to the nearest row around it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .hooks import observe_calls

__all__ = ["MacCounter"]


class MacCounter:
    """Context manager: per-call MACs of the ``rows`` modules and the total of the whole forward.

    Attributes:
        calls: ``{id(module): [MACs of call 0, call 1, ...]}`` for the row modules.
        total: MACs of everything that ran (FLOPs / 2), rows or not.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> with MacCounter(net, net.modules()) as mc, torch.no_grad():
        ...     _ = net(torch.zeros(1, 1, 5, 5))
        >>> mc.calls[id(net[0])], mc.total
        ([162], 162)
    """

    def __init__(self, model: nn.Module, rows: Iterable[nn.Module]) -> None:
        self._model = model
        self._rows = {id(m) for m in rows}
        self.calls: dict[int, list[int]] = {}
        self.total = 0
        self._stack: list[list[Any]] = []
        self._flops = FlopCounterMode(display=False)
        self._observer: Any = None

    def _now(self) -> int:
        return self._flops.get_total_flops()

    def _enter(self, module: nn.Module) -> None:
        self._stack.append([module, self._now(), 0])

    def _exit(self, module: nn.Module) -> None:
        if not self._stack or self._stack[-1][0] is not module:
            return  # a call that began before the counter did
        _, start, inner = self._stack.pop()
        spent = self._now() - start
        claimed = inner
        if id(module) in self._rows:
            self.calls.setdefault(id(module), []).append((spent - inner) // 2)
            claimed = spent
        if self._stack:
            self._stack[-1][2] += claimed

    def __enter__(self) -> "MacCounter":
        self._flops.__enter__()
        self._observer = observe_calls(self._model, self._enter, self._exit)
        self._observer.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._observer.__exit__(*exc)
        finally:
            self.total = self._now() // 2
            self._flops.__exit__(*exc)

