"""Occlusion (Zeiler & Fergus, 2014): slide a grey square over the image and record how much
the probability of the class drops; big drops mark the pixels the network relies on.

    python examples/occlusion.py --window 6 --stride 2 --images 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnn_explain import explain
from cnn_explain.data import DIGIT_CLASSES, load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import attribution_grid
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="how many test digits")
    parser.add_argument("--window", type=int, default=6, help="side of the occluding square, pixels")
    parser.add_argument("--stride", type=int, default=2, help="step between squares, pixels")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/occlusion", help="folder for the figure")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model, class_names=DIGIT_CLASSES)
    x = load_digits("test").tensors[0][: args.images]
    result = ex.occlusion(x, window=args.window, stride=args.stride, measure="prob")
    print(f"explained classes: {[ex.label(int(t)) for t in result.target]}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    attribution_grid([result]).savefig(out / "occlusion.png", dpi=110)
    print(f"figure: {out / 'occlusion.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
