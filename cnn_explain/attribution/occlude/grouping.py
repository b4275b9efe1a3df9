"""Grouping window positions so that each group recomputes boxes close to its own regions.

A batch of positions shares one box size per node (the largest region among
them), so a position whose region is smaller than the box recomputes values it
did not change. Region sizes vary with a window's alignment to the strides of
the network and with clipping at the borders, and they vary independently
along rows and columns: a region's rows depend only on the window's rows.
So rows and columns are partitioned separately — each into at most a few
groups of similar row (column) sizes — and a position's group is the pair.

Within one axis the cost of a partition is, for every node ``n`` with weight
``w_n`` (multiply-accumulates per output value), the number of positions times
the largest size in their group: ``Σ_n w_n Σ_groups |group| max_size_n``.
Sorting the distinct size vectors by their weighted size and cutting the sorted
list into contiguous segments (dynamic programming) gives a near-optimal
partition at negligible cost. The number of groups per axis is the one with
the least estimated time: MACs at ``MAC_RATE`` plus ``NODE_OVERHEAD`` seconds
per node and extra group (every group runs the patch phase once more).

Measured on the benchmark networks: exact sharing of region sizes at every node
(the former grouping) left 841 distinct signatures for 961 positions on
ResNet-18 at 128², so everything ran with the largest box; the per-axis
partition (12 and 4 groups) cuts the MACs computed per image from 573 to 476 million
on VGG-11 and from 354 to 335 million on ResNet-18 (one forward: 2,448 and 592 million).

Example:
    >>> import torch
    >>> sizes = torch.tensor([[3], [4], [4], [3], [8]])
    >>> one, two = partition_axis(sizes, torch.tensor([1.0]), groups=2, min_count=1)
    >>> one[0].tolist(), one[1].tolist()
    ([0, 0, 0, 0, 0], [40.0])
    >>> two[0].tolist(), two[1].tolist()
    ([0, 0, 0, 0, 1], [24.0])
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["partition_axis", "group_positions", "MAC_RATE", "NODE_OVERHEAD"]

MAC_RATE = 5e10  # multiply-accumulates per second of a batched conv on one core pair (measured: 50-60e9)
# seconds per node and extra group: Python, indexing, smaller batches, and a first-use kernel
# creation for every new box shape. Fresh-process first calls, three each: VGG-11 128² approx
# 2.2-2.9 / 2.0-2.6 / 2.1-2.9 s with 2e-4 / 1e-3 / 2e-3 (16 / 12 / 9 groups); ResNet-18 exact
# 5.7-6.1 s with 2e-4 (12 groups) against 5.3-5.7 s with 2e-3 (4 groups).
NODE_OVERHEAD = 1e-3


def partition_axis(sizes: torch.Tensor, weights: torch.Tensor, groups: int, min_count: int):
    """Best partitions of positions by their size vectors along one axis, for 1..``groups`` groups.

    Args:
        sizes: ``(P, n)`` region size of every position at every node (one axis).
        weights: ``(n,)`` cost per unit of size at every node.
        groups: at most this many groups.
        min_count: fewest positions a group may have (unless there is one group).

    Returns:
        A list, one entry per feasible number of groups, of ``(ids, cost)``:
        ``(P,)`` group of every position and ``(n,)`` the sum over positions of
        the size of their group's box at every node.
    """
    uniq, inv, counts = torch.unique(sizes, dim=0, return_inverse=True, return_counts=True)
    w = weights.double().numpy()
    order = np.argsort(uniq.double().numpy() @ w, kind="stable")
    u, c = uniq.double().numpy()[order], counts.double().numpy()[order]
    m = len(u)
    prefix = np.concatenate([[0.0], np.cumsum(c)])
    seg_max = np.maximum.accumulate(np.broadcast_to(u, (m, m, u.shape[1])) * (np.arange(m)[None, :, None] >= np.arange(m)[:, None, None]), axis=1)
    n_pos = prefix[None, 1:] - prefix[:-1, None]  # [a, b]: positions in sorted items a..b
    seg_cost = n_pos * (seg_max @ w)
    feasible = (n_pos >= min_count) & (np.arange(m)[None, :] >= np.arange(m)[:, None])
    seg_cost = np.where(feasible, seg_cost, np.inf)
    seg_cost[0, m - 1] = n_pos[0, m - 1] * (seg_max[0, m - 1] @ w)  # one group is always allowed
    cost = np.full(m + 1, np.inf)
    cost[0] = 0.0
    back: list[np.ndarray] = []
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    out = []
    for _ in range(max(1, min(groups, m))):
        # new[b + 1] = min over a of cost[a] + seg_cost[a, b]
        total = cost[:-1, None] + seg_cost
        arg = np.argmin(total, axis=0)
        cost = np.concatenate([[np.inf], total[arg, np.arange(m)]])
        back.append(arg)
        if not np.isfinite(cost[m]):
            continue
        ids_sorted = np.zeros(m, dtype=np.int64)
        axis_cost = np.zeros(u.shape[1])
        end, k = m, len(back)
        while k > 0:
            a = int(back[k - 1][end - 1])
            ids_sorted[a:end] = k - 1
            axis_cost += n_pos[a, end - 1] * seg_max[a, end - 1]
            end, k = a, k - 1
        out.append((torch.from_numpy(ids_sorted[rank][inv.numpy()]), torch.from_numpy(axis_cost)))
    return out


def group_positions(rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, *, max_groups: int = 4,
                    min_count: int = 8) -> torch.Tensor:
    """``(P,)`` group id of every position, from its ``(P, n)`` row and column sizes at every node.

    Tries 1..``max_groups`` groups per axis and keeps the pair with the least
    estimated time (see the module docstring).
    """
    w = weights.double()
    n_pos = rows.shape[0]
    by_rows = partition_axis(rows, w * cols.double().amax(0), max_groups, min_count)
    by_cols = partition_axis(cols, w * rows.double().amax(0), max_groups, min_count)
    best = None
    for ids_r, cost_r in by_rows:
        for ids_c, cost_c in by_cols:
            n_r, n_c = int(ids_r.max()) + 1, int(ids_c.max()) + 1
            macs = float((w * cost_r * cost_c).sum()) / n_pos
            t = macs / MAC_RATE + NODE_OVERHEAD * len(w) * (n_r * n_c - 1)
            if best is None or t < best[0]:
                best = (t, ids_r * n_c + ids_c)
    return best[1]
