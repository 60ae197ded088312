"""The ``defusal`` command line: one sub-module per command group.

Each sub-module defines ``register(subparsers)``, which adds its sub-command and sets
``handler``, a function that takes the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from defusal.errors import DefusalError

COMMAND_MODULES = ("data", "fig1", "lsc", "epidemic", "reproduce")


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser that reports a usage error in one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"defusal: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    from defusal import __version__

    parser = OneLineErrorParser(
        prog="defusal",
        description="Detect and defuse exponential explosion in learned dynamical systems.",
    )
    parser.add_argument("--version", action="version", version=f"defusal {__version__}")
    # Accepted before the command too; a sub-command's own --data-dir takes precedence.
    parser.add_argument("--data-dir", dest="global_data_dir", default=None, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"defusal.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status (0 success, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if getattr(args, "data_dir", None) is None and args.global_data_dir is not None:
        args.data_dir = args.global_data_dir
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except DefusalError as error:
        print(f"defusal: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("defusal: interrupted; files already written are complete", file=sys.stderr)
        return 130
