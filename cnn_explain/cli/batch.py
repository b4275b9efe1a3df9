"""The ``batch`` subcommand: explain a whole data set into Parquet shards (:mod:`cnn_explain.batch`).

Example:
    $ cnn-explain batch --model mypkg.nets:small_cnn --weights small.pt --data val/ \\
          --methods grad-cam,saliency --engine ray --workers 2 --out results/ --figures results/figures
"""

from __future__ import annotations

import argparse

from ._options import DIGITS, add_model, add_quiet, nonneg_int, pos_int
from ._registry import UsageError, command

__all__: list[str] = []

HELP = "Explain every image of a data set (grad-cam, saliency, occlusion...) into resumable Parquet shards."


def _batch_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="an image folder (one sub-folder per class) or image files")
    p.add_argument("--methods", default="grad_cam,saliency",
                   help="comma-separated explainers: grad_cam, guided_grad_cam, saliency, guided, deconv, occlusion")
    p.add_argument("--option", action="append", metavar="METHOD.KEY=VALUE",
                   help="an option of one method, e.g. grad_cam.layer=features.7 (repeatable)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run in this process, or on a Ray cluster (pip install 'cnn_explain[ray]')")
    p.add_argument("--workers", type=pos_int, help="Ray workers, one model each (default: one per CPU)")
    p.add_argument("--address", help="address of a running Ray cluster (default: start a local one)")
    p.add_argument("--num-cpus", type=pos_int, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the shards and their manifest")
    p.add_argument("--batch-size", type=pos_int, default=64, help="images per forward pass")
    p.add_argument("--shard-size", type=pos_int, default=256, help="rows per Parquet shard")
    p.add_argument("--target", metavar="WHICH",
                   help="'label' (the data set's label) or a class index (default: the predicted class)")
    p.add_argument("--input-size", type=pos_int, metavar="S",
                   help="resize images to S×S (default: 28 for digits, else keep)")
    p.add_argument("--map-size", type=pos_int, metavar="S", help="store maps at S×S (default: the input's size)")
    p.add_argument("--map-dtype", choices=("float16", "float32"), default="float16", help="precision of stored maps")
    p.add_argument("--deletion-steps", type=nonneg_int, default=0,
                   help="steps of the deletion / insertion curves per map (0: no AUC scores)")
    p.add_argument("--thumbnail", type=nonneg_int, default=32, help="side of the stored thumbnails (0: none)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of keeping verified shards")
    p.add_argument("--figures", metavar="DIR", help="also write the per-class summary figures here")
    add_quiet(p)


def _target(text: str | None) -> int | str | None:
    if text is None or text == "label":
        return text
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--target must be 'label' or a class index, got {text!r}") from None


@command("batch", help=HELP, arguments=_batch_arguments)
def _run_batch(args: argparse.Namespace) -> int:
    """Run :func:`cnn_explain.batch.explain_dataset` as ``args`` say; print where the rows went."""
    from ..batch import explain_dataset, parse_method_options, summarize_dataset

    data = args.data[0] if len(args.data) == 1 else list(args.data)
    methods = tuple(m.strip().replace("-", "_") for m in args.methods.split(",") if m.strip())
    image_size = args.input_size if args.input_size is not None else (28 if args.model == DIGITS else None)
    try:
        run = explain_dataset(
            args.model, data, methods=methods, out=args.out, engine=args.engine, workers=args.workers,
            batch_size=args.batch_size, resume=not args.no_resume, target=_target(args.target),
            progress=not args.quiet, weights=args.weights, image_size=image_size, map_size=args.map_size,
            map_dtype=args.map_dtype, deletion_steps=args.deletion_steps, shard_size=args.shard_size,
            thumbnail=args.thumbnail, address=args.address, num_cpus=args.num_cpus,
            **parse_method_options(args.option or []))
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    print(f"{run.rows} rows in {run.seconds:.1f} s ({getattr(run.engine, 'value', run.engine)}) -> {run.out}")
    if args.figures:
        summarize_dataset(run.out).save(args.figures)
        print(f"figures -> {args.figures}")
    return 0
