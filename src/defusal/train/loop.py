"""The training loop: epochs of optimizer steps, evaluation, records and checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from defusal.errors import DefusalError
from defusal.optim import build_optimizer as build_named_optimizer
from defusal.train import records
from defusal.train.config import TrainConfig
from defusal.train.evaluate import (
    CLASSIFICATION,
    LANGUAGE_MODEL,
    batch_loss,
    carried_states,
    check_kind,
    evaluate,
    higher_is_better,
    metric_name,
    perplexity,
    run_model,
)
from defusal.train.gradients import clip_gradients, group_norms, parameter_groups

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        task: name of the task.
        metric: ``"accuracy"`` or ``"perplexity"``.
        history: one row per finished epoch, with the columns of ``history.csv``.
        best_epoch: epoch with the best validation metric, the highest accuracy or the lowest
            perplexity, and the earliest one on ties. ``None`` when no epoch has a finite one.
        best_valid_metric: validation metric of ``best_epoch``.
        best_test_metric: test metric of ``best_epoch``.
        diverged: whether a non-finite loss, gradient or weight stopped training.
        diverged_at: ``{"epoch", "step", "reason"}`` of the divergence, else ``None``.
        out_dir: folder with the checkpoint, the CSV files and ``result.json``.
        config: settings of the run.
    """

    task: str
    metric: str
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_valid_metric: float | None
    best_test_metric: float | None
    diverged: bool
    diverged_at: dict[str, Any] | None
    out_dir: Path
    config: TrainConfig

    @property
    def epochs_completed(self) -> int:
        """Number of finished epochs."""
        return len(self.history)

    @property
    def final(self) -> dict[str, Any]:
        """The last history row, empty before the first epoch."""
        return dict(self.history[-1]) if self.history else {}

    def to_dict(self) -> dict[str, Any]:
        """Return the content of ``result.json``."""
        return {
            "task": self.task,
            "metric": self.metric,
            "epochs_completed": self.epochs_completed,
            "final": self.final,
            "best": {
                "epoch": self.best_epoch,
                "valid_metric": self.best_valid_metric,
                "test_metric": self.best_test_metric,
            },
            "diverged": self.diverged,
            "diverged_at": self.diverged_at,
            "config": self.config.to_dict(),
        }


