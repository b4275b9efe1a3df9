"""Section builders, part 1: the registry and the model-level sections.

A builder takes the :class:`~cnn_explain.report.core.ReportContext` and returns
the section's body, rendered from its template in ``templates/`` (or ``(body,
info)`` where ``info`` goes into the manifest); it raises
:class:`~cnn_explain.report.core.Skip` with a reason when its inputs are missing.
Builders pass plain values to the templates, which escape them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from markupsafe import Markup
from torch import nn

from . import sections_attr as att
from .core import ReportContext, Skip
from .html import render, table

__all__ = ["SECTIONS", "select_sections", "summary_numbers"]


# --------------------------------------------------------------------------- helpers
def conv_names(model: nn.Module) -> list[str]:
    """Dotted names of the model's Conv2d layers, in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def input_shape(ctx: ReportContext) -> tuple[int, ...]:
    return tuple(ctx.settings.input_shape or ctx.images.shape[1:])


def get_summary(ctx: ReportContext):
    """The model :class:`~cnn_explain.summary.Summary` (computed once per report)."""
    if "summary" not in ctx.shared:
        ctx.shared["summary"] = ctx.explainer.summary(input_shape(ctx))
    return ctx.shared["summary"]


def summary_numbers(summary: Any) -> dict[str, Any]:
    """The numbers the manifest records; they are read from the Summary itself."""
    numbers: dict[str, Any] = {"total_params": int(summary.total_params), "layers": len(summary.rows)}
    for name in ("trainable_params", "total_macs", "input_shape"):
        value = getattr(summary, name, None)
        if value is not None:
            numbers[name] = list(value) if isinstance(value, tuple) else value
    numbers["rows"] = [{"name": r.name, "kind": r.kind, "output_shape": list(r.output_shape or ()),
                        "params": int(r.params), "formula": str(r.formula)} for r in summary.rows]
    return numbers


def _count(v: Any) -> str:
    return "—" if v is None else f"{int(v):,}"


def _shape(s: Any) -> str:
    return "×".join(str(int(v)) for v in s) if s else "—"


# --------------------------------------------------------------------------- model
def build_summary(ctx: ReportContext):
    s = get_summary(ctx)
    numbers = summary_numbers(s)
    ctx.shared["summary_numbers"] = numbers
    rows = [(r.name, r.kind, _shape(r.output_shape), _count(getattr(r, "neurons", None)), f"{int(r.params):,}",
             r.formula, _shape(getattr(r, "rf", None))) for r in s.rows]
    from ..plotting import architecture

    body = render("summary.html", input_shape=_shape(input_shape(ctx)), total_params=f"{int(s.total_params):,}",
                  table=table(["layer", "kind", "output", "neurons", "parameters", "formula", "receptive field"],
                              rows, numeric=(3, 4)),
                  figure=ctx.figure(architecture(s), "Neurons and parameters per layer"))
    return body, {"total_params": numbers["total_params"]}


def build_predictions(ctx: ReportContext):
    from ..plotting._base import blank_figure, to_image

    k = ctx.settings.top_k
    n = min(len(ctx.names), ctx.settings.max_images)
    pred = ctx.explainer.predict(ctx.images[:n], k=k)
    fig = blank_figure((2.2 * n, 2.6))
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(to_image(ctx.images[i]), cmap="gray")
        ax.set_title(_plain(f"{ctx.names[i]}\n→ {pred.labels[i][0]} ({pred.probs[i, 0]:.0%})"), fontsize=9)
        ax.axis("off")
    figure = ctx.figure(fig, "The images and their top-1 class")
    rows = [[ctx.names[i]] + [f"{lab} ({p:.1%})" for lab, p in zip(pred.labels[i], pred.probs[i].tolist())]
            for i in range(n)]
    body = render("predictions.html", figure=figure,
                  table=table(["image"] + [f"#{j + 1}" for j in range(pred.indices.shape[1])], rows))
    ctx.shared["prediction"] = pred
    return body, {"top1": [pred.labels[i][0] for i in range(n)]}


def _plain(text: str) -> str:
    """Text for a Matplotlib title: ``$`` escaped so class names never start mathtext."""
    return text.replace("$", r"\$")


def build_feature_maps(ctx: ReportContext):
    from ..plotting import feature_map_grid

    layers = ctx.settings.feature_layers or conv_names(ctx.model)
    if not layers:
        raise Skip("the model has no Conv2d layer and no feature_layers were given")
    maps = ctx.explainer.feature_maps(ctx.images[:1], layers=layers)
    figures = []
    for name, t in maps.items():
        if t.dim() != 4:
            continue
        fig = feature_map_grid(maps, layers=name, max_channels=ctx.settings.max_channels)
        figures.append(ctx.figure(fig, f"Feature maps of layer {name} {_shape(t.shape[1:])}"))
    body = render("feature_maps.html", image=ctx.names[0], max_channels=ctx.settings.max_channels, figures=figures)
    return body, {"layers": list(maps)}


