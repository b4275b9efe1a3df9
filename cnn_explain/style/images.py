"""Style-transfer inputs as ``(1, 3, H, W)`` RGB tensors in ``[0, 1]``, cropped and resized to the working size.

Accepted for ``content`` and ``style``: a tensor ``(3, H, W)`` / ``(1, 3, H, W)``
(float in ``[0, 1]`` or uint8), a PIL image, a NumPy array ``(H, W)`` /
``(H, W, C)`` (uint8 scaled by 1/255), or a file path. Grayscale images are
repeated to three channels and the alpha channel of RGBA images is dropped.
Reading and converting go through :func:`cnn_explain.images.to_batch`; this
module only checks the result and sizes it.
"""

from __future__ import annotations

import warnings
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..images import to_batch

__all__ = ["load_rgb", "working_size", "fit", "warn_if_sizes_differ"]

Size = Union[int, tuple[int, int], None]


def load_rgb(x: Any, argname: str) -> torch.Tensor:
    """``x`` as a ``(1, 3, H, W)`` float tensor in ``[0, 1]`` (see the module docstring).

    Raises:
        ValueError: a path that does not open as an image, a batch of several
            images, a channel count other than 1, 3 or 4, or values outside [0, 1].
        TypeError: anything else.
    """
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        x = x.float() / 255.0
    if isinstance(x, np.ndarray) and x.dtype == bool:
        x = x.astype(np.float32)
    t = to_batch(x, argname=argname).detach().float().cpu()  # files are read by the one image I/O module
    if t.shape[0] != 1:
        raise ValueError(f"{argname} must be one image, got a batch of {t.shape[0]}")
    channels = t.shape[1]
    if channels == 1:
        t = t.expand(1, 3, *t.shape[2:])
    elif channels == 4:
        t = t[:, :3]
    elif channels != 3:
        raise ValueError(f"{argname} must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or t.min() < -1e-3 or t.max() > 1 + 1e-3:
        raise ValueError(
            f"{argname} must hold values in [0, 1] (or uint8 0..255); got range "
            f"[{t.min().item():.3g}, {t.max().item():.3g}]"
        )
    return t.clamp(0, 1).contiguous()


def working_size(size: Size, content: torch.Tensor) -> tuple[int, int]:
    """The ``(H, W)`` the transfer works at.

    ``size=int`` -> ``(size, size)`` (images are centre-cropped to a square
    first, so nothing is stretched); ``(H, W)`` -> exactly that;
    ``None`` -> the content image's own size.
    """
    if size is None:
        return tuple(content.shape[-2:])
    if isinstance(size, bool):
        raise TypeError("size must be an int, an (H, W) pair or None, got bool")
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size)):
        raise TypeError(f"size must be an int, an (H, W) pair of ints or None, got {size!r}")
    if min(size) < 8:
        raise ValueError(f"size must be at least 8 pixels per side, got {tuple(size)}")
    return int(size[0]), int(size[1])


def fit(image: torch.Tensor, hw: tuple[int, int], *, crop: bool = True) -> torch.Tensor:
    """Resize ``(1, 3, h, w)`` to ``hw`` (antialiased bilinear), centre-cropping to its aspect ratio if ``crop``."""
    h, w = image.shape[-2:]
    if (h, w) == tuple(hw):
        return image
    if crop:
        target = hw[0] / hw[1]
        if h / w > target:  # too tall: crop rows
            nh = max(1, round(w * target))
            top = (h - nh) // 2
            image = image[:, :, top:top + nh, :]
        else:
            nw = max(1, round(h / target))
            left = (w - nw) // 2
            image = image[:, :, :, left:left + nw]
    out = F.interpolate(image, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(0, 1)


def warn_if_sizes_differ(content: torch.Tensor, style: torch.Tensor, hw: tuple[int, int]) -> None:
    """Say (``UserWarning``) that a content and a style image of different sizes were both resized."""
    ch, cw = content.shape[-2:]
    sh, sw = style.shape[-2:]
    if (ch, cw) != (sh, sw):
        warnings.warn(
            f"content ({ch}x{cw}) and style ({sh}x{sw}) images differ in size; both are centre-cropped "
            f"to the working aspect ratio and resized to {hw[0]}x{hw[1]}",
            UserWarning,
            stacklevel=3,
        )
