"""The plan of incremental occlusion: how every node runs, which box it recomputes, which positions share boxes.

`build_plan` walks the traced graph once, after the clean pass, and gives every
node a `NodePlan`: its `NodeState` (the cached clean value, a box per position,
the batch of full maps, ...), its changed `Region` per position and the
same-size `Box` that holds it. `group_boxes` then groups the positions by
region size (`.grouping`) and gives every group boxes of its own size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph import WINDOWED_KINDS, OpKind, OpSpec, Unsupported
from .rules import classify
from .grouping import group_positions
from ...geometry import avg_pool_count
from .regions import Box, Region, conv_range

__all__ = ["NodeState", "NodePlan", "Macs", "GroupBoxes", "Grouping", "build_plan", "group_boxes", "bytes_per_position"]


class NodeState(enum.Enum):
    """How one node runs for a batch of positions."""

    CONST = "const"  # no occluded input: the cached clean value serves every position
    PATCH = "patch"  # recomputed inside a same-size box per position
    FULL = "full"  # recomputed on the batch of full maps
    VALUE = "value"  # a non-tensor value (a shape) computed from changed inputs
    OUTPUT = "output"  # the graph's output


CHANGED_STATES = (NodeState.PATCH, NodeState.FULL, NodeState.VALUE)  # a node reading one of these changes too


@dataclass(frozen=True)
class Macs:
    """Multiply-accumulates of one conv / linear node per image (zero for other nodes).

    Attributes:
        full: one forward of the clean image.
        needed: mean over positions of the changed region only.
        computed: what this plan's boxes compute.
        per_value: per output value (all channels) of a patch node, else 0.
    """

    full: float = 0.0
    needed: float = 0.0
    computed: float = 0.0
    per_value: float = 0.0


@dataclass(frozen=True)
class NodePlan:
    """How one node runs for every position.

    Attributes:
        state: see `NodeState`.
        spec: the node's operation.
        region: changed region per position (patch nodes, and full nodes past the threshold).
        box: same-size boxes holding ``region`` for all positions (patch nodes).
        divisor: average pooling: ``(rows, cols)`` divisor factors of the output.
        macs: see `Macs`.
    """

    state: NodeState
    spec: OpSpec
    region: Region | None = None
    box: Box | None = None
    divisor: tuple[torch.Tensor, torch.Tensor] | None = None
    macs: Macs = field(default_factory=Macs)


@dataclass(frozen=True)
class GroupBoxes:
    """The boxes of one patch node once positions are grouped.

    Attributes:
        sizes: box ``(h, w)`` of every group.
        top, left: ``(P,)`` corner of every position's box.
        computed_macs: MACs per image with these boxes (0 for nodes that are not conv / linear).
    """

    sizes: dict[int, tuple[int, int]]
    top: torch.Tensor
    left: torch.Tensor
    computed_macs: float

    def take(self, positions: torch.Tensor, group: int) -> Box:
        """Boxes of ``positions``, all of ``group``."""
        return Box(self.sizes[group], self.top[positions], self.left[positions])


@dataclass(frozen=True)
class Grouping:
    """Positions grouped by region size: ``group`` ``(P,)`` ids and every patch node's `GroupBoxes`."""

    group: torch.Tensor
    boxes: dict[fx.Node, GroupBoxes]


def build_plan(nodes: list[fx.Node], modules: dict[str, nn.Module], cache: dict[fx.Node, Any], window: Region, *,
               full_threshold: float | None, tau: float | None) -> dict[fx.Node, NodePlan]:
    """Decide, for every node, how it runs and which box it recomputes.

    Args:
        nodes: the graph's nodes in order.
        modules: the model's named modules.
        cache: every node's clean value.
        window: the occluded region of the image per position.
        full_threshold: a node whose regions cover on average more than this fraction of its map runs
            on full maps (None: never).
        tau: projective-field threshold (None: exact).
    """
    plan: dict[fx.Node, NodePlan] = {}
    for node in nodes:
        states = [plan[a].state for a in node.all_input_nodes]
        if node.op not in ("placeholder", "output") and not any(s in CHANGED_STATES for s in states):
            # the image does not reach it: its clean value serves every position, whatever it computes
            plan[node] = NodePlan(NodeState.CONST, _const_spec(node, modules, cache))
            plan[node] = replace(plan[node], macs=node_macs(node, plan[node], modules, cache))
            continue
        spec = classify(node, modules, cache)
        if node.op == "placeholder":
            plan[node] = NodePlan(NodeState.PATCH, spec, window, window.box())
            continue
        if node.op == "output":
            entry = NodePlan(NodeState.OUTPUT, spec)
        elif spec.kind is OpKind.META:
            entry = NodePlan(NodeState.VALUE, spec)
        else:
            entry = _plan_changed(node, spec, plan, cache, full_threshold, tau)
        plan[node] = replace(entry, macs=node_macs(node, entry, modules, cache))
    return plan


