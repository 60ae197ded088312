"""Training settings: one dataclass, checked on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from defusal.errors import DefusalError

READOUTS = ("mean", "last")

# Settings a resumed run may change: more epochs extend the run without changing earlier ones.
RESUMABLE_CHANGES = ("epochs",)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes:
        epochs: passes over the training split (each possibly truncated by
            ``max_batches_per_epoch``).
        batch_size: examples (classification) or stream columns (language model) per step.
        lr: learning rate.
        weight_decay: weight decay passed to the optimizer (decoupled for AdamW and AdaBelief).
        optimizer: optimizer name: ``"adamw"``, ``"adam"``, ``"adabelief"`` or ``"sgd"``.
        lookahead: wrap the optimizer in Lookahead.
        clip_norm: maximum global L2 norm of the gradient, applied with
            ``torch.nn.utils.clip_grad_norm_`` before every step; ``None`` turns clipping off.
        seed: non-negative seed of the torch, Python and NumPy generators and of the shuffling.
        max_batches_per_epoch: stop each epoch after this many training batches, ``None`` for all.
        eval_limit: evaluate at most this many batches of the validation and test splits
            (passed as ``limit`` to ``Task.batches``), ``None`` for the whole split.
        eval_batch_size: batch size of evaluation, ``None`` for ``batch_size``.
        readout: how a sequence classifier turns per-step logits ``(batch, time, classes)`` into
            ``(batch, classes)``. ``"mean"`` averages the logits over time and ``"last"`` takes
            the last step. Logits ``(batch, classes)`` of other models are used as they are.
        bptt: for a language model, split every training batch along time into windows of
            this many steps and take one optimizer step per window. The states are carried
            and detached between windows (truncated backpropagation through time). ``None``
            uses the task's batches as they come.
        device: torch device to train on.
        deterministic: call ``torch.use_deterministic_algorithms(True, warn_only=True)`` during
            training, so a CPU run repeats exactly. NOTE: exact repetition is tested on CPU
            only. On CUDA it also needs ``CUBLAS_WORKSPACE_CONFIG`` set before the process
            starts, which this setting does not do.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    lookahead: bool = False
    clip_norm: float | None = None
    seed: int = 0
    max_batches_per_epoch: int | None = None
    eval_limit: int | None = None
    eval_batch_size: int | None = None
    readout: str = "mean"
    bptt: int | None = None
    device: str = "cpu"
    deterministic: bool = True

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        for name in ("max_batches_per_epoch", "eval_limit", "eval_batch_size", "bptt"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, minimum=1)
        _check_float("lr", self.lr, positive=True)
        _check_float("weight_decay", self.weight_decay, positive=False)
        if self.clip_norm is not None:
            _check_float("clip_norm", self.clip_norm, positive=True)
        if not isinstance(self.optimizer, str) or not self.optimizer:
            raise DefusalError(f"optimizer must be a name such as 'adamw', got {self.optimizer!r}")
        if self.readout not in READOUTS:
            raise DefusalError(f"readout must be one of {READOUTS}, got {self.readout!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output, rejecting unknown keys.

        Raises:
            DefusalError: for an unknown key or an invalid value.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DefusalError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def differences(self, other: TrainConfig) -> list[str]:
        """Return the names of the settings that differ and that a resumed run may not change."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            name
            for name in mine
            if name not in RESUMABLE_CHANGES and mine[name] != theirs.get(name)
        ]


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DefusalError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DefusalError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise DefusalError(f"{name} must be positive, got {value!r}")
    if not positive and value < 0:
        raise DefusalError(f"{name} must be >= 0, got {value!r}")
