"""The ``style`` subcommand: ``cnn-explain style --content A --style B --out C.png``.

``--content`` and ``--style`` are image files; the names ``china`` / ``china.jpg``
and ``flower`` / ``flower.jpg`` (scikit-learn's sample photos) also work when no such file exists,
so ``cnn-explain style`` alone runs the demo with nothing downloaded. The defaults of
``--steps`` and the loss weights are those of :func:`cnn_explain.style.transfer`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..images import save_image
from ._load import check_out_file
from ._options import add_out, add_quiet
from ._registry import UsageError, command

__all__: list[str] = []

SAMPLES = ("china", "flower", "grace_hopper")
HELP = "Gram-matrix style transfer with a random-filter network; writes the stylized PNG."


def _defaults() -> dict[str, float]:
    """``steps``, ``style_weight``, ``content_weight``, ``tv_weight``: the style package's defaults."""
    from ..style import DEFAULTS

    return {k: DEFAULTS[k] for k in ("steps", "style_weight", "content_weight", "tv_weight")}


def _style_arguments(p: argparse.ArgumentParser) -> None:
    d = _defaults()
    p.add_argument("--content", default="china.jpg", help="content image file (default: scikit-learn's china.jpg)")
    p.add_argument("--style", default="flower.jpg", help="style image file (default: scikit-learn's flower.jpg)")
    add_out(p, "style_transfer.png", help="where to write the stylized PNG")
    p.add_argument("--figure", default=None, metavar="PATH",
                   help="also save the figure (content, style, result, losses) here (default: not saved)")
    p.add_argument("--steps", type=int, default=d["steps"], help="optimizer steps")
    p.add_argument("--size", type=int, default=256, help="working size in pixels, square")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="L-BFGS or Adam")
    p.add_argument("--init", choices=("content", "noise"), default="content",
                   help="start from the content image or from noise")
    p.add_argument("--style-weight", type=float, default=d["style_weight"], help="weight of the Gram-matrix loss")
    p.add_argument("--content-weight", type=float, default=d["content_weight"], help="weight of the content loss")
    p.add_argument("--tv-weight", type=float, default=d["tv_weight"], help="weight of the total-variation loss")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-filter network and of the noise")
    p.add_argument("--model", metavar="MODULE:FACTORY",
                   help="your own CNN taking RGB images ('pkg.module:factory' or 'file.py:factory'; imports and "
                        "runs that code); default: a random-filter texture network, nothing downloaded")
    p.add_argument("--weights", metavar="CKPT", help="state dict (or checkpoint) to load into --model")
    p.add_argument("--content-layers", nargs="+", metavar="LAYER",
                   help="layers whose maps keep the content (default with --model: the conv at 60%% of the depth)")
    p.add_argument("--style-layers", nargs="+", metavar="LAYER",
                   help="layers whose Gram matrices carry the style (default with --model: five convs, first to last)")
    add_quiet(p)


def _image_arg(value: str) -> Any:
    name = os.path.splitext(os.path.basename(value))[0]
    if not os.path.exists(value) and name in SAMPLES:
        from ..data import sample_image

        return sample_image(name)
    return value  # transfer() opens it and names the argument if it fails


@command("style", help=HELP, arguments=_style_arguments)
def _run_style(args: argparse.Namespace) -> int:
    """Run the transfer described by ``args``; writes ``--out`` (and ``--figure``); returns 0."""
    from ..style import transfer

    check_out_file(args.out)
    check_out_file(args.figure)
    model = None
    if args.model is not None:
        from ._load import load_model

        model = load_model(args.model, args.weights)
    elif args.weights is not None:
        raise UsageError("--weights needs --model (the default texture network has no checkpoint)")
    res = transfer(
        _image_arg(args.content), _image_arg(args.style), model=model, content_layers=args.content_layers,
        style_layers=args.style_layers, steps=args.steps, size=args.size,
        optimizer=args.optimizer, init=args.init, style_weight=args.style_weight,
        content_weight=args.content_weight, tv_weight=args.tv_weight, seed=args.seed, progress=not args.quiet,
    )
    save_image(res.image, args.out)  # the parent folder is created
    if args.figure:
        from ..plotting.style import style_figure

        style_figure(res).savefig(args.figure, dpi=100)
    last = res.history[-1]
    print(f"wrote {args.out}: {res.image.shape[1]}x{res.image.shape[2]}, {len(res.history)} steps in "
          f"{res.seconds:.1f} s, final loss {last['total']:.4g} (content {last['content']:.3g}, "
          f"style {last['style']:.3g}, tv {last['tv']:.3g}); the style (Gram) loss is {res.style_drop:.3g}x "
          f"lower than the content photo's own")
    return 0
