"""The ``cnn-explain`` command: one registry of subcommands, one :func:`main`.

Subcommands: ``summary``, ``train``, ``demo`` (:mod:`cnn_explain.cli.foundation`);
``report``, ``occlusion``, ``saliency``, ``grad-cam``, ``ig``, ``cam``, ``maximize``, ``arithmetic``,
``embed`` (:mod:`cnn_explain.cli.capabilities`); ``style`` (:mod:`cnn_explain.cli.style`); ``batch`` (:mod:`cnn_explain.cli.batch`).
``cnn-explain COMMAND --help`` lists a command's options. A bad argument prints the
command's usage and one error line on stderr and exits with code 2.

Adding a subcommand: write ``add_arguments(parser)`` (the shared options are the
``add_*`` functions of :mod:`cnn_explain.cli._options`) and ``run(args) -> int``,
register ``run`` with ``@command("name", help="...", arguments=add_arguments)`` and
raise :class:`UsageError` for a user mistake. A capability's ``ValueError`` /
``TypeError`` names its Python argument (``layer='x'``); :func:`main` puts it in
the command's words (``--layer 'x'``) in one place, :func:`cli_words`.

Example:
    >>> from cnn_explain.cli import parser_for
    >>> parser_for("style").prog
    'cnn-explain style'
"""

from __future__ import annotations

from . import foundation  # noqa: F401  isort: skip  (registers summary, train, demo: listed first)
from . import batch, capabilities, style  # noqa: F401  isort: skip  (register the capability subcommands)
from ._load import load_model
from ._registry import COMMANDS, Command, UsageError, build_parser, cli_words, command, main, parser_for

__all__ = ["main", "command", "Command", "COMMANDS", "UsageError", "build_parser", "parser_for", "load_model",
           "cli_words"]
