"""Command line for style transfer: ``cnn-explain style --content A --style B --out C.png``.

``--content`` and ``--style`` are image files; the names ``china`` / ``china.jpg``
and ``flower`` / ``flower.jpg`` (scikit-learn's sample photos) also work when no such file exists,
so ``cnn-explain style`` alone runs the demo with nothing downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["add_arguments", "build_parser", "main", "run", "save_png"]

SAMPLES = ("china", "flower", "grace_hopper")
DESCRIPTION = "Gram-matrix style transfer (Gatys et al. 2016) with a random multi-scale network: nothing is downloaded."


def build_parser(prog: str = "cnn-explain style") -> argparse.ArgumentParser:
    """The argument parser (also used by ``examples/style_transfer.py``)."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the style-transfer options to ``p`` (shared by ``cnn-explain style`` and the example)."""
    from .style import DEFAULTS

    p.add_argument("--content", default="china.jpg", help="content image file (default: scikit-learn's china.jpg)")
    p.add_argument("--style", default="flower.jpg", help="style image file (default: scikit-learn's flower.jpg)")
    p.add_argument("--out", default="style_transfer.png", help="where to write the stylized PNG")
    p.add_argument("--figure", default=None, help="also save the figure (content, style, result, losses) here")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimizer steps (default %(default)s)")
    p.add_argument("--size", type=int, default=256, help="working size in pixels, square (default %(default)s)")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    p.add_argument("--init", choices=("content", "noise"), default="content")
    p.add_argument("--style-weight", type=float, default=DEFAULTS["style_weight"])
    p.add_argument("--content-weight", type=float, default=DEFAULTS["content_weight"])
    p.add_argument("--tv-weight", type=float, default=DEFAULTS["tv_weight"])
    p.add_argument("--seed", type=int, default=0)
    if not any("--quiet" in a.option_strings for a in p._actions):
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def _image_arg(value: str) -> Any:
    name = os.path.splitext(os.path.basename(value))[0]
    if not os.path.exists(value) and name in SAMPLES:
        from .data import sample_image

        return sample_image(name)
    return value  # transfer() opens it and names the argument if it fails


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a ``(3, H, W)`` image in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    arr = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the transfer described by ``argv``; writes ``--out`` (and ``--figure``); returns 0."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the transfer described by parsed ``args``; writes ``--out`` (and ``--figure``); returns 0."""
    from .style import transfer

    res = transfer(
        _image_arg(args.content), _image_arg(args.style), steps=args.steps, size=args.size,
        optimizer=args.optimizer, init=args.init, style_weight=args.style_weight,
        content_weight=args.content_weight, tv_weight=args.tv_weight, seed=args.seed, progress=not args.quiet,
    )
    if os.path.dirname(os.path.abspath(args.out)):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_png(res.image, args.out)
    if args.figure:
        from .plotting.style import style_figure

        style_figure(res).savefig(args.figure, dpi=100)
    last = res.history[-1]
    print(f"wrote {args.out}: {res.image.shape[1]}x{res.image.shape[2]}, {len(res.history)} steps in "
          f"{res.seconds:.1f} s, final loss {last['total']:.4g} (content {last['content']:.3g}, "
          f"style {last['style']:.3g}, tv {last['tv']:.3g})", file=sys.stdout)
    return 0
