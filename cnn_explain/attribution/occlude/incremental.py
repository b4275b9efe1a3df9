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
and functions. `~cnn_explain.attribution.occlude.graph.Unsupported` is raised
(and occlusion falls back to plain batched inference) when the model cannot be
traced or contains an operation without a region rule.

``tau`` turns on Krypton's *projective-field thresholding* (approximate): no
box side grows beyond ``ceil(tau × map side)``; values outside the truncated box
keep their clean value.

Example:
    >>> import torch
    >>> from cnn_explain.models import tiny_vgg
    >>> from cnn_explain.attribution.occlude.windows import make_grid
    >>> grid = make_grid((16, 16), (4, 4), (4, 4))
    >>> with torch.inference_mode():
    ...     eng = IncrementalOcclusion(tiny_vgg().eval(), torch.rand(1, 3, 16, 16), *grid.positions())
    >>> sorted({p.state.value for p in eng.plan.values()})
    ['full', 'output', 'patch']
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph import OpKind, Unsupported, call_node, check_hooks, check_inplace, fetch, rectifiable_input, trace
from .record import record
from .lowp import LowPrecision, convs_of_changes
from .winograd import WinogradChanges
from .plan import NodePlan, NodeState, build_plan, bytes_per_position, group_boxes
from .regions import Box, Region, materialize, max_pool, read_change, read_windows

__all__ = ["IncrementalOcclusion", "Unsupported", "NodePlan", "NodeState", "graph_key"]

MakeInput = Callable[[torch.Tensor, Box], torch.Tensor]  # (positions, their input boxes) -> occluded input boxes


# model -> {key: (graph, rebuild, how) or the reason it is unsupported}: tracing or recording costs
# 1-90 ms (ConvNeXt-like 64²: 90 ms of symbolic tracing, 15 % of a whole occlusion), paid once per model
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graph_key(model: nn.Module, image: torch.Tensor) -> tuple:
    """What a graph depends on: the image's shape and dtype (recordings are shape-specialised) and which module
    object sits at every path (a replaced submodule is traced again); parameters are read by name when run."""
    return (tuple(image.shape), image.dtype, image.device,
            tuple((name, id(m), m.training) for name, m in model.named_modules()))


