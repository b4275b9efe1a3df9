"""Small shared helpers: argument checks, targets, progress bars.

Every capability checks its arguments here (and converts its inputs with
:func:`cnn_explain.images.to_batch`), so that a user mistake gives the same clear
``TypeError``/``ValueError`` everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .roles import first_conv_module

__all__ = [
    "check_channels",
    "resolve_target",
    "model_device",
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


def positive_int(value: Any, argname: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer ``>= minimum``; else ``ValueError``/``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argname} must be >= {minimum}, got {value}")
    return int(value)


def resolve_target(target: Any, logits: torch.Tensor, *, argname: str = "target") -> torch.Tensor:
    """Turn ``target`` into one class index per image, shape ``(N,)`` int64.

    Args:
        target: ``None`` (the predicted class of each image), an int (the same
            class for all), or a sequence / 1-D tensor with one class per image.
        logits: the model's ``(N, num_classes)`` output for the images.

    Raises:
        ValueError: a class outside ``[0, num_classes)`` or a list of the wrong length.
        TypeError: anything else.
    """
    n, k = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.detach().reshape(n, -1).argmax(dim=1).cpu()
    if isinstance(target, bool):
        raise TypeError(f"{argname} must be an int, a list of ints or None, got bool")
    if isinstance(target, (int, np.integer)):
        t = torch.full((n,), int(target), dtype=torch.long)
    elif isinstance(target, torch.Tensor) and target.dim() == 0:
        t = torch.full((n,), int(target), dtype=torch.long)
    elif isinstance(target, (Sequence, torch.Tensor, np.ndarray)) and not isinstance(target, str):
        t = torch.as_tensor(list(target) if not isinstance(target, torch.Tensor) else target).long().reshape(-1).cpu()
        if t.numel() != n:
            raise ValueError(f"{argname} has {t.numel()} entries but there are {n} images; give one class per image")
    else:
        raise TypeError(f"{argname} must be an int, a list of ints or None, got {type(target).__name__}")
    bad = (t < 0) | (t >= k)
    if bad.any():
        raise ValueError(f"{argname}={t[bad][0].item()} is outside the model's classes [0, {k - 1}]")
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
