"""Options shared by every sub-command."""

from __future__ import annotations

import argparse


def common_options() -> argparse.ArgumentParser:
    """Return a parent parser with ``--data-dir`` and ``--verbose``, for ``parents=[...]``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data folder (default: $DEFUSAL_DATA, else ~/.cache/defusal)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def positive_int(text: str) -> int:
    """Parse a strictly positive integer for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text: str) -> float:
    """Parse a strictly positive finite float for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value
