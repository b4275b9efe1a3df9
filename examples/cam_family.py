"""The CAM family side by side: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM, Layer-CAM,
HiResCAM, Score-CAM, SS-CAM, IS-CAM, Ablation-CAM and Eigen-CAM on the same digits.

    python examples/cam_family.py --images 3
    python examples/cam_family.py --out docs/img        # the figure of docs/cam_family.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnn_explain.attribution.cam_family import CamMethod, cam
from cnn_explain.data import load_digits
from cnn_explain.models import mnist_cnn
from cnn_explain.plotting import attribution_grid
from cnn_explain.train import pretrained_digits_cnn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="how many test digits")
    parser.add_argument("--methods", nargs="+", default=[m.value for m in CamMethod],
                        choices=[m.value for m in CamMethod])
    parser.add_argument("--samples", type=int, default=None, help="SS-CAM / IS-CAM / Smooth Grad-CAM++ samples")
    parser.add_argument("--layer", default=None, help="the layer (default: the map the classifier pools, as for grad_cam)")
    parser.add_argument("--untrained", action="store_true", help="random weights instead of the trained model")
    parser.add_argument("--out", default="out/cam_family", help="folder for the figure")
    args = parser.parse_args(argv)

    model = mnist_cnn().eval() if args.untrained else pretrained_digits_cnn()
    x = load_digits("test").tensors[0][: args.images]
    results = []
    for method in args.methods:
        kw = {"samples": args.samples} if method in ("ss-cam", "is-cam", "smooth-grad-cam++") else {}
        results.append(cam(model, x, layer=args.layer, method=method, progress=False, **kw))
    print(f"layer {results[0].layer}, classes {results[0].target.tolist()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = attribution_grid(results, titles=args.methods)
    fig.savefig(out / "cam_methods.png", dpi=90)
    print(f"figure: {out / 'cam_methods.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
