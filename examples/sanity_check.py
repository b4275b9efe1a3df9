"""Sanity check (Adebayo et al., 2018): re-initialize the weights layer by layer, from the
output down, and see whether the explanation changes. The plain gradient does; guided
backprop barely does — it keeps showing the image's edges, whatever the model learned.

    python examples/sanity_check.py --methods gradient guided
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnn_explain import explain
from cnn_explain.data import load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import sanity_figure
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["gradient", "guided"],
                        choices=["gradient", "guided", "deconv", "grad_cam", "guided_grad_cam"])
    parser.add_argument("--images", type=int, default=2, help="how many test digits")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/sanity", help="folder for the figures")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model)
    x = load_digits("test").tensors[0][: args.images]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        result = ex.sanity_check(x, method=method)
        print(f"{method}:")
        print(result)  # Spearman and SSIM with the original map after each step
        sanity_figure(result).savefig(out / f"sanity_{method}.png", dpi=110)
    print(f"figures in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
