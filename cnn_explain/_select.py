"""Picking tensors out of what a model or a layer returned (tuples, dicts, dataclasses).

Used by :func:`cnn_explain.hooks.select_output` (the model's output, ``output=``)
and by :func:`cnn_explain.hooks.capture` (a layer given with a selector, such as
``layer="stage2.last_hidden_state"``: the module ``stage2``, then the field
``last_hidden_state`` of what it returned).

One step of a selector reads, in this order: the key of a mapping (a ``dict``,
an ``OrderedDict``, a Hugging Face ``ModelOutput``), the index of a tuple or
list (a step made of digits), an attribute (a dataclass field, a named-tuple
field, any object attribute).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["select_output", "select_path", "replace_path", "describe_fields", "not_a_tensor_message"]

Selector = int | str | Callable[[Any], torch.Tensor] | None


def _step(value: Any, step: str | int) -> Any:
    """``value[step]`` / ``value[int(step)]`` / ``getattr(value, step)``; ``LookupError`` when none fits."""
    if isinstance(value, Mapping):
        if step in value:
            return value[step]
    elif isinstance(value, (tuple, list)) and (isinstance(step, int) or str(step).lstrip("-").isdigit()):
        i = int(step)
        if -len(value) <= i < len(value):
            return value[i]
    named_tuple = isinstance(value, tuple) and hasattr(value, "_fields")
    plain = isinstance(value, (Mapping, list, torch.Tensor)) or (isinstance(value, tuple) and not named_tuple)
    if isinstance(step, str) and step.isidentifier() and (dataclasses.is_dataclass(value) or not plain) \
            and hasattr(value, step):
        return getattr(value, step)
    raise LookupError(step)


def select_path(value: Any, path: Sequence[str]) -> Any:
    """Follow ``path`` (steps as in :func:`_step`) into ``value``; ``LookupError`` names the failing step."""
    for step in path:
        value = _step(value, step)
    return value


def replace_path(value: Any, path: Sequence[str], new: Any) -> Any:
    """A shallow copy of ``value`` with the item at ``path`` replaced by ``new`` (``value`` itself is not changed)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    inner = replace_path(_step(value, head), rest, new)
    if isinstance(value, Mapping):
        out = copy.copy(value)
        out[head] = inner
        return out
    if isinstance(value, (tuple, list)) and str(head).lstrip("-").isdigit():
        items = list(value)
        items[int(head)] = inner
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return type(value)._make(items)
        return type(value)(items)
    out = copy.copy(value)
    object.__setattr__(out, head, inner)  # frozen dataclasses too
    return out


def _fields(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value):
        return [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    return [(k, v) for k, v in vars(value).items() if not k.startswith("_")] if hasattr(value, "__dict__") else []


def describe_fields(value: Any) -> list[str]:
    """The selectors of ``value``'s tensor items, e.g. ``["last_hidden_state (1, 12, 4, 4)", "pooled (1, 12)"]``."""
    return [f"{k} {tuple(v.shape)}" for k, v in _fields(value) if isinstance(v, torch.Tensor)]


def not_a_tensor_message(name: str, value: Any, argname: str = "layer") -> str:
    """The refusal for a layer whose output is not a tensor: the layer, the type, and what to pass."""
    fields = [f.split(" ")[0] for f in describe_fields(value)]
    kind = type(value).__name__
    if fields:
        what = (f"pass {argname}={name + '.' + fields[0]!r} (the layer's name, a dot, then the field/key/index "
                f"of the tensor to use; its tensors: {', '.join(describe_fields(value))})")
    else:
        what = "it holds no tensor field; pick another layer"
    return f"{argname} {name!r} returned a {kind}, not a tensor; {what}"


def select_output(out: Any, output: Selector = None) -> torch.Tensor:
    """Pick the tensor of interest from what a model returned.

    Args:
        out: a tensor, a tuple/list, a dict (or ``ModelOutput``), a dataclass or
            any object with attributes.
        output: ``None`` (the tensor itself, the first element of a tuple, the
            ``"logits"``/``"out"``/``"output"`` entry of a dict, the ``.logits``
            attribute of an object), an index (tuple/list), a key (dict) or an
            attribute name (dataclass, object), or a callable ``out -> tensor``.

    Returns:
        The selected tensor.

    Raises:
        TypeError / ValueError: nothing tensor-like can be selected; the message
            lists the tensors that could be.
    """
    if callable(output):
        out = output(out)
    elif output is not None:
        if not isinstance(output, (int, str)) or isinstance(output, bool):
            raise TypeError(f"output must be an index, a key, an attribute name or a callable, got "
                            f"{type(output).__name__}")
        try:
            out = _step(out, output)
        except LookupError:
            fields = describe_fields(out)
            hint = f"; it holds {', '.join(fields)}" if fields else ""
            raise ValueError(f"output={output!r} does not select anything from a {type(out).__name__}{hint}") from None
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
        fields = describe_fields(out)
        hint = f" (its tensors: {', '.join(fields)})" if fields else ""
        raise TypeError(f"the selected model output is a {type(out).__name__}, expected a tensor; pass output=<index, "
                        f"key, attribute or callable>{hint}")
    return out
