"""The cost model that picks incremental or batched occlusion, and the memory check.

Incremental inference computes only the changed boxes, but pays per patch node
and per group of positions (reading windows, pasting patches, Python), and after
a squeeze-and-excitation gate or a norm over positions everything runs on full
maps anyway. Batched inference computes every MAC of every position but in
one call per node. Predicted time per image:

    batched     = P · full_macs / MAC_RATE     + NODE_OVERHEAD  · nodes · batches
    incremental = P · computed_macs / MAC_RATE + PATCH_OVERHEAD · patch_nodes · (groups + batches − 1)
                  + NODE_OVERHEAD · full_nodes · batches

(``computed_macs``: the MACs of the plan's boxes and full-map nodes per
position; a convolution run by Winograd F(4×4, 3×3) counts 1 / `WINOGRAD_SPEEDUP`
of its MACs). Incremental runs only where it is predicted faster.

Memory: the incremental engine keeps every node's clean map and a padded copy
of the maps it reads windows of (`IncrementalOcclusion.fixed_bytes`); this is
counted in ``memory_budget`` before the batch is sized, and when it leaves no
room for one position, occlusion runs batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .grouping import MAC_RATE
from .incremental import IncrementalOcclusion
from .plan import NodeState

__all__ = ["Prediction", "predict", "PATCH_OVERHEAD", "NODE_OVERHEAD", "WINOGRAD_SPEEDUP"]

PATCH_OVERHEAD = 5e-5  # seconds per patch node and group run: window reads, the paste, Python
NODE_OVERHEAD = 1e-5  # seconds per node and batch of a plain forward
# How much faster a Winograd convolution's changes run than its direct MACs predict: measured 1.5-2.3× on
# 256- and 512-channel layers (2 threads, AVX-512 / AVX2; `.winograd`); the low end, to stay conservative.
WINOGRAD_SPEEDUP = 1.5


@dataclass(frozen=True)
class Prediction:
    """Predicted seconds per image of both engines.

    Attributes:
        incremental_s, batched_s: predicted time of all positions of one image.
        macs_fraction: MACs the incremental plan computes per position ÷ one forward's.
    """

    incremental_s: float
    batched_s: float
    macs_fraction: float

    @property
    def incremental_faster(self) -> bool:
        return self.incremental_s < self.batched_s

    def describe(self) -> str:
        """One line: both predictions and the MAC fraction."""
        return (f"cost model: incremental {self.incremental_s * 1e3:.1f} ms against batched "
                f"{self.batched_s * 1e3:.1f} ms per image (incremental computes {self.macs_fraction:.0%} of a "
                "forward's MACs per position)")


def predict(network: IncrementalOcclusion, n_positions: int, batch: int, batched_batch: int) -> Prediction:
    """Predicted time of both engines for ``n_positions`` positions of one image.

    Args:
        network: the incremental engine's network (planned and grouped).
        n_positions: positions per image.
        batch, batched_batch: positions per batch of the incremental and batched engines.
    """
    plan, boxes = network.plan, network.grouping.boxes
    full = sum(p.macs.full for p in plan.values())
    winograd = network.winograd_nodes()
    computed = sum((boxes[n].computed_macs if n in boxes else p.macs.computed)
                   / (WINOGRAD_SPEEDUP if n in winograd else 1.0) for n, p in plan.items())
    patch_nodes = sum(p.state is NodeState.PATCH for p in plan.values())
    full_nodes = sum(p.state is NodeState.FULL for p in plan.values())
    groups = len(set(network.group.tolist()))
    batches, batched_batches = math.ceil(n_positions / batch), math.ceil(n_positions / batched_batch)
    t_batched = n_positions * full / MAC_RATE + NODE_OVERHEAD * len(plan) * batched_batches
    t_inc = (n_positions * computed / MAC_RATE + PATCH_OVERHEAD * patch_nodes * (groups + batches - 1)
             + NODE_OVERHEAD * full_nodes * batches)
    return Prediction(t_inc, t_batched, computed / full if full else 1.0)
