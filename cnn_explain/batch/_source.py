"""Data sources for a run: an image folder, a list of image files, or a torch ``Dataset``.

A source has a fixed order and a stable id per sample (the path relative to the
folder, the path as given, or the data-set index) and loads any slice of samples
as a batch. It is picklable (Ray workers receive it), so a folder or file list
is read by the workers themselves, not through the driver.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Batch", "Source", "FileSource", "DatasetSource", "make_source"]


@dataclass(frozen=True)
class Batch:
    """Samples loaded for one compute batch.

    Attributes:
        ids: ``N`` stable sample ids.
        index: ``(N,)`` int64 position of each sample in the source's order.
        x: ``(N, C, H, W)`` float32 images, as the model takes them.
        labels: ``(N,)`` int64 labels (-1 where the data has none).
        masks: ``(N, H, W)`` bool object masks (a box becomes a rectangle), or None.
    """

    ids: list[str]
    index: np.ndarray
    x: torch.Tensor
    labels: np.ndarray
    masks: torch.Tensor | None = None


class Source:
    """Base: ``len(source)``, ``source.ids`` and ``source.load(start, stop) -> Batch``."""

    ids: list[str]
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> tuple[torch.Tensor, int, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, start: int, stop: int) -> Batch:
        """Samples ``start … stop-1`` as a :class:`Batch` (images stacked; they must share one size)."""
        xs, ys, ms = [], [], []
        for i in range(start, stop):
            x, y, m = self.item(i)
            xs.append(x)
            ys.append(y)
            ms.append(m)
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise ValueError(f"data: samples {start}..{stop - 1} have different shapes {sorted(shapes)}; "
                             "give image_size= (or a transform that resizes) so that they can be batched")
        x = torch.stack(xs)
        masks = None
        if any(m is not None for m in ms):
            masks = torch.stack([_mask(m, x.shape[-2:]) for m in ms])
        return Batch(self.ids[start:stop], np.arange(start, stop, dtype=np.int64), x,
                     np.asarray(ys, dtype=np.int64), masks)


def _mask(m: Any, hw: Sequence[int]) -> torch.Tensor:
    """A ``(H, W)`` mask (any dtype; nonzero = object) or a box ``(x0, y0, x1, y1)`` (end-exclusive) -> bool mask."""
    h, w = int(hw[0]), int(hw[1])
    if m is None:
        return torch.zeros(h, w, dtype=torch.bool)  # no object: nothing is inside
    t = torch.as_tensor(np.asarray(m))
    if t.dim() == 1 and t.numel() == 4:
        x0, y0, x1, y1 = (int(v) for v in t.tolist())
        out = torch.zeros(h, w, dtype=torch.bool)
        out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        return out
    t = t.squeeze()
    if tuple(t.shape) != (h, w):
        raise ValueError(f"data: a mask must be (H, W) = {(h, w)} or a box (x0, y0, x1, y1), got {tuple(t.shape)}")
    return t != 0


@dataclass
class FileSource(Source):
    """Image files, read with Pillow; ``transform(PIL image) -> (C, H, W)`` or a default conversion.

    Attributes:
        paths: the files.
        ids: one id per file (path relative to the folder, or as given).
        labels: one label per file (-1: none).
        classes: class names (a folder's subfolders) or None.
        transform: the user's transform, or None for ``mode`` / ``size`` conversion to [0, 1].
        mode: ``"L"`` or ``"RGB"`` (from the model's first conv).
        size: ``(H, W)`` resize for the default conversion, or None.
    """

    paths: list[str]
    ids: list[str]
    labels: list[int]
    classes: list[str] | None = None
    transform: Callable[[Any], torch.Tensor] | None = None
    mode: str = "RGB"
    size: tuple[int, int] | None = None

    def item(self, i: int) -> tuple[torch.Tensor, int, Any]:
        from PIL import Image

        from ..images import load_image, to_batch

        if self.transform is None:
            return load_image(self.paths[i], size=self.size, mode=self.mode), self.labels[i], None
        with Image.open(self.paths[i]) as im:
            im.load()
            x = self.transform(im)
        return _as_image(x, self.paths[i]) if isinstance(x, torch.Tensor) else to_batch(x)[0], self.labels[i], None


def _as_image(x: torch.Tensor, where: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"data: sample {where!r} is not a (C, H, W) image tensor "
                         f"(got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}); check transform=")
    return x.float()


@dataclass
class DatasetSource(Source):
    """A torch ``Dataset`` whose items are ``x``, ``(x, y)``, ``(x, y, mask_or_box)`` or a dict
    with ``"image"`` and optional ``"label"``, ``"mask"``, ``"box"``; ids are the indices."""

    dataset: Any
    ids: list[str]
    transform: Callable[[Any], torch.Tensor] | None = None
    classes: list[str] | None = None

    def item(self, i: int) -> tuple[torch.Tensor, int, Any]:
        it = self.dataset[i]
        mask = None
        if isinstance(it, dict):
            x, y, mask = it.get("image"), it.get("label", -1), it.get("mask", it.get("box"))
        elif isinstance(it, (tuple, list)):
            x, y = it[0], (it[1] if len(it) > 1 else -1)
            mask = it[2] if len(it) > 2 else None
        else:
            x, y = it, -1
        if self.transform is not None and not isinstance(x, torch.Tensor):
            x = self.transform(x)
        y = -1 if y is None else int(torch.as_tensor(y).item())
        return _as_image(x, i), y, mask


def make_source(data: Any, *, transform: Any, mode: str, size: tuple[int, int] | None) -> Source:
    """Check ``data`` and wrap it; a folder with no images, an empty list or data set is a ``ValueError``.

    Args:
        data: a folder with one subfolder per class, a list of image paths, or a torch ``Dataset``.
        transform: optional ``raw image -> (C, H, W) tensor``.
        mode: ``"L"``/``"RGB"`` for files read without a transform.
        size: ``(H, W)`` resize for files read without a transform.
    """
    from torch.utils.data import Dataset

    if transform is not None and not callable(transform):
        raise TypeError("transform must be callable (raw image -> (C, H, W) tensor)")
    if isinstance(data, (str, os.PathLike)):
        from ..data import ImageFolder

        if not Path(data).is_dir():
            raise ValueError(f"data={str(data)!r} is not a folder (expected one subfolder per class)")
        folder = ImageFolder(data)  # lists the files; raises ValueError when there are none
        root = Path(data)
        return FileSource([str(p) for p, _ in folder.samples], [p.relative_to(root).as_posix() for p, _ in folder.samples],
                          [int(y) for _, y in folder.samples], folder.classes, transform, mode, size)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                                     and not isinstance(data, (list, tuple))):
        n = len(data)
        if n == 0:
            raise ValueError("data is an empty data set")
        return DatasetSource(data, [str(i) for i in range(n)], transform, getattr(data, "classes", None))
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("data is an empty list of image paths")
        bad = [str(p) for p in data if not isinstance(p, (str, os.PathLike)) or not Path(p).is_file()]
        if bad:
            raise ValueError(f"data: not image files: {bad[:5]}{' ...' if len(bad) > 5 else ''}")
        paths = [str(p) for p in data]
        if len(set(paths)) != len(paths):
            raise ValueError("data: the list names a file twice; ids must be unique")
        return FileSource(paths, paths, [-1] * len(paths), None, transform, mode, size)
    raise TypeError("data must be an image folder, a list of image paths, a torch Dataset or a Ray Dataset, "
                    f"got {type(data).__name__}")
