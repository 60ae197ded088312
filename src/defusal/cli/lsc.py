"""The `defusal lsc` command (being built)."""


def register(subparsers) -> None:
    """Add nothing yet."""
