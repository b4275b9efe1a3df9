"""The foundation subcommands: ``summary``, ``train`` and ``demo``.

Example:
    $ cnn-explain summary --model cnn_explain.models:cifar10_cnn --input-shape 3,32,32 [--weights f.pt] [--json]
    $ cnn-explain train [--epochs 8] [--out digits.pt]     # the MNIST-style CNN on scikit-learn's digits
    $ cnn-explain demo [--out report] [--fast]              # digits CNN: summary, accuracy, the HTML report
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._load import check_out_file, check_out_report, load_model
from ._options import add_model, add_out, add_quiet, input_shape
from ._registry import UsageError, command

__all__: list[str] = []


# --------------------------------------------------------------------------- summary
def _summary_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p, default="cnn_explain.models:cifar10_cnn")
    p.add_argument("--input-shape", type=input_shape, default=(3, 32, 32), metavar="C,H,W",
                   help="one image's shape, no batch dimension (default: 3,32,32)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


@command("summary", help="per-layer table: shapes, neurons, parameter formulas, receptive fields, MACs",
         arguments=_summary_arguments)
def _run_summary(args: argparse.Namespace) -> int:
    import json

    from ..summary import summarize

    model = load_model(args.model, args.weights)
    try:
        s = summarize(model, args.input_shape)
    except ValueError as exc:
        raise UsageError(f"--input-shape: {exc}") from None
    print(json.dumps(s.to_dict(), indent=2, ensure_ascii=False) if args.json else s)
    return 0


# --------------------------------------------------------------------------- train
def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ..train import DIGITS_SETTINGS

    s = DIGITS_SETTINGS
    p.add_argument("--epochs", type=int, default=s["epochs"], help="passes over the data")
    p.add_argument("--lr", type=float, default=s["lr"], help="learning rate")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=s["optimizer"], help="Adam or SGD with momentum")
    p.add_argument("--batch-size", type=int, default=s["batch_size"], help="images per step")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=s["schedule"], help="learning-rate schedule")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and shuffling")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    add_quiet(p)
    add_out(p, None, help="save the trained weights (state_dict) to this .pt file (default: not saved)")


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    check_out_file(args.out, what="checkpoint")


@command("train", help="train the MNIST-style CNN (mnist_cnn) on scikit-learn's handwritten digits",
         arguments=_train_arguments)
def _run_train(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_digits
    from ..models import mnist_cnn
    from ..train import evaluate, fit, save_checkpoint

    _check_positive(args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = mnist_cnn()
    history = fit(model, load_digits("train"), epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                  batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
                  schedule=args.schedule, num_threads=args.threads)
    acc = evaluate(model, load_digits("test"))
    print(f"trained {args.epochs} epochs in {history.seconds:.1f} s; final loss {history.loss[-1]:.4f}; "
          f"test accuracy {acc:.2%}")
    if args.out:
        print(f"saved weights to {save_checkpoint(model, args.out)}")
    return 0


# --------------------------------------------------------------------------- demo
def _demo_arguments(p: argparse.ArgumentParser) -> None:
    add_out(p, "report", help="folder of the HTML report: new, empty or a previous report (others are refused)")
    p.add_argument("--fast", action="store_true", help="smallest settings (for tests and quick looks)")
    p.add_argument("--cache-dir", default=None, metavar="FOLDER", help="where the trained digits CNN is cached "
                   "(default: $CNN_EXPLAIN_CACHE or ~/.cache/cnn_explain)")
    add_quiet(p)


@command("demo", help="train (or load) the MNIST-style CNN, print its summary and test accuracy, write the report",
         arguments=_demo_arguments)
def _run_demo(args: argparse.Namespace) -> int:
    from .. import demo

    check_out_report(args.out)
    if args.cache_dir is not None and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise UsageError(f"--cache-dir {args.cache_dir} is a file; give a folder (it is created if missing)")
    path = demo.run_demo(out=args.out, fast=args.fast, progress=not args.quiet, cache_dir=args.cache_dir)
    print(f"wrote {path}")
    return 0
