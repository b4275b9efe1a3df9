"""Capability subcommands of ``cnn-explain``: ``report``, ``occlusion``, ``saliency``, ``grad-cam``,
``ig`` (Integrated Gradients), ``cam`` (the CAM family), ``maximize``, ``arithmetic`` and ``embed``
(``style`` is in :mod:`cnn_explain.cli.style`).

Every command takes the model as ``--model pkg.module:factory`` or ``--model
path/to/file.py:factory`` (this imports and runs that code, by design: give only
code you trust; ``--weights ckpt.pt`` loads a state dict into it) or ``--model
digits`` (the default: the MNIST-style CNN trained on scikit-learn's digits,
cached after the first run). Figure commands save one PNG (``--out fig.png``);
``report`` writes a folder. ``--out`` and every input are checked before the
long work starts. ``--help`` on any of them lists its options; bad arguments
exit with status 2 with one line that says what to change.

Example:
    $ cnn-explain occlusion --model mypkg.nets:small_cnn --weights small.pt \\
          --images cat.png --input-size 32 --window 8 --stride 4 --out occlusion.png
    $ cnn-explain ig --images cat.png --steps 32 --baseline blur --out ig.png
    $ cnn-explain cam --images cat.png --method grad-cam++ --out cam.png
    $ cnn-explain report --model mypkg.nets:small_cnn --weights small.pt \\
          --images cat.png dog.jpg --input-size 32 --classes names.txt --data val/ --out report
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._load import (check_out_file, check_out_report, input_spec, labelled, load_folder, load_images,
                    make_explainer, save_figure, target)
from ._options import DIGITS, add_model_inputs, add_out, add_quiet, nonneg_int, pos_int
from ._registry import UsageError, command

__all__: list[str] = []


def _out(p: argparse.ArgumentParser, default: str) -> None:
    add_out(p, default, help="where to save the figure")
    add_quiet(p)


# --------------------------------------------------------------------------- report
def _report_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p)
    p.add_argument("--data", metavar="FOLDER",
                   help="labelled image folder (one sub-folder per class) to embed (default: no embeddings)")
    p.add_argument("--sections", nargs="+", metavar="KEY", help="only these sections (default: all)")
    p.add_argument("--embed-methods", nargs="+", choices=("pca", "tsne", "umap"), default=["pca", "tsne", "umap"],
                   help="projections of the embeddings section")
    p.add_argument("--maximize-steps", type=pos_int, default=64, help="optimizer steps of activation maximization")
    p.add_argument("--occlusion-window", type=pos_int, default=8, help="occluding square side, pixels")
    p.add_argument("--occlusion-stride", type=pos_int, default=4, help="step between squares, pixels")
    p.add_argument("--style", nargs=2, metavar=("CONTENT", "STYLE"),
                   help="two image files: add a style-transfer section (default: none)")
    p.add_argument("--style-steps", type=pos_int, default=100, help="optimizer steps of the style transfer")
    p.add_argument("--style-size", type=pos_int, default=128, help="working size of the style transfer, pixels")
    add_out(p, "report", help="report folder: new, empty or a previous report (other folders are refused)")
    add_quiet(p)


def _load_data(args: argparse.Namespace, ex: Any) -> Any:
    return None if args.data is None else load_folder(args, ex, args.data)


@command("report", help="Write the HTML report for your model and images.", arguments=_report_args)
def run_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    check_out_report(args.out)
    ex = make_explainer(args)
    load_images(ex, args.images, args.input_size, args.classes)  # checks every file before the long work starts
    style = None
    if args.style:
        style = {"content": args.style[0], "style": args.style[1], "steps": args.style_steps,
                 "size": args.style_size}
    res = write_report(ex, list(args.images), data=_load_data(args, ex), out=args.out,
                       sections=args.sections, progress=not args.quiet, embed_methods=tuple(args.embed_methods),
                       maximize_steps=args.maximize_steps, occlusion_window=args.occlusion_window,
                       occlusion_stride=args.occlusion_stride, style=style)
    print(res.path)
    return 0


# --------------------------------------------------------------------------- attribution
def _target_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", metavar="CLASS",
                   help="class to explain: an index, or a name from --classes (default: the predicted class)")


def _occlusion_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p)
    _target_arg(p)
    p.add_argument("--window", type=pos_int, default=8, help="occluding square side, pixels")
    p.add_argument("--stride", type=pos_int, default=4, help="step between squares, pixels")
    p.add_argument("--measure", choices=("prob", "logit"), default="prob",
                   help="score whose drop is mapped: softmax probability or logit")
    p.add_argument("--mode", choices=("exact", "incremental", "approx", "batched"), default="exact",
                   help="exact (incremental inference where predicted faster), incremental, approx "
                        "(60 %% of the positions, low-precision changes) or batched (plain forwards)")
    p.add_argument("--winograd", choices=("auto", "on", "off"), default="auto",
                   help="large 3x3 convolutions' changes by Winograd F(4x4, 3x3); auto: float32 models on the CPU")
    _out(p, "occlusion.png")


def _draw_attribution(args: argparse.Namespace, results: list[Any]) -> int:
    from ..plotting import attribution_grid

    names = [Path(p).name for p in args.images]  # each input labelled by its file name
    save_figure(labelled(attribution_grid, names, results), args.out)
    return 0


def _explain_images(args: argparse.Namespace) -> tuple[Any, Any, int | None]:
    """``--out`` checked, then the explainer, the images and the target."""
    check_out_file(args.out)
    ex = make_explainer(args)
    x = load_images(ex, args.images, args.input_size, args.classes)
    return ex, x, target(ex, args.target)


@command("occlusion", help="Occlusion heatmap (Zeiler & Fergus 2014).", arguments=_occlusion_args)
def run_occlusion(args: argparse.Namespace) -> int:
    ex, x, tgt = _explain_images(args)
    winograd = {"auto": None, "on": True, "off": False}[args.winograd]
    res = ex.occlusion(x, target=tgt, window=args.window, stride=args.stride, measure=args.measure,
                       mode=args.mode, winograd=winograd, progress=not args.quiet)
    return _draw_attribution(args, [res])


def _saliency_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p)
    _target_arg(p)
    p.add_argument("--method", choices=("gradient", "guided", "deconv"), default="guided",
                   help="plain gradient, guided backpropagation or deconvnet")
    p.add_argument("--smooth", type=nonneg_int, default=0, help="SmoothGrad samples (0: off)")
    _out(p, "saliency.png")


@command("saliency", help="Gradient / guided-backprop / deconvnet saliency.", arguments=_saliency_args)
def run_saliency(args: argparse.Namespace) -> int:
    ex, x, tgt = _explain_images(args)
    res = ex.saliency(x, target=tgt, method=args.method, smooth=args.smooth, progress=not args.quiet)
    return _draw_attribution(args, [res])


def _cam_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p)
    _target_arg(p)
    p.add_argument("--layer", help="layer name (default: the feature map the classifier's global pooling or "
                                   "flatten reads, e.g. a ResNet's last block)")
    p.add_argument("--guided", action="store_true", help="guided Grad-CAM")
    _out(p, "grad_cam.png")


@command("grad-cam", help="Grad-CAM heatmap (Selvaraju et al. 2017).", arguments=_cam_args)
def run_grad_cam(args: argparse.Namespace) -> int:
    ex, x, tgt = _explain_images(args)
    res = ex.grad_cam(x, target=tgt, layer=args.layer, guided=args.guided)
    print(f"Grad-CAM at layer {res.layer!r}")
    return _draw_attribution(args, [res])


def _baseline(text: str) -> float | str:
    """``--baseline``: a number (every pixel) or ``blur``."""
    if text == "blur":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'blur', got {text!r}") from None


def _ig_args(p: argparse.ArgumentParser) -> None:
    from ..attribution.integrated_gradients import IGMethod

    add_model_inputs(p)
    _target_arg(p)
    p.add_argument("--steps", type=pos_int, default=64, help="quadrature points of the path integral")
    p.add_argument("--method", choices=[m.value for m in IGMethod], default=IGMethod.GAUSS_LEGENDRE.value,
                   help="quadrature rule (captum's names)")
    p.add_argument("--baseline", type=_baseline, default=0.0, metavar="B",
                   help="the reference image: a number for every pixel, or 'blur' (a Gaussian-blurred copy)")
    p.add_argument("--exact", action="store_true",
                   help="the exact integral, split at every change of linear region (ReLU / max-pool nets only; "
                        "--steps and --method are then unused)")
    _out(p, "integrated_gradients.png")


def _per_image(names: list[str], values: list[str]) -> str:
    return ", ".join(f"{n} {v}" for n, v in zip(names, values))


@command("ig", help="Integrated Gradients (Sundararajan et al. 2017), exact for piecewise-linear nets.",
         arguments=_ig_args)
def run_ig(args: argparse.Namespace) -> int:
    ex, x, tgt = _explain_images(args)
    res = ex.integrated_gradients(x, target=tgt, baseline=args.baseline, steps=args.steps, method=args.method,
                                  exact=args.exact, progress=not args.quiet)
    names = [Path(p).name for p in args.images]
    delta = _per_image(names, [f"{float(d):.6g}" for d in res.convergence_delta])
    if args.exact:
        pieces = _per_image(names, [str(int(k)) for k in res.pieces])
        print(f"exact Integrated Gradients: linear pieces of the path: {pieces}; convergence delta: {delta}")
    else:
        print(f"Integrated Gradients ({args.method}, {args.steps} steps): convergence delta: {delta}")
    return _draw_attribution(args, [res])


def _cam_family_args(p: argparse.ArgumentParser) -> None:
    from ..attribution.cam_family import CamMethod

    add_model_inputs(p)
    _target_arg(p)
    p.add_argument("--method", choices=[m.value for m in CamMethod], default=CamMethod.GRAD_CAM.value,
                   help="the CAM variant")
    p.add_argument("--layer", help="layer whose feature maps are weighted (default: Grad-CAM's, the feature map "
                                   "the classifier's global pooling or flatten reads)")
    p.add_argument("--precision", choices=["exact", "low"], default="exact",
                   help="score-cam, ss-cam, is-cam: 'low' runs the masked inputs in bfloat16 where the CPU "
                        "or GPU has it natively (about 2.5x faster, maps correlated 0.9999 with exact ones)")
    _out(p, "cam.png")


@command("cam", help="CAM family: Grad-CAM++, Score-CAM, Layer-CAM, XGrad-CAM, Eigen-CAM, ...",
         arguments=_cam_family_args)
def run_cam(args: argparse.Namespace) -> int:
    ex, x, tgt = _explain_images(args)
    res = ex.cam(x, target=tgt, layer=args.layer, method=args.method, progress=not args.quiet,
                 precision=args.precision)
    ran = res.params["precision"]
    print(f"{res.method} at layer {res.layer!r}" + ("" if ran == "exact" else f" ({ran})"))
    return _draw_attribution(args, [res])


# --------------------------------------------------------------------------- inside the network
def _maximize_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p, images=None)
    p.add_argument("--layer", required=True, help="layer name, e.g. '6' or 'features.3'")
    p.add_argument("--channels", type=nonneg_int, nargs="+", default=[0, 1, 2, 3], help="channels to maximize")
    p.add_argument("--steps", type=pos_int, default=128, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    _out(p, "maximize.png")


@command("maximize", help="Images that maximize channels of a layer.", arguments=_maximize_args)
def run_maximize(args: argparse.Namespace) -> int:
    from ..plotting import maximize_grid

    if args.input_size is None and args.model != DIGITS:
        raise UsageError("--input-size is required for maximize (the size of the images to optimize)")
    check_out_file(args.out)
    ex = make_explainer(args)
    channels, size = input_spec(args, ex.model)
    shape = (channels, size, size)
    res = ex.maximize(args.layer, args.channels, steps=args.steps, seed=args.seed, input_shape=shape,
                      progress=not args.quiet)
    save_figure(maximize_grid(res), args.out)
    return 0


def _arithmetic_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p, images=1)
    p.add_argument("--layer", required=True, help="conv, pool or linear layer name")
    p.add_argument("--channel", type=nonneg_int, default=0, help="output channel")
    p.add_argument("--h", type=nonneg_int, help="output row (default: the centre)")
    p.add_argument("--w", type=nonneg_int, help="output column (default: the centre)")
    _out(p, "arithmetic.png")


@command("arithmetic", help="The worked computation of one output value.", arguments=_arithmetic_args)
def run_arithmetic(args: argparse.Namespace) -> int:
    from ..plotting import arithmetic_figure

    check_out_file(args.out)
    ex = make_explainer(args)
    x = load_images(ex, args.images, args.input_size, args.classes)
    res = ex.arithmetic(x, args.layer, args.channel, args.h, args.w)
    print(res)
    save_figure(arithmetic_figure(res), args.out)
    return 0


# --------------------------------------------------------------------------- data set level
def _embed_args(p: argparse.ArgumentParser) -> None:
    add_model_inputs(p, images=None)
    p.add_argument("--data", metavar="FOLDER", help="labelled image folder (default with --model digits: "
                                                    "the digits test set)")
    p.add_argument("--method", choices=("pca", "tsne", "umap"), default="tsne", help="projection to 2-D")
    p.add_argument("--layer", help="layer whose features are embedded (default: the penultimate features, those "
                                   "the classifier reads)")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection")
    _out(p, "embedding.png")


@command("embed", help="PCA / t-SNE / UMAP map of a layer's features.", arguments=_embed_args)
def run_embed(args: argparse.Namespace) -> int:
    if args.data is None and args.model != DIGITS:
        raise UsageError("--data FOLDER is required unless --model digits")
    check_out_file(args.out)
    ex = make_explainer(args)
    if args.data is None:
        from ..data import load_digits

        data = load_digits("test")
    else:
        data = _load_data(args, ex)
    emb = ex.embed(data, layer=args.layer, method=args.method, seed=args.seed, progress=not args.quiet)
    print(f"trustworthiness {float(emb.trustworthiness):.3f}")
    from ..plotting import scatter_embedding

    save_figure(scatter_embedding(emb), args.out)
    return 0
