"""The demo job: the whole toolkit on embedded data, in one report.

``cnn-explain demo`` (and ``make demo``) trains the MNIST-style CNN
(``mnist_cnn``) on scikit-learn's handwritten digits (or loads the cached
checkpoint), prints its summary and test accuracy, explains a handful of test
digits, embeds the test set, runs the style-transfer demo on the sample photos
and writes the HTML report. Nothing is downloaded.

Before each step it prints one line on stderr saying what it does (``[ 12.3s]
step 2/4: ...``), then the report prints one line per section; every progress
bar is labelled, and nothing moves the cursor, so a piped log reads in order.

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
             cache_dir: str | os.PathLike | None = None, *, plan: DemoPlan | None = None) -> Path:
    """Train (or load) the digits CNN, print its summary and test accuracy, explain it, write the report to ``out``.

    Args:
        out: the report folder: new, empty or a previous report (checked before any work;
            see :func:`cnn_explain.report.check_out_folder`).
        fast: the ``--fast`` plan: fewer images and points, PCA + t-SNE only, a tiny style transfer.
        progress: print each step on stderr and show progress bars.
        cache_dir: where the trained checkpoint is cached (default: the library's cache folder).
        plan: settings that replace the ``fast`` / full plan (e.g. tiny ones for tests).

    Returns:
        The path of the report's ``index.html``.
    """
    from .report import check_out_folder
    from .train import digits_checkpoint_path

    plan = plan or demo_plan(fast)
    out = check_out_folder(out)
    say = _Steps(progress, total=3)
    cached = digits_checkpoint_path(cache_dir=cache_dir)
    if cached.is_file():
        say(f"loading the trained MNIST-style CNN from {cached}")
    else:
        say("training the MNIST-style CNN on scikit-learn's digits (once, about 15 s; the result is cached "
            f"in {cached.parent})")
    model, accuracy = _model_and_accuracy(cache_dir, progress, say)
    points = "all" if plan.embed_points is None else plan.embed_points
    say(f"writing the report to {out}: explaining {plan.n_images} test digits, embedding {points} test digits "
        f"({', '.join(plan.embed_methods)}), style transfer on two sample photos; one line per section follows")
    path = _report(model, accuracy, out, plan, progress)
    say(f"done in {say.elapsed():.0f} s; open {path}", step=False)
    return path


class _Steps:
    """Prints ``[  3.1s] step k/n: what`` lines on stderr (nothing when ``enabled`` is False)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.done, self.t0 = enabled, total, 0, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str, step: bool = True) -> None:
        if step:
            self.done += 1
            message = f"step {self.done}/{self.total}: {message}"
        if self.enabled:
            print(f"[{self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def _model_and_accuracy(cache_dir: str | os.PathLike | None, progress: bool, say: _Steps) -> tuple[Any, float]:
    """The trained digits CNN; its summary and test accuracy are printed on stdout (once)."""
    from .data import load_digits
    from .summary import summarize
    from .train import evaluate, pretrained_digits_cnn

    model = pretrained_digits_cnn(cache_dir=cache_dir, progress=progress)
    test = load_digits("test")
    say(f"measuring its accuracy on the {len(test)} test digits")
    accuracy = evaluate(model, test)
    print(summarize(model, (1, 28, 28)), flush=True)
    print(f"\nTest accuracy on scikit-learn's digits ({len(test)} images): {accuracy:.2%}\n", flush=True)
    return model, accuracy


def _report(model: Any, accuracy: float, out: Path, plan: DemoPlan, progress: bool) -> Path:
    from . import explain
    from .data import DIGIT_CLASSES, load_digits, sample_image
    from .report import write_report

    test = load_digits("test")
    images, names = _pick_images(test, plan.n_images)
    style = {"content": sample_image("china"), "style": sample_image("flower"),
             "size": plan.style_size, "steps": plan.style_steps}
    result = write_report(
        explain(model, class_names=list(DIGIT_CLASSES)), images, data=_subset(test, plan.embed_points), out=out,
        names=names, progress=progress,
        title=f"cnn_explain demo: mnist_cnn on the scikit-learn digits (test accuracy {accuracy:.1%})",
        embed_methods=plan.embed_methods, maximize_steps=plan.maximize_steps,
        maximize_channels=plan.maximize_channels,
        occlusion_window=plan.occlusion_window, occlusion_stride=plan.occlusion_stride, style=style,
    )
    return result.path
