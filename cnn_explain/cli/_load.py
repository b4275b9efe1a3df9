"""Loading what the subcommands work on: the model, the explainer, image files and folders; saving figures.

A model comes from ``--model pkg.module:factory`` or ``--model path/to/file.py:factory``
(a function or class called with no arguments; this runs the user's own code, by
design; ``--weights ckpt.pt`` loads a state dict into it) or ``--model digits``
(the MNIST-style CNN trained on scikit-learn's digits); see :mod:`._model`.
Images are files, converted to the model's channel count, resized to
``--input-size`` and scaled to ``[0, 1]`` (``--mean``/``--std`` normalize them
further); they must fit the model (a forward pass is tried before the long work).
Outputs are checked before any work. Mistakes raise :class:`UsageError`, which
:func:`cnn_explain.cli.main` reports on one line (exit status 2).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._model import load_model
from ._options import DIGITS
from ._registry import UsageError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from ..explainer import Explainer

__all__ = ["load_model", "input_spec", "image_transform", "make_explainer", "load_images", "load_folder",
           "save_figure", "check_out_file", "check_out_report", "target", "labelled"]


# --------------------------------------------------------------------------- outputs
def check_out_file(out: str | None, what: str = "figure") -> None:
    """Check ``--out`` before any work: not a folder, a file type Matplotlib / Pillow writes, a usable parent.

    Nothing is created. Raises :class:`UsageError` naming ``--out``.
    """
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name, e.g. {Path(out) / ('x.png')}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {out}: {parent} is a file, not a folder")
            break
    if what == "figure":
        from matplotlib.figure import Figure

        kinds = Figure().canvas.get_supported_filetypes()
        if path.suffix.lower().lstrip(".") not in kinds:
            raise UsageError(f"--out {out}: cannot tell the image format from {path.suffix or 'no suffix'!r}; "
                             "end the name with .png (or .pdf, .svg, .jpg)")


def check_out_report(out: str) -> None:
    """Check the report folder ``--out`` before any work (see :func:`cnn_explain.report.check_out_folder`)."""
    from ..report import check_out_folder

    check_out_folder(out, argname="out")  # its ValueError says "out=...": main() puts it as --out


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
    import torch

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
    ex = explain(model, class_names=classes, transform=image_transform(channels, size, args.mean, args.std))
    if args.classes and size is not None:  # the size is known: check --classes now, before any other work
        _check_fits(ex, ex.prepare(torch.zeros(1, channels, size, size), argname="--input-size"), size, args.classes)
    return ex


def load_images(ex: Explainer, paths: Sequence[str], input_size: int | None = None,
                classes_file: str | None = None) -> torch.Tensor:
    """Image files -> an ``(N, C, H, W)`` batch through the explainer's transform, checked against the model.

    Args:
        ex: the explainer (its transform resizes to ``--input-size`` when given).
        paths: the image files.
        input_size: ``--input-size`` (None: images keep their size, so they must all have the same one).
        classes_file: ``--classes`` (its names are counted against the model's outputs).

    Raises:
        UsageError: a missing file, images of different sizes without ``--input-size``,
            images the model cannot take (the message says which ``--input-size`` fits), or
            a ``--classes`` file with the wrong number of names.
    """
    for p in paths:
        if not Path(p).is_file():
            raise UsageError(f"--images: no such file: {p}")
    if input_size is None:
        _check_same_size(paths)
    from ..images import to_batch

    x = to_batch(list(paths), argname="--images", transform=ex.transform)  # not an image: ValueError naming it
    x = ex.prepare(x, argname="--images")  # on the model's device, channels checked
    _check_fits(ex, x, input_size, classes_file)
    return x


def _check_same_size(paths: Sequence[str], option: str = "--images") -> None:
    from PIL import Image

    sizes = {}
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes[p] = im.size
        except OSError:
            continue  # not an image: reading it says so, naming the file
    if len(set(sizes.values())) > 1:
        seen: dict[tuple[int, int], str] = {}
        for p, wh in sizes.items():
            seen.setdefault(wh, p)
        shown = ", ".join(f"{Path(p).name} {w}×{h}" for (w, h), p in list(seen.items())[:4])
        raise UsageError(f"{option}: the images have different sizes ({shown}); pass --input-size S to resize "
                         "them all to S×S")


#: sizes tried when the images do not fit the model, to tell the user which --input-size does
_COMMON_SIZES = (28, 32, 64, 96, 112, 128, 224, 227, 256, 299)
#: a photo larger than this, kept at full size, makes occlusion and the report slow: say so
_LARGE = 256


def _forward(ex: Explainer, x: torch.Tensor) -> torch.Tensor:
    import torch

    from ..hooks import select_output

    with torch.no_grad():
        return select_output(ex.model(x))


def _check_fits(ex: Explainer, x: torch.Tensor, input_size: int | None, classes_file: str | None) -> None:
    """One forward pass of one image: it must run, and give one output per name in ``--classes``."""
    import torch

    h, w = x.shape[-2:]
    try:
        out = _forward(ex, x[:1])
    except RuntimeError as exc:
        fits = None
        for s in _COMMON_SIZES:
            try:
                _forward(ex, torch.zeros(1, x.shape[1], s, s, dtype=x.dtype, device=x.device))
            except RuntimeError:
                continue
            fits = s
            break
        if fits is None:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"--images: the model cannot take {h}×{w} images ({first}); pass --input-size "
                             "with the size it was trained on") from None
        raise UsageError(f"--images are {h}×{w} but the model expects {fits}×{fits}; "
                         f"pass --input-size {fits}") from None
    if classes_file and ex.class_names is not None and out.ndim == 2 and out.shape[1] != len(ex.class_names):
        raise UsageError(f"--classes: {classes_file} has {len(ex.class_names)} names but the model has "
                         f"{out.shape[1]} outputs; give one name per output, in order")
    if input_size is None and max(h, w) > _LARGE:
        print(f"cnn-explain: note: the images are kept at {h}×{w} (no --input-size); occlusion and the report "
              f"take much longer at this size: pass --input-size (e.g. 224) to resize them", file=sys.stderr)


def target(ex: Explainer, text: str | None) -> int | None:
    """``--target``: a class index, or a class name from ``--classes`` (None: the predicted class)."""
    if text is None:
        return None
    if text.strip().isdigit():
        return int(text)
    names = list(ex.class_names or [])
    if text in names:
        return names.index(text)
    if not names:
        raise UsageError(f"--target {text!r}: a class name needs --classes NAMES.txt; or give a class index")
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    raise UsageError(f"--target {text!r} is not a class name ({shown}) nor a class index")


def labelled(plot: Callable[..., Any], names: Sequence[str], *args: Any, **kwargs: Any) -> Any:
    """``plot(*args, **kwargs)``, with ``labels=names`` (the images' file names) when ``plot`` takes labels."""
    if "labels" in inspect.signature(plot).parameters:
        kwargs["labels"] = list(names)
    return plot(*args, **kwargs)


def load_folder(args: argparse.Namespace, ex: Explainer, folder: str) -> Dataset:
    """``root/<class>/<image>`` as a data set prepared like ``--images`` (size, channels, mean/std)."""
    import torch
    from torch.utils.data import Dataset

    from ..data import ImageFolder

    if not Path(folder).is_dir():
        raise UsageError(f"--data: no such folder: {folder}")
    channels, size = input_spec(args, ex.model)
    base = ImageFolder(folder, size=size, mode="L" if channels == 1 else "RGB")
    if size is None:  # the images are batched: they must share one size, or --input-size resizes them
        _check_same_size([str(f) for f, _ in base.samples], option="--data")
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


