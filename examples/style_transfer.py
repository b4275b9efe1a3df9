"""Style transfer demo: scikit-learn's china.jpg painted in the style of flower.jpg.

Gram matrices of a random multi-scale network (nothing is downloaded) carry the
style; a mid-scale layer's feature maps keep the content (Gatys et al. 2016,
Ustyuzhaninov et al. 2017). Same options as ``cnn-explain style``::

    python examples/style_transfer.py                         # 256x256, default steps
    python examples/style_transfer.py --size 64 --steps 10 --out small.png
    python examples/style_transfer.py --content me.jpg --style starry.jpg --figure fig.png
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (``--content --style --out --figure --steps --size ...``), run, write the PNG(s)."""
    from cnn_explain.cli import COMMANDS, parser_for

    parser = parser_for("style")
    parser.set_defaults(figure="style_transfer_figure.png")  # the example also saves the comparison figure
    return COMMANDS["style"].run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
