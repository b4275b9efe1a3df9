"""Capture what layers compute: the one place hooks are registered and removed.

Everything in cnn_explain that needs a layer's output (feature maps, Grad-CAM,
embeddings, style losses, activation maximization) goes through :func:`capture`.
It guarantees, after a normal exit *and* after an exception raised inside the
model's ``forward``:

* every hook handle it registered is removed;
* every module's ``training`` flag, every parameter's ``requires_grad`` and
  every parameter's ``.grad`` (object and value) are as they were.

Recorded tensors are taken so that later in-place operations of the model
(``nn.ReLU(inplace=True)``, ``out += identity``) cannot change them, and a
module called several times in one forward is recorded once per call: the first
call under its name, the next ones as ``name#1``, ``name#2``, ...

A layer returning a tuple, dict or dataclass is named with a selector after its
name (``"stage2.last_hidden_state"``, see :func:`split_selector`). One model may
be explained from several threads: :func:`capture` and :func:`preserved` hold
the model's re-entrant lock while open, and hooks record only the calls of the
thread that opened the capture.

Example:
    >>> import torch, torch.nn as nn
    >>> from cnn_explain.hooks import capture
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
    >>> with capture(net, "0") as rec:
    ...     _ = net(torch.randn(1, 1, 5, 5))
    >>> rec["0"].shape
    torch.Size([1, 2, 3, 3])
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

from . import ops
from ._select import not_a_tensor_message, replace_path, select_output, select_path
from ._state import _check_model, _State, model_lock, preserved

__all__ = [
    "LayerSpec",
    "Recording",
    "capture",
    "preserved",
    "model_lock",
    "resolve_layers",
    "resolve_layer",
    "select_output",
    "DEFAULT_LAYER_TYPES",
    "ACTIVATION_TYPES",
]

LayerSpec = Union[nn.Module, str, type, Sequence[Union[nn.Module, str, type]], None]

# The default layer set and the activation types, read from the one operator table (cnn_explain.ops).
DEFAULT_LAYER_TYPES: tuple[type, ...] = ops.module_types(*ops.DEFAULT_LAYER_CATEGORIES)
ACTIVATION_TYPES: tuple[type, ...] = ops.module_types(ops.Category.RELU, ops.Category.ACTIVATION)


# --------------------------------------------------------------------------- layers
def resolve_layers(model: nn.Module, layers: LayerSpec = None, *, argname: str = "layers") -> dict[str, nn.Module]:
    """Resolve a layer selection to ``{dotted name: module}`` in model order.

    Args:
        model: the network.
        layers: ``None`` (every Conv / Pool / Linear / activation layer: the
            categories ``cnn_explain.ops.DEFAULT_LAYER_CATEGORIES``), a module,
            a dotted name from ``model.named_modules()``, a glob such as
            ``"features.*"``, a module type such as ``nn.Conv2d``, or a list of these.
            A layer whose output is a tuple, dict or dataclass takes a selector
            after its name: ``"stage2.last_hidden_state"``, ``"block.0"``,
            ``"head.logits"`` (see :func:`split_selector`).
        argname: the argument name used in error messages.

    Returns:
        An ordered dict from name to module (``""`` names the model itself).

    Raises:
        ValueError: a name matches nothing (close names are suggested) or the
            selection is empty.
        TypeError: an item is not a module, string or type.
    """
    _check_model(model)
    named = list(model.named_modules())
    if layers is None:
        chosen = {n: m for n, m in named if ops.category(m) in ops.DEFAULT_LAYER_CATEGORIES}
        if not chosen:
            raise ValueError(
                f"{argname}=None selects every Conv/Pool/Linear/activation layer, "
                "but the model has none; name the layers to record"
            )
        return chosen
    if isinstance(layers, (str, nn.Module, type)) or _is_index(layers):
        items = [layers]
    elif isinstance(layers, (list, tuple, set, frozenset)):
        items = list(layers)
    else:
        raise TypeError(
            f"{argname} must be a module, a dotted name, a glob, a module type or a list of these, "
            f"got {type(layers).__name__}"
        )
    if not items:
        raise ValueError(f"{argname} is an empty selection; give at least one layer")
    by_name = dict(named)
    chosen: dict[str, nn.Module] = {}
    for item in items:
        chosen.update(_resolve_one(named, by_name, item, argname))
    order = {n: i for i, (n, _) in enumerate(named)}
    return dict(sorted(chosen.items(), key=lambda kv: order[split_selector(by_name, kv[0])[0]]))


def _is_index(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _resolve_one(named, by_name, item, argname) -> dict[str, nn.Module]:
    if _is_index(item):  # an nn.Sequential's children are named "0", "1", ...: layer=2 is model[2]
        item = str(item)
    if isinstance(item, nn.Module):
        hits = {n: m for n, m in named if m is item}
        if not hits:
            raise ValueError(f"{argname}: the module {type(item).__name__} is not part of the model")
        return dict([next(iter(hits.items()))])
    if isinstance(item, type):
        if not issubclass(item, nn.Module):
            raise TypeError(f"{argname}: {item!r} is not an nn.Module type")
        hits = {n: m for n, m in named if isinstance(m, item)}
        if not hits:
            raise ValueError(f"{argname}: the model has no layer of type {item.__name__}")
        return hits
    if isinstance(item, str):
        if item in by_name:
            return {item: by_name[item]}
        if any(ch in item for ch in "*?["):
            hits = {n: m for n, m in named if n and fnmatch.fnmatchcase(n, item)}
            if hits:
                return hits
        module_name, path = split_selector(by_name, item)
        if path:
            return {item: by_name[module_name]}
        close = difflib.get_close_matches(item, [n for n in by_name if n], n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        sample = ", ".join(repr(n) for n in list(by_name)[1:9])
        raise ValueError(f"{argname}: no layer named {item!r}{hint} (layers include {sample})")
    raise TypeError(
        f"{argname} items must be an nn.Module, a dotted name, a glob or a module type, "
        f"got {type(item).__name__}"
    )


def split_selector(by_name: Mapping[str, nn.Module], name: str) -> tuple[str, tuple[str, ...]]:
    """Split ``"stage2.last_hidden_state"`` into the module ``"stage2"`` and the selector ``("last_hidden_state",)``.

    A name of a module is never split (``"stage2.pool"`` is the submodule when
    there is one). Otherwise the longest leading dotted part that names a module
    is the layer and the rest is the selector: keys, indices or attributes, one
    per dot, applied to what the layer returned (see :mod:`cnn_explain._select`).
    ``(name, ())`` when no leading part names a module.
    """
    if name in by_name:
        return name, ()
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in by_name:
            return head, tuple(parts[cut:])
    return name, ()


def resolve_layer(model: nn.Module, layer: nn.Module | str | type, *, argname: str = "layer") -> tuple[str, nn.Module]:
    """Resolve a selection that must name exactly one layer; returns ``(name, module)``.

    A type or glob that matches several layers picks the last one. A layer
    whose output is a tuple, dict or dataclass is given with a selector:
    ``"stage2.last_hidden_state"`` (see :func:`split_selector`); the name is then
    returned as given, with the module ``stage2``, and :func:`capture` records
    the selected tensor under that name.
    """
    if layer is None:
        raise ValueError(f"{argname} is required")
    hits = resolve_layers(model, layer, argname=argname)
    return list(hits.items())[-1]


# --------------------------------------------------------------------------- capture
@dataclass
class Recording:
    """What :func:`capture` recorded. Keys are layer names (``name#k`` for repeated calls).

    Attributes:
        outputs: layer name -> recorded output (after ``reduce`` if given); for a
            layer given with a selector (``"stage2.last_hidden_state"``), the selected item.
        inputs: layer name -> recorded first positional input (if ``inputs=True``),
            taken before the layer runs.
        modules: layer name -> module (the same module appears under ``name#k`` too).
    """

    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)
    _live: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _live_inputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _calls: dict[str, int] = field(default_factory=dict, repr=False)
    _in_calls: dict[str, int] = field(default_factory=dict, repr=False)

    def _key(self, name: str, counts: dict[str, int]) -> str:
        k = counts.get(name, 0)
        counts[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    def __contains__(self, name: str) -> bool:
        return name in self.outputs

    def __iter__(self):
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def keys(self):
        return self.outputs.keys()

    def items(self):
        return self.outputs.items()

    def clear(self) -> None:
        """Forget everything recorded so far (call between batches); the next call is ``name`` again."""
        for store in (self.outputs, self.inputs, self.modules, self._live, self._live_inputs, self._calls,
                      self._in_calls):
            store.clear()

    def tensor(self, name: str) -> torch.Tensor:
        """The recorded output of ``name``.

        Raises:
            ValueError: it is not a tensor; the message names the layer, its type and the selector to pass.
        """
        value = self.outputs[name]
        if not isinstance(value, torch.Tensor):
            raise ValueError(not_a_tensor_message(name.partition("#")[0], value))
        return value

    def live(self, name: str, *, input: bool = False) -> torch.Tensor:
        """The recorded output (``input=True``: input) still attached to the autograd graph (``grads=True`` only).

        Raises:
            ValueError: the layer returned no tensor (the message says which
                selector to pass), its tensor does not depend on the input, or
                nothing graph-attached was recorded under ``name``.
        """
        live, store, side = (self._live_inputs, self.inputs, "input") if input else (self._live, self.outputs, "output")
        if name in live:
            return live[name]
        if name in store and not isinstance(store[name], torch.Tensor):
            raise ValueError(not_a_tensor_message(name.partition("#")[0], store[name]))
        if name in store:
            raise ValueError(f"the {side} of layer {name!r} does not depend on the input through differentiable "
                             "operations (it is not attached to the autograd graph)")
        raise ValueError(f"no graph-attached {side} for {name!r}; use capture(..., grads=True) and run a forward")

    def gradients(self, score: torch.Tensor, names: Sequence[str] | None = None, *,
                  retain_graph: bool = False) -> dict[str, torch.Tensor]:
        """Gradients of ``score`` (summed if not scalar) with respect to recorded outputs.

        Uses ``torch.autograd.grad``: nothing accumulates into any ``.grad``.
        Layers the score does not depend on get a zero tensor.
        """
        names = list(self._live) if names is None else list(names)
        if not names:
            raise ValueError("nothing to differentiate: use capture(..., grads=True) and run a forward")
        tensors = [self.live(n) for n in names]
        s = score.sum() if score.dim() else score
        grads = torch.autograd.grad(s, tensors, retain_graph=retain_graph, allow_unused=True)
        return {n: (torch.zeros_like(t) if g is None else g) for n, t, g in zip(names, tensors, grads)}


def _safe_copy(value: Any, detach: bool) -> Any:
    if isinstance(value, torch.Tensor):
        v = value.detach() if detach else value
        return v.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_safe_copy(v, detach) for v in value)
    return value


@dataclass(frozen=True)
class _Hooks:
    """How one :func:`capture` records (shared by its hooks)."""

    rec: Recording
    owner: int  # the thread that opened the capture: calls from other threads are not recorded
    grads: bool
    reduce: Callable[[torch.Tensor], torch.Tensor] | None
    keep_outputs: bool

    def store(self, value: Any) -> Any:
        return self.reduce(value) if (self.reduce and isinstance(value, torch.Tensor)) else value

    def pre_hook(self, name: str):
        def hook(mod, args):
            if threading.get_ident() != self.owner:
                return None
            key = self.rec._key(name, self.rec._in_calls)
            first = args[0] if args else None
            if self.grads and isinstance(first, torch.Tensor) and first.requires_grad:
                self.rec._live_inputs[key] = first
                self.rec.inputs[key] = self.store(first.detach().clone())
                return (first.clone(), *args[1:])  # the layer (and its in-place ops) runs on the clone
            self.rec.inputs[key] = self.store(_safe_copy(first, detach=True))
            return None

        return hook

    def hook(self, name: str, module: nn.Module, path: tuple[str, ...]):
        def hook(mod, args, output):
            if threading.get_ident() != self.owner:
                return None
            key = self.rec._key(name, self.rec._calls)
            self.rec.modules[key] = module
            if not self.keep_outputs:
                return None
            value = _selected(name, path, output)
            if self.grads and isinstance(value, torch.Tensor) and value.requires_grad:
                self.rec._live[key] = value
                self.rec.outputs[key] = value.detach().clone() if self.reduce is None else self.reduce(value.detach())
                return replace_path(output, path, value.clone())  # downstream (and its in-place ops) runs on a clone
            self.rec.outputs[key] = self.store(_safe_copy(value, detach=True))
            return None

        return hook


def _selected(name: str, path: tuple[str, ...], output: Any) -> Any:
    try:
        return select_path(output, path)
    except LookupError:
        layer = name[: len(name) - len(".".join(path)) - 1]
        raise ValueError(f"layer {name!r}: {not_a_tensor_message(layer, output)}") from None


@contextlib.contextmanager
def capture(
    model: nn.Module,
    layers: LayerSpec = None,
    *,
    grads: bool = False,
    inputs: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    keep_outputs: bool = True,
) -> Iterator[Recording]:
    """Record what chosen layers compute during the forward passes run inside the block.

    Args:
        model: any ``nn.Module``.
        layers: see :func:`resolve_layers`; default every Conv/Pool/Linear/activation.
            A name with a selector (``"stage2.last_hidden_state"``) records the
            selected item of what the layer returned.
        grads: keep the outputs attached to the autograd graph so that
            :meth:`Recording.gradients` can differentiate a score with respect to
            them. The model then continues on a clone of each recorded output, so
            a later in-place op changes the clone, never the recorded tensor.
            With ``inputs=True`` the inputs are kept attached too
            (``Recording.live(name, input=True)``) and the layer runs on a clone.
        inputs: also record each layer's first positional input (shape ``(N, ...)``),
            as it was before the layer ran.
        reduce: applied to each output (and input) before it is stored, e.g.
            ``lambda t: t.mean((2, 3))`` to keep ``(N, C)`` instead of ``(N, C, H, W)``.
        keep_outputs: store outputs (set False to record inputs only).

    Yields:
        A :class:`Recording`, filled as the model runs.

    Only forward calls made by the thread that opened the block are recorded,
    and the model's lock (:func:`model_lock`) is held until the block ends, so a
    capability running on the same model in another thread neither sees these
    hooks record its forward nor changes the model meanwhile. On exit (normal or
    exception) every hook is removed and the model's training flags,
    ``requires_grad`` and ``.grad`` are restored.
    """
    chosen = resolve_layers(model, layers)
    by_name = dict(model.named_modules())
    rec = Recording()
    how = _Hooks(rec, threading.get_ident(), grads, reduce, keep_outputs)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    with model_lock(model):
        state = _State.save(model, rng=False)
        try:
            for name, module in chosen.items():
                if inputs:
                    handles.append(module.register_forward_pre_hook(how.pre_hook(name)))
                handles.append(module.register_forward_hook(how.hook(name, module, split_selector(by_name, name)[1])))
            yield rec
        finally:
            for h in handles:
                h.remove()
            handles.clear()
            state.restore()


def hook_count(model: nn.Module) -> int:
    """Number of hooks currently registered on the model's modules (for tests)."""
    n = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            n += len(getattr(m, attr, {}) or {})
    return n
