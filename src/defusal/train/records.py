"""Files of a training run: checkpoint, history, gradient norms and the result.

Every file is written atomically, so an interrupted run leaves the files of its last finished
epoch, never a half-written one.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defusal.errors import DefusalError
from defusal.io import load_torch, save_torch, write_json, write_text

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
GRAD_NORMS = "grad_norms.csv"
RESULT = "result.json"

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ("format", "epoch", "model", "optimizer", "rng", "history", "config")

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_metric",
    "valid_loss",
    "valid_metric",
    "test_loss",
    "test_metric",
    "seconds",
    "steps",
    "grad_norm_total",
    "grad_norm_clipped",
)
STEP_COLUMNS = ("epoch", "step", "batch", "loss", "grad_norm_total", "grad_norm_clipped")


def grad_norm_column(group: str) -> str:
    """Return the column name of the gradient norm of one parameter group."""
    return f"grad_norm_{group}"


def rng_states() -> dict[str, Any]:
    """Return the states of the torch, Python and NumPy random generators."""
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore generator states returned by :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> None:
    """Seed the torch, Python and NumPy generators with ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` atomically after checking that its model has no NaN or Inf.

    Raises:
        ValueError: when a model tensor is not finite; the caller keeps the previous file.
    """
    for name, tensor in checkpoint["model"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"model tensor {name} is not finite")
    save_torch(path, checkpoint)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        DefusalError: when the file is missing, unreadable or not a training checkpoint.
    """
    if not path.is_file():
        raise DefusalError(
            f"cannot resume: checkpoint {path} not found; train without resume to start a new run"
        )
    checkpoint = load_torch(path)
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in CHECKPOINT_KEYS):
        raise DefusalError(f"{path} is not a training checkpoint; delete it or pick another folder")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise DefusalError(
            f"checkpoint {path} has format {checkpoint['format']!r}, expected {CHECKPOINT_FORMAT}"
        )
    return checkpoint


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV with a header atomically; a missing value is an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _csv_value(row.get(column)) for column in columns})
    write_text(path, buffer.getvalue())


def read_step_rows(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Read the rows of ``grad_norms.csv`` up to ``last_epoch``, for a resumed run.

    Rows of later epochs belong to an epoch that was interrupted and is trained again.
    """
    if not path.is_file():
        if last_epoch > 0:
            logger.warning(
                "%s not found; the per-step rows of epochs 1-%d are lost", path, last_epoch
            )
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {key: _parse_number(value) for key, value in row.items()}
            if parsed.get("epoch") is not None and parsed["epoch"] <= last_epoch:
                rows.append(parsed)
    return rows


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write the result as JSON atomically, with non-finite numbers as ``null``."""
    write_json(path, finite_or_none(result))


def finite_or_none(value: Any) -> Any:
    """Return ``value`` with every NaN or infinite float replaced by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def _parse_number(text: str) -> int | float | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)
