"""Training: ``fit()``, ``evaluate()``, checkpoints, and a cached digits CNN for demos.

``fit`` minimizes the cross-entropy of the model's logits with SGD + momentum or
Adam. It is deterministic under ``seed`` (same seed, same data, same weights:
shuffling uses its own ``torch.Generator`` and dropout runs inside
``torch.random.fork_rng``), and leaves torch's global random state as it found it.

Example:
    >>> from cnn_explain.models import mnist_cnn
    >>> from cnn_explain.data import load_digits
    >>> model = mnist_cnn()
    >>> history = fit(model, load_digits("train"), epochs=1, lr=1e-3, optimizer="adam", progress=False)
    >>> 0.0 <= evaluate(model, load_digits("test")) <= 1.0
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ._utils import model_device, positive_int, progress_bar
from .hooks import _check_model, preserved, select_output

__all__ = ["History", "fit", "evaluate", "save_checkpoint", "load_checkpoint", "pretrained_digits_cnn",
           "digits_checkpoint_path", "DIGITS_SETTINGS"]

# Settings of pretrained_digits_cnn: ~11 s of CPU time, 96.4 % test accuracy (seeds 0, 1, 2).
DIGITS_SETTINGS: dict[str, Any] = {"epochs": 4, "lr": 2e-3, "optimizer": "adam", "batch_size": 16,
                                   "schedule": "cosine", "size": 28}


@dataclass(frozen=True)
class History:
    """What :func:`fit` did, one entry per epoch.

    Attributes:
        loss: mean training cross-entropy of each epoch.
        train_accuracy: accuracy on the training batches during each epoch (model in train mode).
        val_accuracy: accuracy on ``val_data`` after each epoch (empty without ``val_data``).
        seconds: wall time of the whole fit.
        settings: the arguments that made it (epochs, lr, optimizer, momentum, batch_size, seed).
    """

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- batches
def _as_dataset(data: Any, argname: str) -> Dataset:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        data = TensorDataset(*data)
    if not isinstance(data, Dataset):
        raise TypeError(f"{argname} must be a torch Dataset of (image, label) or a pair (images, labels) of tensors, "
                        f"got {type(data).__name__}")
    if len(data) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{argname} is empty")
    return data


def _batches(data: Dataset, batch_size: int, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``(x, y)``; shuffled with ``generator`` if given. TensorDatasets are sliced directly."""
    n = len(data)  # type: ignore[arg-type]
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield data.tensors[0][idx], data.tensors[1][idx]
        return
    loader = DataLoader(data, batch_size=batch_size, shuffle=generator is not None, generator=generator)
    for x, y in loader:
        yield x, torch.as_tensor(y)


def _n_batches(data: Dataset, batch_size: int) -> int:
    return -(-len(data) // batch_size)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fit / evaluate
def _make_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float, schedule: str, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (all requires_grad=False)")
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if schedule == "cosine":
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    if schedule == "constant":
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")


def fit(model: nn.Module, train_data: Any, *, epochs: int, lr: float, optimizer: str = "sgd",
        momentum: float = 0.9, batch_size: int = 64, seed: int = 0, val_data: Any = None,
        progress: bool = True, schedule: str = "constant", num_threads: int | None = None) -> History:
    """Train ``model`` in place to minimize cross-entropy on ``train_data``.

    Args:
        model: a classifier returning ``(N, num_classes)`` logits.
        train_data: a Dataset of ``(image, label)`` or a pair ``(images, labels)``.
        epochs: passes over the data.
        lr: learning rate.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        momentum: SGD momentum.
        batch_size: images per step.
        seed: seeds the shuffling and any randomness inside the model (dropout);
            the same seed gives the same weights.
        val_data: optional data scored with :func:`evaluate` after each epoch.
        progress: show a tqdm bar.
        schedule: ``"constant"`` learning rate, or ``"cosine"``: decayed per step as
            ``lr·(1 + cos(π·step/steps))/2`` (Loshchilov & Hutter, SGDR, 2017).
        num_threads: CPU threads for the duration (``torch.set_num_threads``, restored
            afterwards); None keeps torch's setting. 1 is much faster on a busy machine
            (no threads spinning while they wait for a core).

    Returns:
        A :class:`History`. The parameters are updated in place; every module's
        ``training`` flag, torch's global RNG state and (cleared) ``.grad`` are
        restored afterwards.
    """
    _check_model(model)
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    data = _as_dataset(train_data, "train_data")
    val = None if val_data is None else _as_dataset(val_data, "val_data")
    steps = epochs * _n_batches(data, batch_size)
    opt, sched = _make_optimizer(model, optimizer, lr, momentum, schedule, steps)
    settings = dict(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, batch_size=batch_size, seed=seed,
                    schedule=schedule)
    history = History(settings=settings)
    flags = [(m, m.training) for m in model.modules()]
    device, start = model_device(model), time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(positive_int(num_threads, "num_threads"))
    bar = progress_bar(total=steps, enabled=progress, desc=f"training ({epochs} epochs)", unit="batch")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(epochs):
                loss, acc = _epoch(model, opt, sched, _batches(data, batch_size, generator), device, bar)
                history.loss.append(loss)
                history.train_accuracy.append(acc)
                if val is not None:
                    history.val_accuracy.append(evaluate(model, val))
                    bar.set_postfix(loss=f"{loss:.3f}", val=f"{history.val_accuracy[-1]:.3f}")
    finally:
        bar.close()
        torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        for m, flag in flags:
            m.training = flag
    return History(history.loss, history.train_accuracy, history.val_accuracy, time.perf_counter() - start, settings)


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, sched, batches, device, bar) -> tuple[float, float]:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = select_output(model(x))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total_loss / seen, correct / seen


