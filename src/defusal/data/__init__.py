"""Dataset registry: where the data folder is, and the path of each dataset file.

The data folder is, in order of precedence, the ``data_dir`` argument (``--data-dir`` on the
command line), the environment variable ``DEFUSAL_DATA``, or ``~/.cache/defusal``. Each dataset
lives in a sub-folder of it (see :data:`DATASETS`).
"""

from __future__ import annotations

import os
from pathlib import Path

from defusal.data.registry import DATASETS, DataFile, Dataset
from defusal.errors import DataMissingError, DefusalError

__all__ = [
    "DATASETS",
    "DataFile",
    "Dataset",
    "dataset",
    "fetch",
    "file_path",
    "resolve_data_dir",
    "status",
    "verify",
]

DEFAULT_DATA_DIR = Path("~/.cache/defusal")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``data_dir``, else ``$DEFUSAL_DATA``, else ``~/.cache/defusal``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_environment = os.environ.get("DEFUSAL_DATA")
    if from_environment:
        return Path(from_environment).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def dataset(name: str) -> Dataset:
    """Return the registry entry of dataset ``name``, raising :class:`DefusalError` if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DefusalError(f"unknown dataset {name!r}; known datasets: {known}") from None


def file_path(name: str, filename: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of ``filename`` of dataset ``name``, checking that the file exists.

    Raises:
        DefusalError: ``name`` or ``filename`` is not in the registry.
        DataMissingError: the file is not in the data folder; the message names the folder
            searched and how to fix it.
    """
    entry = dataset(name)
    try:
        entry.file(filename)
    except KeyError:
        raise DefusalError(f"dataset {name!r} has no file {filename!r}") from None
    folder = resolve_data_dir(data_dir) / entry.folder
    path = folder / filename
    if not path.is_file():
        raise DataMissingError(
            f"dataset {name!r} is missing: {path} not found; set DEFUSAL_DATA or --data-dir to "
            f"the folder that contains {entry.folder}/, or run `defusal data fetch {name}`"
        )
    return path


# These modules import the functions above, so they come last.
from defusal.data.fetch import fetch  # noqa: E402
from defusal.data.verify import status, verify  # noqa: E402
