"""Style transfer: time per optimizer step of ``cnn_explain.style.transfer`` vs a plain-PyTorch Gatys loop.

The plain loop is what one writes by hand for the same network: an explicit
forward through the same branches of :func:`cnn_explain.models.random_texture_net`
(no hooks), the same normalized content / Gram / total-variation losses and
weights, ``torch.optim.LBFGS(max_iter=1)`` and ``loss.backward()``. Both start from the content image, so their loss histories must agree
(printed as a check). Runs alternate (ours, plain, ours, plain, ...) and the best
run of each is kept, which damps the noise of a shared CPU.

    python benchmarks/style.py            # 256x256, 10 steps, 3 rounds
    python benchmarks/style.py --quick    # 64x64, 5 steps, 2 rounds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _perfdoc import Row, write_section

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnn_explain.models import random_texture_net  # noqa: E402
from cnn_explain.style import DEFAULTS, transfer  # noqa: E402
from cnn_explain.data import sample_image  # noqa: E402
from cnn_explain.style.images import fit  # noqa: E402



def _plain_features(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The maps of every branch, computed by hand (what a user without hooks writes)."""
    feats, level, image = {}, 0, x
    for lev, conv, relu in net.branches:
        while level < lev:
            image, level = net.pool(image), level + 1
        c = getattr(net, conv)
        feats[relu] = torch.relu(c(F.pad(image, [c.kernel_size[0] // 2] * 4, mode="reflect")))
    return feats


def _gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def plain_gatys(net, content: torch.Tensor, style: torch.Tensor, steps: int) -> tuple[float, list[float], float]:
    """Hand-written Gatys loop; returns (seconds for the steps, loss per step, seconds of the target forwards)."""
    setup = time.perf_counter()
    c_layer, s_layers = net.content_layers[0], net.style_layers
    with torch.no_grad():
        c_target = _plain_features(net, content)[c_layer]
        s_grams = {n: _gram(f) for n, f in _plain_features(net, style).items() if n in s_layers}
    c_norm = c_target.square().sum()
    s_norms = {n: g.square().sum() for n, g in s_grams.items()}
    img = content.clone().requires_grad_(True)
    setup = time.perf_counter() - setup
    opt = torch.optim.LBFGS([img], lr=DEFAULTS["lr"]["lbfgs"], max_iter=1, history_size=20)
    losses: list[float] = []

    def closure():
        opt.zero_grad()
        feats = _plain_features(net, img)
        c_loss = (feats[c_layer] - c_target).square().sum() / c_norm
        s_loss = sum((_gram(feats[n]) - g).square().sum() / s_norms[n] for n, g in s_grams.items()) / len(s_grams)
        tv = (img[:, :, 1:] - img[:, :, :-1]).square().mean() + (img[..., 1:] - img[..., :-1]).square().mean()
        loss = DEFAULTS["content_weight"] * c_loss + DEFAULTS["style_weight"] * s_loss + DEFAULTS["tv_weight"] * tv
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    start = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)
    img.detach().clamp_(0, 1)  # free pixels during the loop, clamped result (as Gatys et al.)
    return time.perf_counter() - start, losses, setup


def run(size: int, steps: int, rounds: int) -> dict:
    net = random_texture_net()
    content = fit(sample_image("china")[None], (size, size))
    style = fit(sample_image("flower")[None], (size, size))
    ours, plain, first_ours, first_plain, hist_ours, hist_plain = [], [], [], [], [], []
    whole_ours, whole_plain = [], []
    for _ in range(rounds):
        res = transfer(content, style, model=net, size=size, steps=steps, progress=False)
        ours.append(res.seconds / steps)
        hist_ours = [h["total"] for h in res.history]
        seconds, hist_plain, _ = plain_gatys(net, content, style, steps)
        plain.append(seconds / steps)
        t0 = time.perf_counter()
        one = transfer(content, style, model=net, size=size, steps=1, progress=False)  # targets + first step
        whole_ours.append(time.perf_counter() - t0)
        first_ours.append(one.setup_seconds + one.seconds)
        t0 = time.perf_counter()
        seconds, _, setup = plain_gatys(net, content, style, 1)
        whole_plain.append(time.perf_counter() - t0)
        first_plain.append(setup + seconds)
    diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(hist_ours, hist_plain))
    return {"size": size, "steps": steps, "rounds": rounds, "ours": min(ours), "plain": min(plain),
            "ratio": min(ours) / min(plain), "max_rel_loss_diff": diff, "first_ours": min(first_ours),
            "first_plain": min(first_plain), "first_ratio": min(first_ours) / min(first_plain),
            "whole_ours": min(whole_ours), "whole_plain": min(whole_plain),
            "whole_ratio": min(whole_ours) / min(whole_plain)}


def table(r: dict) -> str:
    return "\n".join([
        f"Style transfer, `random_texture_net()` (8 style layers, 1 content layer), {r['size']}×{r['size']}, "
        f"L-BFGS, {r['steps']} steps, best of {r['rounds']} alternating runs on a shared 2-core CPU:",
        "",
        "| implementation | s / step | ratio |",
        "|---|---:|---:|",
        f"| `cnn_explain.style.transfer` | {r['ours']:.4f} | {r['ratio']:.2f} |",
        f"| plain PyTorch Gatys loop (hand-written forward, `.backward()`) | {r['plain']:.4f} | 1.00 |",
        "",
        "Time to the first step (target forwards for the content maps and style Grams, then one step):",
        "",
        "| implementation | s | ratio |",
        "|---|---:|---:|",
        f"| `cnn_explain.style.transfer` | {r['first_ours']:.4f} | {r['first_ratio']:.2f} |",
        f"| plain PyTorch Gatys loop | {r['first_plain']:.4f} | 1.00 |",
        "",
        "The whole call with one step (checking and resizing the images, the targets, the step, and the result's "
        "`style_drop`, which needs one more forward of the result; the plain loop computes no `style_drop`):",
        "",
        "| implementation | s | ratio |",
        "|---|---:|---:|",
        f"| `cnn_explain.style.transfer(..., steps=1)` | {r['whole_ours']:.4f} | {r['whole_ratio']:.2f} |",
        f"| plain PyTorch Gatys loop, 1 step | {r['whole_plain']:.4f} | 1.00 |",
        "",
        f"Loss histories of the two agree to a relative {r['max_rel_loss_diff']:.1e} (same mathematics).",
    ])


def rows(quick: bool) -> list[Row]:
    """The summary-table rows: time per step and time to the first step, against the hand-written loop."""
    r = run(64, 5, 2) if quick else run(256, 10, 3)
    work = f"style transfer, random_texture_net, {r['size']}², L-BFGS"
    alt = "hand-written Gatys loop (no hooks, `.backward()`)"
    same = f"loss histories agree to {r['max_rel_loss_diff']:.1e}"
    return [Row(f"{work}, per step", alt, r["plain"], "`style.transfer`", r["ours"], same),
            Row(f"{work}, first step (targets + 1 step)", alt, r["first_plain"], "`style.transfer`",
                r["first_ours"], "same targets, no autograd record"),
            Row(f"{work}, whole call with 1 step", alt, r["whole_plain"], "`style.transfer(steps=1)`",
                r["whole_ours"], "ours also computes `style_drop` (one more forward)")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="64x64, 5 steps, 2 rounds")
    p.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    args = p.parse_args(argv)
    r = run(64, 5, 2) if args.quick else run(256, 10, 3)
    text = table(r)
    print(text)
    print(f"ratio (ours / plain) = {r['ratio']:.2f}  (target <= 1.0)")
    print(f"first step ratio (ours / plain) = {r['first_ratio']:.2f}  (target <= 1.0)")
    print(f"whole call with one step, ratio (ours / plain) = {r['whole_ratio']:.2f}")
    if not args.no_write and not args.quick:
        write_section("style", "Style transfer", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
