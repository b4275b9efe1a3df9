"""Make docs/img/occlusion.png: occlusion maps of the trained digits CNN (exact, approx) for four test digits.

Usage: ``python docs/gen/occlusion.py`` (trains the small digits CNN on first use, ~10 s; nothing is downloaded).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cnn_explain.attribution import occlusion  # noqa: E402
from cnn_explain.data import DIGIT_CLASSES, load_digits  # noqa: E402
from cnn_explain.plotting import attribution_grid  # noqa: E402
from cnn_explain.train import pretrained_digits_cnn  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    model = pretrained_digits_cnn()
    data = load_digits("test")
    x = torch.stack([data[i][0] for i in range(4)])
    exact = occlusion(model, x, window=6, stride=2, progress=False)
    approx = occlusion(model, x, window=6, stride=2, mode="approx", compare_exact=True, progress=False)
    fig = attribution_grid([exact, approx], titles=[f"exact ({exact.engine})",
                                                    f"approx (Pearson {approx.deviation['pearson']:.3f})"],
                           class_names=DIGIT_CLASSES)
    out = ROOT / "docs" / "img" / "occlusion.png"
    fig.savefig(out, dpi=90, bbox_inches="tight")
    print(out, exact.engine, approx.deviation)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
