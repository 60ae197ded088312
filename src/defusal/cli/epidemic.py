"""The `defusal epidemic` command (being built)."""


def register(subparsers) -> None:
    """Add nothing yet."""
