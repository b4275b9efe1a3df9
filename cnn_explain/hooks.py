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
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._resolve import (ACTIVATION_TYPES, DEFAULT_LAYER_TYPES, LayerSpec, resolve_layer, resolve_layers,
                       split_selector)
from ._select import not_a_tensor_message, replace_path, select_output, select_path
from ._state import _check_model, _State, model_lock, preserved  # noqa: F401  (_check_model: re-exported)

__all__ = [
    "LayerSpec",
    "Recording",
    "capture",
    "preserved",
    "model_lock",
    "resolve_layers",
    "resolve_layer",
    "select_output",
    "intervene",
    "observe_calls",
    "split_selector",
    "DEFAULT_LAYER_TYPES",
    "ACTIVATION_TYPES",
]

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
    _versions: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict, repr=False)

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
                      self._in_calls, self._versions):
            store.clear()

    def changed(self) -> list[str]:
        """Layers whose uncopied output (``capture(..., copy=False)``) a later in-place operation changed.

        Empty when nothing changed, so what was recorded is exactly what each layer
        returned; otherwise the recording of those layers is wrong: run the forward
        again under ``capture(..., copy=True)``.
        """
        return [k for k, (t, version) in self._versions.items() if t._version != version]

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
    copy: bool = True
    stop: frozenset[str] = frozenset()

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
            result = self._record(key, name, path, output) if self.keep_outputs else None
            if self.stop and key == name and self.stop.issubset(self.rec.modules):
                raise _Enough  # every layer asked for has run: the rest of the forward is not needed
            return result

        return hook

    def _record(self, key: str, name: str, path: tuple[str, ...], output: Any) -> Any:
        value = _selected(name, path, output)
        if not self.copy and isinstance(value, torch.Tensor):
            # by reference; Recording.changed() tells whether a later in-place op touched it
            self.rec._versions[key] = (value, value._version)
            if self.grads and value.requires_grad:
                self.rec._live[key] = value
            self.rec.outputs[key] = self.store(value.detach())
            return None
        if self.grads and isinstance(value, torch.Tensor) and value.requires_grad:
            self.rec._live[key] = value
            self.rec.outputs[key] = value.detach().clone() if self.reduce is None else self.reduce(value.detach())
            return replace_path(output, path, value.clone())  # downstream (and its in-place ops) runs on a clone
        self.rec.outputs[key] = self.store(_safe_copy(value, detach=True))
        return None


class _Enough(BaseException):
    """Raised by a hook of ``capture(..., stop=True)`` once every layer has run; caught by ``capture``.

    A ``BaseException``, like ``GeneratorExit``, so that a model's own
    ``except Exception`` does not swallow it and run the rest of its forward.
    """


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
    copy: bool = True,
    stop: bool = False,
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
        copy: take each recorded output so that later in-place operations cannot
            change it (a clone; with ``grads=True`` the model continues on the
            clone). ``copy=False`` keeps the layer's own tensor, which saves a copy
            of every recorded map per forward; check :meth:`Recording.changed`
            after the forward: if it names a layer, a later in-place operation
            changed that tensor and the forward must be run again with ``copy=True``.
        stop: end the forward pass as soon as every chosen layer has run once:
            the model call inside the block returns nothing and the statements
            after it in the block are skipped, so the block must hold just the
            forward (``with capture(net, "layer3", stop=True) as rec: net(x)``).
            What comes after the last chosen layer (a classifier, later blocks) is
            not computed. Without it, or when a layer never runs, the forward is whole.

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
    how = _Hooks(rec, threading.get_ident(), grads, reduce, keep_outputs, copy,
                 frozenset(chosen) if stop else frozenset())
    handles: list[torch.utils.hooks.RemovableHandle] = []
    with model_lock(model):
        state = _State.save(model, rng=False)
        try:
            for name, module in chosen.items():
                if inputs:
                    handles.append(module.register_forward_pre_hook(how.pre_hook(name)))
                handles.append(module.register_forward_hook(how.hook(name, module, split_selector(by_name, name)[1])))
            try:
                yield rec
            except _Enough:
                pass  # stop=True: the forward ended after the last chosen layer
        finally:
            for h in handles:
                h.remove()
            handles.clear()
            state.restore()


@contextlib.contextmanager
def intervene(model: nn.Module, module: nn.Module, change: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``module``'s output by ``change(output)`` inside the block (e.g. Ablation-CAM zeroing a channel).

    Besides :func:`capture`, the one place a hook is registered; it holds the
    model's lock while open and is removed on exit, also after an exception.
    """
    if not any(m is module for m in model.modules()):
        raise ValueError(f"the module {type(module).__name__} is not part of the model")
    with model_lock(model):
        handle = module.register_forward_hook(lambda mod, args, output: change(output))
        try:
            yield
        finally:
            handle.remove()


@contextlib.contextmanager
def observe_calls(model: nn.Module, enter: Callable[[nn.Module], None],
                  leave: Callable[[nn.Module], None]) -> Iterator[None]:
    """Call ``enter(module)`` before and ``leave(module)`` after each module call of ``model``'s forward.

    Only calls from the thread that opened the block are reported; the hooks
    hold the model's lock while open and are removed on exit, also after an
    exception (the summary counts MACs per call with it).
    """
    thread = threading.get_ident()

    def pre(mod: nn.Module, args: Any) -> None:
        if threading.get_ident() == thread:
            enter(mod)

    def post(mod: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() == thread:
            leave(mod)

    with model_lock(model):
        handles: list[Any] = []
        try:
            for m in model.modules():
                handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
            yield
        finally:
            for h in handles:
                h.remove()


def hook_count(model: nn.Module) -> int:
    """Number of hooks currently registered on the model's modules (for tests)."""
    n = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            n += len(getattr(m, attr, {}) or {})
    return n
