"""Make the figures of docs/features.md, docs/arithmetic.md and docs/maximize.md.

    .venv/bin/python docs/gen/features.py            # writes docs/img/*.png

Uses the digits CNN (seed 001's mnist_cnn trained on scikit-learn's digits; trained
once, then cached) and, for the RGB figures, seed 000's cifar10_cnn with seeded
random weights on the sample photo. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from cnn_explain import explain
from cnn_explain.data import DIGIT_CLASSES, load_digits, sample_image
from cnn_explain.models import cifar10_cnn
from cnn_explain.plotting import (arithmetic_figure, feature_map_grid, filter_grid, maximize_grid,
                                  receptive_field_figure)
from cnn_explain.train import pretrained_digits_cnn

OUT = Path(__file__).resolve().parents[1] / "img"


def _save(fig, name: str, out: Path) -> None:
    fig.savefig(out / name, dpi=90)
    print(out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--steps", type=int, default=256)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    digits = explain(pretrained_digits_cnn())
    x, _ = load_digits("test")[0]
    maps = digits.feature_maps(x, layers=nn.Conv2d)
    _save(feature_map_grid(maps, top_k=8), "feature_maps.png", out)
    _save(filter_grid(digits.filters()), "filters_gray.png", out)
    _save(filter_grid(digits.filters("3"), max_filters=8, max_inputs=8), "filters_deep.png", out)
    worked = digits.arithmetic(x, "3", channel=5, h=7, w=7)
    _save(arithmetic_figure(worked), "arithmetic_digits.png", out)
    box = digits.receptive_field("6", 3, 3, input_shape=tuple(x.shape))
    _save(receptive_field_figure(x, box), "receptive_field.png", out)
    mx = digits.maximize("6", list(range(8)), steps=args.steps, input_shape=(1, 28, 28), progress=False)
    _save(maximize_grid(mx), "maximize_digits.png", out)
    logits = digits.maximize("12", list(range(10)), steps=args.steps, input_shape=(1, 28, 28), tv=0.5,
                             progress=False)  # "12" is the last Linear: the class scores
    _save(maximize_grid(logits, ncols=5, class_names=DIGIT_CLASSES), "maximize_classes.png", out)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cifar = explain(cifar10_cnn().eval())
    photo = sample_image("china", size=32)
    _save(filter_grid(cifar.filters()), "filters_rgb.png", out)
    _save(arithmetic_figure(cifar.arithmetic(photo, "0", channel=3, h=12, w=20)), "arithmetic_rgb.png", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
