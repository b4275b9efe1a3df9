"""Settings of a data-set run: the methods and their options, the model source, the engine.

Everything here is checked before any work starts, so a bad argument is a
``TypeError``/``ValueError`` naming it, not a failure halfway through a run.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Engine", "MethodSpec", "RunSettings", "ModelSource", "METHODS", "parse_methods", "parse_method_options"]

#: ``model="digits"``: the trained digits CNN (trained once, then cached), as the command line names it.
DIGITS = "cnn_explain.train:pretrained_digits_cnn"


class Engine(str, enum.Enum):
    """Where batches run: this process (``LOCAL``) or a pool of Ray actors (``RAY``)."""

    LOCAL = "local"
    RAY = "ray"


class Reduce(str, enum.Enum):
    """How an ``(N, C, H, W)`` attribution becomes one ``(H, W)`` map per image (decided per image, never per batch)."""

    FIRST = "first"      # one channel (Grad-CAM), or identical channels (occlusion)
    MAX_ABS = "max_abs"  # Simonyan et al.'s choice for |gradient| maps
    SUM = "sum"          # signed maps


# name -> (function keyword ``method=`` for saliency or None, default options)
METHODS: dict[str, dict[str, Any]] = {
    "grad_cam": {},
    "guided_grad_cam": {},
    "saliency": {"method": "gradient"},
    "gradient": {"method": "gradient"},
    "guided": {"method": "guided"},
    "deconv": {"method": "deconv"},
    "occlusion": {"window": 4, "stride": 2},
}
_ALIASES = {"grad-cam": "grad_cam", "gradcam": "grad_cam", "guided-grad-cam": "guided_grad_cam"}


@dataclass(frozen=True)
class MethodSpec:
    """One per-image explainer and its options.

    Attributes:
        name: the column prefix (``"grad_cam"``, ``"saliency"``, ``"guided"``, ``"occlusion"`` ...).
        options: keyword arguments for the method's function (sorted ``(key, value)`` pairs).
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        """The options as a dict."""
        return dict(self.options)

    @property
    def reduce(self) -> Reduce:
        """Channel reduction of this method's maps."""
        if self.name in ("grad_cam", "occlusion"):
            return Reduce.FIRST
        if self.name == "guided_grad_cam":
            return Reduce.SUM
        return Reduce.MAX_ABS if self.kwargs.get("abs", True) else Reduce.SUM


def parse_methods(methods: Any, method_options: Mapping[str, Any]) -> tuple[MethodSpec, ...]:
    """``("grad_cam", "saliency")`` or ``"grad-cam,saliency"`` or ``{"saliency": {"method": "guided"}}`` -> specs.

    ``method_options`` maps a method name to its options (``grad_cam={"layer": "conv2"}``).

    Raises:
        ValueError: an unknown method, an empty list, options for a method not asked for.
        TypeError: options that are not a mapping.
    """
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if isinstance(methods, Mapping):
        items = [(k, dict(v or {})) for k, v in methods.items()]
    elif isinstance(methods, Sequence) and methods:
        items = [(m, {}) for m in methods]
    else:
        raise ValueError(f"methods must be a non-empty list of names from {sorted(METHODS)}, got {methods!r}")
    names = [_ALIASES.get(str(n), str(n)) for n, _ in items]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"methods: unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods: {names} names a method twice")
    extra = sorted(set(_ALIASES.get(k, k) for k in method_options) - set(names))
    if extra:
        raise ValueError(f"options given for {extra}, which are not in methods={names}; add them to methods")
    specs = []
    for name, (_, opts) in zip(names, items):
        given = method_options.get(name, method_options.get(name.replace("_", "-"), {}))
        if not isinstance(given, Mapping):
            raise TypeError(f"{name}= must be a dict of the method's options, got {type(given).__name__}")
        merged = {**METHODS[name], **opts, **dict(given)}
        for forbidden in ("target", "progress", "x", "model"):
            if forbidden in merged:
                raise ValueError(f"{name}: option {forbidden!r} is set by the runner; leave it out")
        specs.append(MethodSpec(name, tuple(sorted(merged.items()))))
    return tuple(specs)


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run's rows (recorded in the manifest; a resume must match it).

    Attributes:
        methods: the explainers.
        target: ``"pred"`` (the predicted class), ``"label"`` or a class index.
        map_size: ``(H, W)`` of the stored maps, or None for the input's size.
        map_dtype: ``"float16"`` (default) or ``"float32"``.
        deletion_steps: steps of the deletion/insertion curves (0: no AUCs).
        shard_size: rows per Parquet shard (shards are the unit of resuming).
        thumbnail: longest side of the stored input thumbnail (0: none).
    """

    methods: tuple[MethodSpec, ...]
    target: str | int = "pred"
    map_size: tuple[int, int] | None = None
    map_dtype: str = "float16"
    deletion_steps: int = 0
    shard_size: int = 256
    thumbnail: int = 32

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (option values that are not plain JSON through :func:`stable_repr`)."""
        def plain(v: Any) -> Any:
            try:
                return json.loads(json.dumps(v))  # tuples become lists, as they read back
            except (TypeError, ValueError):
                return stable_repr(v)

        return {"methods": [{"name": m.name, "options": {k: plain(v) for k, v in m.options}} for m in self.methods],
                "target": self.target, "map_size": self.map_size and list(self.map_size),
                "map_dtype": self.map_dtype, "deletion_steps": self.deletion_steps,
                "shard_size": self.shard_size, "thumbnail": self.thumbnail}