def _const_spec(node: fx.Node, modules: dict[str, nn.Module], cache: dict[fx.Node, Any]) -> OpSpec:
    """The spec of a node the image does not reach (its rule, if any, only counts MACs)."""
    try:
        return classify(node, modules, cache)
    except Unsupported:
        return OpSpec(OpKind.META)


def _plan_changed(node: fx.Node, spec: OpSpec, plan: dict[fx.Node, NodePlan], cache: dict[fx.Node, Any],
                  full_threshold: float | None, tau: float | None) -> NodePlan:
    """The plan of a node with a changed input: a box per position, or full maps."""
    value = cache[node]
    spatial = isinstance(value, torch.Tensor) and value.dim() == 4
    states = [plan[a].state for a in node.all_input_nodes]
    if spec.kind is OpKind.TAIL or NodeState.FULL in states or not spatial:
        return NodePlan(NodeState.FULL, spec)
    changed = [a for a in node.all_input_nodes if plan[a].state is NodeState.PATCH]
    shape = tuple(value.shape[-2:])
    if spec.kind is OpKind.POINTWISE:
        if any(tuple(cache[a].shape[-2:]) != shape for a in changed):
            return NodePlan(NodeState.FULL, spec)  # broadcasting a changed map: no box rule
        region = plan[changed[0]].region
        for a in changed[1:]:
            region = region.union(plan[a].region)
    else:
        source = node.args[0] if isinstance(node.args[0], fx.Node) else None
        if source is None or plan[source].state is not NodeState.PATCH or any(
                plan[a].state is not NodeState.CONST for a in node.all_input_nodes if a is not source):
            return NodePlan(NodeState.FULL, spec)  # e.g. weights computed from the image: run as is
        src = plan[source].region
        rows = conv_range(*src.rows, spec.kernel[0], spec.stride[0], spec.padding[0], spec.dilation[0], shape[0])
        cols = conv_range(*src.cols, spec.kernel[1], spec.stride[1], spec.padding[1], spec.dilation[1], shape[1])
        region = Region(rows, cols, shape).capped(tau)
    box = region.box()
    if full_threshold is not None and float(region.area.double().mean()) > full_threshold * shape[0] * shape[1]:
        return NodePlan(NodeState.FULL, spec, region)
    divisor = None
    if spec.kind is OpKind.AVGPOOL:
        in_shape = tuple(cache[node.args[0]].shape[-2:])
        divisor = (_pool_counts(in_shape[0], shape[0], spec, 0), _pool_counts(in_shape[1], shape[1], spec, 1))
    return NodePlan(NodeState.PATCH, spec, region, box, divisor)


def _pool_counts(n_in: int, n_out: int, spec: OpSpec, axis: int) -> torch.Tensor:
    """``(n_out,)`` float32 divisor factor of every output row (``axis`` 0) or column (1) of average pooling."""
    counts = [avg_pool_count(o, n_in, spec.kernel[axis], spec.stride[axis], spec.padding[axis],
                             count_include_pad=spec.count_include_pad) for o in range(n_out)]
    return torch.tensor(counts, dtype=torch.float32)


def node_macs(node: fx.Node, entry: NodePlan, modules: dict[str, nn.Module], cache: dict[fx.Node, Any]) -> Macs:
    """`Macs` of a conv / linear node: per image, and per position on the true region (else zeros)."""
    weight = _weight(node, entry, modules, cache)
    out = cache.get(node)
    if weight is None or not isinstance(out, torch.Tensor):
        return Macs()
    per_out = weight[0].numel()  # in_channels / groups × kernel, or in_features
    total = float(per_out * out.numel())
    if entry.state is NodeState.CONST:
        return Macs(full=total)
    is_conv = entry.spec.kind is OpKind.CONV
    if entry.region is None or not is_conv:
        return Macs(full=total, needed=total, computed=total)
    needed = per_out * out.shape[1] * float(entry.region.area.double().mean())
    computed = total if entry.box is None else float(per_out * out.shape[1] * entry.box.size[0] * entry.box.size[1])
    per_value = float(per_out * out.shape[1]) if entry.state is NodeState.PATCH else 0.0
    return Macs(total, needed, computed, per_value)


