"""Adaptive drill-down for ``mode="approx"`` (after Krypton, Nakandala et al., SIGMOD 2019).

A checkerboard of the window grid (grid row + column even: half the positions)
is computed first; every other position gets the mean of its computed
4-neighbours; the fraction ``drill`` of those with the largest estimated |drop|
is then computed too. A checkerboard was chosen over Krypton's stride × 2 grid
by measurement: at the same cost its estimate is much closer to the exact map
(Pearson 0.94 vs 0.90 on VGG-11 128², random weights, computing 50 % vs 45 % of
positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .engines import Engine, Job

__all__ = ["DrillDown", "drill_down"]


@dataclass(frozen=True)
class DrillDown:
    """Approximate drops and what they cost.

    Attributes:
        drops: ``(N, rows, cols)`` float64, computed or interpolated at every position.
        positions_computed: positions computed per image.
        positions: positions of the grid.
        last_count: positions of the last pass (the first, checkerboard pass when nothing is drilled).
    """

    drops: torch.Tensor
    positions_computed: int
    positions: int
    last_count: int


def drill_down(engine: Engine, job: Job, drill: float) -> DrillDown:
    """Drops on a checkerboard of the grid, interpolated elsewhere, then computed where largest.

    Args:
        engine: computes the drops of chosen positions.
        job: the occlusion job.
        drill: fraction in [0, 1] of the interpolated positions computed afterwards.
    """
    n_rows, n_cols = job.grid.shape
    everywhere = torch.arange(n_rows * n_cols)
    coarse = ((everywhere // n_cols) + (everywhere % n_cols)) % 2 == 0
    estimate = _interpolate(engine.drops(job, everywhere[coarse]), coarse.reshape(n_rows, n_cols))
    rest = everywhere[~coarse]
    count = math.ceil(drill * len(rest))
    if count > 0:
        flat = estimate.reshape(estimate.shape[0], -1)  # a view: filled in place
        largest = flat[:, rest].abs().amax(0)
        pick = rest[torch.argsort(largest, descending=True, stable=True)[:count]].sort().values
        fine = engine.drops(job, pick)
        flat[:, pick] = fine.reshape(fine.shape[0], -1)[:, pick]
    last = count if count > 0 else int(coarse.sum())
    return DrillDown(estimate, int(coarse.sum()) + count, n_rows * n_cols, last)


def _interpolate(drops: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``(N, rows, cols)`` drops with the unknown positions set to the mean of their known 4-neighbours."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=drops.dtype)[None, None]
    values = torch.where(known, drops, torch.zeros((), dtype=drops.dtype))[:, None]
    total = F.conv2d(values, kernel, padding=1)[:, 0]
    count = F.conv2d(known.to(drops.dtype)[None, None], kernel, padding=1)[:, 0]
    return torch.where(known, drops, total / count.clamp(min=1))
