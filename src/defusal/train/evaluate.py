"""Forward passes, losses and the evaluation metrics: accuracy and perplexity.

Classification uses the cross-entropy of the logits ``(batch, classes)`` and the accuracy, the
fraction of examples whose largest logit is the label. A language model uses the mean token
cross-entropy ``CE = -(1/N) sum_i log p(w_i | w_<i)`` over all ``N`` predicted tokens and the
perplexity ``exp(CE)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defusal.errors import DefusalError

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"
TASK_KINDS = (CLASSIFICATION, LANGUAGE_MODEL)


@dataclass(frozen=True)
class Evaluation:
    """Loss and metric of a model on one split.

    Attributes:
        loss: mean cross-entropy per example (classification) or per token (language model).
        metric: accuracy in [0, 1] or perplexity ``exp(loss)``.
        count: number of examples or tokens evaluated.
    """

    loss: float
    metric: float
    count: int


def metric_name(kind: str) -> str:
    """Return ``"accuracy"`` for classification and ``"perplexity"`` for a language model."""
    check_kind(kind)
    return "accuracy" if kind == CLASSIFICATION else "perplexity"


def higher_is_better(kind: str) -> bool:
    """Return whether a larger metric is better (accuracy) or worse (perplexity)."""
    return metric_name(kind) == "accuracy"


def check_kind(kind: str) -> None:
    """Raise :class:`DefusalError` unless ``kind`` is a task kind training supports."""
    if kind not in TASK_KINDS:
        raise DefusalError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")


def perplexity(mean_cross_entropy: float) -> float:
    """Return ``exp(mean_cross_entropy)``, ``inf`` where it overflows."""
    try:
        return math.exp(mean_cross_entropy)
    except OverflowError:
        return math.inf


def run_model(model: nn.Module, x: Tensor, states: Any = None) -> tuple[Tensor, Any]:
    """Run ``model`` on ``x`` and return ``(output, states)``.

    A recurrent model returns ``(y, states)``; a feed-forward model returns logits only, and its
    states are ``None``. ``states`` is passed on only when it is not ``None``.
    """
    output = model(x) if states is None else model(x, states)
    if isinstance(output, tuple):
        if len(output) != 2:
            raise DefusalError(
                f"model returned a tuple of {len(output)} items; expected (outputs, states)"
            )
        return output[0], output[1]
    return output, None


def classification_logits(y: Tensor, readout: str) -> Tensor:
    """Turn model outputs into class logits ``(batch, classes)``.

    Args:
        y: ``(batch, classes)`` logits, or ``(batch, time, classes)`` per-step logits.
        readout: ``"mean"`` averages per-step logits over time; ``"last"`` takes the last step.
    """
    if y.dim() == 2:
        return y
    if y.dim() != 3:
        raise DefusalError(
            f"classifier output must be (batch, classes) or (batch, time, classes), "
            f"got {tuple(y.shape)}"
        )
    if readout == "mean":
        return y.mean(dim=1)
    if readout == "last":
        return y[:, -1]
    raise DefusalError(f"readout must be 'mean' or 'last', got {readout!r}")


def batch_loss(kind: str, y: Tensor, target: Tensor, readout: str) -> tuple[Tensor, Tensor, int]:
    """Return the summed cross-entropy, the number of correct predictions and the count.

    Args:
        kind: task kind.
        y: model output, see :func:`classification_logits`, or ``(batch, time, vocab)``
            for a language model.
        target: class labels ``(batch,)`` or next tokens ``(batch, time)``.
        readout: readout of a sequence classifier.

    Returns:
        ``(summed_loss, correct, count)``: the summed loss keeps its graph, ``correct`` is a
        0-dim tensor (0 for a language model), ``count`` the examples or tokens.
    """
    if kind == CLASSIFICATION:
        logits = classification_logits(y, readout)
        labels = target.reshape(-1)
    else:
        logits = y.reshape(-1, y.shape[-1])
        labels = target.reshape(-1)
    if logits.shape[0] != labels.shape[0]:
        raise DefusalError(
            f"model output {tuple(y.shape)} does not match targets {tuple(target.shape)}"
        )
    summed = F.cross_entropy(logits.float(), labels, reduction="sum")
    if kind == CLASSIFICATION:
        correct = (logits.argmax(dim=-1) == labels).sum()
    else:
        correct = torch.zeros((), dtype=torch.long)
    return summed, correct, labels.shape[0]


def detach_states(states: Any) -> Any:
    """Return ``states`` (a tensor, or lists and tuples of them) cut from the graph."""
    if isinstance(states, Tensor):
        return states.detach()
    if isinstance(states, list | tuple):
        return type(states)(detach_states(state) for state in states)
    return states


def states_batch_size(states: Any) -> int | None:
    """Return the batch size of the first tensor in ``states``, ``None`` when there is none."""
    if isinstance(states, Tensor):
        return states.shape[0] if states.dim() > 0 else None
    if isinstance(states, list | tuple):
        for state in states:
            size = states_batch_size(state)
            if size is not None:
                return size
    return None


def carried_states(states: Any, batch: int) -> Any:
    """Return ``states`` detached for the next batch, or ``None`` when the batch size changed."""
    if states is None or states_batch_size(states) != batch:
        return None
    return detach_states(states)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Any,
    split: str,
    *,
    batch_size: int,
    limit: int | None = None,
    readout: str = "mean",
    device: str | torch.device = "cpu",
) -> Evaluation:
    """Evaluate ``model`` on one split of ``task`` in evaluation mode.

    For a language model the states are carried from one batch to the next, since the task
    yields batches in stream order; they start from the model's initial states.

    Args:
        model: a network returning logits or ``(outputs, states)``.
        task: an object with ``kind`` and ``batches(split, batch_size, *, shuffle, limit)``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        batch_size: examples or stream columns per batch.
        limit: evaluate at most this many batches (``limit`` of ``task.batches``); ``None``
            for the whole split.
        readout: readout of a sequence classifier (``"mean"`` or ``"last"``).
        device: device the model is on.

    Returns:
        The mean loss, the metric (accuracy or perplexity) and the count.

    Raises:
        DefusalError: for an unknown task kind, an empty split or mismatched shapes.
    """
    check_kind(task.kind)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    total_correct = 0
    total_count = 0
    states = None
    try:
        for x, target in task.batches(split, batch_size, shuffle=False, limit=limit):
            x, target = x.to(device), target.to(device)
            if task.kind == LANGUAGE_MODEL:
                states = carried_states(states, x.shape[0])
            else:
                states = None
            y, states = run_model(model, x, states)
            summed, correct, count = batch_loss(task.kind, y, target, readout)
            total_loss += summed.double().cpu()
            total_correct += int(correct)
            total_count += count
    finally:
        model.train(was_training)
    if total_count == 0:
        raise DefusalError(f"split {split!r} of task {task.name!r} yielded no batches")
    loss = float(total_loss) / total_count
    if task.kind == CLASSIFICATION:
        return Evaluation(loss, total_correct / total_count, total_count)
    return Evaluation(loss, perplexity(loss), total_count)
