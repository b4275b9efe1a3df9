"""Section builders, part 2: attribution side by side, the methods compared, the sanity check, embeddings,
style transfer."""

from __future__ import annotations

from typing import Any

from .core import ReportContext, Skip
from .html import render, table

__all__ = ["build_attribution", "build_methods", "build_sanity", "build_embeddings", "build_style"]


TITLES = ("occlusion", "gradient", "guided backprop", "Grad-CAM")


def build_attribution(ctx: ReportContext):
    """Occlusion, gradient, guided backprop and Grad-CAM, one row per image."""
    from ..plotting import attribution_grid

    s, ex = ctx.settings, ctx.explainer
    n = min(len(ctx.names), s.max_images)
    x = ctx.images[:n]
    results = [
        ex.occlusion(x, window=s.occlusion_window, stride=s.occlusion_stride, progress=ctx.progress),
        ex.saliency(x, method="gradient"),
        ex.saliency(x, method="guided"),
        ex.grad_cam(x, layer=s.cam_layer),
    ]
    target = results[0].target.tolist()
    figures = []
    for i in range(n):
        fig = attribution_grid(results, indices=[i], titles=TITLES, class_names=ex.class_names, labels=ctx.names)
        label = ex.label(target[i])
        figures.append(ctx.figure(fig, f"{ctx.names[i]}: explaining class {label}"))
    body = render("attribution.html", window=s.occlusion_window, stride=s.occlusion_stride, figures=figures)
    return body, {"targets": target, "methods": [r.method for r in results]}


#: how the comparison figure names a CAM-family method
CAM_TITLES = {"grad-cam": "Grad-CAM", "grad-cam++": "Grad-CAM++", "smooth-grad-cam++": "Smooth Grad-CAM++",
              "xgrad-cam": "XGrad-CAM", "layer-cam": "Layer-CAM", "hires-cam": "HiResCAM", "score-cam": "Score-CAM",
              "ss-cam": "SS-CAM", "is-cam": "IS-CAM", "ablation-cam": "Ablation-CAM", "eigen-cam": "Eigen-CAM"}


def method_results(ctx: ReportContext) -> tuple[list[Any], list[str], list[str | None]]:
    """Saliency, Integrated Gradients, Grad-CAM and the chosen CAM-family methods for the report's images.

    Every method explains the class the gradient saliency explains (the predicted one)
    and the CAM methods read Grad-CAM's layer (by default the same as Grad-CAM's).
    Returns ``(results, column titles, colour-bar labels)`` (None: the figure's default meaning).
    """
    s, ex = ctx.settings, ctx.explainer
    x = ctx.images[:min(len(ctx.names), s.max_images)]
    grad = ex.saliency(x, method="gradient")
    tgt = grad.target.tolist()
    ig = ex.integrated_gradients(x, target=tgt, steps=s.ig_steps, progress=ctx.progress)
    gc = ex.grad_cam(x, target=tgt, layer=s.cam_layer)
    cams = [ex.cam(x, target=tgt, layer=s.cam_layer, method=m, progress=ctx.progress) for m in s.compare_cam_methods]
    titles = ["gradient", f"Integrated Gradients\n({s.ig_steps} steps, baseline 0)", "Grad-CAM",
              *(CAM_TITLES.get(m, m) for m in s.compare_cam_methods)]
    bars = [None, "IG: (x − b) · mean ∂S/∂x", None, *(None for _ in cams)]
    return [grad, ig, gc, *cams], titles, bars


def build_methods(ctx: ReportContext):
    """The attribution methods side by side: one figure, rows = images, columns = methods."""
    if not ctx.settings.compare_methods:
        raise Skip("the comparison was turned off (compare_methods=False)")
    from ..plotting import attribution_grid

    ex = ctx.explainer
    results, titles, bars = method_results(ctx)
    n = len(results[0])
    fig = attribution_grid(results, indices=list(range(n)), titles=titles, class_names=ex.class_names,
                           labels=ctx.names, bar_labels=bars)
    names = ", ".join(t.split("\n")[0] for t in titles)
    figure = ctx.figure(fig, f"{names}: each image's predicted class, the same for every method")
    ig, gc = results[1], results[2]
    target = results[0].target.tolist()
    deltas = [float(d) for d in ig.convergence_delta]
    rows = [(ctx.names[i], ex.label(target[i]), f"{deltas[i]:.3g}") for i in range(n)]
    cams = ", ".join(titles[3:]) or "no other method (compare_cam_methods is empty)"
    body = render("methods.html", count=len(results), steps=ctx.settings.ig_steps, cams=cams, layer=gc.layer,
                  figure=figure,
                  table=table(["image", "class", "IG convergence delta"], rows, numeric=(2,)))
    return body, {"methods": [r.method for r in results], "targets": target, "layer": gc.layer,
                  "ig_convergence_delta": deltas}


