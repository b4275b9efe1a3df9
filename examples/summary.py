"""Model summary: every layer's output shape, neurons, parameters and the formula behind them.

Reproduces seed 000's CIFAR-10 table (550,570 parameters) and seed 001's MNIST
network, prints the table and saves the neurons/parameters-per-layer figure.

    python examples/summary.py --model cifar10 --out out/summary
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnn_explain import explain
from cnn_explain.models import cifar10_cnn, mnist_cnn
from cnn_explain.plotting import architecture

MODELS = {"cifar10": (cifar10_cnn, (3, 32, 32)), "mnist": (mnist_cnn, (1, 28, 28))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="cifar10", help="seed architecture")
    parser.add_argument("--out", default="out/summary", help="folder for the figure")
    args = parser.parse_args(argv)

    factory, shape = MODELS[args.model]
    summary = explain(factory()).summary(shape)
    print(summary)  # the table, with the parameter formula of every layer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"summary_{args.model}.png"
    architecture(summary).savefig(path, dpi=110)
    print(f"total parameters: {summary.total_params:,}; figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
