"""Make the figure of docs/style.md: china.jpg in the style of flower.jpg, with default settings.

    .venv/bin/python docs/gen/style.py            # writes docs/img/style.png and docs/img/style_result.png

Prints the wall time and the CPU time of the run (the numbers quoted in docs/style.md).
Nothing is downloaded: the network is random_texture_net() and the photos ship with scikit-learn.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cnn_explain.plotting import style_figure
from cnn_explain.style import transfer
from cnn_explain.data import sample_image
from cnn_explain.images import save_image as save_png

OUT = Path(__file__).resolve().parents[1] / "img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="default: transfer()'s default")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    content, style = sample_image("china"), sample_image("flower")
    kw = {} if args.steps is None else {"steps": args.steps}
    wall, cpu = time.perf_counter(), time.process_time()
    res = transfer(content, style, size=args.size, progress=False, **kw)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    style_figure(res).savefig(out / "style.png", dpi=80)
    save_png(res.image, out / "style_result.png")
    last = res.history[-1]
    print(f"{args.size}x{args.size}, {len(res.history)} steps ({res.evaluations} evaluations): "
          f"{wall:.1f} s wall ({res.seconds:.1f} s optimizing), {cpu:.1f} s CPU; "
          f"final total {last['total']:.4g}, content {last['content']:.3g}, style {last['style']:.3g}; "
          f"style (Gram) loss {res.style_drop:.0f}x lower than the content image's own")
    print(out / "style.png", out / "style_result.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