def build_sanity(ctx: ReportContext):
    """Model-parameter randomization (Adebayo et al., 2018) of one saliency method."""
    from ..plotting import sanity_figure
    from ..plotting._sanity import verdict

    method = ctx.settings.sanity_method
    res = ctx.explainer.sanity_check(ctx.images[:1], method=method, progress=ctx.progress)
    figure = ctx.figure(sanity_figure(res, class_names=ctx.explainer.class_names, labels=ctx.names),
                        f"Sanity check of {method}: {verdict(res)}")
    rows = _sanity_rows(res)
    steps = table(["randomized up to", "Spearman ρ", "SSIM"], rows, numeric=(1, 2)) if rows else None
    body = render("sanity.html", method=method, image=ctx.names[0], figure=figure, table=steps)
    return body, {"method": method, "steps": [r[0] for r in rows]}


def _sanity_rows(res: Any) -> list[tuple[str, str, str]]:
    """One row per randomization step (step 0: the trained model), first image."""
    steps = [str(n) for n in res.steps]
    spear, ssim = res.spearman.reshape(len(steps), -1)[:, 0], res.ssim.reshape(len(steps), -1)[:, 0]
    return [(st, f"{float(r):.3f}", f"{float(q):.3f}") for st, r, q in zip(steps, spear.tolist(), ssim.tolist())]


def build_embeddings(ctx: ReportContext):
    """PCA, t-SNE and UMAP maps of one layer's features over ``data``, with their quality."""
    if ctx.data is None:
        raise Skip("no data set was given (pass data=... to embed a layer's features over a labelled set)")
    s, ex = ctx.settings, ctx.explainer
    if not s.embed_methods:
        raise Skip("embed_methods is empty")
    from ..plotting import scatter_embedding

    body, rows, info = [], [], {}
    for method in s.embed_methods:
        emb = ex.embed(ctx.data, layer=s.embed_layer, method=method, seed=s.seed, progress=ctx.progress,
                       **_embed_options(s.embed_options, method))
        thumbs = ctx.data if method == "tsne" and _indexable(ctx.data) else None
        body.append(ctx.figure(scatter_embedding(emb, thumbnails=thumbs), f"{NAMES[method]} of {_where(emb)}"))
        if method == "pca":
            body.append(_pca_variance(ctx, emb))
        trust, knn = float(emb.trustworthiness), getattr(emb, "knn_accuracy", None)
        rows.append((NAMES[method], f"{trust:.3f}", "—" if knn is None else f"{float(knn):.3f}", len(emb.coords)))
        info[method] = {"trustworthiness": trust, "knn_accuracy": None if knn is None else float(knn)}
    quality = table(["method", "trustworthiness", "kNN accuracy", "points"], rows, numeric=(1, 2, 3))
    return render("embeddings.html", points=len(emb.coords), where=_where(emb), table=quality, figures=body), info


NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def _where(emb: Any) -> str:
    """``layer 12`` or ``the input of layer 12``: where the embedded features were taken."""
    captured = getattr(getattr(emb, "features", None), "captured", "output")
    return f"the input of layer {emb.layer}" if captured == "input" else f"layer {emb.layer}"


_EMBED_KEYWORDS = ("pool", "batch_size", "max_samples", "layer_input", "n_components", "backend")


def _embed_options(options: Any, method: str) -> dict[str, Any]:
    """Options shared by every method, plus ``options[method]`` (a mapping) for that method only.

    Keywords of :meth:`Explainer.embed` are passed as such; the rest (``perplexity``,
    ``n_neighbors``, ...) go to the projection.
    """
    from .settings import EMBED_METHODS

    shared = {k: v for k, v in options.items() if k not in EMBED_METHODS}
    merged = {**shared, **dict(options.get(method) or {})}
    kwargs = {k: merged.pop(k) for k in _EMBED_KEYWORDS if k in merged}
    return {**kwargs, "projection": merged}


def _indexable(data: Any) -> bool:
    """Data that thumbnails can be read from by position (a Dataset, a tensor, an ``(images, labels)`` pair)."""
    return hasattr(data, "__getitem__") and hasattr(data, "__len__")


def _pca_variance(ctx: ReportContext, emb: Any) -> str:
    from ..plotting import explained_variance_figure

    return ctx.figure(explained_variance_figure(emb), "PCA: variance explained per component")


def build_style(ctx: ReportContext):
    """Gram-matrix style transfer (Gatys et al., 2016) with a random-filter network."""
    opts = ctx.settings.style
    if opts is None:
        raise Skip("style transfer was not asked for (pass style={'content': ..., 'style': ...})")
    from ..plotting import style_figure
    from ..style import transfer

    options = {k: v for k, v in opts.items() if k not in ("content", "style")}
    options.setdefault("seed", ctx.settings.seed)
    options.setdefault("progress", ctx.progress)
    res = transfer(opts["content"], opts["style"], **options)
    last = res.history[-1] if res.history else {}
    caption = (f"Content, style and the result: the style (Gram) loss fell {res.style_drop:.0f}× "
               "from the content image's own")
    body = render("style.html", figure=ctx.figure(style_figure(res), caption))
    return body, {"steps": len(res.history), "final_total": float(last.get("total", float("nan"))),
                  "style_drop": float(res.style_drop)}