@dataclass
class _RunState:
    """State restored from a checkpoint: the finished epochs and their records."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    step_rows: list[dict[str, Any]] = field(default_factory=list)
    diverged_at: dict[str, Any] | None = None


@dataclass
class _EpochStats:
    """Running sums over the training steps of one epoch."""

    loss_sum: float = 0.0
    count: int = 0
    correct: int = 0
    steps: int = 0
    raw_norm_sum: float = 0.0
    clipped_norm_sum: float = 0.0
    group_norm_sums: Tensor | None = None
    diverged_reason: str | None = None


def train(
    model: nn.Module,
    task: Any,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` with cross-entropy and write the run's files to ``out_dir``.

    Every epoch runs the training batches, then evaluates on the validation and test splits
    (see :func:`~defusal.train.evaluate.evaluate`). Classification batches are shuffled by a
    ``torch.Generator`` seeded from ``(config.seed, epoch)``. A language model gets its batches
    in stream order and carries its states, detached, from one training batch to the next. Its
    states restart at every epoch. After every epoch the function writes these files, each
    atomically:

    - ``checkpoint.pt``: model, optimizer, epoch, generator states (torch, Python, NumPy),
      history and config. It is not updated when a model weight is NaN or infinite.
    - ``history.csv``: one row per epoch with the training loss and metric (running means over
      the epoch), the validation and test loss and metric, seconds and steps. It also contains
      the epoch means of the gradient norms: the global norm before and after clipping and the
      norm of every layer before clipping (see :func:`~defusal.train.gradients.parameter_groups`).
    - ``grad_norms.csv``: the loss and the same norms at every optimizer step.
    - ``result.json``: :meth:`TrainResult.to_dict`.

    A NaN or infinite loss or gradient norm stops the epoch before the optimizer step, logs a
    warning and marks the run diverged. The epoch is still evaluated and recorded, and no later
    epoch runs.

    On a CPU, the same seed, initial weights and config give the same weights and metrics, and
    a run resumed from the checkpoint of an interrupted one ends exactly as the uninterrupted
    run would.

    Args:
        model: a network returning logits ``(batch, classes)``, per-step logits
            ``(batch, time, classes)`` or ``(batch, time, vocab)``, or ``(outputs, states)``.
            It is moved to ``config.device`` and trained in place.
        task: an object with ``name``, ``kind`` (``"classification"`` or ``"language_model"``),
            ``batches(split, batch_size, *, shuffle, generator=None, limit=None)`` and
            ``num_examples(split)``.
        config: training settings.
        out_dir: folder for the files, created when missing.
        resume: continue from ``out_dir/checkpoint.pt``, whose config may differ from
            ``config`` only in ``epochs``. Without it a new run starts and overwrites the files.
        progress: show a tqdm progress bar over the batches of each epoch.
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after the files of an epoch are
            written. An exception it raises stops training and leaves those files in place.

    Returns:
        The history, the best-validation epoch and its metrics, and the divergence flag.

    Raises:
        DefusalError: for an unknown task kind or optimizer. With ``resume``, also for a
            missing or corrupt checkpoint, or one written for another config, task or model.
    """
    check_kind(task.kind)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.to(config.device)
    optimizer = build_optimizer(model, config)
    groups = parameter_groups(model)

    with _deterministic_algorithms(config.deterministic):
        if resume:
            run = _restore(folder, model, optimizer, task, config)
        else:
            records.seed_everything(config.seed)
            run = _RunState()

        while run.epoch < config.epochs and run.diverged_at is None:
            epoch = run.epoch + 1
            row = _run_epoch(model, optimizer, groups, task, config, run, epoch, progress)
            _save(folder, model, optimizer, task, config, run, groups)
            logger.info(_describe(epoch, config.epochs, row, metric_name(task.kind)))
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(row))

    result = _result(task, config, run, folder)
    records.write_result(folder / records.RESULT, result.to_dict())
    return result