def stable_repr(obj: Any) -> str:
    """A description that is the same in every process: ``module:qualname`` for functions and classes,
    else ``repr`` without memory addresses (``<... at 0x7f...>``)."""
    import re

    if isinstance(obj, type) or inspect.isroutine(obj):
        return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def parse_method_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Command-line options ``["grad_cam.layer=features.7", "occlusion.window=8"]`` -> ``{method: {key: value}}``.

    Values are Python literals when they parse as one (``8``, ``0.5``, ``(4, 4)``, ``True``), else strings.

    Raises:
        ValueError: an item not of the form ``method.key=value``.

    Example:
        >>> parse_method_options(["grad_cam.layer=features.7", "occlusion.window=8"])
        {'grad_cam': {'layer': 'features.7'}, 'occlusion': {'window': 8}}
    """
    import ast

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, eq, text = str(item).partition("=")
        method, dot, key = head.partition(".")
        if not eq or not dot or not method or not key.isidentifier():
            raise ValueError(f"method option {item!r}: expected METHOD.KEY=VALUE, e.g. grad_cam.layer=features.7")
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(_ALIASES.get(method, method), {})[key] = value
    return out


def check_target(target: Any) -> str | int:
    """None / ``"pred"`` -> ``"pred"``; ``"label"``; an int >= 0."""
    if target is None or target == "pred":
        return "pred"
    if target == "label":
        return "label"
    if isinstance(target, int) and not isinstance(target, bool) and target >= 0:
        return int(target)
    raise ValueError(f"target must be None (the predicted class), 'label' or a class index >= 0, got {target!r}")


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ModelSource:
    """How each worker builds the model: a ``module:factory`` spec or a picklable callable, plus weights.

    Attributes:
        spec: ``"pkg.module:factory"`` or ``"path/to/file.py:factory"`` (None with ``factory``).
        factory: a zero-argument callable returning an ``nn.Module`` (None with ``spec``).
        module: an ``nn.Module`` given directly (local engine only).
        weights: a state-dict file, loaded with ``torch.load(..., weights_only=True)``.
    """

    spec: str | None = None
    factory: Callable[[], nn.Module] | None = None
    module: nn.Module | None = None
    weights: str | None = None

    @staticmethod
    def of(model: Any, weights: Any = None) -> "ModelSource":
        """Check ``model`` (spec string, ``"digits"``, callable or ``nn.Module``) and ``weights`` (path or None)."""
        if weights is not None and not Path(weights).is_file():
            raise ValueError(f"weights={str(weights)!r}: no such file (expected a state-dict file)")
        w = None if weights is None else str(Path(weights).resolve())
        if isinstance(model, nn.Module):
            return ModelSource(module=model, weights=w)
        if isinstance(model, str):
            model = DIGITS if model == "digits" else model
            _split_spec(model)
            return ModelSource(spec=model, weights=w)
        if callable(model):
            return ModelSource(factory=model, weights=w)
        raise TypeError("model must be a 'module:factory' string, a zero-argument callable returning an "
                        f"nn.Module, or an nn.Module (local engine), got {type(model).__name__}")

    @property
    def file(self) -> Path | None:
        """The factory's ``.py`` file when the spec names one (shipped to Ray workers), else None."""
        if self.spec is None:
            return None
        mod, _ = _split_spec(self.spec)
        return Path(mod).resolve() if mod.endswith(".py") else None

    def build(self) -> nn.Module:
        """Build the model (in eval mode, weights loaded); raise ``ValueError`` naming ``model`` on failure."""
        if self.module is not None:
            model = self.module
        else:
            factory = self.factory if self.factory is not None else _import_factory(self.spec)
            try:
                with torch.random.fork_rng(devices=[]):  # a factory that seeds or draws leaves the global RNG as found
                    model = factory()
            except Exception as exc:  # the user's factory: one clear message, not a traceback from a worker
                raise ValueError(f"model: the factory {self.spec or _qualname(factory)} raised "
                                 f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(model, nn.Module):
                raise ValueError(f"model: the factory returned a {type(model).__name__}, expected an nn.Module")
            model.eval()
        if self.weights is not None:
            from ..train import load_checkpoint

            load_checkpoint(model, self.weights)
        return model

    def describe(self) -> str:
        """The spec, the factory's qualified name or the module's class, for the manifest."""
        if self.spec is not None:
            return self.spec
        return _qualname(self.factory) if self.factory is not None else type(self.module).__name__


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"


def _split_spec(spec: str) -> tuple[str, str]:
    mod, sep, attr = spec.rpartition(":")
    if not sep or not mod or not attr or not attr.replace(".", "_").isidentifier():
        raise ValueError(f"model must be 'pkg.module:factory' or 'file.py:factory', got {spec!r}")
    return mod, attr


def _import_factory(spec: str) -> Callable[[], nn.Module]:
    mod_name, attr = _split_spec(spec)
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if path.stem in sys.modules and getattr(sys.modules[path.stem], "__file__", None) == str(path.resolve()):
                obj: Any = sys.modules[path.stem]
            elif path.is_file():
                s = importlib.util.spec_from_file_location(path.stem, path.resolve())
                obj = importlib.util.module_from_spec(s)
                s.loader.exec_module(obj)
                sys.modules[path.stem] = obj
            else:  # on a Ray worker the file arrived through runtime_env py_modules: import it by name
                obj = importlib.import_module(path.stem)
        else:
            obj = importlib.import_module(mod_name)
    except Exception as exc:
        raise ValueError(f"model: cannot import {mod_name!r} ({type(exc).__name__}: {exc})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model: {spec!r} is not callable; give a function returning an nn.Module")
    return obj


def fingerprint(model: nn.Module) -> str:
    """sha256 over the class name and every state-dict entry (name, dtype, shape, bytes)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