def _weight(node: fx.Node, entry: NodePlan, modules: dict[str, nn.Module], cache: dict[fx.Node, Any]):
    """The weight of a conv / linear node (module or function), else None."""
    if node.op == "call_module":
        module = modules[node.target]
        return module.weight if isinstance(module, (nn.Conv2d, nn.Linear)) else None
    linear = node.op == "call_function" and node.target in (F.linear, torch.nn.functional.linear)
    if entry.spec.kind is not OpKind.CONV and not linear:
        return None
    arg = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    value = cache.get(arg) if isinstance(arg, fx.Node) else arg
    return value if isinstance(value, torch.Tensor) else None


def group_boxes(plan: dict[fx.Node, NodePlan], cache: dict[fx.Node, Any], *, max_groups: int,
                min_group: int) -> Grouping:
    """Group positions by similar region sizes, rows and columns apart (`.grouping`).

    Each group gets boxes of its own largest region size at every patch node.
    """
    patch = [(n, p) for n, p in plan.items() if p.state is NodeState.PATCH]
    rows = torch.stack([p.region.rows[1] - p.region.rows[0] + 1 for _, p in patch], 1)
    cols = torch.stack([p.region.cols[1] - p.region.cols[0] + 1 for _, p in patch], 1)
    # cost of one output value: MACs for conv nodes; elementwise / pooling nodes are memory-bound,
    # a few MACs' worth per value
    weights = torch.tensor([p.macs.per_value or float(cache[n].shape[1]) * 4.0 for n, p in patch],
                           dtype=torch.float64)
    group = group_positions(rows, cols, weights, max_groups=max_groups, min_count=min_group)
    groups = torch.unique(group).tolist()
    members = {g: (group == g).nonzero()[:, 0] for g in groups}
    boxes = {node: _node_group_boxes(p, group, members) for node, p in patch}
    return Grouping(group, boxes)


def _node_group_boxes(entry: NodePlan, group: torch.Tensor, members: dict[int, torch.Tensor]) -> GroupBoxes:
    """One patch node's boxes per group (the node's own boxes when there is one group)."""
    sizes, top, left = {}, torch.empty_like(group), torch.empty_like(group)
    area = 0
    region = entry.region
    for g, positions in members.items():
        sub = entry.box if len(members) == 1 else Region(
            (region.rows[0][positions], region.rows[1][positions]),
            (region.cols[0][positions], region.cols[1][positions]), region.shape).box()
        sizes[g] = sub.size
        top[positions], left[positions] = sub.top, sub.left
        area += len(positions) * sub.size[0] * sub.size[1]
    computed = entry.macs.per_value * area / len(group) if entry.macs.per_value else entry.macs.computed
    return GroupBoxes(sizes, top, left, computed)


def bytes_per_position(plan: dict[fx.Node, NodePlan], cache: dict[fx.Node, Any]) -> int:
    """Upper bound on the memory one position needs while a batch runs (all changed values + crops)."""
    total, crop = 0, 0
    for node, p in plan.items():
        value = cache.get(node)
        if not isinstance(value, torch.Tensor) or p.state not in (NodeState.PATCH, NodeState.FULL):
            continue
        if p.state is NodeState.FULL:
            total += value[0].numel() * value.element_size()
            continue
        channels = value.shape[1] if value.dim() > 1 else 1
        total += channels * p.box.size[0] * p.box.size[1] * value.element_size()
        if p.spec.kind in WINDOWED_KINDS:
            kernel, stride, dilation = p.spec.kernel, p.spec.stride, p.spec.dilation
            side = [(p.box.size[i] - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 for i in range(2)]
            crop = max(crop, cache[node.args[0]].shape[1] * side[0] * side[1] * (value.element_size() + 8))
        if any(plan[u].state is not NodeState.PATCH for u in node.users):
            total += 2 * value[0].numel() * value.element_size()  # materialized for the full phase
    return int(total + 3 * crop)
