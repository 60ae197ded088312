"""The `defusal data` command (being built)."""


def register(subparsers) -> None:
    """Add nothing yet."""
