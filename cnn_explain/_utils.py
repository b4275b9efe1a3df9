"""Small shared helpers: input conversion, argument checks, targets, progress bars.

Every capability converts its inputs and checks its arguments here, so that a user
mistake gives the same clear ``TypeError``/``ValueError`` everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .roles import first_conv_module

__all__ = [
    "as_batch",
    "check_channels",
    "resolve_target",
    "model_device",
    "positive_int",
    "progress_bar",
    "forward_logits",
]


def as_batch(x: Any, *, argname: str = "x", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert an image or a batch of images to an ``(N, C, H, W)`` float tensor.

    Accepted:
        * a tensor ``(N, C, H, W)`` (returned as is, cast to float) or ``(C, H, W)``
          (a batch of one is added);
        * a PIL image (RGB, L, RGBA...; values scaled to [0, 1]);
        * a NumPy array ``(H, W)``, ``(H, W, C)`` (uint8 scaled by 1/255), or
          ``(N, C, H, W)`` / ``(C, H, W)`` floats.

    The caller's tensor is never modified in place.

    Raises:
        TypeError: not a tensor, array or PIL image.
        ValueError: the rank is not 2, 3 or 4.
    """
    # a PIL image exists only if PIL was imported: importing it here cost 30 ms on a first call
    Image = sys.modules.get("PIL.Image")
    if Image is not None and isinstance(x, Image.Image):
        arr = np.asarray(x)
        t = torch.from_numpy(arr.astype(np.float32) / 255.0)
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        return t.unsqueeze(0).to(dtype)
    if isinstance(x, np.ndarray):
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        t = torch.from_numpy(np.ascontiguousarray(x).astype(np.float32) / scale)
        if t.dim() == 2:
            return t[None, None].to(dtype)
        channels_last = x.dtype == np.uint8 or (x.shape[-1] in (1, 3, 4) and x.shape[-3] not in (1, 3, 4))
        if t.dim() == 3 and channels_last:
            t = t.permute(2, 0, 1)
        elif t.dim() == 4 and channels_last:
            t = t.permute(0, 3, 1, 2)
        x = t
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{argname} must be a tensor, a NumPy array or a PIL image, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    elif x.dim() == 2:
        x = x[None, None]
    if x.dim() != 4:
        raise ValueError(f"{argname} must be (N, C, H, W) or (C, H, W); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{argname} is an empty batch")
    return x.to(dtype) if x.dtype != dtype else x


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
