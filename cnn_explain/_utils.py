"""Small shared helpers: argument checks, targets, devices, progress bars.

Every capability checks its arguments here and converts its images with
:func:`model_input` (:func:`cnn_explain.images.to_batch` in the model's floating
dtype, on its device, channels and finiteness checked), so that a user mistake
gives the same clear ``TypeError``/``ValueError`` everywhere.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .roles import first_conv_module

__all__ = [
    "check_channels",
    "check_finite",
    "check_device",
    "available_devices",
    "model_input",
    "resolve_target",
    "model_device",
    "model_dtype",
    "positive_int",
    "progress_bar",
    "forward_logits",
]


def check_channels(model: nn.Module, x: torch.Tensor, *, argname: str = "x") -> None:
    """Raise ``ValueError`` when ``x`` has a channel count the first conv cannot take."""
    conv = first_conv_module(model)
    if conv is not None and x.dim() == 4 and x.shape[1] != conv.in_channels:
        raise ValueError(
            f"{argname} has {x.shape[1]} channels but the model's first conv layer expects "
            f"{conv.in_channels} (shape (N, {conv.in_channels}, H, W))"
        )


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU if it has none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter or buffer (``torch.float32`` if it has none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def check_finite(x: torch.Tensor, *, argname: str = "x") -> torch.Tensor:
    """Return ``x`` if every value is finite; else a ``ValueError`` saying how many are NaN / infinite."""
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            nan = int(torch.isnan(x).sum())
            raise ValueError(
                f"{argname} has {int(bad.sum())} values that are not finite ({nan} NaN, {int(bad.sum()) - nan} "
                f"infinite) among {x.numel()}; give images with finite pixel values")
    return x


def model_input(model: nn.Module, x: Any, *, argname: str = "x", transform: Callable[[Any], Any] | None = None,
                device: str | torch.device | None = None) -> torch.Tensor:
    """Images as the model takes them: the one input conversion of every capability.

    :func:`cnn_explain.images.to_batch` in the model's floating dtype
    (:func:`model_dtype`, so a float32 image given to a ``model.double()`` is
    converted), on ``device`` (default: the model's), with the channel count
    checked against the first conv and every value finite.

    Args:
        model: the network the images are for.
        x: anything :func:`~cnn_explain.images.to_batch` takes.
        argname: the name used in error messages.
        transform: applied to each raw (non-tensor) image (see ``to_batch``).
        device: where the batch goes (default :func:`model_device`).

    Returns:
        ``(N, C, H, W)`` tensor in the model's floating dtype.

    Raises:
        TypeError / ValueError: see ``to_batch``; a channel count the first conv
            cannot take; NaN or infinite values (their count is in the message).
    """
    from .images import to_batch

    dev = model_device(model) if device is None else device
    out = to_batch(x, argname=argname, dtype=model_dtype(model), device=dev, transform=transform)
    check_channels(model, out, argname=argname)
    return check_finite(out, argname=argname)


def available_devices() -> list[str]:
    """The devices torch can use here: ``"cpu"``, then ``"cuda:i"`` and ``"mps"`` where present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: Any, argname: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine.

    Args:
        device: a ``torch.device`` or a string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        argname: the name used in error messages.

    Raises:
        TypeError: not a string or ``torch.device``.
        ValueError: a name torch does not know, or a device this machine lacks
            (the message lists :func:`available_devices`).
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{argname} must be a string such as 'cpu' or 'cuda', or a torch.device; "
                        f"got {type(device).__name__}")
    here = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{argname}={device!r} is not a device name; available here: {', '.join(here)}") from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    else:
        ok = dev.type in here and dev.index in (None, 0)
    if not ok:
        raise ValueError(f"{argname}={device!r}: no such device on this machine; available here: {', '.join(here)}")
    return dev


def positive_int(value: Any, argname: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer ``>= minimum``; else ``ValueError``/``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argname} must be >= {minimum}, got {value}")
    return int(value)


