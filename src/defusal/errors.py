"""Exceptions for mistakes a user can fix.

The command line prints a :class:`DefusalError` as one line and exits with status 2, with no
traceback. Every other exception is a bug and keeps its traceback.
"""


class DefusalError(Exception):
    """A user-facing error: bad input, missing data or an impossible setting.

    The message names the offending value and what to do next.
    """


class DataMissingError(DefusalError, FileNotFoundError):
    """A dataset or one of its files is not in the data folder."""


class DataCorruptError(DefusalError, ValueError):
    """A dataset file exists but its checksum or content is wrong."""
