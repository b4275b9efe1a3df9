"""One home for image I/O: anything image-like -> ``(N, C, H, W)`` batch, files <-> tensors.

* :func:`to_batch` — a tensor, PIL image, NumPy array, image path, or a list of
  those -> an ``(N, C, H, W)`` float batch (every capability converts its inputs here);
* :func:`load_image` / :func:`save_image` — an image file <-> a ``(C, H, W)``
  float tensor in [0, 1] (8-bit PNG when saving);
* :data:`IMAGE_SUFFIXES`, :func:`is_image_file`, :func:`list_images` — which
  files count as images.

Pillow is imported only when a file is read or written; a PIL image given as
input is recognised through ``sys.modules`` (if PIL was never imported, the
input cannot be a PIL image), which keeps ``import cnn_explain`` and tensor-only
calls free of its import cost.

Example:
    >>> import torch
    >>> to_batch(torch.zeros(3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_batch", "load_image", "save_image", "IMAGE_SUFFIXES", "is_image_file", "list_images"]

PathLike = Union[str, os.PathLike]
Size = Union[int, Sequence[int], None]

#: File suffixes (lower case) taken as images.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_MODES = ("RGB", "L", None)


# --------------------------------------------------------------------------- files
def is_image_file(path: PathLike) -> bool:
    """True when ``path`` is an existing file whose suffix is in :data:`IMAGE_SUFFIXES` (any case)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def list_images(folder: PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises:
        ValueError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder={os.fspath(folder)!r} is not a folder")
    return sorted(p for p in root.iterdir() if is_image_file(p))


def size_hw(size: Size, argname: str = "size") -> tuple[int, int] | None:
    """``None`` -> None, an int ``s`` -> ``(s, s)``, a pair -> ``(H, W)``; checked.

    Raises:
        TypeError: anything else.
        ValueError: a side below 1.
    """
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not (isinstance(size, Sequence) and len(size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)):
        raise TypeError(f"{argname} must be None, an int or a pair (H, W) of ints, got {size!r}")
    if min(size) < 1:
        raise ValueError(f"{argname} must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])


def open_image(path: PathLike, *, mode: str | None = None, size: Size = None, argname: str = "path"):
    """Read an image file as a PIL image (pixels loaded, file closed).

    Args:
        path: a file Pillow can read.
        mode: ``"RGB"``, ``"L"`` or None (grey files stay ``"L"``, everything else becomes ``"RGB"``).
        size: None (keep), an int (square) or ``(H, W)``: bilinear resize.
        argname: the name used in error messages.

    Raises:
        ValueError: a bad ``mode``, no such file, or a file that is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in _MODES:
        raise ValueError(f"mode must be 'RGB', 'L' or None, got {mode!r}")
    hw = size_hw(size)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{argname}={os.fspath(path)!r}: no such image file")
    try:
        with Image.open(p) as img:
            target = mode or ("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            img = img.convert(target)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{argname}={os.fspath(path)!r} could not be read as an image: {exc}") from exc
    return img if hw is None else img.resize((hw[1], hw[0]), Image.BILINEAR)


def load_image(path: PathLike, *, mode: str | None = None, size: Size = None) -> torch.Tensor:
    """Read an image file as a ``(C, H, W)`` float32 tensor in [0, 1] (``uint8 / 255``).

    Args:
        path: an image file Pillow can read (PNG, JPEG, ...).
        mode: ``"RGB"`` (3 channels), ``"L"`` (1 grey channel) or None (grey
            files give 1 channel, everything else 3; alpha is dropped).
        size: None (keep), an int (square ``size×size``) or ``(H, W)``; bilinear resize.

    Raises:
        ValueError: no file at ``path``, a file that is not an image, or a bad ``mode``.

    Example:
        >>> x = load_image("cat.png", mode="RGB", size=(32, 32))   # doctest: +SKIP
    """
    return _raw_to_chw(open_image(path, mode=mode, size=size), "path")


def save_image(image: torch.Tensor, path: PathLike) -> None:
    """Write a ``(C, H, W)`` (C = 1 or 3) or ``(H, W)`` tensor in [0, 1] as an 8-bit PNG.

    Values are clipped to [0, 1] and rounded to 0..255, so ``load_image`` gives
    back ``round(255·x) / 255``. The parent folder is created if needed.

    Raises:
        TypeError: ``image`` is not a tensor.
        ValueError: another shape.
    """
    from PIL import Image

    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (C, H, W) or (H, W), got {type(image).__name__}")
    t = image[None] if image.dim() == 2 else image
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) with C = 1 or 3, or (H, W); got shape {tuple(image.shape)}")
    arr = (t.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pil.save(p, format="PNG")


# --------------------------------------------------------------------------- conversion
def _pil_type():
    """``PIL.Image.Image`` if PIL was imported (importing it here would cost ~30 ms), else None."""
    module = sys.modules.get("PIL.Image")
    return None if module is None else module.Image


def _raw_to_chw(x: Any, argname: str) -> torch.Tensor:
    """A PIL image -> ``(C, H, W)`` float32 in [0, 1]; anything else is returned unchanged."""
    pil = _pil_type()
    if pil is not None and isinstance(x, pil):
        t = torch.from_numpy(np.asarray(x).astype(np.float32) / 255.0)
        return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
    return x


def _array_to_tensor(x: np.ndarray) -> torch.Tensor:
    """``(H, W)`` / ``(H, W, C)`` / ``(C, H, W)`` / ``(N, C, H, W)`` / ``(N, H, W, C)`` -> channels-first tensor."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(x).astype(np.float32) / scale)
    if t.dim() == 2:
        return t[None, None]
    channels_last = x.dtype == np.uint8 or (x.shape[-1] in (1, 3, 4) and x.shape[-3] not in (1, 3, 4))
    if t.dim() == 3 and channels_last:
        return t.permute(2, 0, 1)
    if t.dim() == 4 and channels_last:
        return t.permute(0, 3, 1, 2)
    return t


def _is_raw(x: Any) -> bool:
    pil = _pil_type()
    return isinstance(x, (np.ndarray, str, os.PathLike)) or (pil is not None and isinstance(x, pil))


def _resize_raw(x: Any, hw: tuple[int, int], argname: str) -> Any:
    """Resize a PIL image (Pillow bilinear) or an array (antialiased bilinear) to ``hw``."""
    pil = _pil_type()
    if pil is not None and isinstance(x, pil):
        return x.resize((hw[1], hw[0]), sys.modules["PIL.Image"].BILINEAR)
    t = _array_to_tensor(x)
    t = t if t.dim() == 4 else t[None]
    return F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)


def _one(x: Any, argname: str, transform: Callable[[Any], Any] | None, hw: tuple[int, int] | None) -> torch.Tensor:
    """One item (not a list) -> a float tensor of rank 4 (not yet cast to the final dtype)."""
    if isinstance(x, (str, os.PathLike)):
        x = open_image(x, size=hw, argname=argname)
    elif hw is not None and _is_raw(x):
        x = _resize_raw(x, hw, argname)
    if transform is not None and not isinstance(x, torch.Tensor):
        x = transform(x)
    x = _raw_to_chw(x, argname)
    if isinstance(x, np.ndarray):
        x = _array_to_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{argname} must be a tensor, a NumPy array, a PIL image, an image path "
                        f"or a list of those, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    elif x.dim() == 2:
        x = x[None, None]
    if x.dim() != 4:
        raise ValueError(f"{argname} must be (N, C, H, W) or (C, H, W); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{argname} is an empty batch")
    return x


def to_batch(x: Any, *, argname: str = "x", dtype: torch.dtype | None = None,
             device: str | torch.device | None = None, transform: Callable[[Any], Any] | None = None,
             size: Size = None) -> torch.Tensor:
    """Convert an image, a batch, or a list of them to an ``(N, C, H, W)`` float tensor.

    Accepted:
        * a tensor ``(N, C, H, W)`` (kept, cast to ``dtype``), ``(C, H, W)`` or ``(H, W)``
          (batch and channel axes added); tensors count as already preprocessed;
        * a PIL image (L, RGB, RGBA...; ``uint8 / 255``);
        * a NumPy array ``(H, W)``, ``(H, W, C)`` (uint8 scaled by 1/255), or float
          ``(C, H, W)`` / ``(N, C, H, W)``;
        * a path (``str`` / ``os.PathLike``) to an image file (grey files give 1
          channel, others 3; see :func:`load_image`);
        * a non-empty list or tuple of these, all of the same ``(C, H, W)``; their batches are concatenated.

    The caller's tensor is never modified in place.

    Args:
        x: the input, as above.
        argname: the name used in error messages.
        dtype: the floating dtype of the result (default ``torch.float32``).
        device: where the result goes (default: where it is, the CPU for raw images).
        transform: applied to each raw (non-tensor) image, e.g. resize + normalize;
            it returns a ``(C, H, W)`` tensor (or another raw image).
        size: None, an int or ``(H, W)``: raw images are resized (bilinear) before ``transform``.

    Returns:
        ``(N, C, H, W)`` tensor in ``dtype`` on ``device``.

    Raises:
        TypeError: not one of the accepted kinds.
        ValueError: a rank other than 2, 3 or 4, an empty batch or list, items of
            different shapes, or a path that is not an image file.
    """
    dtype = torch.float32 if dtype is None else dtype
    hw = size_hw(size)
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{argname} is an empty list; give at least one image")
        parts = [_one(item, f"{argname}[{i}]", transform, hw) for i, item in enumerate(x)]
        shapes = sorted({tuple(p.shape[1:]) for p in parts})
        if len(shapes) > 1:
            raise ValueError(f"{argname}: images must all have the same (C, H, W); got {shapes}")
        out = torch.cat([p.to(dtype) for p in parts])
    else:
        out = _one(x, argname, transform, hw)
        out = out.to(dtype) if out.dtype != dtype else out
    return out if device is None else out.to(device)
