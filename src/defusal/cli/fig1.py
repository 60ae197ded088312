"""The `defusal fig1` command (being built)."""


def register(subparsers) -> None:
    """Add nothing yet."""
