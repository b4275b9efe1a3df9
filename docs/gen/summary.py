"""Make the figure of docs/summary.md.

    .venv/bin/python docs/gen/summary.py            # writes docs/img/summary_architecture.png

Seed 000's cifar10_cnn (untrained: the table needs only the architecture). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from cnn_explain.models import cifar10_cnn
from cnn_explain.plotting import architecture
from cnn_explain.summary import summarize

OUT = Path(__file__).resolve().parents[1] / "img"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    summary = summarize(cifar10_cnn(), (3, 32, 32))
    print(summary)
    fig = architecture(summary)
    fig.savefig(OUT / "summary_architecture.png", dpi=90)
    print(OUT / "summary_architecture.png")


if __name__ == "__main__":
    main()
