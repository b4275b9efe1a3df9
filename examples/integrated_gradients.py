"""Integrated Gradients, quadrature and exact, and how quadrature converges to the exact integral.

The digits CNN (conv, ReLU, max-pool, linear: piecewise linear) is run in float64.
Exact IG splits the straight path from the black image to each digit at every
change of linear region and sums the constant gradient of each piece; captum-style
quadrature (Riemann, Gauss-Legendre) approaches it as the number of steps grows.

    python examples/integrated_gradients.py --images 4
    python examples/integrated_gradients.py --out docs/img      # the figures of docs/integrated_gradients.md
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from matplotlib.figure import Figure

from cnn_explain.attribution.integrated_gradients import integrated_gradients
from cnn_explain.data import load_digits
from cnn_explain.models import mnist_cnn, tiny_vgg
from cnn_explain.plotting import attribution_grid
from cnn_explain.train import pretrained_digits_cnn


def convergence_figure(steps: list[int], errors: dict[str, list[float]]) -> Figure:
    """Relative error of quadrature IG against exact IG, log-log, one line per rule."""
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.add_subplot()
    for name, err in errors.items():
        ax.loglog(steps, err, marker="o", label=name)
    ax.set_xlabel("steps (n_steps)")
    ax.set_ylabel("max |IG_n - IG_exact| / max |IG_exact|")
    ax.set_title("quadrature IG converging to exact IG")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="how many test digits")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256, 1024],
                        help="quadrature steps for the convergence figure")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--tiny", action="store_true", help="a random tiny VGG on 12x12 digits (seconds)")
    parser.add_argument("--out", default="out/integrated_gradients", help="folder for the figures")
    args = parser.parse_args(argv)

    if args.tiny:
        torch.manual_seed(0)
        model, size = tiny_vgg(in_channels=1, width=4).eval(), 12
    else:
        model, size = (mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()), 28
    model = copy.deepcopy(model).double()  # float64: exact IG's completeness is then at rounding level
    x = load_digits("test", size=size).tensors[0][: args.images].double()
    exact = integrated_gradients(model, x, exact=True, progress=False)
    quad = integrated_gradients(model, x, target=exact.target, steps=args.steps[0], progress=False)
    print(f"exact IG: linear pieces per image {exact.pieces.tolist()}, "
          f"completeness error {float(exact.convergence_delta.max()):.1e}")
    print(f"Gauss-Legendre, {args.steps[0]} steps: completeness error {float(quad.convergence_delta.max()):.1e}")

    errors: dict[str, list[float]] = {}
    scale = float(exact.attribution.abs().max())
    for method in ("riemann_trapezoid", "gausslegendre"):
        errors[method] = [float((integrated_gradients(model, x, target=exact.target, steps=n, method=method,
                                                      progress=False).attribution - exact.attribution).abs().max())
                          / scale for n in args.steps]
        print(method, {n: f"{e:.2e}" for n, e in zip(args.steps, errors[method])})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = attribution_grid([quad, exact], titles=[f"IG ({args.steps[0]} steps)", "exact IG"])
    grid.savefig(out / "ig_attributions.png", dpi=100)
    convergence_figure(args.steps, errors).savefig(out / "ig_convergence.png", dpi=100)
    print(f"figures: {out / 'ig_attributions.png'}, {out / 'ig_convergence.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