class IncrementalOcclusion:
    """Scores of occluded copies of one image, computed incrementally.

    The clean image runs once at construction (every node's output is cached)
    and the plan is made from it; `prepare` caches another image of the same
    shape under the same plan.

    Args:
        model: the network, already in eval mode (the caller restores it).
        image: ``(1, C, H, W)`` clean image.
        rows, cols: ``(first, last)`` inclusive window rows / columns, ``(P,)`` each, one per position.
        tau: projective-field threshold in (0, 1] (approximate), or None (exact).
        full_threshold: a node whose changed regions cover on average more than this fraction of its map is
            computed as a full map (and everything after it). The mean, not the largest box, decides: on VGG-11 /
            ResNet-18 at 128², switching on the largest box (a few border groups) cost 1.3-1.4× more time.
        min_group: fewest positions a row (column) group may have, see `.grouping`.
        max_groups: at most this many row groups and this many column groups.
        lowp: None (the model's own convolutions), a dtype (``torch.bfloat16``) in which convolutions compute
            the *change* of their output (approximate, see `.lowp`), or ``"winograd"``: changes in the model's
            dtype, large 3×3 convolutions by Winograd F(4×4, 3×3) (see `.winograd`).
        channels_last: run the changed boxes with NHWC strides (None: when ``lowp`` is set and some
            convolution uses it: bfloat16 and Winograd convolutions take NHWC input without a reorder).

    Attributes:
        clean_output: the model's output for ``image``.
        plan: every node's `NodePlan`.

    Raises:
        Unsupported: the model cannot be traced or has an operation without a region rule.
    """

    def __init__(self, model: nn.Module, image: torch.Tensor, rows, cols, *, tau: float | None = None,
                 full_threshold: float = 0.6, min_group: int = 8, max_groups: int = 4,
                 lowp: torch.dtype | str | None = None, channels_last: bool | None = None) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        check_hooks(self.modules)
        self.window = Region(tuple(rows), tuple(cols), tuple(image.shape[-2:]))
        self.tau = tau
        self.lowp = (None if lowp is None else WinogradChanges(image.dtype) if lowp == "winograd"
                     else LowPrecision(lowp))
        self.padded: dict[tuple[fx.Node, float], dict] = {}  # clean maps padded for `read_windows`, per image
        self.rebuild: Callable[[Any], Any] = lambda out: out
        self.how = "torch.fx"  # how the graph was made: "torch.fx" or "recorded" (real tensors)
        key = graph_key(model, image)
        known = _GRAPHS.setdefault(model, {}).get(key)
        if isinstance(known, str):
            raise Unsupported(known)  # this model and image shape were already found unsupported
        try:
            if known is not None:
                self.rebuild, self.how = known[1], known[2]
                self._build(known[0], image, full_threshold)
            else:
                self._first_build(model, image, full_threshold)
        except Unsupported as exc:
            _GRAPHS[model] = {key: str(exc)}
            raise
        _GRAPHS[model] = {key: (self.graph, self.rebuild, self.how)}
        self.grouping = group_boxes(self.plan, self.cache, max_groups=max_groups, min_group=min_group)
        patch_nodes = [node for node in self.nodes if self.plan[node].state is NodeState.PATCH]
        self.patch_last_use = {a: node for node in patch_nodes for a in node.all_input_nodes}
        self.lowp_bytes, work = self._lowp_memory()  # drops a Winograd `lowp` that no convolution qualifies for
        self.channels_last = self.lowp is not None if channels_last is None else channels_last
        self.position_bytes = bytes_per_position(self.plan, self.cache) + work

    def winograd_nodes(self) -> list[fx.Node]:
        """The convolution nodes whose changes run by Winograd F(4×4, 3×3) (on maps small enough)."""
        return convs_of_changes(self.plan, self.modules, self.lowp) if isinstance(self.lowp, WinogradChanges) else []

    def _lowp_memory(self) -> tuple[int, int]:
        """What the convolutions of changes hold for the call and need per position (`LowPrecision.memory`);
        a Winograd `lowp` that no convolution qualifies for is dropped (the model's own convolutions)."""
        nodes = convs_of_changes(self.plan, self.modules, self.lowp)
        if not nodes and isinstance(self.lowp, WinogradChanges):
            self.lowp = None
        sizes = {n: self.plan[n].box.size if self.plan[n].state is NodeState.PATCH else self.cache[n].shape[-2:]
                 for n in nodes}
        return (0, 0) if self.lowp is None else self.lowp.memory(
            [(self.modules[n.target], tuple(sizes[n]), self.cache[n].element_size()) for n in nodes])

    def _first_build(self, model: nn.Module, image: torch.Tensor, full_threshold: float) -> None:
        """Trace symbolically, else record on real tensors, and build; `Unsupported` with both reasons."""
        try:
            self._build(trace(model), image, full_threshold)
        except Unsupported as symbolic:
            try:
                recorded = record(model, image)
                self.rebuild, self.how = recorded.rebuild, "recorded"
                self._build(recorded.graph, image, full_threshold)
            except Unsupported as real:
                raise Unsupported(f"{symbolic}; recorded on real tensors: {real}") from None

    def _build(self, graph: fx.Graph, image: torch.Tensor, full_threshold: float) -> None:
        """Check ``graph``, run the clean pass and plan every node; `Unsupported` if a node has no rule."""
        self.graph = graph
        self.inplace = check_inplace(self.graph, self.modules)
        self.nodes = list(self.graph.nodes)
        self.last_use = {a: node for node in self.nodes for a in node.all_input_nodes}
        self.cache, self.clean_output = self._clean_pass(image)
        self.plan = build_plan(self.nodes, self.modules, self.cache, self.window, full_threshold=full_threshold,
                               tau=self.tau)

    @property
    def group(self) -> torch.Tensor:
        """``(P,)`` group of every position (positions of a group share box sizes)."""
        return self.grouping.group

    # ------------------------------------------------------------------ clean pass
    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Cache every node's output for another clean ``(1, C, H, W)`` image; returns the model output."""
        self.cache, self.padded = {}, {}  # freed before the new image's maps are made
        self.cache, self.clean_output = self._clean_pass(image)
        return self.clean_output

    def _clean_pass(self, image: torch.Tensor) -> tuple[dict[fx.Node, Any], Any]:
        """Every node's clean value (tensors cloned: later nodes may change theirs in place), and the output."""
        cache, env = {}, {}
        for node in self.nodes:
            if node.op == "placeholder":
                value = image
            elif node.op == "get_attr":
                value = fetch(self.model, node.target)
            elif node.op == "output":
                return cache, self.rebuild(fx.node.map_arg(node.args[0], lambda a: env[a]))
            else:
                args = fx.node.map_arg(node.args, lambda a: env[a])
                kwargs = fx.node.map_arg(node.kwargs, lambda a: env[a])
                value = call_node(node, self.modules, args, kwargs)
            env[node] = value
            cache[node] = value.clone() if isinstance(value, torch.Tensor) and node.op != "get_attr" else value
            for a in node.all_input_nodes:
                if self.last_use.get(a) is node:
                    env.pop(a, None)  # only the clones stay
        raise Unsupported("the graph has no output")  # pragma: no cover

    # ------------------------------------------------------------------ plan queries
    def macs(self, full_threshold: float | None = None, tau: float | None = None) -> dict[str, float]:
        """Per-image MACs: ``full`` (one forward), ``needed`` (mean over positions of the changed
        regions, no box rounding, no full-map switch unless ``full_threshold``), ``computed`` (this engine)."""
        ideal = build_plan(self.nodes, self.modules, self.cache, self.window, full_threshold=full_threshold, tau=tau)
        boxes = self.grouping.boxes
        computed = sum(boxes[n].computed_macs if n in boxes else p.macs.computed for n, p in self.plan.items())
        return {"full": sum(p.macs.full for p in ideal.values()),
                "needed": sum(p.macs.needed for p in ideal.values()), "computed": computed}

    def fixed_bytes(self) -> int:
        """Memory held whatever the batch: every node's clean map, as much again for the padded copies
        that windows are read from, and Winograd's transformed weights (parameters and buffers not
        counted: they belong to the model)."""
        maps = sum(v.numel() * v.element_size() for n, v in self.cache.items()
                   if isinstance(v, torch.Tensor) and n.op != "get_attr")
        return int(2 * maps) + self.lowp_bytes

    def bytes_per_position(self) -> int:
        """Upper bound on the memory one position needs while a batch runs (all changed values + crops)."""
        return self.position_bytes

    def sort(self, positions: torch.Tensor) -> torch.Tensor:
        """``positions`` ordered by group (batches then split into few groups)."""
        return positions[torch.argsort(self.group[positions], stable=True)]

    def box(self, node: fx.Node, positions: torch.Tensor, group: int) -> Box:
        """Boxes of ``node`` for ``positions``, all of ``group``."""
        return self.grouping.boxes[node].take(positions, group)

    # ------------------------------------------------------------------ running
    def run(self, positions: torch.Tensor, make_input: MakeInput) -> Any:
        """Model outputs for ``positions``; ``make_input(positions, box)`` returns the occluded input boxes."""
        batch = len(positions)
        env = self._patch_phases(positions, make_input)
        for node in self.nodes:
            entry = self.plan[node]
            if node.op == "output":
                return self.rebuild(fx.node.map_arg(node.args[0], lambda a: self._value(a, env, batch)))
            if entry.state is NodeState.FULL:
                env[node] = self._run_full(node, entry, env, batch)
            elif entry.state is NodeState.VALUE:
                env[node] = self._call(node, lambda a: self._value(a, env, batch, meta=True))
                for a in node.all_input_nodes:
                    if self.last_use.get(a) is node:
                        env.pop(a, None)
        raise Unsupported("the graph has no output")  # pragma: no cover

    def _patch_phases(self, positions: torch.Tensor, make_input: MakeInput) -> dict[fx.Node, Any]:
        """The full maps the full phase needs, after the patch phase of every group among ``positions``."""
        batch = len(positions)
        groups = self.group[positions]
        cuts = (torch.nonzero(groups[1:] != groups[:-1])[:, 0] + 1).tolist()
        env: dict[fx.Node, Any] = {}
        for part, start in zip(torch.tensor_split(positions, cuts), [0] + cuts):
            for node, value in self._patch_phase(part, int(self.group[part[0]]), make_input).items():
                if not cuts:
                    env[node] = value
                    continue
                if node not in env:  # filled group by group: no list of parts, no concatenated copy
                    env[node] = value.new_empty((batch,) + tuple(value.shape[1:]))
                env[node][start:start + len(part)] = value
        return env

    def _run_full(self, node: fx.Node, entry: NodePlan, env: dict[fx.Node, Any], batch: int) -> Any:
        """One node on the batch of full maps (max pooling by strided maxima, convolutions of changes if ``lowp``)."""
        spec = entry.spec
        if spec.kind is OpKind.POINTWISE:
            owned = rectifiable_input(node, self.modules, env)
            if owned is not None:
                return torch.relu_(owned)
        if spec.kind is OpKind.MAXPOOL:
            return max_pool(self._value(node.args[0], env, batch), spec.kernel, spec.stride, spec.padding,
                            spec.dilation, tuple(self.cache[node].shape[-2:]))
        if (self.lowp is not None and node.op == "call_module" and not node.kwargs and len(node.args) == 1
                and self.lowp.handles(self.modules[node.target])):
            source, module = node.args[0], self.modules[node.target]
            if spec.kind is OpKind.CONV:
                return self.lowp.conv(module, self.cache[node], self._value(source, env, batch), self.cache[source],
                                      module.padding)
            if isinstance(module, nn.Linear):
                return self.lowp.linear(module, self.cache[node], self._value(source, env, batch), self.cache[source])
        return self._call(node, lambda a: self._value(a, env, batch))

    def _patch_phase(self, positions: torch.Tensor, group: int, make_input: MakeInput) -> dict[fx.Node, torch.Tensor]:
        """Run the patch nodes for one group; returns the full maps the full phase needs."""
        env: dict[fx.Node, Any] = {}
        frontier: dict[fx.Node, torch.Tensor] = {}
        for node in self.nodes:
            entry = self.plan[node]
            if entry.state is not NodeState.PATCH:
                continue
            if node.op == "placeholder":
                env[node] = make_input(positions, self.box(node, positions, group))
            else:
                env[node] = self._run_patch(node, entry, positions, group, env)
            if any(self.plan[u].state in (NodeState.FULL, NodeState.VALUE, NodeState.OUTPUT) for u in node.users):
                frontier[node] = materialize(self.cache[node][0], env[node], self.box(node, positions, group))
            for a in node.all_input_nodes:
                if self.patch_last_use.get(a) is node:
                    env.pop(a, None)
        return frontier

    def _call(self, node: fx.Node, resolve: Callable[[fx.Node], Any]) -> Any:
        args = fx.node.map_arg(node.args, resolve)
        kwargs = fx.node.map_arg(node.kwargs, resolve)
        return call_node(node, self.modules, args, kwargs)

    def _value(self, a: fx.Node, env: dict[fx.Node, Any], batch: int, meta: bool = False) -> Any:
        """The value of input ``a`` for the full phase (``meta``: a shape-only stand-in for patch values)."""
        state = self.plan[a].state
        if state is NodeState.CONST:
            return self.cache[a]
        if meta and state is NodeState.PATCH:
            return torch.empty((batch,) + tuple(self.cache[a].shape[1:]), device="meta")
        return env[a]

    def _run_patch(self, node: fx.Node, entry: NodePlan, positions: torch.Tensor, group: int,
                   env: dict[fx.Node, Any]) -> torch.Tensor:
        """One patch node's values inside its boxes ``(B, C, h, w)``."""
        spec = entry.spec
        box = self.box(node, positions, group)
        if spec.kind is OpKind.POINTWISE:
            owned = rectifiable_input(node, self.modules, env)
            if owned is not None:  # a one-input pointwise node has its input's region, hence its boxes
                return torch.relu_(owned)
            return self._call(node, lambda a: self._read_box(a, box, positions, group, env))
        source = node.args[0]
        kernel, stride, padding, dilation = spec.kernel, spec.stride, spec.padding, spec.dilation
        start = (box.top * stride[0] - padding[0], box.left * stride[1] - padding[1])
        size = tuple((box.size[i] - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 for i in range(2))
        source_box = self.box(source, positions, group)
        if (spec.kind is OpKind.CONV and self.lowp is not None and node.op == "call_module"
                and self.lowp.handles(self.modules[node.target])):
            change = read_change(self.cache[source][0], env[source], source_box, start, size, self.lowp.dtype,
                                 self._padded(source, 0.0), self.channels_last)
            clean_out = read_windows(self.cache[node][0], None, None, (box.top, box.left), box.size, 0.0,
                                     self._padded(node, 0.0), self.channels_last)
            return self.lowp.conv(self.modules[node.target], clean_out, change, None)
        pad = float("-inf") if spec.kind is OpKind.MAXPOOL else spec.pad_value if spec.kind is OpKind.PAD else 0.0
        crop = read_windows(self.cache[source][0], env[source], source_box, start, size, pad,
                            self._padded(source, pad), self.channels_last)
        if spec.kind is OpKind.PAD:
            return crop  # the padded map's box is a window of the input shifted by the leading padding
        if spec.kind is OpKind.CONV:
            return F.conv2d(crop, *self._conv_weights(node), spec.stride, 0, spec.dilation, self._groups(node))
        if spec.kind is OpKind.MAXPOOL:
            return max_pool(crop, spec.kernel, spec.stride, (0, 0), spec.dilation)
        return self._avg_pool(crop, entry, box)

    def _conv_weights(self, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of a conv node: the module's, or the (constant) arguments of ``F.conv2d``."""
        if node.op == "call_module":
            module = self.modules[node.target]
            return module.weight, module.bias
        weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        return (self.cache[weight] if isinstance(weight, fx.Node) else weight,
                self.cache[bias] if isinstance(bias, fx.Node) else bias)

    def _groups(self, node: fx.Node) -> int:
        if node.op == "call_module":
            return self.modules[node.target].groups
        return node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)

    @staticmethod
    def _avg_pool(crop: torch.Tensor, entry: NodePlan, box: Box) -> torch.Tensor:
        """Average pooling of pre-padded crops, divided as PyTorch divides at each output place."""
        spec = entry.spec
        total = F.avg_pool2d(crop, spec.kernel, spec.stride, 0, divisor_override=1)
        if spec.divisor_override:
            return total / spec.divisor_override
        row_divisor = entry.divisor[0][box.top[:, None] + torch.arange(box.size[0])]
        col_divisor = entry.divisor[1][box.left[:, None] + torch.arange(box.size[1])]
        return total / (row_divisor[:, None, :, None] * col_divisor[:, None, None, :])

    def _padded(self, node: fx.Node, pad: float) -> dict:
        """The memo of ``node``'s clean map padded with ``pad`` (filled by `read_windows`)."""
        return self.padded.setdefault((node, pad), {})

    def _read_box(self, a: fx.Node, box: Box, positions: torch.Tensor, group: int, env: dict[fx.Node, Any]) -> Any:
        """Input ``a`` of a pointwise patch node, cut to the node's boxes ``box``."""
        state = self.plan[a].state
        if state is NodeState.PATCH:
            a_box = self.box(a, positions, group)
            if a_box.size == box.size and torch.equal(a_box.top, box.top) and torch.equal(a_box.left, box.left):
                return env[a]
            return read_windows(self.cache[a][0], env[a], a_box, (box.top, box.left), box.size, 0.0,
                                self._padded(a, 0.0), self.channels_last)
        if state is NodeState.VALUE:
            return self._call(a, lambda n: self._value(n, env, len(positions), meta=True))
        value = self.cache[a]
        if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-2:] != (1, 1):
            return read_windows(value[0], None, None, (box.top, box.left), box.size, 0.0, self._padded(a, 0.0),
                                self.channels_last)  # its box
        return value
