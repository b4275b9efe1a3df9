"""Embeddings: each test digit placed on a 2-D map by the features of the layer before the
classifier, with PCA, t-SNE and UMAP, and how faithful each map is (trustworthiness,
k-nearest-neighbour accuracy in the map).

    python examples/embeddings.py --methods pca tsne umap
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch.utils.data import Subset

from cnn_explain import explain
from cnn_explain.data import DIGIT_CLASSES, load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import scatter_embedding
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=["pca", "tsne", "umap"], default=["pca", "tsne", "umap"])
    parser.add_argument("--points", type=int, default=None, help="use only the first N test digits")
    parser.add_argument("--layer", default=None, help="layer to embed (default: the input of the last Linear)")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/embeddings", help="folder for the figures")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model, class_names=DIGIT_CLASSES)
    test = load_digits("test")
    if args.points is not None:
        test = Subset(test, range(min(args.points, len(test))))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'method':<8}{'trustworthiness':>17}{'kNN accuracy':>14}")
    for method in args.methods:
        emb = ex.embed(test, layer=args.layer, method=method, seed=0)
        print(f"{method:<8}{emb.trustworthiness:>17.3f}{emb.knn_accuracy:>14.3f}")
        scatter_embedding(emb).savefig(out / f"embedding_{method}.png", dpi=110)
    print(f"figures in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
