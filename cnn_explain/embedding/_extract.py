"""Streamed, pooled features of one layer over a whole data set (:func:`extract`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import check_device, model_device, model_input, positive_int, progress_bar
from ..images import to_batch
from .._select import not_a_tensor_message
from ..hooks import LayerSpec, _check_model, capture, preserved, resolve_layer, select_output
from ..roles import penultimate

__all__ = ["Features", "extract", "POOLS"]

POOLS = ("avg", "max", "flatten")


@dataclass(frozen=True, eq=False)
class Features:
    """One pooled feature vector per sample, as :func:`extract` returned them.

    Attributes:
        features: ``(N, C)`` float32 CPU tensor (``torch.from_numpy(...)``; call
            ``.numpy()`` for a zero-copy NumPy view).
        labels: ``(N,)`` int64 tensor of true classes, or ``None`` when the data
            carried no labels.
        predictions: ``(N,)`` int64 tensor, the argmax of the model's output.
        indices: ``(N,)`` int64 tensor: the position of each sample in ``data``
            (in iteration order for a DataLoader or an iterable of batches).
        layer: dotted name of the recorded module.
        captured: ``"input"`` (the tensor entering ``layer``) or ``"output"``.
        pool: how ``(N, C, H, W)`` maps were reduced to ``(N, C)``.
    """

    features: torch.Tensor
    labels: torch.Tensor | None
    predictions: torch.Tensor
    indices: torch.Tensor
    layer: str
    captured: str
    pool: str

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def accuracy(self) -> float | None:
        """Fraction of samples the model classified correctly (``None`` without labels)."""
        if self.labels is None:
            return None
        return float((self.predictions == self.labels).double().mean())


# --------------------------------------------------------------------------- pooling
def _pooler(pool: str):
    """``reduce`` for :func:`~cnn_explain.hooks.capture`: ``(N, C, *spatial) -> (N, C)``."""

    def reduce(t: torch.Tensor) -> torch.Tensor:
        if t.dim() <= 2:
            return t.reshape(t.shape[0], -1)
        if pool == "avg":
            return t.flatten(2).mean(2)
        if pool == "max":
            return t.flatten(2).amax(2)
        return t.flatten(1)

    return reduce


# --------------------------------------------------------------------------- data
@dataclass
class _Source:
    """A data set seen as batches ``(x, y or None, indices)``; ``size`` is exact or an upper bound."""

    batches: Iterator[tuple[torch.Tensor, Any, torch.Tensor]]
    size: int | None
    exact: bool


def _to_tensor(x: Any, argname: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{argname} must hold tensors or arrays, got {type(x).__name__}")
    return x if x.is_floating_point() else x.float()


def _subset(n: int, max_samples: int | None, seed: int) -> torch.Tensor:
    if max_samples is None or max_samples >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_samples].sort().values


def _tensor_source(x: Any, y: Any, batch_size: int, max_samples: int | None, seed: int) -> _Source:
    x = _to_tensor(x, "data")
    if x.dim() < 2:
        raise ValueError(f"data must be shaped (N, C, H, W) (samples first), got shape {tuple(x.shape)}")
    if y is not None:
        y = torch.as_tensor(np.asarray(y)).reshape(-1)
        if y.numel() != x.shape[0]:
            raise ValueError(f"data=(x, labels) has {x.shape[0]} samples but {y.numel()} labels")
    idx = _subset(x.shape[0], max_samples, seed)

    whole = idx.numel() == x.shape[0]  # no subset: slice (views, no copy)

    def gen():
        for s in range(0, idx.numel(), batch_size):
            i = idx[s:s + batch_size]
            sl = slice(s, s + batch_size) if whole else i
            yield x[sl], (None if y is None else y[sl]), i

    return _Source(gen(), idx.numel(), True)


def _item_image(item: Any) -> torch.Tensor:
    return item if isinstance(item, torch.Tensor) else to_batch(item, argname="data item")[0]


def _dataset_source(data: Any, batch_size: int, max_samples: int | None, seed: int) -> _Source:
    idx = _subset(len(data), max_samples, seed)

    def gen():
        for s in range(0, idx.numel(), batch_size):
            i = idx[s:s + batch_size]
            items = [data[int(k)] for k in i]
            if isinstance(items[0], (tuple, list)):
                xs = torch.stack([_item_image(it[0]) for it in items])
                ys = torch.as_tensor([int(it[1]) for it in items])
                yield xs, ys, i
            else:
                yield torch.stack([_item_image(it) for it in items]), None, i

    return _Source(gen(), idx.numel(), True)


def _loader_source(data: Any, max_samples: int | None) -> _Source:
    bound = None
    try:
        bound = len(data.dataset) if hasattr(data, "dataset") else None
    except TypeError:
        bound = None
    if max_samples is not None:
        bound = max_samples if bound is None else min(bound, max_samples)

    def gen():
        seen = 0
        for batch in data:
            x, y = (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(batch, (tuple, list)) else (batch, None)
            x = _to_tensor(x, "data batch")
            if max_samples is not None and seen + x.shape[0] > max_samples:
                x = x[: max_samples - seen]
                y = None if y is None else y[: max_samples - seen]
            yield x, y, torch.arange(seen, seen + x.shape[0])
            seen += x.shape[0]
            if max_samples is not None and seen >= max_samples:
                return

    return _Source(gen(), bound, False)


def _source(data: Any, batch_size: int, max_samples: int | None, seed: int) -> _Source:
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return _tensor_source(data, None, batch_size, max_samples, seed)
    if (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (torch.Tensor, np.ndarray))):
        return _tensor_source(data[0], data[1], batch_size, max_samples, seed)
    if isinstance(data, torch.utils.data.DataLoader):
        return _loader_source(data, max_samples)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (str, bytes, dict)):
        return _dataset_source(data, batch_size, max_samples, seed)
    if hasattr(data, "__iter__"):
        return _loader_source(data, max_samples)
    raise TypeError(
        "data must be a tensor (N, C, H, W), a tuple (images, labels), a Dataset yielding "
        f"images or (image, label) pairs, a DataLoader or an iterable of batches; got {type(data).__name__}"
    )


# --------------------------------------------------------------------------- buffer
class _Buffer:
    """Rows appended batch by batch; preallocated when the final size is known (no 2× peak)."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity, self.n = capacity, 0
        self.array: np.ndarray | None = None
        self.chunks: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        if self.capacity is not None:
            if self.array is None:
                self.array = np.empty((self.capacity,) + rows.shape[1:], dtype=rows.dtype)
            if self.n + len(rows) > self.capacity:  # the bound was wrong: fall back to chunks
                self.chunks, self.array, self.capacity = [self.array[: self.n]], None, None
                self.chunks.append(rows.copy())
            else:
                self.array[self.n:self.n + len(rows)] = rows
        else:
            self.chunks.append(rows.copy())
        self.n += len(rows)

    def result(self) -> np.ndarray:
        if self.array is not None:
            return self.array[: self.n]
        return np.concatenate(self.chunks) if self.chunks else np.empty((0,))


