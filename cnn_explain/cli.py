"""The ``cnn-explain`` command.

Subcommands::

    cnn-explain summary --model cnn_explain.models:cifar10_cnn --input-shape 3,32,32 [--weights f.pt] [--json]
    cnn-explain train [--epochs 8] [--out digits.pt]        # seed 001's CNN on scikit-learn's digits
    cnn-explain demo [--out report] [--fast]                 # digits CNN: summary, accuracy, the HTML report

Bad arguments print a message on stderr and exit with code 2.

Adding a subcommand: write ``configure(parser)`` (adds its arguments) and
``run(args, parser) -> int``, and register them with
``@command("name", "one-line help", configure)`` on ``run``. Inside ``run``,
report a user mistake with ``parser.error(...)`` (exit code 2). The capability
subcommands of :mod:`cnn_explain.cli_commands` (``report``, ``occlusion``,
``saliency``, ...) are added through its ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["main", "command", "COMMANDS", "build_parser", "load_model"]

Run = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Run


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Run], Run]:
    """Register ``run`` as the subcommand ``name`` (``configure`` adds its arguments)."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register


# --------------------------------------------------------------------------- shared argument helpers
def input_shape_arg(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` -> ``(3, 32, 32)``: one image's (C, H, W), no batch dimension."""
    try:
        values = tuple(int(v) for v in text.replace("x", ",").replace("×", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W (three positive ints, no batch dimension, e.g. 3,32,32), got {text!r}")
    return values  # type: ignore[return-value]


def load_model(spec: str, weights: str | None, parser: argparse.ArgumentParser):
    """Build the model named ``module:factory`` and load ``weights`` (see :func:`cnn_explain.cli_helpers.load_model`).

    Any failure is reported with ``parser.error`` (exit code 2).
    """
    from .cli_helpers import UsageError
    from .cli_helpers import load_model as _load

    try:
        return _load(spec, weights)
    except UsageError as exc:
        parser.error(str(exc))


def _add_training_args(p: argparse.ArgumentParser, epochs: int | None = None) -> None:
    from .train import DIGITS_SETTINGS

    s = DIGITS_SETTINGS
    p.add_argument("--epochs", type=int, default=epochs or s["epochs"], help="passes over the data (default: %(default)s)")
    p.add_argument("--lr", type=float, default=s["lr"], help="learning rate (default: %(default)s)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=s["optimizer"], help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=s["batch_size"], help="(default: %(default)s)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=s["schedule"],
                   help="learning-rate schedule (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and shuffling (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1, fastest on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------- summary
def _configure_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="cnn_explain.models:cifar10_cnn",
                   help="module:factory returning an nn.Module (default: %(default)s)")
    p.add_argument("--weights", help="a state_dict checkpoint (.pt) to load into the model")
    p.add_argument("--input-shape", type=input_shape_arg, default=(3, 32, 32), metavar="C,H,W",
                   help="one image's shape, no batch dimension (default: 3,32,32)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


@command("summary", "per-layer table: shapes, neurons, parameter formulas, receptive fields, MACs", _configure_summary)
def _run_summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from .summary import summarize

    model = load_model(args.model, args.weights, parser)
    try:
        s = summarize(model, args.input_shape)
    except ValueError as exc:
        parser.error(f"--input-shape: {exc}")
    print(json.dumps(s.to_dict(), indent=2, ensure_ascii=False) if args.json else s)
    return 0


# --------------------------------------------------------------------------- train
def _configure_train(p: argparse.ArgumentParser) -> None:
    _add_training_args(p)
    p.add_argument("--out", help="save the trained weights (state_dict) to this .pt file")


def _check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")


@command("train", "train seed 001's CNN (mnist_cnn) on scikit-learn's handwritten digits", _configure_train)
def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from .data import load_digits
    from .models import mnist_cnn
    from .train import evaluate, fit, save_checkpoint

    _check_positive(parser, args)
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
def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="report", help="folder of the HTML report (default: report)")
    p.add_argument("--fast", action="store_true", help="smallest settings (for tests and quick looks)")
    p.add_argument("--cache-dir", default=None, help="where the trained digits CNN is cached "
                   "(default: $CNN_EXPLAIN_CACHE or ~/.cache/cnn_explain)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("demo", "train (or reuse) the digits CNN, print its summary and test accuracy, write the report",
         _configure_demo)
def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .data import load_digits
    from .summary import summarize
    from .train import evaluate, pretrained_digits_cnn

    model = pretrained_digits_cnn(cache_dir=args.cache_dir, progress=not args.quiet)
    summary = summarize(model, (1, 28, 28))
    acc = evaluate(model, load_digits("test"))
    print(summary)
    print(f"\nTest accuracy on scikit-learn's digits (450 images): {acc:.2%}")
    from .demo import run_demo

    path = run_demo(out=args.out, fast=args.fast, progress=not args.quiet, cache_dir=args.cache_dir)
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="cnn-explain", description="Explain a PyTorch CNN: its arithmetic, "
                                     "feature maps, saliency, occlusion, embeddings and a report.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="command")
    for cmd in COMMANDS.values():
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub)
        sub.set_defaults(_command=cmd, _parser=sub)
    try:  # the capability subcommands (report, occlusion, saliency, ...), when that module is present
        from .cli_commands import register
    except ImportError:
        register = None
    if register is not None:
        register(subs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("choose a command: " + ", ".join(COMMANDS))
        if hasattr(args, "_command"):
            return args._command.run(args, args._parser)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # argparse's --help (0) and parser.error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


if __name__ == "__main__":
    sys.exit(main())
