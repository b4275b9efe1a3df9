"""Receptive-field propagation while a forward runs (used by :mod:`cnn_explain.layers`).

A ``TorchFunctionMode`` (:class:`RFMode`) gives every tensor derived from the
input a :class:`Field`: which of its dimensions are the image rows and columns
(``dims``; ``(2, 3)`` for ``(N, C, H, W)``, ``(1, 2)`` after a permute to
channels-last) and, for each row and column, the inclusive range of input
rows/columns it depends on. The rules of :mod:`cnn_explain._rf_rules` transform
it op by op; an op they cannot follow exactly gives the whole input and a
reason (``Field.reason``), never a box that is too small. See the
:mod:`cnn_explain.layers` docstring for the formulas.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._rf_field import Field, tensors
from ._rf_rules import propagate

__all__ = ["Field", "RFMode", "tensors"]


class RFMode(TorchFunctionMode):
    """While active, gives every tensor derived from the seeded input a :class:`Field` (keyed by identity).

    ``reasons`` collects, in order, why any field had to be conservative.
    """

    def __init__(self, H: int, W: int) -> None:
        super().__init__()
        self.H, self.W = H, W
        self._fields: dict[int, tuple[torch.Tensor, Field]] = {}  # holds refs: ids are never reused
        self.reasons: list[str] = []

    def seed(self, x: torch.Tensor) -> None:
        self._fields[id(x)] = (x, Field.identity(self.H, self.W))

    def field_of(self, t: Any) -> Field | None:
        entry = self._fields.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is t else None

    def clear(self) -> None:
        self._fields.clear()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        known = [(t, f) for t in tensors((args, kwargs)) if (f := self.field_of(t)) is not None]
        if known:
            inherited = next((f.reason for _, f in known if f.reason), None)
            for t in tensors(out):
                fld = propagate(self, func, args, kwargs, known, t)
                if fld is None:
                    continue
                fld = fld.flagged(inherited)
                if fld.reason is not None and fld.reason not in self.reasons:
                    self.reasons.append(fld.reason)
                self._fields[id(t)] = (t, fld)
        return out

