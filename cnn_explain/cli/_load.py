"""Loading what the subcommands work on: the model, the explainer, image files and folders; saving figures.

A model comes from ``--model pkg.module:factory`` (a function or class called
with no arguments; ``--weights ckpt.pt`` loads a state dict into it) or
``--model digits`` (the trained digits CNN). Images are files, converted to the
model's channel count, resized to ``--input-size`` and scaled to ``[0, 1]``
(``--mean``/``--std`` normalize them further). Mistakes raise :class:`UsageError`,
which :func:`cnn_explain.cli.main` reports on one line (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._options import DIGITS
from ._registry import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from ..explainer import Explainer

__all__ = ["load_model", "input_spec", "image_transform", "make_explainer", "load_images", "load_folder", "save_figure"]


# --------------------------------------------------------------------------- loading
def load_model(spec: str, weights: str | None = None) -> nn.Module:
    """``'pkg.module:factory'`` (or ``'digits'``) -> an ``nn.Module`` in eval mode, with ``weights`` loaded.

    ``factory`` may be dotted (``pkg.module:Class.build``) and is called with no
    arguments. Every failure is a :class:`UsageError` whose message names the
    option (``--model`` / ``--weights``); the CLI turns it into exit code 2.
    """
    if spec == DIGITS:
        from ..train import pretrained_digits_cnn

        model = pretrained_digits_cnn(progress=False)
    else:
        model = _build_model(spec)
    if weights is not None:
        from ..train import load_checkpoint

        if not Path(weights).is_file():
            raise UsageError(f"--weights: no such file: {weights}")
        try:
            load_checkpoint(model, weights)
        except ValueError as exc:
            raise UsageError(f"--weights: the checkpoint does not fit the model ({exc})") from None
    return model.eval()


def _build_model(spec: str) -> nn.Module:
    from torch import nn

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError("--model must be module:factory, i.e. pkg.module:factory "
                         f"(e.g. cnn_explain.models:cifar10_cnn) or 'digits', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the user's own modules, as `python -m` would find them
    try:
        factory = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--model: cannot load it: cannot import module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise UsageError(f"--model: cannot load it: module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise UsageError(f"--model: {spec!r} is not callable (expected a function returning an nn.Module)")
    try:
        model = factory()
    except Exception as exc:  # the user's factory: report it as a usage error, not a traceback
        raise UsageError(f"--model: {spec}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model: {spec}() returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def image_transform(channels: int, size: int | None, mean: Sequence[float] | None,
                    std: Sequence[float] | None) -> Callable[[Any], torch.Tensor]:
    """PIL image -> ``(channels, size, size)`` float tensor in [0, 1], then ``(x - mean) / std``."""
    import torch

    from ..images import to_batch

    def transform(im: Any) -> torch.Tensor:
        im = im.convert("L" if channels == 1 else "RGB")
        if size is not None:
            im = im.resize((size, size))
        t = to_batch(im)[0]  # (C, H, W), uint8 / 255
        if mean is not None:
            t = t - torch.tensor(mean, dtype=t.dtype).view(-1, 1, 1)
        if std is not None:
            t = t / torch.tensor(std, dtype=t.dtype).view(-1, 1, 1)
        return t.contiguous()

    return transform


def input_spec(args: argparse.Namespace, model: Any) -> tuple[int, int | None]:
    """``(channels, size)``: the first conv's input channels (3 without one) and ``--input-size``."""
    from ..roles import first_conv_module as first_conv

    conv = first_conv(model)
    return (conv.in_channels if conv is not None else 3), args.input_size or (28 if args.model == DIGITS else None)


def make_explainer(args: argparse.Namespace) -> Explainer:
    """The model, its class names and the image transform from the shared options."""
    from .. import explain

    model = load_model(args.model, args.weights)
    channels, size = input_spec(args, model)
    for name in ("mean", "std"):
        vals = getattr(args, name)
        if vals is not None and len(vals) not in (1, channels):
            raise UsageError(f"--{name} needs 1 or {channels} values, got {len(vals)}")
    classes = None
    if args.classes:
        if not Path(args.classes).is_file():
            raise UsageError(f"--classes: no such file: {args.classes}")
        classes = [ln.strip() for ln in Path(args.classes).read_text(encoding="utf-8").splitlines() if ln.strip()]
    elif args.model == DIGITS:
        from ..data import DIGIT_CLASSES

        classes = list(DIGIT_CLASSES)
    return explain(model, class_names=classes, transform=image_transform(channels, size, args.mean, args.std))


def load_images(ex: Explainer, paths: Sequence[str]) -> torch.Tensor:
    """Image files -> an ``(N, C, H, W)`` batch through the explainer's transform (all the same size)."""
    for p in paths:
        if not Path(p).is_file():
            raise UsageError(f"--images: no such file: {p}")
    from ..images import to_batch

    x = to_batch(list(paths), argname="--images", transform=ex.transform)  # not an image: ValueError naming it
    return ex.prepare(x, argname="--images")  # on the model's device, channels checked


def load_folder(args: argparse.Namespace, ex: Explainer, folder: str) -> Dataset:
    """``root/<class>/<image>`` as a data set prepared like ``--images`` (size, channels, mean/std)."""
    import torch
    from torch.utils.data import Dataset

    from ..data import ImageFolder

    if not Path(folder).is_dir():
        raise UsageError(f"--data: no such folder: {folder}")
    channels, size = input_spec(args, ex.model)
    base = ImageFolder(folder, size=size, mode="L" if channels == 1 else "RGB")
    mean = None if args.mean is None else torch.tensor(args.mean).view(-1, 1, 1)
    std = None if args.std is None else torch.tensor(args.std).view(-1, 1, 1)

    class Normalized(Dataset):
        classes = base.classes

        def __len__(self) -> int:
            return len(base)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x, y = base[i]
            x = x if mean is None else x - mean
            return (x if std is None else x / std), y

    return Normalized()


def save_figure(fig: Any, out: str) -> str:
    """Save a Matplotlib Figure as PNG (folders created); return the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(path)
    return str(path)


