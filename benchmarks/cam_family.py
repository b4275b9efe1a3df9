"""Score-CAM-style methods: torch-cam 0.5.0 against cnn_explain's ``cam()``, same process, interleaved.

Usage: ``python benchmarks/cam_family.py [--quick] [--repeat 3] [--threads 1]``

The ResNet-18-style net of ``benchmarks/models.py`` (seeded weights, eval mode)
at 128 × 128, one image, the maps of ``layer4`` (512 channels, 4 × 4): every
channel costs one forward pass (SS-CAM and IS-CAM: one per sample and channel;
both tools run the same number of samples). Each round runs every method of
both tools once, in turn; the fastest of ``--repeat`` rounds is reported, since
a shared machine moves single runs by up to 2×. The maps are compared after
torch-cam's normalization (SS-CAM with the same seed: torch-cam draws from the
global generator, ``cam()`` from a private one seeded alike, the same numbers).

``--quick`` (a smoke run): 64 × 64, one round, 2 samples.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from models import resnet18  # noqa: E402

from cnn_explain.attribution.cam_family import cam  # noqa: E402

LAYER = "layer4"
TORCHCAM = {"score-cam": "ScoreCAM", "ss-cam": "SSCAM", "is-cam": "ISCAM"}


def _theirs(net, x, method: str, samples: int, seed: int) -> torch.Tensor:
    from torchcam import methods

    kw = {} if method == "score-cam" else {"num_samples": samples}
    torch.manual_seed(seed)
    with getattr(methods, TORCHCAM[method])(net, LAYER, input_shape=tuple(x.shape[1:]), **kw) as ex:
        with torch.no_grad():
            scores = net(x)
        return ex(class_idx=int(scores.argmax()), scores=scores)[0]


def _ours(net, x, method: str, samples: int, seed: int, precision: str = "exact") -> torch.Tensor:
    kw = {} if method == "score-cam" else {"samples": samples}
    c = cam(net, x, layer=LAYER, method=method, seed=seed, progress=False, precision=precision, **kw).cam[:, 0]
    c = c - c.amin((-2, -1), keepdim=True)
    return c / (c.amax((-2, -1), keepdim=True) + 1e-8)


def _timed(fn, *args) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 x 64, one round, 2 samples")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the fastest is reported")
    parser.add_argument("--samples", type=int, default=3, help="SS-CAM / IS-CAM samples (both tools)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--methods", nargs="+", default=list(TORCHCAM), choices=list(TORCHCAM))
    args = parser.parse_args(argv)
    logging.getLogger("torchcam").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    size, repeat, samples = (64, 1, 2) if args.quick else (128, args.repeat, args.samples)
    net = resnet18()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    best = {(m, who): float("inf") for m in args.methods for who in ("torch-cam", "ours", "low")}
    diff, corr = {}, {}
    for _ in range(repeat):
        for m in args.methods:
            t_theirs, ref = _timed(_theirs, net, x, m, samples, 0)
            t_ours, got = _timed(_ours, net, x, m, samples, 0)
            t_low, low = _timed(_ours, net, x, m, samples, 0, "low")
            best[m, "torch-cam"] = min(best[m, "torch-cam"], t_theirs)
            best[m, "ours"] = min(best[m, "ours"], t_ours)
            best[m, "low"] = min(best[m, "low"], t_low)
            diff[m] = float((got - ref).abs().max())
            corr[m] = _pearson(low, ref)
    print(f"ResNet-18-style net, {size}x{size}, layer4 (512 channels), {args.threads} thread(s), "
          f"best of {repeat}, SS/IS-CAM samples {samples}; ratios: torch-cam's time / ours")
    print(f"{'method':<10} {'torch-cam s':>12} {'ours s':>9} {'ratio':>7} {'max |diff|':>11} "
          f"{'low s':>8} {'ratio':>7} {'Pearson':>9}")
    for m in args.methods:
        t, o, lo = best[m, "torch-cam"], best[m, "ours"], best[m, "low"]
        print(f"{m:<10} {t:>12.3f} {o:>9.3f} {t / o:>6.2f}x {diff[m]:>11.2e} {lo:>8.3f} {t / lo:>6.2f}x "
              f"{corr[m]:>9.6f}")
    return 0


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def rows(quick: bool) -> list:
    """The common shape ``benchmarks/run_all.py`` gathers: one ``_perfdoc.Row`` per method (settings as main's)."""
    from _perfdoc import Row, interleaved

    logging.getLogger("torchcam").setLevel(logging.ERROR)
    size, repeat, samples = (64, 1, 2) if quick else (128, 2, 3)
    net = resnet18()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = []
    from cnn_explain.attribution._score_cam import Precision

    low_name = Precision.choose("low", x.device).name
    for m in TORCHCAM:
        best = interleaved({"theirs": lambda m=m: _theirs(net, x, m, samples, 0),
                            "ours": lambda m=m: _ours(net, x, m, samples, 0),
                            "low": lambda m=m: _ours(net, x, m, samples, 0, "low")}, repeat, warmup=0)
        diff = float((best["ours"][2] - best["theirs"][2]).abs().max())
        work, alt = f"{m}, ResNet-18 {size}², layer4 (512 channels)", f"torch-cam {TORCHCAM[m]}"
        out.append(Row(work, alt, best["theirs"][0], f"`cam(method=\"{m}\")`", best["ours"][0],
                       f"max Δ {diff:.1e} (normalized maps)", best["ours"][1]))
        out.append(Row(work, alt, best["theirs"][0], f"`cam(method=\"{m}\", precision=\"low\")` ({low_name})",
                       best["low"][0], f"Pearson {_pearson(best['low'][2], best['theirs'][2]):.5f}",
                       best["low"][1]))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