def evaluate_splits(model: nn.Module, task: Any, config: TrainConfig) -> dict[str, float]:
    """Return the validation and test loss and metric, keyed like the history columns."""
    values = {}
    for split in ("valid", "test"):
        evaluation = evaluate(
            model,
            task,
            split,
            batch_size=config.eval_batch_size or config.batch_size,
            limit=config.eval_limit,
            readout=config.readout,
            device=config.device,
        )
        values[f"{split}_loss"] = evaluation.loss
        values[f"{split}_metric"] = evaluation.metric
    return values


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Build the optimizer named by ``config`` over the trainable parameters of ``model``.

    Raises:
        DefusalError: for a model without trainable parameters or an unknown optimizer name.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise DefusalError("the model has no trainable parameters; set requires_grad on some")
    return build_named_optimizer(
        config.optimizer, parameters, config.lr, config.weight_decay, lookahead=config.lookahead
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """Return the seed of the shuffling generator of one epoch, a function of both numbers."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


def _run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    groups: dict[str, list[nn.Parameter]],
    task: Any,
    config: TrainConfig,
    run: _RunState,
    epoch: int,
    progress: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    stats = _train_steps(model, optimizer, groups, task, config, run, epoch, progress)
    if stats.diverged_reason is not None:
        run.diverged_at = {"epoch": epoch, "step": run.step + 1, "reason": stats.diverged_reason}
        logger.warning(
            "training diverged at epoch %d, step %d: %s. Training stops after this epoch.",
            epoch,
            run.step + 1,
            stats.diverged_reason,
        )

    row: dict[str, Any] = {"epoch": epoch}
    row.update(_train_summary(stats, task.kind))
    row.update(evaluate_splits(model, task, config))
    row["seconds"] = time.perf_counter() - started
    row["steps"] = stats.steps
    row.update(_norm_means(stats, groups))
    run.history.append(row)
    run.epoch = epoch
    return row


def _train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    groups: dict[str, list[nn.Parameter]],
    task: Any,
    config: TrainConfig,
    run: _RunState,
    epoch: int,
    progress: bool,
) -> _EpochStats:
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    shuffle = task.kind == CLASSIFICATION
    batches = task.batches(
        "train",
        config.batch_size,
        shuffle=shuffle,
        generator=generator,
        limit=config.max_batches_per_epoch,
    )
    parameters = [p for parameters in groups.values() for p in parameters]
    stats = _EpochStats(group_norm_sums=torch.zeros(len(groups), dtype=torch.float64))
    states = None
    model.train()

    bar = tqdm(
        batches,
        total=_batch_count(task, config),
        desc=f"epoch {epoch}/{config.epochs}",
        disable=not progress,
        leave=False,
        unit="batch",
    )
    try:
        for batch_index, (x, target) in enumerate(bar):
            for x_window, target_window in _windows(x, target, task.kind, config.bptt):
                x_window = x_window.to(config.device)
                target_window = target_window.to(config.device)
                # Only a language model carries states from batch to batch.
                if task.kind == LANGUAGE_MODEL:
                    states = carried_states(states, x_window.shape[0])
                else:
                    states = None
                y, states = run_model(model, x_window, states)
                summed, correct, count = batch_loss(task.kind, y, target_window, config.readout)
                loss = summed / count
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    stats.diverged_reason = f"training loss is {loss_value}"
                    return stats

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms = group_norms(groups)
                raw_norm, clipped_norm = clip_gradients(parameters, config.clip_norm)
                if not math.isfinite(raw_norm):
                    stats.diverged_reason = f"gradient norm is {raw_norm}"
                    return stats
                optimizer.step()

                run.step += 1
                stats.steps += 1
                stats.loss_sum += loss_value * count
                stats.count += count
                stats.correct += int(correct)
                stats.raw_norm_sum += raw_norm
                stats.clipped_norm_sum += clipped_norm
                stats.group_norm_sums += norms.double()
                run.step_rows.append(
                    _step_row(epoch, run.step, batch_index + 1, loss_value, raw_norm, clipped_norm)
                    | _group_columns(groups, norms.tolist())
                )
                bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
    finally:
        bar.close()
    return stats


def _windows(
    x: Tensor, target: Tensor, kind: str, bptt: int | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Split a language-model batch along time into windows of ``bptt`` steps."""
    if kind != LANGUAGE_MODEL or bptt is None or x.shape[1] <= bptt:
        yield x, target
        return
    for start in range(0, x.shape[1], bptt):
        yield x[:, start : start + bptt], target[:, start : start + bptt]


def _batch_count(task: Any, config: TrainConfig) -> int | None:
    """Return the number of training batches for the progress bar, ``None`` when unknown."""
    if task.kind != CLASSIFICATION:
        return config.max_batches_per_epoch
    count = math.ceil(task.num_examples("train") / config.batch_size)
    if config.max_batches_per_epoch is not None:
        count = min(count, config.max_batches_per_epoch)
    return count


def _step_row(
    epoch: int, step: int, batch: int, loss: float, raw_norm: float, clipped_norm: float
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "step": step,
        "batch": batch,
        "loss": loss,
        "grad_norm_total": raw_norm,
        "grad_norm_clipped": clipped_norm,
    }


def _group_columns(groups: dict[str, list[nn.Parameter]], norms: list[float]) -> dict[str, float]:
    return {records.grad_norm_column(name): norm for name, norm in zip(groups, norms, strict=True)}


def _train_summary(stats: _EpochStats, kind: str) -> dict[str, float]:
    if stats.count == 0:
        return {"train_loss": math.nan, "train_metric": math.nan}
    loss = stats.loss_sum / stats.count
    metric = stats.correct / stats.count if kind == CLASSIFICATION else perplexity(loss)
    return {"train_loss": loss, "train_metric": metric}


def _norm_means(stats: _EpochStats, groups: dict[str, list[nn.Parameter]]) -> dict[str, float]:
    if stats.steps == 0:
        names = ["grad_norm_total", "grad_norm_clipped"]
        names += [records.grad_norm_column(name) for name in groups]
        return dict.fromkeys(names, math.nan)
    means = {
        "grad_norm_total": stats.raw_norm_sum / stats.steps,
        "grad_norm_clipped": stats.clipped_norm_sum / stats.steps,
    }
    group_means = (stats.group_norm_sums / stats.steps).tolist()
    return means | _group_columns(groups, group_means)


def _save(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: Any,
    config: TrainConfig,
    run: _RunState,
    groups: dict[str, list[nn.Parameter]],
) -> None:
    checkpoint = {
        "format": records.CHECKPOINT_FORMAT,
        "epoch": run.epoch,
        "step": run.step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": records.rng_states(),
        "history": run.history,
        "diverged_at": run.diverged_at,
        "config": config.to_dict(),
        "task": task.name,
    }
    try:
        records.save_checkpoint(folder / records.CHECKPOINT, checkpoint)
    except ValueError as error:
        if run.diverged_at is None:
            run.diverged_at = {"epoch": run.epoch, "step": run.step, "reason": str(error)}
        logger.warning(
            "epoch %d: %s, so the checkpoint is not updated and training stops",
            run.epoch,
            error,
        )

    columns = list(records.HISTORY_COLUMNS)
    columns += [records.grad_norm_column(name) for name in groups]
    records.write_csv(folder / records.HISTORY, columns, run.history)
    step_columns = list(records.STEP_COLUMNS)
    step_columns += [records.grad_norm_column(name) for name in groups]
    records.write_csv(folder / records.GRAD_NORMS, step_columns, run.step_rows)
    records.write_result(folder / records.RESULT, _result(task, config, run, folder).to_dict())


def _restore(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: Any,
    config: TrainConfig,
) -> _RunState:
    path = folder / records.CHECKPOINT
    checkpoint = records.load_checkpoint(path)
    saved_config = TrainConfig.from_dict(checkpoint["config"])
    changed = config.differences(saved_config)
    if changed:
        details = ", ".join(
            f"{name}={getattr(saved_config, name)!r} (now {getattr(config, name)!r})"
            for name in changed
        )
        raise DefusalError(
            f"cannot resume from {path}: it was written with {details}; "
            f"use the same settings or start a new run"
        )
    if checkpoint.get("task") != task.name:
        raise DefusalError(
            f"cannot resume from {path}: it was written for task {checkpoint.get('task')!r}, "
            f"not {task.name!r}"
        )
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        detail = " ".join(str(error).split())
        if len(detail) > 300:
            detail = detail[:297] + "..."
        raise DefusalError(
            f"cannot resume from {path}: it does not fit this model or optimizer ({detail})"
        ) from None
    records.set_rng_states(checkpoint["rng"])

    run = _RunState(
        epoch=checkpoint["epoch"],
        step=checkpoint.get("step", 0),
        history=list(checkpoint["history"]),
        diverged_at=checkpoint.get("diverged_at"),
    )
    run.step_rows = records.read_step_rows(folder / records.GRAD_NORMS, run.epoch)
    logger.info("resuming %s after epoch %d of %d", path, run.epoch, config.epochs)
    return run


def _result(task: Any, config: TrainConfig, run: _RunState, folder: Path) -> TrainResult:
    best = _best_row(run.history, higher_is_better(task.kind))
    return TrainResult(
        task=task.name,
        metric=metric_name(task.kind),
        history=[dict(row) for row in run.history],
        best_epoch=None if best is None else best["epoch"],
        best_valid_metric=None if best is None else best["valid_metric"],
        best_test_metric=None if best is None else best["test_metric"],
        diverged=run.diverged_at is not None,
        diverged_at=run.diverged_at,
        out_dir=folder,
        config=config,
    )


def _best_row(history: list[dict[str, Any]], higher: bool) -> dict[str, Any] | None:
    best = None
    for row in history:
        value = row["valid_metric"]
        if not math.isfinite(value):
            continue
        if best is None:
            best = row
        elif (value > best["valid_metric"]) if higher else (value < best["valid_metric"]):
            best = row
    return best


def _describe(epoch: int, epochs: int, row: dict[str, Any], metric: str) -> str:
    return (
        f"epoch {epoch}/{epochs}: train loss {row['train_loss']:.4f} {metric} "
        f"{row['train_metric']:.4f}, valid {row['valid_loss']:.4f} / {row['valid_metric']:.4f}, "
        f"test {row['test_loss']:.4f} / {row['test_metric']:.4f}, {row['seconds']:.1f} s"
    )


@contextmanager
def _deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Turn on deterministic algorithms (warning where none exists) and restore the setting."""
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)
