"""Incremental inference for occlusion: recompute only what a window changes.

Krypton's idea (Nakandala, Kumar & Papakonstantinou, "Incremental and
Approximate Inference for Faster Occlusion-based Deep CNN Explanations",
SIGMOD 2019). The clean image is run once and every node's output is kept.
For a batch of window positions, each layer then recomputes only the box of its
output that the window can have changed — from the cached input plus the halo
its kernel needs, with the layer's own weights (``F.conv2d(..., padding=0)``
after explicit padding, ``-inf`` padding for max pooling) — for all positions
stacked as one batch. Elementwise layers keep the box, additions take the union
of boxes, convolutions and pools grow it by their kernel and shrink it by their
stride. Once the boxes cover most of their map on average, or at flatten / linear / adaptive
pooling, the rest of the graph runs normally on the batch of full maps.

The graph comes from ``torch.fx``; the operations are the model's own modules
and functions. `~cnn_explain.attribution._graph.Unsupported` is raised
(and occlusion falls back to plain batched inference) when the model cannot be
traced or contains an operation without a region rule.

``tau`` turns on Krypton's *projective-field thresholding* (approximate): no
box side grows beyond ``ceil(tau × map side)``; values outside the truncated box
keep their clean value.

Example:
    >>> import torch
    >>> from cnn_explain.models import tiny_vgg
    >>> from cnn_explain.attribution._windows import make_grid
    >>> grid = make_grid((16, 16), (4, 4), (4, 4))
    >>> with torch.inference_mode():
    ...     eng = IncrementalOcclusion(tiny_vgg().eval(), (3, 16, 16), *grid.positions())
    ...     _ = eng.prepare(torch.rand(1, 3, 16, 16))
    >>> sorted({p.state for p in eng.plan.values()})
    ['full', 'output', 'patch']
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ._grouping import group_positions
from ._graph import (NodePlan, OpSpec, Unsupported, call_node, check_hooks, check_inplace, classify, count_macs, fetch,
                     rectifiable_input, trace)
from ._lowp import LowPrecision
from ._regions import Box, Region, avg_divisor, conv_range, materialize, max_pool, read, read_change

__all__ = ["IncrementalOcclusion", "Unsupported", "NodePlan"]


class IncrementalOcclusion:
    """Scores of occluded copies of one image, computed incrementally.

    Args:
        model: the network, already in eval mode (the caller restores it).
        image_shape: ``(C, H, W)``.
        rows, cols: ``(first, last)`` inclusive window rows / columns, ``(P,)`` each, one per position.
        tau: projective-field threshold in (0, 1] (approximate), or None (exact).
        full_threshold: a node whose changed regions cover on average more than
            this fraction of its map is computed as a full map (and everything
            after it). The mean, not the largest box, decides: measured on
            VGG-11 / ResNet-18 at 128², switching on the largest box (a few
            border groups) cost 1.3-1.4× more time.
        min_group: fewest positions a row (column) group may have, see `._grouping`.
        max_groups: at most this many row groups and this many column groups.
        lowp: None (exact), or a dtype (``torch.bfloat16``) in which convolutions
            compute the *change* of their output (approximate, see `._lowp`).
        channels_last: run the changed boxes with NHWC strides (None: when ``lowp``
            is set: bfloat16 convolutions take NHWC input without a reorder).

    Raises:
        Unsupported: the model cannot be traced or has an operation without a region rule.
    """

    def __init__(self, model: nn.Module, image_shape: tuple[int, int, int], rows, cols, *,
                 tau: float | None = None, full_threshold: float = 0.6, min_group: int = 8,
                 max_groups: int = 4, lowp: torch.dtype | None = None, channels_last: bool | None = None) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        check_hooks(self.modules)
        self.graph = trace(model)
        self.inplace = check_inplace(self.graph, self.modules)
        self.nodes = list(self.graph.nodes)
        self.image_shape = tuple(image_shape)
        self.window = Region(tuple(rows), tuple(cols), self.image_shape[1:])
        self.tau, self.full_threshold, self.min_group, self.max_groups = tau, full_threshold, min_group, max_groups
        self.lowp = LowPrecision(lowp) if lowp is not None else None
        self.channels_last = lowp is not None if channels_last is None else channels_last
        self.cache: dict[fx.Node, Any] = {}
        self.plan: dict[fx.Node, NodePlan] | None = None
        self.last_use = {}
        for node in self.nodes:
            for a in node.all_input_nodes:
                self.last_use[a] = node

    # ------------------------------------------------------------------ clean pass
    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Run the clean ``(1, C, H, W)`` image, cache every node's output; returns the model output."""
        cache, env = {}, {}
        for node in self.nodes:
            if node.op == "placeholder":
                val = image
            elif node.op == "get_attr":
                val = fetch(self.model, node.target)
            elif node.op == "output":
                out = fx.node.map_arg(node.args[0], lambda a: env[a])
                break
            else:
                args = fx.node.map_arg(node.args, lambda a: env[a])
                kwargs = fx.node.map_arg(node.kwargs, lambda a: env[a])
                val = call_node(node, self.modules, args, kwargs)
            env[node] = val
            cache[node] = val.clone() if isinstance(val, torch.Tensor) else val
        self.cache = cache
        self._pads: dict[tuple[fx.Node, float], dict] = {}
        if self.plan is None:
            self.plan = self.build_plan(self.full_threshold, self.tau)
            self._group()
        return out

    # ------------------------------------------------------------------ planning
    def build_plan(self, full_threshold: float | None, tau: float | None) -> dict[fx.Node, NodePlan]:
        """Decide, for every node, how it runs and which box it recomputes (needs `prepare` first)."""
        plan: dict[fx.Node, NodePlan] = {}
        for node in self.nodes:
            spec = classify(node, self.modules, self.cache)
            if node.op == "placeholder":
                region = self.window
                plan[node] = NodePlan("patch", spec, region, region.box())
                continue
            states = [plan[a].state for a in node.all_input_nodes]
            if node.op == "output" or not any(s in ("patch", "full", "value") for s in states):
                plan[node] = NodePlan("output" if node.op == "output" else "const", spec)
            elif spec.kind == "meta":
                plan[node] = NodePlan("value", spec)
            else:
                plan[node] = self._plan_changed(node, spec, plan, states, full_threshold, tau)
            count_macs(node, plan[node], self.modules, self.cache)
        return plan

    def _plan_changed(self, node, spec, plan, states, full_threshold, tau) -> NodePlan:
        val = self.cache[node]
        spatial = isinstance(val, torch.Tensor) and val.dim() == 4
        if spec.kind == "tail" or "full" in states or not spatial:
            return NodePlan("full", spec)
        changed = [a for a in node.all_input_nodes if plan[a].state == "patch"]
        shape = tuple(val.shape[-2:])
        if any(tuple(self.cache[a].shape[-2:]) != shape for a in changed if spec.kind == "pointwise"):
            return NodePlan("full", spec)  # broadcasting a changed map: no box rule
        if spec.kind == "pointwise":
            region = plan[changed[0]].region
            for a in changed[1:]:
                region = region.union(plan[a].region)
        else:
            src = plan[node.args[0]].region if isinstance(node.args[0], fx.Node) else None
            if src is None or plan[node.args[0]].state != "patch":
                return NodePlan("full", spec)
            rows = conv_range(*src.rows, spec.kernel[0], spec.stride[0], spec.padding[0], spec.dilation[0], shape[0])
            cols = conv_range(*src.cols, spec.kernel[1], spec.stride[1], spec.padding[1], spec.dilation[1], shape[1])
            region = Region(rows, cols, shape).capped(tau)
        box = region.box()
        if full_threshold is not None and float(region.area.double().mean()) > full_threshold * shape[0] * shape[1]:
            return NodePlan("full", spec, region)
        np_ = NodePlan("patch", spec, region, box)
        if spec.kind == "avgpool":
            in_shape = tuple(self.cache[node.args[0]].shape[-2:])
            np_.divisor = tuple(avg_divisor(in_shape[i], shape[i], spec, i) for i in range(2))
        return np_

    def macs(self, full_threshold: float | None = None, tau: float | None = None) -> dict[str, float]:
        """Per-image MACs: ``full`` (one forward), ``needed`` (mean over positions of the changed
        regions, no box rounding, no full-map switch unless ``full_threshold``), ``computed`` (this engine)."""
        ideal = self.build_plan(full_threshold, tau)
        keys = ("full", "needed")
        totals = {k: sum(p.macs.get(k, 0.0) for p in ideal.values()) for k in keys}
        totals["computed"] = sum(p.macs.get("computed", 0.0) for p in self.plan.values())
        return totals

    def bytes_per_position(self) -> int:
        """Upper bound on the memory one position needs while a batch runs (all changed values + crops)."""
        total, crop = 0, 0
        for node, p in self.plan.items():
            val = self.cache.get(node)
            if not isinstance(val, torch.Tensor) or p.state not in ("patch", "full"):
                continue
            c = val.shape[1] if val.dim() > 1 else 1
            if p.state == "patch":
                total += c * p.box.size[0] * p.box.size[1] * val.element_size()
                if p.spec.kind in ("conv", "maxpool", "avgpool"):
                    k, st, d = p.spec.kernel, p.spec.stride, p.spec.dilation
                    side = [(p.box.size[i] - 1) * st[i] + (k[i] - 1) * d[i] + 1 for i in range(2)]
                    crop = max(crop, self.cache[node.args[0]].shape[1] * side[0] * side[1] * (val.element_size() + 8))
                if any(self.plan[u].state != "patch" for u in node.users):
                    total += 2 * val[0].numel() * val.element_size()  # materialized for the full phase
            else:
                total += val[0].numel() * val.element_size()
        return int(total + 3 * crop)

    # ------------------------------------------------------------------ grouping
    def _group(self) -> None:
        """Group positions by similar region sizes, rows and columns apart (`._grouping`).

        Each group gets boxes of its own largest region size at every node.
        """
        patch = [(n, p) for n, p in self.plan.items() if p.state == "patch"]
        rows = torch.stack([p.region.rows[1] - p.region.rows[0] + 1 for _, p in patch], 1)
        cols = torch.stack([p.region.cols[1] - p.region.cols[0] + 1 for _, p in patch], 1)
        weights = torch.tensor([self._weight(n) for n, _ in patch], dtype=torch.float64)
        self.group = group_positions(rows, cols, weights, max_groups=self.max_groups, min_count=self.min_group)
        self._patch_last_use = {}
        for node in self.nodes:
            if self.plan[node].state == "patch":
                for a in node.all_input_nodes:
                    self._patch_last_use[a] = node
        groups = torch.unique(self.group).tolist()
        members = {g: (self.group == g).nonzero()[:, 0] for g in groups}
        for _, p in patch:
            p.sizes, p.top, p.left = {}, torch.empty_like(self.group), torch.empty_like(self.group)
            area = 0
            for g in groups:
                mem = members[g]
                sub = p.box if len(groups) == 1 else Region(
                    (p.region.rows[0][mem], p.region.rows[1][mem]),
                    (p.region.cols[0][mem], p.region.cols[1][mem]), p.region.shape).box()
                p.sizes[g] = sub.size
                p.top[mem], p.left[mem] = sub.top, sub.left
                area += len(mem) * sub.size[0] * sub.size[1]
            if p.macs.get("per_value"):
                p.macs["computed"] = p.macs["per_value"] * area / len(self.group)

    def _weight(self, node: fx.Node) -> float:
        """Cost of one output value of a patch node, in multiply-accumulates (per spatial position)."""
        p = self.plan[node]
        if p.macs.get("per_value"):
            return p.macs["per_value"]
        val = self.cache[node]
        return float(val.shape[1]) * 4.0  # elementwise / pooling: memory-bound, a few MACs' worth per value

    def sort(self, idx: torch.Tensor) -> torch.Tensor:
        """``idx`` ordered by group (batches then split into few groups)."""
        return idx[torch.argsort(self.group[idx], stable=True)]

    def box(self, node: fx.Node, idx: torch.Tensor, g: int) -> Box:
        """Boxes of ``node`` for positions ``idx`` of group ``g``."""
        p = self.plan[node]
        return Box(p.sizes[g], p.top[idx], p.left[idx])

    # ------------------------------------------------------------------ running
    def run(self, idx: torch.Tensor, make_input) -> Any:
        """Model outputs for positions ``idx``; ``make_input(idx, box)`` returns the occluded input boxes."""
        b = len(idx)
        groups = self.group[idx]
        cuts = (torch.nonzero(groups[1:] != groups[:-1])[:, 0] + 1).tolist()
        env: dict[fx.Node, Any] = {}
        for part, start in zip(torch.tensor_split(idx, cuts), [0] + cuts):
            for node, val in self._patch_phase(part, int(self.group[part[0]]), make_input).items():
                if not cuts:
                    env[node] = val
                    continue
                if node not in env:  # filled group by group: no list of parts, no concatenated copy
                    env[node] = val.new_empty((b,) + tuple(val.shape[1:]))
                env[node][start:start + len(part)] = val
        for node in self.nodes:
            p = self.plan[node]
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda a: self._value(a, env, b))
            if p.state == "full":
                env[node] = self._run_full(node, p, env, b)
            elif p.state == "value":
                env[node] = self._call(node, lambda a: self._value(a, env, b, meta=True))
                for a in node.all_input_nodes:
                    if self.last_use.get(a) is node:
                        env.pop(a, None)
        raise Unsupported("the graph has no output")  # pragma: no cover

    def _run_full(self, node: fx.Node, p: NodePlan, env, b: int) -> Any:
        """One node on the batch of full maps (max pooling by strided maxima, convolutions of changes if ``lowp``)."""
        s = p.spec
        if s.kind == "pointwise":
            owned = rectifiable_input(node, self.modules, env)
            if owned is not None:
                return torch.relu_(owned)
        if s.kind == "maxpool":
            return max_pool(self._value(node.args[0], env, b), s.kernel, s.stride, s.padding, s.dilation,
                            tuple(self.cache[node].shape[-2:]))
        if self.lowp is not None and node.op == "call_module" and not node.kwargs and len(node.args) == 1:
            src, m = node.args[0], self.modules[node.target]
            if s.kind == "conv":
                return self.lowp.conv(m, self.cache[node], self._value(src, env, b), self.cache[src], m.padding)
            if isinstance(m, nn.Linear):
                return self.lowp.linear(m, self.cache[node], self._value(src, env, b), self.cache[src])
        return self._call(node, lambda a: self._value(a, env, b))

    def _patch_phase(self, idx: torch.Tensor, g: int, make_input) -> dict[fx.Node, torch.Tensor]:
        """Run the patch nodes for one group; returns the full maps the full phase needs."""
        env: dict[fx.Node, Any] = {}
        frontier: dict[fx.Node, torch.Tensor] = {}
        for node in self.nodes:
            p = self.plan[node]
            if p.state != "patch":
                continue
            if node.op == "placeholder":
                env[node] = make_input(idx, self.box(node, idx, g))
            else:
                env[node] = self._run_patch(node, p, idx, g, env)
            if any(self.plan[u].state in ("full", "value", "output") for u in node.users):
                frontier[node] = materialize(self.cache[node][0], env[node], self.box(node, idx, g))
            for a in node.all_input_nodes:
                if self._patch_last_use.get(a) is node:
                    env.pop(a, None)
        return frontier

    def _call(self, node: fx.Node, resolve) -> Any:
        args = fx.node.map_arg(node.args, resolve)
        kwargs = fx.node.map_arg(node.kwargs, resolve)
        return call_node(node, self.modules, args, kwargs)

    def _value(self, a: fx.Node, env, b: int, meta: bool = False) -> Any:
        st = self.plan[a].state
        if st == "const":
            return self.cache[a]
        if meta and st == "patch":
            return torch.empty((b,) + tuple(self.cache[a].shape[1:]), device="meta")
        return env[a]

    def _run_patch(self, node: fx.Node, p: NodePlan, idx: torch.Tensor, g: int, env) -> torch.Tensor:
        spec = p.spec
        box = self.box(node, idx, g)
        if spec.kind == "pointwise":
            owned = rectifiable_input(node, self.modules, env)
            if owned is not None:  # a one-input pointwise node has its input's region, hence its boxes
                return torch.relu_(owned)
            return self._call(node, lambda a: self._read_box(a, box, idx, g, env))
        src = node.args[0]
        k, s, pd, d = spec.kernel, spec.stride, spec.padding, spec.dilation
        start = (box.top * s[0] - pd[0], box.left * s[1] - pd[1])
        size = tuple((box.size[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(2))
        pad = float("-inf") if spec.kind == "maxpool" else 0.0
        if spec.kind == "conv" and self.lowp is not None:
            m = self.modules[node.target]
            change = read_change(self.cache[src][0], env[src], self.box(src, idx, g), start, size,
                                 self.lowp.dtype, self._padded(src, 0.0), self.channels_last)
            clean_out = read(self.cache[node][0], None, None, (box.top, box.left), box.size, 0.0,
                             self._padded(node, 0.0), self.channels_last)
            return self.lowp.conv(m, clean_out, change, None)
        crop = read(self.cache[src][0], env[src], self.box(src, idx, g), start, size, pad, self._padded(src, pad),
                    self.channels_last)
        if spec.kind == "conv":
            m = self.modules[node.target]
            return F.conv2d(crop, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if spec.kind == "maxpool":
            return max_pool(crop, spec.kernel, spec.stride, (0, 0), spec.dilation)
        total = F.avg_pool2d(crop, spec.kernel, spec.stride, 0, divisor_override=1)
        if spec.divisor_override:
            return total / spec.divisor_override
        dr = p.divisor[0][box.top[:, None] + torch.arange(box.size[0])]
        dc = p.divisor[1][box.left[:, None] + torch.arange(box.size[1])]
        return total / (dr[:, None, :, None] * dc[:, None, None, :])

    def _padded(self, node: fx.Node, pad: float) -> dict:
        """The memo of ``node``'s clean map padded with ``pad`` (filled by `read`)."""
        return self._pads.setdefault((node, pad), {})

    def _read_box(self, a: fx.Node, box: Box, idx: torch.Tensor, g: int, env) -> Any:
        ap = self.plan[a]
        if ap.state == "patch":
            abox = self.box(a, idx, g)
            if abox.size == box.size and torch.equal(abox.top, box.top) and torch.equal(abox.left, box.left):
                return env[a]
            return read(self.cache[a][0], env[a], abox, (box.top, box.left), box.size, 0.0, self._padded(a, 0.0),
                        self.channels_last)
        if ap.state == "value":
            return self._call(a, lambda n: self._value(n, env, len(idx), meta=True))
        val = self.cache[a]
        if isinstance(val, torch.Tensor) and val.dim() == 4 and val.shape[-2:] != (1, 1):
            return read(val[0], None, None, (box.top, box.left), box.size, 0.0, self._padded(a, 0.0),
                        self.channels_last)  # its box
        return val
