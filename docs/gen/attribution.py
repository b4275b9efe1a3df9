"""Make the figures of docs/attribution.md.

    .venv/bin/python docs/gen/attribution.py         # writes docs/img/attr_*.png, prints the tables

Uses the digits CNN (seed 001's mnist_cnn trained on scikit-learn's digits;
trained once, then cached). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cnn_explain.attribution import deletion_insertion, grad_cam, saliency, sanity_check
from cnn_explain.attribution.result import Attribution
from cnn_explain.data import DIGIT_CLASSES, load_digits
from cnn_explain.plotting import attribution_grid, deletion_insertion_figure, heatmap, sanity_figure
from cnn_explain.train import pretrained_digits_cnn

OUT = Path(__file__).resolve().parents[1] / "img"


def _save(fig, name: str, out: Path) -> None:
    fig.savefig(out / name, dpi=90)
    print(out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--images", type=int, default=16, help="digits used for the sanity check and curves")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = pretrained_digits_cnn()
    x, y = load_digits("test").tensors
    x, y = x[: args.images], y[: args.images]
    four = x[:4]
    results = [
        saliency(model, four, method="gradient"),
        saliency(model, four, method="guided"),
        saliency(model, four, method="deconv"),
        saliency(model, four, method="gradient", smooth=32, noise=0.15, progress=False),
        grad_cam(model, four),
        grad_cam(model, four, guided=True),
    ]
    titles = ["gradient", "guided", "deconv", "SmoothGrad", "Grad-CAM", "guided Grad-CAM"]
    _save(attribution_grid(results, titles=titles, class_names=DIGIT_CLASSES), "attr_grid.png", out)
    _save(heatmap(saliency(model, four, method="gradient", abs=False), index=0, class_names=DIGIT_CLASSES),
          "attr_heatmap.png", out)

    for method in ("gradient", "guided"):
        s = sanity_check(model, x, method=method, progress=False)
        print(s)
        _save(sanity_figure(s, index=0, class_names=DIGIT_CLASSES), f"attr_sanity_{method}.png", out)

    curves = {m: deletion_insertion(model, x, saliency(model, x, method=m), steps=20, progress=False)
              for m in ("gradient", "guided")}
    curves["grad_cam"] = deletion_insertion(model, x, grad_cam(model, x), steps=20, progress=False)
    g = torch.Generator().manual_seed(0)
    curves["random"] = deletion_insertion(model, x, Attribution(torch.rand(x.shape, generator=g), y, "random"),
                                          steps=20, progress=False)
    for name, c in curves.items():
        print(f"{name:<10} deletion AUC {c.deletion_auc.mean():.3f}   insertion AUC {c.insertion_auc.mean():.3f}")
    _save(deletion_insertion_figure(curves), "attr_deletion.png", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
