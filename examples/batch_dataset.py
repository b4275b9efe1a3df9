"""Explain a whole data set: Grad-CAM and saliency for every test digit, then what the rows say.

Writes one Parquet row per image (maps, prediction, deletion/insertion AUC) under
``OUT/results``, resumable shard by shard, and a figure per class (the mean map of
each method) plus the most confident mistakes under ``OUT/figures``.

    python examples/batch_dataset.py --images 450
    python examples/batch_dataset.py --engine ray --workers 2     # needs pip install 'cnn_explain[ray]'
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import Subset

from cnn_explain.batch import explain_dataset, read_results, summarize_dataset
from cnn_explain.data import DIGIT_CLASSES, load_digits


def untrained():
    """Seed 001's CNN with seeded random weights (every worker builds the same model)."""
    from cnn_explain.models import mnist_cnn

    torch.manual_seed(0)
    return mnist_cnn()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=450, help="how many test digits (450: all)")
    parser.add_argument("--methods", default="grad_cam,saliency", help="comma-separated explainers")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/batch", help="folder for the results and figures")
    args = parser.parse_args(argv)

    # a 'file.py:factory' spec: Ray ships this file to its workers, which build the model themselves
    model = f"{Path(__file__).resolve()}:untrained" if args.untrained else "cnn_explain.train:pretrained_digits_cnn"
    test = load_digits("test")
    data = Subset(test, range(min(args.images, len(test))))
    out = Path(args.out)
    run = explain_dataset(model, data, methods=args.methods, out=out / "results", engine=args.engine,
                          workers=args.workers, deletion_steps=10, shard_size=128, progress=False)
    df = read_results(run.out)
    print(f"{run.rows} rows in {run.seconds:.1f} s ({run.computed} of {run.shards} shards computed) -> {run.out}")
    print(f"accuracy {float((df['pred'] == df['label']).mean()):.1%}; mean deletion AUC per method:",
          {m: round(float(df[f'{m}_deletion_auc'].mean()), 3) for m in args.methods.split(",")})
    summary = summarize_dataset(run.out, top=8)
    paths = summary.save(out / "figures")
    print(f"{len(paths)} figures in {out / 'figures'} (classes: {', '.join(DIGIT_CLASSES[c] for c in summary.counts)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