def _is_int(v: Any) -> bool:
    """An integer that is not a bool (Python, NumPy, or a 0-d integer tensor/array)."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return v.ndim == 0 and _int_dtype(v)
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _int_dtype(t: torch.Tensor | np.ndarray) -> bool:
    if isinstance(t, torch.Tensor):
        return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
    return t.dtype.kind in "iu"


def _target_type_error(argname: str, target: Any) -> TypeError:
    what = f"a {target.dtype} tensor" if isinstance(target, torch.Tensor) else \
        f"a {target.dtype} array" if isinstance(target, np.ndarray) else repr(target)
    if isinstance(target, str):
        hint = "; class names work through explain(model, class_names=[...])"
    else:
        hint = ""
    return TypeError(f"{argname} must be None, an int, or one int per image (a list, or an integer tensor "
                     f"or array); got {what}{hint}")


def target_indices(target: Any, *, argname: str = "target") -> torch.Tensor:
    """``target`` (an int or one int per image) as a 1-D int64 CPU tensor; bools, floats and strings refused.

    Raises:
        TypeError: anything but an int, a sequence of ints, or an integer tensor / array.
    """
    if _is_int(target):
        return torch.tensor([int(target)], dtype=torch.long)
    if isinstance(target, (torch.Tensor, np.ndarray)):
        if not _int_dtype(target):
            raise _target_type_error(argname, target)
        return torch.as_tensor(target).detach().reshape(-1).to("cpu", torch.long)
    if isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        bad = next((v for v in target if not _is_int(v)), None)
        if bad is not None or not target:
            raise _target_type_error(argname, target if bad is None else bad)
        return torch.tensor([int(v) for v in target], dtype=torch.long)
    raise _target_type_error(argname, target)


def resolve_target(target: Any, logits: torch.Tensor, *, argname: str = "target") -> torch.Tensor:
    """Turn ``target`` into one class index per image, shape ``(N,)`` int64.

    Args:
        target: ``None`` (the predicted class of each image), an int (the same
            class for all), or one int per image: a sequence of ints or a 1-D
            integer tensor / array. Floats (``1.5``, ``torch.tensor(2.7)``),
            bools and strings are refused (class names are translated by the
            façade, :class:`cnn_explain.Explainer`, which knows them).
        logits: the model's ``(N, num_classes)`` output for the images.

    Raises:
        ValueError: a class outside ``[0, num_classes)`` (the message names the
            number of classes) or a list of the wrong length.
        TypeError: anything else.
    """
    n, k = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.detach().reshape(n, -1).argmax(dim=1).cpu()
    t = target_indices(target, argname=argname)
    if _is_int(target):
        t = t.expand(n).clone()
    elif t.numel() != n:
        raise ValueError(f"{argname} has {t.numel()} entries but there are {n} images; give one class per image")
    bad = (t < 0) | (t >= k)
    if bad.any():
        raise ValueError(f"{argname}={t[bad][0].item()} is outside the model's {k} classes [0, {k - 1}]")
    return t


def forward_logits(model: nn.Module, x: torch.Tensor, output: Any = None) -> torch.Tensor:
    """Run the model and return a 2-D ``(N, num_classes)`` score tensor."""
    from .hooks import select_output

    out = select_output(model(x), output)
    return out.reshape(out.shape[0], -1)


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm progress bar that can be turned off (``enabled=False``); writes to stderr."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def active_modes() -> list[Any]:
    """The torch function and dispatch modes active now, except ``torch.device(...)`` as a context.

    A mode sees every operation. Capabilities that compute the network's operations
    themselves instead of calling its ``forward`` (incremental occlusion on crops,
    exact IG's linear pieces) cannot honour one: a fake quantization whose scale is
    a map's maximum computes something else on a crop. ``torch.device`` as a context
    (``DeviceContext``) only sets where factory functions allocate.
    """
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._device import DeviceContext
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    modes = [m for m in _get_current_function_mode_stack() if not isinstance(m, DeviceContext)]
    return modes + list(_get_current_dispatch_mode_stack())
