"""The sanity-check figure (Adebayo et al., 2018), readable at any depth.

At most :data:`MAX_PANELS` panels in a row (the image and representative steps,
first and last always among them), every text at least 9 pt on a figure no wider
than a report page (11 in at 100 dpi), steps labelled by layer name, and a
verdict in words.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._base import blank_figure, to_image
from ._labels import check_names, class_label, image_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..attribution.sanity import SanityResult

__all__ = ["sanity_figure", "pick_steps", "verdict", "MAX_PANELS", "MIN_FONT"]

#: Panels in the top row: the image and up to ``MAX_PANELS - 1`` steps.
MAX_PANELS = 8
#: Smallest font size (points) of any text in the figure.
MIN_FONT = 9.0
_WIDTH = 10.5  # inches: at the report's 100 dpi, narrower than its 1100 px page
_PRETTY = {"gradient": "the gradient", "guided": "guided backprop", "grad_cam": "Grad-CAM", "deconv": "deconvnet",
           "guided_grad_cam": "guided Grad-CAM", "smoothgrad": "SmoothGrad"}


def pick_steps(n_steps: int, k: int = MAX_PANELS - 1) -> list[int]:
    """At most ``k`` step indices out of ``n_steps``, evenly spread, the first and the last included."""
    if n_steps <= k:
        return list(range(n_steps))
    return sorted(set(np.linspace(0, n_steps - 1, k).round().astype(int).tolist()))


def _short(name: str, width: int = 16) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _mean_over_images(values: np.ndarray) -> np.ndarray:
    seen = ~np.isnan(values)  # a step whose similarities are all NaN (constant maps) stays NaN
    return np.where(seen.any(1), np.where(seen, values, 0).sum(1) / np.maximum(seen.sum(1), 1), np.nan)


def verdict(result: SanityResult) -> str:
    """The test's outcome in words, from the mean Spearman ρ over the batch.

    Cascading: ρ after every layer is randomized; independent: mean ρ over the
    single-layer randomizations. ``ρ >= 0.5``: the map does not depend on the
    weights (it fails the test); ``< 0.2``: it does (it passes); between: partly.
    """
    rho = _mean_over_images(result.spearman.numpy())[1:]
    name = _PRETTY.get(result.method, result.method)
    if rho.size == 0 or np.isnan(rho).all():
        return f"{name}: no layer was randomized, or every map was constant: no verdict"
    cascading = result.order != "independent"
    r = float(rho[~np.isnan(rho)][-1]) if cascading else float(np.nanmean(rho))
    when = "after every layer is randomized" if cascading else "(mean) when one layer at a time is randomized"
    if r >= 0.5:
        outcome = "it is not explaining the model"
    elif r >= 0.2:
        outcome = "it depends on the weights only in part: read it with care"
    else:
        outcome = "it depends on what the model learned, as an explanation must"
    return f"{name} keeps ρ = {r:.2f} {when}: {outcome} — Adebayo et al. 2018"


def sanity_figure(result: SanityResult, index: int = 0, *, alpha: float = 0.6,
                  class_names: Sequence[str] | None = None, labels: Sequence[str] | None = None) -> Figure:
    """The randomization cascade: representative maps, Spearman / SSIM per step, and a verdict.

    Top row: image ``index`` and its ``|map|`` (each divided by its own maximum,
    as the similarities compare them; one colour bar) at up to seven steps
    (:func:`pick_steps`: original, last, and evenly spread ones), titled with
    the randomized layer. Middle: mean Spearman and SSIM over the batch at every
    step (thin lines: each image), x axis labelled by layer. Bottom: :func:`verdict`.

    Args:
        result: a :class:`~cnn_explain.attribution.sanity.SanityResult`.
        index: which image of the batch is drawn.
        alpha: kept for compatibility (the maps are drawn opaque, as compared).
        class_names: the model's class names (the image panel says ``"explaining truck"``).
        labels: one label per image of the batch, e.g. file names.

    Returns:
        The Figure (10.5 in wide, text >= 9 pt); the curves Axes (labelled
        ``"similarity to original"``) holds the lines ``"spearman"`` and ``"ssim"``.
    """
    shown = pick_steps(len(result.steps))
    fig = blank_figure((_WIDTH, 6.4))
    top, mid, bottom = fig.subfigures(3, 1, height_ratios=[1.9, 3.6, 0.9])
    axes = top.subplots(1, len(shown) + 2, gridspec_kw={"width_ratios": [1] * (len(shown) + 1) + [0.08]})
    img = result.inputs[index]
    axes[0].imshow(to_image(img), cmap="gray" if img.shape[0] == 1 else None)
    cls = class_label(int(result.target[index]), check_names(class_names, "class_names"))
    label = _short(image_label(index, check_names(labels, "labels")))
    axes[0].set_title(f"{label}\n{_short('explaining ' + cls, 18)}", fontsize=MIN_FONT)
    for ax, k in zip(axes[1:-1], shown):
        m = result.maps[k, index].abs().amax(0).numpy()
        im = ax.imshow(m / (m.max() or 1.0), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title("original" if k == 0 else f"step {k}\n{_short(result.layers[k - 1])}", fontsize=MIN_FONT)
    for ax in axes[:-1]:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(im, cax=axes[-1])
    bar.set_label("|map| ÷ its max", fontsize=MIN_FONT)
    bar.ax.tick_params(labelsize=MIN_FONT)
    _curves(mid.subplots(1, 1), result, shown)
    text = bottom.subplots(1, 1)
    text.set_axis_off()
    text.text(0.0, 0.5, textwrap.fill(verdict(result), 125), fontsize=10, va="center")
    return fig


def _curves(ax, result: SanityResult, shown: list[int]) -> None:
    steps = result.steps
    x = np.arange(len(steps))
    for key, color in (("spearman", "tab:blue"), ("ssim", "tab:orange")):
        values = getattr(result, key).numpy()
        ax.plot(x, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(x, _mean_over_images(values), color=color, linewidth=2.2, marker="o", label=key)
    for k in shown:
        ax.axvline(k, color="0.85", linewidth=0.8, zorder=0)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    every = max(1, int(np.ceil(len(steps) / 24)))  # at most ~24 labels fit 10 in at 9 pt
    ax.set_xticks(x[::every], [_short(s, 18) for s in steps[::every]], rotation=40, ha="right", fontsize=MIN_FONT)
    ax.tick_params(axis="y", labelsize=MIN_FONT)
    ax.set_ylabel("similarity to original", fontsize=MIN_FONT + 1)
    kind = "layers randomized cumulatively, output to input" if result.order != "independent" \
        else "one layer randomized at a time"
    ax.set_title(f"{_PRETTY.get(result.method, result.method)}: {kind}", fontsize=MIN_FONT + 1)
    ax.legend(fontsize=MIN_FONT)
