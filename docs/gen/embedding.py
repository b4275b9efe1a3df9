"""Make the figures of docs/embedding.md: t-SNE map of the digits test set with thumbnails, UMAP, PCA, 3-D.

Run: ``.venv/bin/python docs/gen/embedding.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

IMG = Path(__file__).resolve().parents[1] / "img"


def main(argv: list[str] | None = None) -> int:
    from cnn_explain.data import load_digits
    from cnn_explain.embedding import embed
    from cnn_explain.plotting import explained_variance_figure, scatter_embedding
    from cnn_explain.train import pretrained_digits_cnn

    IMG.mkdir(parents=True, exist_ok=True)
    model = pretrained_digits_cnn()
    test = load_digits("test")
    names = [str(d) for d in range(10)]
    tsne = embed(model, test, method="tsne", seed=0, class_names=names, progress=False)
    scatter_embedding(tsne, thumbnails=test, n_thumbnails=45).savefig(IMG / "embedding_tsne.png", dpi=110)
    umap = embed(model, test, method="umap", seed=0, class_names=names, progress=False)
    scatter_embedding(umap).savefig(IMG / "embedding_umap.png", dpi=110)
    pca = embed(model, test, method="pca", seed=0, class_names=names, progress=False)
    scatter_embedding(pca).savefig(IMG / "embedding_pca.png", dpi=110)
    explained_variance_figure(pca, n=20).savefig(IMG / "embedding_pca_variance.png", dpi=110)
    tsne3 = embed(model, test, method="tsne", seed=0, class_names=names, n_components=3, progress=False)
    scatter_embedding(tsne3).savefig(IMG / "embedding_tsne_3d.png", dpi=110)
    for e in (pca, tsne, umap, tsne3):
        print(f"{e.method} {e.n_components}-D: trustworthiness {e.trustworthiness:.3f}, "
              f"10-NN accuracy {e.knn_accuracy:.1%}, model accuracy {e.accuracy:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
