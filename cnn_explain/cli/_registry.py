"""The one registry of ``cnn-explain`` subcommands, the one ``main`` and the one :class:`UsageError`.

A subcommand is a :class:`Command`: its name, a one-line help, a function that
adds its options to an ``argparse`` parser and a function that runs it on the
parsed arguments. Register one with :func:`command`::

    def _hello_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    @command("hello", help="print a greeting", arguments=_hello_arguments)
    def _run_hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 0

Inside ``run``, a user mistake is a :class:`UsageError` (or the ``ValueError`` /
``TypeError`` that the library raises for bad input, which names the argument);
:func:`main` prints the command's usage and one line ``cnn-explain NAME: error:
MESSAGE`` on stderr and returns 2, as argparse does for the mistakes it finds.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Command", "COMMANDS", "UsageError", "command", "build_parser", "parser_for", "main", "cli_words"]

PROG = "cnn-explain"
DESCRIPTION = ("Explain a PyTorch CNN: its arithmetic, feature maps, saliency, occlusion, embeddings, "
               "style transfer and a report.")

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A bad command-line argument; :func:`main` reports it on one line and returns exit code 2."""


@dataclass(frozen=True)
class Command:
    """One subcommand.

    Attributes:
        name: what the user types after ``cnn-explain``.
        help: one line, shown in ``cnn-explain --help`` and as the command's description.
        add_arguments: adds the command's options to a parser.
        run: runs the command on the parsed arguments; returns the exit code (0 on success).
    """

    name: str
    help: str
    add_arguments: AddArguments
    run: Run


#: Every subcommand, in the order ``cnn-explain --help`` lists them.
COMMANDS: dict[str, Command] = {}


def command(name: str, *, help: str, arguments: AddArguments) -> Callable[[Run], Run]:
    """Register the decorated ``run(args) -> int`` as the subcommand ``name``.

    Args:
        name: the subcommand's name; registering the same name twice is an error.
        help: its one-line help.
        arguments: ``(parser) -> None``, adds the subcommand's options.

    Returns:
        A decorator that registers ``run`` and returns it unchanged.
    """

    def register(run: Run) -> Run:
        if name in COMMANDS:
            raise ValueError(f"name: the subcommand {name!r} is already registered")
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not when it is None / False / empty, nor when the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or action.default == [] or "default" in text.lower()
                or not action.option_strings):
            return text
        if isinstance(action.default, (list, tuple)):  # "(default: pca tsne umap)", as it is typed
            return f"{text} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def _new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=_HelpFormatter)


def parser_for(name: str) -> argparse.ArgumentParser:
    """A stand-alone parser of one subcommand (``prog`` is ``cnn-explain NAME``).

    Used by scripts that offer the same options, e.g. ``examples/style_transfer.py``;
    run the command with ``COMMANDS[name].run(parser.parse_args(argv))``.

    Raises:
        ValueError: ``name`` is not a registered subcommand.
    """
    cmd = _lookup(name)
    parser = _new_parser(f"{PROG} {cmd.name}", cmd.help)
    cmd.add_arguments(parser)
    return parser


def _lookup(name: str) -> Command:
    if name not in COMMANDS:
        raise ValueError(f"name: no subcommand {name!r}; choose one of {', '.join(COMMANDS)}")
    return COMMANDS[name]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from .. import __version__

    parser = _new_parser(PROG, DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="command")
    subparsers = {}
    for cmd in COMMANDS.values():
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help, formatter_class=_HelpFormatter)
        cmd.add_arguments(sub)
        subparsers[cmd.name] = sub
    return parser, subparsers


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``cnn-explain`` parser with one subparser per registered command."""
    return _build()[0]


def _exit_code(exc: SystemExit) -> int:
    """argparse's exit: 0 for ``--help`` / ``--version``, 2 for a parse error."""
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    """Print ``parser``'s usage and one line ``PROG: error: MESSAGE`` on stderr; return 2."""
    parser.print_usage(sys.stderr)
    one_line = " ".join(message.split())
    print(f"{parser.prog}: error: {one_line}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cnn-explain ARGV``.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success (and for ``--help``), 2 for a bad argument,
        which is explained on stderr in one line.
    """
    parser, subparsers = _build()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's --help (0) and its own parse errors (2, already printed)
        return _exit_code(exc)
    if args.command is None:
        return _usage_error(parser, "choose a command: " + ", ".join(COMMANDS))
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except (UsageError, ValueError, TypeError) as exc:  # the library names the argument in these
        sub = subparsers[args.command]
        return _usage_error(sub, cli_words(str(exc), sub))


def cli_words(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with the library's argument names as the command's options: ``layer='x'`` -> ``--layer 'x'``.

    The one place where a capability's error (which names its Python argument) is
    put in command-line words. An argument name is translated where it is
    followed by ``=`` (``layer='x'``, ``images[1]='a.png'``), by ``must`` or by
    ``:`` and is the name of one of ``parser``'s options.

    Example:
        >>> p = argparse.ArgumentParser(); _ = p.add_argument("--input-size")
        >>> cli_words("input_size=0 must be positive", p)
        '--input-size 0 must be positive'
    """
    options = {a.dest: max(a.option_strings, key=len) for a in parser._actions
               if a.option_strings and a.dest not in (argparse.SUPPRESS, "help")}
    if not options:
        return message
    names = "|".join(sorted(map(re.escape, options), key=len, reverse=True))
    pattern = re.compile(r"(?<![\w.\-\[])(" + names + r")(?:\[\d+\])?(?:=|(?=\s+must\b)|(?=:))")

    def option(m: re.Match) -> str:
        return options[m.group(1)] + (" " if m.group(0).endswith("=") else "")

    return pattern.sub(option, message)
