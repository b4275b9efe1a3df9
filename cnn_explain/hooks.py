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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

from . import ops
from ._state import _check_model, _State, preserved

__all__ = [
    "LayerSpec",
    "Recording",
    "capture",
    "preserved",
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
    if isinstance(layers, (str, nn.Module, type)):
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
    return dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))


def _resolve_one(named, by_name, item, argname) -> dict[str, nn.Module]:
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
        close = difflib.get_close_matches(item, [n for n in by_name if n], n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        sample = ", ".join(repr(n) for n in list(by_name)[1:9])
        raise ValueError(f"{argname}: no layer named {item!r}{hint} (layers include {sample})")
    raise TypeError(
        f"{argname} items must be an nn.Module, a dotted name, a glob or a module type, "
        f"got {type(item).__name__}"
    )


def resolve_layer(model: nn.Module, layer: nn.Module | str | type, *, argname: str = "layer") -> tuple[str, nn.Module]:
    """Resolve a selection that must name exactly one layer; returns ``(name, module)``.

    A type or glob that matches several layers picks the last one.
    """
    if layer is None:
        raise ValueError(f"{argname} is required")
    hits = resolve_layers(model, layer, argname=argname)
    return list(hits.items())[-1]


# --------------------------------------------------------------------------- outputs
def select_output(out: Any, output: int | str | Callable[[Any], torch.Tensor] | None = None) -> torch.Tensor:
    """Pick the tensor of interest from what a model returned.

    Args:
        out: a tensor, a tuple/list, a dict, or an object with ``.logits``.
        output: ``None`` (the tensor itself, the first element of a tuple, the
            ``"logits"``/``"out"`` entry of a dict), an index, a key, or a callable.

    Returns:
        The selected tensor.

    Raises:
        TypeError / ValueError: nothing tensor-like can be selected.
    """
    if callable(output):
        out = output(out)
    elif output is not None:
        try:
            out = out[output]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"output={output!r} does not select anything from a {type(out).__name__}") from exc
    elif isinstance(out, Mapping):
        for key in ("logits", "out", "output"):
            if key in out:
                out = out[key]
                break
        else:
            raise ValueError(f"the model returned a dict with keys {list(out)}; pass output=<key>")
    elif isinstance(out, (tuple, list)):
        out = out[0]
    elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the selected model output is a {type(out).__name__}, expected a tensor; pass output=")
    return out


# --------------------------------------------------------------------------- capture
@dataclass
class Recording:
    """What :func:`capture` recorded. Keys are layer names (``name#k`` for repeated calls).

    Attributes:
        outputs: layer name -> recorded output (after ``reduce`` if given).
        inputs: layer name -> recorded first positional input (if ``inputs=True``).
        modules: layer name -> module (the same module appears under ``name#k`` too).
    """

    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, nn.Module] = field(default_factory=dict)
    _live: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _calls: dict[str, int] = field(default_factory=dict, repr=False)

    def _key(self, name: str) -> str:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
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
        self.outputs.clear()
        self.inputs.clear()
        self.modules.clear()
        self._live.clear()
        self._calls.clear()

    def live(self, name: str) -> torch.Tensor:
        """The recorded output still attached to the autograd graph (``grads=True`` only)."""
        if name not in self._live:
            raise ValueError(f"no graph-attached output for {name!r}; use capture(..., grads=True)")
        return self._live[name]

    def gradients(self, score: torch.Tensor, names: Sequence[str] | None = None, *, retain_graph: bool = False) -> dict[str, torch.Tensor]:
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
        grads: keep the outputs attached to the autograd graph so that
            :meth:`Recording.gradients` can differentiate a score with respect to
            them. The model then continues on a clone of each recorded output, so
            a later in-place op changes the clone, never the recorded tensor.
        inputs: also record each layer's first positional input (shape ``(N, ...)``).
        reduce: applied to each output (and input) before it is stored, e.g.
            ``lambda t: t.mean((2, 3))`` to keep ``(N, C)`` instead of ``(N, C, H, W)``.
        keep_outputs: store outputs (set False to record inputs only).

    Yields:
        A :class:`Recording`, filled as the model runs.

    On exit (normal or exception) every hook is removed and the model's training
    flags, ``requires_grad`` and ``.grad`` are restored.
    """
    chosen = resolve_layers(model, layers)
    rec = Recording()
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make_hook(name: str, module: nn.Module):
        def hook(mod, args, output):
            key = rec._key(name)
            rec.modules[key] = module
            if inputs:
                first = args[0] if args else None
                val = _safe_copy(first, detach=True)
                rec.inputs[key] = reduce(val) if (reduce and isinstance(val, torch.Tensor)) else val
            if not keep_outputs:
                return None
            if grads and isinstance(output, torch.Tensor) and output.requires_grad:
                rec._live[key] = output
                rec.outputs[key] = output.detach().clone() if reduce is None else reduce(output.detach())
                return output.clone()  # downstream (and its in-place ops) run on the clone
            val = _safe_copy(output, detach=True)
            rec.outputs[key] = reduce(val) if (reduce and isinstance(val, torch.Tensor)) else val
            return None

        return hook

    state = _State.save(model, rng=False)
    try:
        for name, module in chosen.items():
            handles.append(module.register_forward_hook(make_hook(name, module)))
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
