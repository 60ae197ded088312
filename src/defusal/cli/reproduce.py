"""The `defusal reproduce` command (being built)."""


def register(subparsers) -> None:
    """Add nothing yet."""
