"""The arithmetic of one output: the dot product behind one value of one feature map, worked by
hand (input window × kernel, summed per channel, plus bias) and checked against the layer,
and the input box (receptive field) that value depends on.

    python examples/arithmetic.py --layer 3 --channel 5 --h 7 --w 7
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnn_explain import explain
from cnn_explain.data import load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import arithmetic_figure, receptive_field_figure
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="3", help="conv, pool or linear layer (mnist_cnn: '0', '2', '3', ...)")
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--h", type=int, default=7, help="output row")
    parser.add_argument("--w", type=int, default=7, help="output column")
    parser.add_argument("--index", type=int, default=0, help="which test digit")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/arithmetic", help="folder for the figures")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()  # trained once, then cached
    ex = explain(model)
    x, _ = load_digits("test")[args.index]
    worked = ex.arithmetic(x, args.layer, args.channel, args.h, args.w)
    print(worked)
    print(f"computed {float(worked.computed):.6f}  vs  the layer's {float(worked.actual):.6f}")
    box = ex.receptive_field(args.layer, args.h, args.w, input_shape=tuple(x.shape))
    print(f"receptive field: rows {box.top}..{box.bottom}, columns {box.left}..{box.right}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arithmetic_figure(worked).savefig(out / "arithmetic.png", dpi=110)
    receptive_field_figure(x, box).savefig(out / "receptive_field.png", dpi=110)
    print(f"figures: {out / 'arithmetic.png'}, {out / 'receptive_field.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
