"""Check dataset files against the registry: sha256 checksums and a quick presence status.

:func:`status` only looks at which files exist and their sizes, so it is instant. :func:`verify`
reads every byte and compares the sha256 checksum with the registry entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from defusal.data import dataset, resolve_data_dir
from defusal.errors import DataCorruptError, DataMissingError

__all__ = [
    "DatasetStatus",
    "FileCheck",
    "corrupt_message",
    "dataset_folder",
    "require_data_dir",
    "sha256_file",
    "status",
    "verify",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read at a time when hashing, so memory use stays flat for files of any size."""

PART_SUFFIX = ".part"
"""Suffix of a download in progress, next to the file it becomes."""


@dataclass(frozen=True)
class FileCheck:
    """Result of checking one dataset file.

    ``state`` is ``"ok"`` (checksum matches), ``"mismatch"`` (the file exists but its sha256
    differs) or ``"missing"`` (no such file). ``actual_sha256`` and ``size`` are ``None`` for a
    missing file.
    """

    dataset: str
    name: str
    path: Path
    state: str
    expected_sha256: str
    actual_sha256: str | None
    expected_size: int
    size: int | None

    @property
    def ok(self) -> bool:
        """Whether the file exists and its checksum matches the registry."""
        return self.state == "ok"


@dataclass(frozen=True)
class DatasetStatus:
    """Presence of a dataset's files, judged from names and sizes only (no checksums).

    ``state`` is one of:

    - ``"present"``: every file exists with the size in the registry,
    - ``"missing"``: no file exists and no download is in progress,
    - ``"partial"``: some files exist, or a ``.part`` download is waiting to be resumed,
    - ``"corrupt"``: a file exists with a size different from the registry.

    ``"present"`` does not mean the checksums were checked; run :func:`verify` for that.
    """

    name: str
    folder: Path
    state: str
    files_present: int
    files_total: int
    bytes_present: int
    bytes_total: int


def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Return the hex sha256 digest of the file at ``path``, read in chunks of ``chunk_size``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_folder(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return ``<data dir>/<folder>`` of dataset ``name`` (it need not exist).

    Raises:
        DefusalError: ``name`` is not in the registry.
    """
    return resolve_data_dir(data_dir) / dataset(name).folder


def require_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder, raising :class:`DataMissingError` if it does not exist."""
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataMissingError(
            f"data folder {root} is a file, not a folder; set DEFUSAL_DATA or --data-dir to the "
            "folder that contains the datasets"
        )
    if not root.is_dir():
        raise DataMissingError(
            f"data folder {root} not found. Set DEFUSAL_DATA or --data-dir to the folder that "
            "contains the datasets, or run `defusal data fetch NAME`"
        )
    return root


def corrupt_message(path: Path, actual_sha256: str, expected_sha256: str) -> str:
    """Return the one-line message for a file whose checksum differs from the registry."""
    return f"{path} has sha256 {actual_sha256} but the registry expects {expected_sha256}"


def status(name: str, data_dir: str | os.PathLike | None = None) -> DatasetStatus:
    """Report which files of dataset ``name`` exist, from names and sizes only.

    Args:
        name: dataset name in the registry.
        data_dir: data folder; ``None`` means ``$DEFUSAL_DATA``, else ``~/.cache/defusal``.

    Returns:
        A :class:`DatasetStatus`. A data folder that does not exist gives ``"missing"``.

    Raises:
        DefusalError: ``name`` is not in the registry.
    """
    entry = dataset(name)
    folder = dataset_folder(name, data_dir)
    files_present = 0
    bytes_present = 0
    wrong_size = False
    downloads_waiting = False
    for data_file in entry.files:
        path = folder / data_file.name
        if path.is_file():
            size = path.stat().st_size
            files_present += 1
            bytes_present += size
            wrong_size = wrong_size or size != data_file.size
        elif path.with_name(path.name + PART_SUFFIX).is_file():
            downloads_waiting = True

    if wrong_size:
        state = "corrupt"
    elif files_present == len(entry.files):
        state = "present"
    elif files_present == 0 and not downloads_waiting:
        state = "missing"
    else:
        state = "partial"
    return DatasetStatus(
        name=name,
        folder=folder,
        state=state,
        files_present=files_present,
        files_total=len(entry.files),
        bytes_present=bytes_present,
        bytes_total=entry.size,
    )


def verify(
    name: str, data_dir: str | os.PathLike | None = None, *, strict: bool = False
) -> list[FileCheck]:
    """Check the sha256 checksum of every file of dataset ``name``.

    Args:
        name: dataset name in the registry.
        data_dir: data folder; ``None`` means ``$DEFUSAL_DATA``, else ``~/.cache/defusal``.
        strict: raise on the first bad file instead of only reporting it.

    Returns:
        One :class:`FileCheck` per registry file, in registry order.

    Raises:
        DefusalError: ``name`` is not in the registry.
        DataMissingError: the data folder does not exist, no file of the dataset exists, or
            ``strict`` is set and a file is missing.
        DataCorruptError: ``strict`` is set and a checksum differs. The message names the file
            and both checksums.
    """
    entry = dataset(name)
    require_data_dir(data_dir)
    folder = dataset_folder(name, data_dir)
    if not any((folder / data_file.name).is_file() for data_file in entry.files):
        raise DataMissingError(
            f"dataset {name!r} is missing: none of its files is in {folder}. Set DEFUSAL_DATA or "
            f"--data-dir to the folder that contains {entry.folder}/, or run "
            f"`defusal data fetch {name}`"
        )

    checks = []
    for data_file in entry.files:
        path = folder / data_file.name
        if not path.is_file():
            check = FileCheck(
                name, data_file.name, path, "missing", data_file.sha256, None, data_file.size, None
            )
        else:
            actual = sha256_file(path)
            check = FileCheck(
                dataset=name,
                name=data_file.name,
                path=path,
                state="ok" if actual == data_file.sha256 else "mismatch",
                expected_sha256=data_file.sha256,
                actual_sha256=actual,
                expected_size=data_file.size,
                size=path.stat().st_size,
            )
        logger.debug("verify %s/%s: %s", name, data_file.name, check.state)
        if strict:
            _raise_if_bad(check)
        checks.append(check)
    return checks


def _raise_if_bad(check: FileCheck) -> None:
    if check.state == "missing":
        raise DataMissingError(
            f"{check.path} not found. Run `defusal data fetch {check.dataset}` or copy the file "
            "there"
        )
    if check.state == "mismatch":
        raise DataCorruptError(
            corrupt_message(check.path, check.actual_sha256, check.expected_sha256)
            + f". Delete it and run `defusal data fetch {check.dataset}`"
        )