def evaluate(model: nn.Module, data: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (a Dataset or ``(images, labels)``), in eval mode.

    The model's training flags come back as they were.
    """
    _check_model(model)
    batch_size = positive_int(batch_size, "batch_size")
    data = _as_dataset(data, "data")
    device, correct, seen = model_device(model), 0, 0
    with preserved(model, eval=True), torch.no_grad():
        for x, y in _batches(data, batch_size, None):
            logits = select_output(model(x.to(device)))
            correct += int((logits.argmax(1).cpu() == y).sum())
            seen += len(y)
    return correct / seen


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model.state_dict()`` to ``path`` (atomically; parent folders are created)."""
    _check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``state_dict`` saved by :func:`save_checkpoint` (``torch.load(..., weights_only=True)``) into ``model``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a checkpoint, or its keys / shapes do not match the model
            (missing and unexpected keys are listed).
    """
    _check_model(model)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=model_device(model), weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"path={str(path)!r} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"path={str(path)!r} holds a {type(state).__name__}, expected a state_dict")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"checkpoint {str(path)!r} does not match the model: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"checkpoint {str(path)!r} does not match the model: shapes differ ({'; '.join(wrong)})")
    model.load_state_dict(state)
    return model


# --------------------------------------------------------------------------- cached digits model
def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CNN_EXPLAIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cnn_explain"


def digits_checkpoint_path(*, cache_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Where :func:`pretrained_digits_cnn` caches its checkpoint (named after the settings, seed and torch version).

    The file exists once the model has been trained; nothing is created here.
    """
    key = json.dumps({**DIGITS_SETTINGS, "seed": seed, "torch": torch.__version__}, sort_keys=True)
    return _cache_dir(cache_dir) / f"digits_cnn-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def pretrained_digits_cnn(*, cache_dir: str | os.PathLike | None = None, seed: int = 0,
                          progress: bool = False) -> nn.Module:
    """The MNIST-style CNN (:func:`~cnn_explain.models.mnist_cnn`) trained on ``load_digits("train")``, in eval mode.

    The first call trains it (4 epochs of Adam with a cosine schedule: about 11 s
    of CPU time, 96.4 % test accuracy on the 450 test digits) and
    saves a checkpoint in ``cache_dir`` (default: ``$CNN_EXPLAIN_CACHE`` or
    ``~/.cache/cnn_explain``) named after the training settings, the seed and
    the torch version; later calls load it. Nothing is downloaded.
    """
    from .data import load_digits
    from .models import mnist_cnn

    path = digits_checkpoint_path(cache_dir=cache_dir, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mnist_cnn()
    if path.is_file():
        try:
            return load_checkpoint(model, path).eval()
        except ValueError:
            warnings.warn(f"ignoring an unreadable cached checkpoint {str(path)!r}; retraining", stacklevel=2)
    s = DIGITS_SETTINGS
    fit(model, load_digits("train", size=s["size"], seed=0), epochs=s["epochs"], lr=s["lr"],
        optimizer=s["optimizer"], batch_size=s["batch_size"], schedule=s["schedule"], seed=seed, progress=progress,
        num_threads=1)
    try:
        save_checkpoint(model, path)
    except OSError as exc:
        warnings.warn(f"could not cache the trained model in {str(path.parent)!r}: {exc}", stacklevel=2)
    return model.eval()
