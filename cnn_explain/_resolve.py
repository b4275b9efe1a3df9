"""Layer resolution: which modules a ``layer=`` / ``layers=`` argument names.

A layer is a module, a dotted name from ``model.named_modules()`` (with an
optional selector for non-tensor outputs: ``"stage2.last_hidden_state"``), a
glob, a module type, an index of an ``nn.Sequential`` child, or a list of
these. Re-exported by :mod:`cnn_explain.hooks`, where capabilities import it.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, Union

from torch import nn

from . import ops
from ._state import _check_model

__all__ = ["LayerSpec", "DEFAULT_LAYER_TYPES", "ACTIVATION_TYPES", "resolve_layers", "resolve_layer",
           "split_selector"]

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
