"""Save and load pre-trained models with their build configuration and LSC report."""

from __future__ import annotations

import os

from torch import nn

from defusal.errors import DefusalError
from defusal.io import load_torch, save_torch

FORMAT = "defusal-lsc-checkpoint-1"


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    config: dict | None = None,
    report=None,
) -> None:
    """Write ``model`` to ``path`` atomically.

    Args:
        path: destination file.
        model: the pre-trained model.
        config: keyword arguments of :func:`defusal.nets.build.build_network` that rebuild the
            architecture; without it the pickled module itself is stored.
        report: optional :class:`defusal.lsc.report.LSCReport`, stored as a dict.
    """
    payload = {
        "format": FORMAT,
        "config": config,
        "state_dict": model.state_dict(),
        "module": None if config is not None else model,
        "report": None if report is None else report.to_dict(),
    }
    save_torch(path, payload)


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Return the model stored by :func:`save_checkpoint`, with its exact weights.

    Raises:
        DefusalError: if the file is missing, corrupt or not an LSC checkpoint.
    """
    payload = load_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DefusalError(
            f"{path} is not a defusal LSC checkpoint; pass a file that `defusal lsc pretrain` wrote"
        )
    if payload["config"] is not None:
        from defusal.nets.build import build_network

        model = build_network(**payload["config"])
    else:
        model = payload["module"]
    model.load_state_dict(payload["state_dict"])
    return model


def checkpoint_report(path: str | os.PathLike) -> dict | None:
    """Return the report dict stored in a checkpoint, or ``None``."""
    payload = load_torch(path)
    return payload.get("report") if isinstance(payload, dict) else None
