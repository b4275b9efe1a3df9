"""The demo job: the whole toolkit on embedded data, in one report.

``cnn-explain demo`` (and ``make demo``) trains seed 001's ``mnist_cnn`` on
scikit-learn's handwritten digits (or reuses the cached checkpoint), explains a
handful of test digits, embeds the test set, runs the style-transfer demo on the
sample photos and writes the HTML report. Nothing is downloaded.

Example:
    >>> from cnn_explain.demo import run_demo
    >>> run_demo(out="report", fast=True)     # doctest: +SKIP
    PosixPath('report/index.html')
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_demo", "DemoPlan", "demo_plan"]


@dataclass(frozen=True)
class DemoPlan:
    """How much work the demo does (the full plan fits in 5 minutes on 2 CPU cores, ``fast`` in 1)."""

    n_images: int
    embed_methods: tuple[str, ...]
    embed_points: int | None
    maximize_steps: int
    maximize_channels: int
    occlusion_window: int
    occlusion_stride: int
    style_size: int
    style_steps: int


def demo_plan(fast: bool = False) -> DemoPlan:
    """The settings of the full demo, or of ``--fast``."""
    if fast:
        return DemoPlan(n_images=2, embed_methods=("pca", "tsne"), embed_points=120, maximize_steps=8,
                        maximize_channels=4, occlusion_window=8, occlusion_stride=4, style_size=32, style_steps=8)
    return DemoPlan(n_images=4, embed_methods=("pca", "tsne", "umap"), embed_points=None, maximize_steps=64,
                    maximize_channels=8, occlusion_window=6, occlusion_stride=2, style_size=96, style_steps=30)


def _pick_images(dataset: Any, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first test digit of each of ``n`` different classes, with names like ``test digit #12 (a 3)``."""
    chosen, names, seen = [], [], set()
    for i in range(len(dataset)):
        x, y = dataset[i]
        if int(y) in seen:
            continue
        seen.add(int(y))
        chosen.append(x)
        names.append(f"test digit #{i} (a {int(y)})")
        if len(chosen) == n:
            break
    return torch.stack(chosen), names


def _subset(dataset: Any, n: int | None):
    from torch.utils.data import Subset

    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def run_demo(out: str | os.PathLike = "report", fast: bool = False, progress: bool = True,
             cache_dir: str | os.PathLike | None = None) -> Path:
    """Train (or load) the digits CNN, explain it, and write the report to ``out``.

    Args:
        out: the report folder (replaced atomically).
        fast: the ``--fast`` plan: fewer images and points, PCA + t-SNE only, a tiny style transfer.
        progress: show progress bars (and the steps on stderr).
        cache_dir: where the trained checkpoint is cached (default: the library's cache folder).

    Returns:
        The path of the report's ``index.html``.
    """
    from . import explain
    from .data import DIGIT_CLASSES, load_digits, sample_image
    from .report import write_report
    from .train import evaluate, pretrained_digits_cnn

    plan, t0 = demo_plan(fast), time.perf_counter()
    say = (lambda msg: print(f"[{time.perf_counter() - t0:5.1f}s] {msg}", file=sys.stderr)) if progress else (
        lambda msg: None)
    say("training mnist_cnn on the scikit-learn digits (or loading the cached checkpoint)")
    model = pretrained_digits_cnn(cache_dir=cache_dir, progress=progress)
    test = load_digits("test")
    accuracy = evaluate(model, test)
    say(f"test accuracy {accuracy:.1%} on {len(test)} digits; writing the report")
    images, names = _pick_images(test, plan.n_images)
    ex = explain(model, class_names=list(DIGIT_CLASSES))
    style = {"content": sample_image("china"), "style": sample_image("flower"),
             "size": plan.style_size, "steps": plan.style_steps}
    result = write_report(
        ex, images, data=_subset(test, plan.embed_points), out=out, names=names, progress=progress,
        title=f"cnn_explain demo: mnist_cnn on the scikit-learn digits (test accuracy {accuracy:.1%})",
        embed_methods=plan.embed_methods, maximize_steps=plan.maximize_steps,
        maximize_channels=plan.maximize_channels,
        occlusion_window=plan.occlusion_window, occlusion_stride=plan.occlusion_stride, style=style,
    )
    say(f"done in {time.perf_counter() - t0:.0f} s")
    return result.path
