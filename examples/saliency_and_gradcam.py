"""Gradient saliency, guided backpropagation and Grad-CAM side by side.

The plain gradient (Simonyan et al., 2014) says how each pixel changes the class
score; guided backprop (Springenberg et al., 2015) keeps only positive signals at
every ReLU; Grad-CAM (Selvaraju et al., 2017) weighs the maps the classifier pools by
their averaged gradients; guided Grad-CAM multiplies the two.

    python examples/saliency_and_gradcam.py --images 4 --smooth 0
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
    parser.add_argument("--smooth", type=int, default=0, help="SmoothGrad samples (0: off)")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/saliency", help="folder for the figure")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model, class_names=DIGIT_CLASSES)
    x = load_digits("test").tensors[0][: args.images]
    results = [
        ex.saliency(x, method="gradient", smooth=args.smooth),
        ex.saliency(x, method="guided", smooth=args.smooth),
        ex.grad_cam(x),               # the map the classifier pools, by default
        ex.grad_cam(x, guided=True),  # guided Grad-CAM
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = attribution_grid(results, titles=["gradient", "guided backprop", "Grad-CAM", "guided Grad-CAM"])
    fig.savefig(out / "saliency_and_gradcam.png", dpi=110)
    print(f"figure: {out / 'saliency_and_gradcam.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
