"""Atomic file writes and checkpoints, so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the folder of ``path``; rename it onto ``path`` on success.

    The rename is atomic on POSIX file systems, so readers see either the old file or the new
    one. On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    try:
        yield Path(temporary)
        # mkstemp creates the file as 0600; give the result the permissions of a normal file.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """Save ``obj`` with :func:`torch.save` atomically."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def load_torch(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`save_torch`, raising :class:`DefusalError` if unreadable."""
    from defusal.errors import DefusalError

    target = Path(path)
    if not target.is_file():
        raise DefusalError(f"checkpoint not found: {target}; check the path")
    try:
        return torch.load(target, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise DefusalError(
            f"checkpoint {target} is corrupt or not a defusal file ({error})"
        ) from error


def _to_builtin(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
