"""Attribution against captum / torch-cam, same process, interleaved: IG, Grad-CAM, approximate occlusion.

* Integrated Gradients (Gauss-Legendre, the same steps and batch as captum's
  ``internal_batch_size``) against ``captum.attr.IntegratedGradients``.
* Grad-CAM at the last convolution against ``captum.attr.LayerGradCam`` (then
  upsampled and rectified as Grad-CAM defines it) and torch-cam's ``GradCAM``.
* Approximate occlusion (``mode="approx"``, precision chosen for this CPU)
  against captum's ``Occlusion`` at its fastest ``perturbations_per_eval`` of
  those tried; accuracy is the Pearson correlation with captum's (exact) map.

The VGG-11-style net of ``benchmarks/models.py`` (seeded weights, eval mode),
one 128×128 image (``--quick``: 32×32, fewer steps and repeats).

    python benchmarks/attribution.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _perfdoc import Row, interleaved  # noqa: E402
from models import vgg11  # noqa: E402

from cnn_explain.attribution import grad_cam, occlusion  # noqa: E402
from cnn_explain.attribution.integrated_gradients import integrated_gradients  # noqa: E402

LAST_CONV = "features.25"  # VGG-11's eighth convolution


def _case(quick: bool, device: str) -> tuple[torch.nn.Module, torch.Tensor, int, int]:
    size = 32 if quick else 128
    net = vgg11(image_size=size).to(device)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        target = int(net(x).argmax())
    return net, x, target, size


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| ÷ max |b|."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def ig_row(quick: bool, device: str = "cpu") -> Row:
    from captum.attr import IntegratedGradients

    net, x, target, size = _case(quick, device)
    steps, repeat = (16, 2) if quick else (64, 3)
    ig = IntegratedGradients(net)
    best = interleaved({
        "captum": lambda: ig.attribute(x, target=target, n_steps=steps, internal_batch_size=steps),
        "ours": lambda: integrated_gradients(net, x, target=target, steps=steps, internal_batch_size=steps,
                                             progress=False).attribution,
    }, repeat)
    return Row(f"Integrated Gradients, VGG-11 {size}², {steps} steps", "captum IntegratedGradients (same steps, "
               "one batch)", best["captum"][0], "`integrated_gradients()`", best["ours"][0],
               f"max Δ {_rel(best['ours'][2], best['captum'][2]):.1e} of max", best["ours"][1])


def grad_cam_rows(quick: bool, device: str = "cpu") -> list[Row]:
    from captum.attr import LayerGradCam

    net, x, target, size = _case(quick, device)
    layer = net.get_submodule(LAST_CONV)
    repeat = 3 if quick else 10

    def captum_cam():
        a = LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=True)
        return F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)

    runs = {"captum": captum_cam,
            "ours": lambda: grad_cam(net, x, target=target, layer=LAST_CONV).attribution}
    try:
        from torchcam.methods import GradCAM

        def torchcam_cam():
            with GradCAM(net, LAST_CONV, input_shape=tuple(x.shape[1:])) as ex:
                scores = net(x)
                return ex(class_idx=target, scores=scores)[0]

        runs["torch-cam"] = torchcam_cam
    except ImportError:  # torch-cam is a test dependency only
        pass
    best = interleaved(runs, repeat)
    ours = best["ours"]
    out = [Row(f"Grad-CAM, VGG-11 {size}², last conv", "captum LayerGradCam + upsampling", best["captum"][0],
               "`grad_cam()`", ours[0], f"max Δ {_rel(ours[2], best['captum'][2]):.1e} of max", ours[1])]
    if "torch-cam" in best:
        low = grad_cam(net, x, target=target, layer=LAST_CONV).cam[:, 0]
        low = low / low.amax((-2, -1), keepdim=True).clamp(min=1e-30)  # torch-cam normalizes to [0, 1]
        theirs = best["torch-cam"][2]
        theirs = theirs / theirs.amax((-2, -1), keepdim=True).clamp(min=1e-30)
        out.append(Row(f"Grad-CAM, VGG-11 {size}², last conv", "torch-cam GradCAM", best["torch-cam"][0],
                       "`grad_cam()`", ours[0], f"max Δ {_rel(low, theirs):.1e} (both normalized)", ours[1]))
    return out


def approx_occlusion_row(quick: bool, device: str = "cpu") -> Row:
    from captum.attr import Occlusion

    net, x, target, size = _case(quick, device)
    window, stride = (4, 2) if quick else (8, 4)
    ppes = (16, 64) if quick else (1, 16)
    occ = Occlusion(lambda z: torch.softmax(net(z), 1))

    def captum_run(ppe: int):
        with torch.inference_mode():
            return occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                 target=target, baselines=0.0, perturbations_per_eval=ppe)

    def ours():
        return occlusion(net, x, target=target, window=window, stride=stride, baseline=0.0, mode="approx",
                         progress=False)

    runs = {f"captum{p}": (lambda p=p: captum_run(p)) for p in ppes} | {"ours": ours}
    best = interleaved(runs, 2 if quick else 1, warmup=1 if quick else 0)
    fastest = min((k for k in best if k.startswith("captum")), key=lambda k: best[k][0])
    r = best["ours"][2]
    return Row(f"occlusion, approximate, VGG-11 {size}², window {window}/{stride}",
               f"captum Occlusion, exact (best ppe: {fastest.removeprefix('captum')})", best[fastest][0],
               f"`occlusion(mode=\"approx\")` ({r.extra['precision']}, {r.extra['positions_computed']}/"
               f"{r.extra['positions']} positions)", best["ours"][0],
               f"Pearson {_pearson(r.attribution, best[fastest][2]):.3f} to exact", best["ours"][1])


def rows(quick: bool, device: str = "cpu") -> list[Row]:
    """Every row of this module (see the module docstring)."""
    return [ig_row(quick, device), *grad_cam_rows(quick, device), approx_occlusion_row(quick, device)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32×32, few steps and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for r in rows(args.quick):
        print(f"{r.work} | {r.alternative}: {r.alt_s:.3f} s | ours {r.ours_s:.3f} s | ratio {r.ratio:.2f} | "
              f"{r.accuracy}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
