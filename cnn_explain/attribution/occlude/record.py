"""A graph recorded on real tensors, for models ``torch.fx`` cannot trace symbolically.

Python control flow on shapes, iteration over tensors or dataclass outputs stop
symbolic tracing, but not a run on the real image: a `TorchFunctionMode`
sees every torch function the forward calls (functional ops, ``Tensor``
methods, the body of a custom ``autograd.Function``, whose forward then is
exactly the recorded ops) with real tensors, and each call becomes a
``call_function`` node. Shape-dependent branches are fixed by the image's
shape, which occlusion never changes.

The recording is refused (`Unsupported`) when it could differ from the model on
an occluded image:

* a tensor value reaches Python (``.item()``, ``bool(t)``, ``.tolist()``): data-dependent control flow;
* a tensor comes from neither the image, a recorded call, nor a parameter or
  buffer of the model (made outside torch functions);
* a call returns several tensors (other than a split along channels, recorded as slices);
* a tensor is changed in place while another recorded value views its memory.

An in-place change of a tensor read later needs no check: the recorder follows
the tensor objects, so a later read is recorded as a read of the changed value.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Branchy(nn.Module):
    ...     def forward(self, x):
    ...         return x.relu() if x.shape[-1] > 4 else x
    >>> rec = record(Branchy(), torch.rand(1, 1, 8, 8))
    >>> [n.op for n in rec.graph.nodes]
    ['placeholder', 'call_function', 'output']
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from .graph import Unsupported

__all__ = ["Recorded", "record"]

_SPLITS = {torch.split, torch.Tensor.split, torch.chunk, torch.Tensor.chunk, torch.Tensor.split_with_sizes}
_SHAPE_ONLY = {"size", "dim", "numel", "__len__", "is_floating_point", "is_complex", "get_device", "element_size",
               "is_contiguous", "stride", "storage_offset", "nelement", "ndimension"}


@dataclass(frozen=True)
class Recorded:
    """A recorded graph and how to rebuild the model's output from the graph's output.

    Attributes:
        graph: placeholder ``input``, ``call_function`` / ``get_attr`` nodes, one output (a tuple of tensors).
        rebuild: the graph's output tuple -> the model's own output structure (dataclasses too).
    """

    graph: fx.Graph
    rebuild: Callable[[Any], Any]


class _Recorder(TorchFunctionMode):
    """Records every torch function call on tensors into ``graph``."""

    def __init__(self, graph: fx.Graph, names: dict[int, str]) -> None:
        super().__init__()
        self.graph, self.names = graph, names
        self.nodes: dict[int, tuple[torch.Tensor, fx.Node]] = {}

    def bind(self, t: torch.Tensor, node: fx.Node) -> None:
        self.nodes[id(t)] = (t, node)  # the tensor is kept, so its id is not reused

    def node_of(self, t: torch.Tensor) -> fx.Node:
        hit = self.nodes.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        name = self.names.get(id(t))
        if name is None:
            raise Unsupported("the forward uses a tensor made outside torch functions (not the image, a "
                              "parameter or a buffer): it cannot be recorded")
        node = self.graph.get_attr(name)
        self.bind(t, node)
        return node

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in _leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        name = getattr(func, "__name__", "")
        if name in _SHAPE_ONLY or (name == "__get__" and not isinstance(out, torch.Tensor)):
            return out  # shapes and metadata: the recording is specialised to the image's shape
        if isinstance(out, torch.Tensor):
            node = self.graph.call_function(func, *self._map((tuple(args), dict(kwargs))))
            if any(out is t for t in tensors) and _changes_input(func, args, kwargs):
                self._check_views(out)
                node.meta["inplace"] = True  # (an input returned unchanged, as by dropout in eval, is an alias)
            self.bind(out, node)
        elif isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
            self._split(func, args, kwargs, out)
        elif tensors:
            raise Unsupported(f"{getattr(func, '__qualname__', func)} turns tensor values into Python values "
                              "(data-dependent control flow): the recording would not hold for other images")
        return out

    def _check_views(self, changed: torch.Tensor) -> None:
        """`Unsupported` if a tensor changed in place shares memory with another recorded tensor (a view)."""
        ptr = changed.untyped_storage().data_ptr()
        for t, _ in self.nodes.values():
            if t is not changed and t.untyped_storage().data_ptr() == ptr:
                raise Unsupported("the forward changes in place a tensor that another recorded value views")

    def _map(self, value: Any) -> Any:
        return _map_leaves(value, lambda a: self.node_of(a) if isinstance(a, torch.Tensor) else a)

    def _split(self, func, args, kwargs, out) -> None:
        """A split along channels becomes one ``narrow`` node per part; other multi-tensor results are refused."""
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        if func not in _SPLITS or dim not in (1, -3) or args[0].dim() != 4:
            raise Unsupported(f"{getattr(func, '__qualname__', func)} returns several tensors: no region rule")
        source, start = self.node_of(args[0]), 0
        for part in out:
            self.bind(part, self.graph.call_function(torch.narrow, (source, 1, start, part.shape[1])))
            start += part.shape[1]


_TENSOR = object()  # where a tensor sits in the output's structure


def _changes_input(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether a call that returned one of its inputs changed it in place (``relu_``, ``+=``, ``inplace=True``)."""
    name = getattr(func, "__name__", "")
    if name.startswith("__i") or (name.endswith("_") and not name.endswith("__")) or kwargs.get("inplace"):
        return True
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return bool(bound.arguments.get("inplace"))


def _leaves(value: Any) -> list[Any]:
    out: list[Any] = []
    _map_leaves(value, lambda a: out.append(a))
    return out


def _map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to every leaf of its tuples, lists, dicts and dataclasses."""
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_map_leaves(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_leaves(v, fn) for v in value]
    if isinstance(value, Mapping):
        return {k: _map_leaves(v, fn) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _map_leaves(getattr(value, f.name), fn) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **fields)
    return fn(value)


def record(model: nn.Module, image: torch.Tensor) -> Recorded:
    """Record the forward of ``model`` on ``image`` ``(1, C, H, W)`` as a graph of torch function calls.

    Raises:
        Unsupported: see the module docstring.
    """
    names = {id(t): n for n, t in model.named_parameters(remove_duplicate=False)}
    names.update({id(t): n for n, t in model.named_buffers(remove_duplicate=False)})
    graph = fx.Graph()
    recorder = _Recorder(graph, names)
    recorder.bind(image, graph.placeholder("input"))
    try:
        with recorder:
            out = model(image)
    except Unsupported:
        raise
    except Exception as exc:  # the forward failed under recording: not recordable
        raise Unsupported(f"the model cannot be recorded on real tensors ({type(exc).__name__}: {exc})") from None
    leaves = [a for a in _leaves(out) if isinstance(a, torch.Tensor)]
    graph.output(tuple(recorder.node_of(t) for t in leaves))
    graph.eliminate_dead_code()

    template = _map_leaves(out, lambda a: _TENSOR if isinstance(a, torch.Tensor) else a)  # holds no tensor

    def rebuild(values: Any) -> Any:
        it = iter(values)
        return _map_leaves(template, lambda a: next(it) if a is _TENSOR else a)

    return Recorded(graph, rebuild)
