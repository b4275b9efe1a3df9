"""The options shared by several subcommands, each defined once, and the ``type=`` parsers they use.

``--model`` / ``--weights`` (:func:`add_model`), ``--images`` (:func:`add_images`),
``--input-size`` with ``--mean`` / ``--std`` (:func:`add_input_size`),
``--classes`` (:func:`add_classes`), ``--out`` (:func:`add_out`) and ``--quiet``
(:func:`add_quiet`); :func:`add_model_inputs` adds the usual group of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Union

__all__ = ["add_model", "add_images", "add_input_size", "add_classes", "add_model_inputs", "add_out", "add_quiet",
           "pos_int", "nonneg_int", "input_shape"]

DIGITS = "digits"

#: a parser or one of its argument groups
Target = Union[argparse.ArgumentParser, argparse._ArgumentGroup]


def _int_at_least(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse ``type=`` that accepts integers ``>= minimum`` and says ``expected`` otherwise."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
        return v

    return parse


pos_int = _int_at_least(1, "a positive integer")
nonneg_int = _int_at_least(0, "an integer >= 0")


def input_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` -> ``(3, 32, 32)``: one image's (C, H, W), no batch dimension."""
    try:
        values = tuple(int(v) for v in text.replace("x", ",").replace("×", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W (three positive ints, no batch dimension, e.g. 3,32,32), got {text!r}")
    return values  # type: ignore[return-value]


def add_model(p: Target, default: str = DIGITS) -> None:
    """``--model MODULE:FACTORY`` (or ``FILE.py:FACTORY``, or ``digits``) and ``--weights CKPT``.

    See :func:`cnn_explain.cli._load.load_model`.
    """
    p.add_argument("--model", default=default, metavar="MODULE:FACTORY",
                   help="'pkg.module:factory' or 'path/to/file.py:factory' (a function or class returning an "
                        "nn.Module; this imports and runs that code, as python would), or 'digits' (the "
                        "MNIST-style CNN trained on scikit-learn's digits)")
    p.add_argument("--weights", metavar="CKPT",
                   help="state dict (or checkpoint) to load into the model, read with torch.load(weights_only=True) "
                        "(default: the factory's own weights)")


def add_images(p: Target, nargs: str | int = "+") -> None:
    """``--images IMAGE ...`` (required): the image files to explain."""
    p.add_argument("--images", nargs=nargs, metavar="IMAGE", required=True, help="image files to explain")


def add_input_size(p: Target) -> None:
    """``--input-size S`` and the ``--mean`` / ``--std`` normalization applied after it."""
    p.add_argument("--input-size", type=pos_int, metavar="S",
                   help="resize images to S×S (default: 28 for digits, else each image's own size)")
    p.add_argument("--mean", type=float, nargs="+", metavar="M",
                   help="per-channel mean subtracted after scaling to [0, 1] (default: none)")
    p.add_argument("--std", type=float, nargs="+", metavar="S",
                   help="per-channel std divided by after --mean (default: none)")


def add_classes(p: Target) -> None:
    """``--classes NAMES.txt``: class names, one per line."""
    p.add_argument("--classes", metavar="NAMES.txt",
                   help="class names, one per line, as many as the model has outputs "
                        "(default: digits 0-9 for digits, else class indices)")


def add_model_inputs(p: argparse.ArgumentParser, images: str | int | None = "+") -> None:
    """The group "model and inputs": model, weights, images (``images=None``: none), size, mean/std, classes."""
    g = p.add_argument_group("model and inputs")
    add_model(g)
    if images is not None:
        add_images(g, images)
    add_input_size(g)
    add_classes(g)


def add_out(p: argparse.ArgumentParser, default: str | None, help: str = "output file") -> None:
    """``--out PATH`` with ``default`` (``None``: nothing is written unless given)."""
    p.add_argument("--out", default=default, metavar="PATH", help=help)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")
