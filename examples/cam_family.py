"""The CAM family side by side: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM, Layer-CAM,
HiResCAM, Score-CAM, SS-CAM, IS-CAM, Ablation-CAM and Eigen-CAM on the same digits.

    python examples/cam_family.py --images 3
    python examples/cam_family.py --out docs/img        # the figure of docs/cam_family.md
    python examples/cam_family.py --compare-precision   # Score-CAM exact beside precision="low"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

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
    parser.add_argument("--compare-precision", action="store_true",
                        help="also draw Score-CAM exact beside precision='low' (score_cam_precision.png)")
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
    if args.compare_precision:
        exact = cam(model, x, layer=args.layer, method="score-cam", progress=False)
        low = cam(model, x, layer=args.layer, method="score-cam", progress=False, precision="low")
        a, b = exact.attribution.flatten(1), low.attribution.flatten(1)
        r = min(float(torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1]) for i in range(len(a)))
        print(f"score-cam, precision='low' ran {low.params['precision']}: Pearson to exact >= {r:.5f}")
        fig = attribution_grid([exact, low], titles=["score-cam, exact", f"precision='low' (r ≥ {r:.5f})"])
        fig.savefig(out / "score_cam_precision.png", dpi=90)
        print(f"figure: {out / 'score_cam_precision.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
