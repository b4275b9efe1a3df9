"""Feature maps: what every convolution layer of the digits CNN computes for one test digit.

    python examples/feature_maps.py --index 0 --out out/feature_maps
    python examples/feature_maps.py --untrained     # random weights, no training (fast)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from cnn_explain import explain
from cnn_explain.data import DIGIT_CLASSES, load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import feature_map_grid
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="which test digit")
    parser.add_argument("--channels", type=int, default=16, help="channels shown per layer")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/feature_maps", help="folder for the figure")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model, class_names=DIGIT_CLASSES)
    x, label = load_digits("test")[args.index]
    maps = ex.feature_maps(x, layers=nn.Conv2d)  # {layer name: (1, C, H, W)}
    for name, t in maps.items():
        print(f"layer {name}: {tuple(t.shape[1:])}, mean activation {t.mean():.3f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "feature_maps.png"
    feature_map_grid(maps, max_channels=args.channels).savefig(path, dpi=110)
    print(f"digit {int(label)} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
