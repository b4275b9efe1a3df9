"""Filters and activation maximization: the first layer's learned 3×3 kernels, and synthetic
images that make chosen channels of a deeper layer respond as strongly as possible.

    python examples/filters_and_maximization.py --layer 6 --channels 0 1 2 3 --steps 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnn_explain import explain
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import filter_grid, maximize_grid
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="6", help="layer to maximize (mnist_cnn: '0', '3', '6' are convs)")
    parser.add_argument("--channels", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--steps", type=int, default=256, help="optimization steps")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/filters", help="folder for the figures")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    weights = ex.filters()  # the first conv layer: (32, 1, 3, 3)
    print(f"layer {weights.layer}: weights {tuple(weights.weight.shape)}")
    filter_grid(weights).savefig(out / "filters.png", dpi=110)

    result = ex.maximize(args.layer, args.channels, steps=args.steps, seed=0, input_shape=(1, 28, 28))
    maximize_grid(result).savefig(out / "maximize.png", dpi=110)
    print(f"figures: {out / 'filters.png'}, {out / 'maximize.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