# --------------------------------------------------------------------------- extract
def extract(
    model: nn.Module,
    data: Any,
    layer: LayerSpec = None,
    *,
    pool: str = "avg",
    batch_size: int = 256,
    max_samples: int | None = None,
    progress: bool = True,
    output: Any = None,
    device: str | torch.device | None = None,
    layer_input: bool | None = None,
    seed: int = 0,
) -> Features:
    """Stream ``data`` through ``model`` and keep one pooled feature vector per sample.

    A forward hook on one layer (:func:`cnn_explain.hooks.capture`) pools the
    layer's tensor inside the hook, so only ``(batch, C)`` numbers leave it, and
    the recording is cleared after every batch: memory grows with ``N × C``,
    never with ``N × C × H × W`` (``pool="flatten"`` is the exception, by choice).
    The model runs under ``torch.inference_mode`` in eval mode and comes back
    exactly as it was.

    Pooling of an ``(N, C, H, W)`` tensor ``a``: ``"avg"`` gives
    ``f[n, c] = mean_{h,w} a[n, c, h, w]`` (global average pooling), ``"max"``
    gives ``max_{h,w}``, ``"flatten"`` keeps all ``C·H·W`` values. A 2-D
    ``(N, C)`` tensor is kept as it is.

    Args:
        model: the network (any ``nn.Module``).
        data: a tensor ``(N, C, H, W)`` (already preprocessed), a tuple
            ``(images, labels)``, a map-style Dataset whose items are images or
            ``(image, label)`` pairs, a DataLoader, or any iterable of such batches.
        layer: ``None`` (default) records the *input* of the model's last
            ``nn.Linear`` — the penultimate features the classifier reads
            (:func:`cnn_explain.roles.penultimate`);
            otherwise a module, dotted name or glob whose *output* is recorded
            (a layer returning a tuple, dict or dataclass with a selector:
            ``"stage2.last_hidden_state"``).
        pool: ``"avg"``, ``"max"`` or ``"flatten"``.
        batch_size: batch size for tensors and Datasets (a DataLoader keeps its own).
        max_samples: use at most this many samples: a seeded random subset
            (kept in data order) for tensors and Datasets, the first ones for
            DataLoaders and iterables.
        progress: show a tqdm bar.
        output: selector for models returning tuples/dicts (see :func:`~cnn_explain.hooks.select_output`).
        device: where to run (default: the model's device; the model is never moved).
        layer_input: record the layer's input (``True``) or output (``False``);
            default ``True`` for ``layer=None`` and ``False`` otherwise.
        seed: seed of the ``max_samples`` subset.

    Returns:
        :class:`Features` with ``.features`` ``(N, C)`` float32, ``.labels``,
        ``.predictions``, ``.indices``, ``.layer``.

    Raises:
        ValueError: empty data, unknown ``pool``, a layer that produced nothing
            for these inputs, a layer whose tensor has no batch dimension.
        TypeError: ``data`` of an unsupported kind.

    Example:
        >>> from cnn_explain.models import mnist_cnn
        >>> f = extract(mnist_cnn(), torch.rand(10, 1, 28, 28), progress=False)
        >>> f.features.shape, f.layer
        (torch.Size([10, 100]), '12')
    """
    _check_model(model)
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    batch_size = positive_int(batch_size, "batch_size")
    if max_samples is not None:
        max_samples = positive_int(max_samples, "max_samples")
    if layer is None:
        name = penultimate(model).name
        side_in = True if layer_input is None else bool(layer_input)
    else:
        name, _ = resolve_layer(model, layer)
        side_in = bool(layer_input)
    dev = check_device(device) if device is not None else model_device(model)
    src = _source(data, batch_size, max_samples, seed)
    feats = _Buffer(src.size if src.exact else None)
    preds, labels, idxs, has_labels = [], [], [], None
    bar = progress_bar(enabled=progress, total=src.size, desc=f"features of {name or 'model'}", unit="img")
    try:
        with preserved(model, eval=True), torch.inference_mode(), \
                capture(model, name, inputs=side_in, keep_outputs=not side_in, reduce=_pooler(pool)) as rec:
            for x, y, i in src.batches:
                if x.shape[0] == 0:
                    continue
                x = model_input(model, x, argname="data", device=dev)
                f, out = _run_batch(model, rec, x, name, side_in, output)
                feats.add(f.float().cpu().numpy())
                preds.append(out.reshape(out.shape[0], -1).argmax(1).cpu())
                idxs.append(i)
                if has_labels is None:
                    has_labels = y is not None
                if (y is not None) != has_labels:
                    raise ValueError("some batches of data carry labels and some do not")
                if y is not None:
                    labels.append(_labels(y, x.shape[0]))
                bar.update(x.shape[0])
    finally:
        bar.close()
    if not idxs:
        raise ValueError("data is empty: it yielded no samples; give at least one image")
    return Features(
        features=torch.from_numpy(feats.result()),
        labels=torch.cat(labels) if has_labels else None,
        predictions=torch.cat(preds), indices=torch.cat(idxs).long(),
        layer=name, captured="input" if side_in else "output", pool=pool,
    )


def _run_batch(model, rec, x, name, side_in, output) -> tuple[torch.Tensor, torch.Tensor]:
    out = select_output(model(x), output)
    store = rec.inputs if side_in else rec.outputs
    value = store.get(name)  # this batch's first call (clear() restarts the numbering)
    rec.clear()
    side = "input" if side_in else "output"
    if value is not None and not isinstance(value, torch.Tensor) and not side_in:
        raise ValueError(not_a_tensor_message(name, value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"layer {name!r} produced no tensor {side} for these inputs (it was not called, or "
            "was called without a positional tensor); pick a layer the forward pass uses"
        )
    if value.shape[0] != x.shape[0]:
        raise ValueError(
            f"the {side} of layer {name!r} has {value.shape[0]} rows for a batch of {x.shape[0]} "
            "images; pick a layer whose tensor is (N, ...)"
        )
    return value, out


def _labels(y: Any, n: int) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(y)).reshape(-1).long()
    except (TypeError, ValueError) as exc:
        raise TypeError("labels in data must be integer class indices") from exc
    if t.numel() != n:
        raise ValueError(f"a batch has {n} images but {t.numel()} labels")
    return t