def build_filters(ctx: ReportContext):
    from ..plotting import filter_grid

    convs = conv_names(ctx.model)
    if not convs and ctx.settings.filter_layer is None:
        raise Skip("the model has no Conv2d layer")
    res = ctx.explainer.filters(ctx.settings.filter_layer)
    figure = ctx.figure(filter_grid(res), f"Filters of {res.layer}")
    layer = ctx.settings.maximize_layer or (convs[-1] if convs else ctx.settings.filter_layer)
    part, channels = _maximize(ctx, layer)
    body = render("filters.html", count=res.weight.shape[0], layer=res.layer, shape=_shape(res.weight.shape),
                  figure=figure, maximize=part)
    return body, {"filter_layer": res.layer, "maximize_layer": str(layer), "channels": channels}


def _maximize(ctx: ReportContext, layer: Any) -> tuple[Markup, list[int]]:
    from ..plotting import maximize_grid

    chans = ctx.settings.maximize_channels
    channels = list(range(chans)) if isinstance(chans, int) else [int(c) for c in chans]
    n_out = _out_channels(ctx.model, layer)
    if n_out is not None:
        channels = [c for c in channels if c < n_out]
    mx = ctx.explainer.maximize(layer, channels, steps=ctx.settings.maximize_steps, seed=ctx.settings.seed,
                                input_shape=input_shape(ctx), progress=ctx.progress)
    figure = ctx.figure(maximize_grid(mx), f"Images that maximize channels of {layer}")
    return render("maximize.html", steps=ctx.settings.maximize_steps, channels=channels, layer=layer,
                  figure=figure), channels


def _out_channels(model: nn.Module, layer: Any) -> int | None:
    from ..hooks import resolve_layer

    _, module = resolve_layer(model, layer, argname="maximize_layer")
    return getattr(module, "out_channels", None)


def build_arithmetic(ctx: ReportContext):
    from ..plotting import arithmetic_figure, receptive_field_figure

    s = ctx.settings
    layer = s.arithmetic_layer or (conv_names(ctx.model) or [None])[0]
    if layer is None:
        raise Skip("the model has no Conv2d layer and no arithmetic_layer was given")
    h, w = s.arithmetic_position or _centre(ctx, layer)
    a = ctx.explainer.arithmetic(ctx.images[:1], layer, s.arithmetic_channel, h, w)
    worked = ctx.figure(arithmetic_figure(a), f"The worked arithmetic of {layer}[{s.arithmetic_channel}, {h}, {w}]")
    box = ctx.explainer.receptive_field(layer, h, w, input_shape=input_shape(ctx))
    seen = ctx.figure(receptive_field_figure(ctx.images[0].cpu(), box), f"Receptive field of {layer}[{h}, {w}]")
    body = render("arithmetic.html", layer=layer, channel=s.arithmetic_channel, h=h, w=w, image=ctx.names[0],
                  computed=f"{float(a.computed):.6g}", actual=f"{float(a.actual):.6g}", arithmetic_figure=worked,
                  box=box, receptive_field_figure=seen)
    return body, {"layer": str(layer), "computed": float(a.computed), "actual": float(a.actual)}


def _centre(ctx: ReportContext, layer: Any) -> tuple[int, int]:
    maps = ctx.explainer.feature_maps(ctx.images[:1], layers=layer)
    t = next(iter(maps.values()))
    return (t.shape[-2] // 2, t.shape[-1] // 2) if t.dim() == 4 else (0, 0)


# --------------------------------------------------------------------------- registry
#: ``{key: (title, builder)}`` in page order.
SECTIONS: dict[str, tuple[str, Callable[[ReportContext], Any]]] = {
    "summary": ("Model summary", build_summary),
    "predictions": ("Predictions", build_predictions),
    "feature_maps": ("Feature maps", build_feature_maps),
    "filters": ("Filters and activation maximization", build_filters),
    "arithmetic": ("The arithmetic of one output", build_arithmetic),
    "attribution": ("Occlusion, gradients and Grad-CAM", att.build_attribution),
    "methods": ("Attribution methods side by side", att.build_methods),
    "sanity": ("Sanity check", att.build_sanity),
    "embeddings": ("Embeddings", att.build_embeddings),
    "style": ("Style transfer", att.build_style),
}


def select_sections(sections: Sequence[str] | None) -> list[str]:
    """Validate a selection of section keys (None: all) and return them in page order."""
    keys = list(SECTIONS)
    if sections is None:
        return keys
    if isinstance(sections, str):
        sections = [sections]
    unknown = [s for s in sections if s not in keys]
    if unknown:
        raise ValueError(f"sections: unknown {unknown}; choose from {keys}")
    return [k for k in keys if k in set(sections)]
