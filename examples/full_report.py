"""The full report: every capability on a handful of test digits, in one HTML page.

    python examples/full_report.py --out out/report          # then open out/report/index.html
    python examples/full_report.py --fast --untrained         # seconds, for a smoke test

(`cnn-explain demo` does the same, adding the style-transfer demo on two photos.)
"""

from __future__ import annotations

import argparse

from torch.utils.data import Subset

from cnn_explain import explain
from cnn_explain.data import DIGIT_CLASSES, load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="how many test digits to explain")
    parser.add_argument("--fast", action="store_true", help="tiny settings: few steps, few points, PCA only")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/report", help="the report folder")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model, class_names=DIGIT_CLASSES)
    test = load_digits("test")
    images = test.tensors[0][: args.images]
    settings = dict(maximize_steps=64, embed_methods=("pca", "tsne", "umap"))
    if args.fast:
        test = Subset(test, range(80))
        settings = dict(maximize_steps=4, maximize_channels=2, max_channels=4, embed_methods=("pca",))
    result = ex.report(images, data=test, out=args.out, settings=settings)
    included = [s["key"] for s in result.manifest["sections"] if s["included"]]
    print(f"{len(result.figures)} figures in sections {included}")
    print(f"open {result.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
