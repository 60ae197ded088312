"""Tests of the training loop on tiny models and synthetic tasks, plus one real-data slice."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax, logsumexp
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from defusal.errors import DefusalError
from defusal.nets.base import Cell, RecurrentStack
from defusal.train import (
    TrainConfig,
    build_optimizer,
    epoch_seed,
    evaluate,
    layer_name,
    parameter_groups,
    train,
)
from defusal.train.records import save_checkpoint

# ---------------------------------------------------------------------------------------------
# Synthetic tasks with the interface of defusal.tasks.Task


@dataclass
class FakeClassificationTask:
    """Classification splits held in memory; ``limit`` counts batches, as in defusal.tasks."""

    inputs: dict[str, Tensor]
    targets: dict[str, Tensor]
    name: str = "fake_classification"
    kind: str = "classification"
    interrupt_at: tuple[int, int] | None = None
    train_passes: int = 0

    @property
    def input_size(self) -> int:
        return self.inputs["train"].shape[-1]

    @property
    def output_size(self) -> int:
        return int(self.targets["train"].max()) + 1

    @property
    def sequence_length(self) -> int:
        return self.inputs["train"].shape[1] if self.inputs["train"].dim() == 3 else 0

    def num_examples(self, split: str) -> int:
        return self.targets[split].shape[0]

    def batches(self, split, batch_size, *, shuffle, generator=None, limit=None):
        x, y = self.inputs[split], self.targets[split]
        count = y.shape[0]
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        if split == "train":
            self.train_passes += 1
        for number, start in enumerate(range(0, count, batch_size)):
            if limit is not None and number >= limit:
                return
            if split == "train" and self.interrupt_at == (self.train_passes, number):
                raise KeyboardInterrupt
            index = order[start : start + batch_size]
            yield x[index], y[index]


@dataclass
class FakeLanguageModelTask:
    """Token streams cut into ``batch_size`` rows and served in stream order, ``bptt`` columns."""

    streams: dict[str, Tensor]
    vocab_size: int
    sequence_length: int = 6
    name: str = "fake_lm"
    kind: str = "language_model"

    @property
    def input_size(self) -> int:
        return self.vocab_size

    @property
    def output_size(self) -> int:
        return self.vocab_size

    def num_examples(self, split: str) -> int:
        return self.streams[split].shape[0]

    def batches(self, split, batch_size, *, shuffle, generator=None, limit=None):
        stream = self.streams[split]
        length = (stream.shape[0] - 1) // batch_size
        x = stream[: batch_size * length].view(batch_size, length)
        y = stream[1 : batch_size * length + 1].view(batch_size, length)
        for number, start in enumerate(range(0, length, self.sequence_length)):
            if limit is not None and number >= limit:
                return
            stop = start + self.sequence_length
            yield x[:, start:stop], y[:, start:stop]


def sequence_task(examples: int = 48, time: int = 5, features: int = 3) -> FakeClassificationTask:
    """Label = sign of the feature sum at the first step, a rule a tiny RNN learns quickly."""
    generator = torch.Generator().manual_seed(1234)
    inputs, targets = {}, {}
    for split, count in (("train", examples), ("valid", 16), ("test", 16)):
        x = torch.randn(count, time, features, generator=generator)
        inputs[split] = x
        targets[split] = (x[:, 0].sum(dim=-1) > 0).long()
    return FakeClassificationTask(inputs, targets)


def image_task(examples: int = 40, features: int = 6) -> FakeClassificationTask:
    generator = torch.Generator().manual_seed(99)
    inputs, targets = {}, {}
    for split, count in (("train", examples), ("valid", 12), ("test", 12)):
        x = torch.randn(count, features, generator=generator)
        inputs[split] = x
        targets[split] = x[:, :3].argmax(dim=-1)
    return FakeClassificationTask(inputs, targets, name="fake_images")


def language_task(vocab_size: int = 7, sequence_length: int = 6) -> FakeLanguageModelTask:
    generator = torch.Generator().manual_seed(5)
    streams = {
        split: torch.randint(vocab_size, (length,), generator=generator)
        for split, length in (("train", 97), ("valid", 49), ("test", 49))
    }
    return FakeLanguageModelTask(streams, vocab_size, sequence_length)


# ---------------------------------------------------------------------------------------------
# Tiny models


class ElmanCell(Cell):
    """``s' = tanh(W x + U s + b)``, output ``s'``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, hidden_size)
        self.input_weight = nn.Linear(input_size, hidden_size)
        self.recurrent_weight = nn.Linear(hidden_size, hidden_size, bias=False)

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        return torch.tanh(self.input_weight(x_t) + self.recurrent_weight(state))

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        return new_state


def tiny_rnn(seed: int, features: int = 3, classes: int = 2, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    cells = [ElmanCell(features, 8), ElmanCell(8, 8)]
    readout = nn.Sequential(nn.Dropout(dropout), nn.Linear(8, classes))
    return RecurrentStack(cells, readout=readout)


def tiny_language_model(seed: int, vocab_size: int = 7) -> nn.Module:
    torch.manual_seed(seed)
    return RecurrentStack(
        [ElmanCell(5, 6)], encoder=nn.Embedding(vocab_size, 5), readout=nn.Linear(6, vocab_size)
    )


class UniformLanguageModel(nn.Module):
    """Returns all-zero logits, the uniform distribution; its one parameter gets zero gradient."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, states=None):
        logits = torch.zeros(*x.shape, self.vocab_size) * self.scale
        return logits, states


class IdentityClassifier(nn.Module):
    """Returns its input as logits, plus a parameter so that an optimizer can be built."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x


class NaNAfter(nn.Module):
    """A linear classifier whose output turns NaN from the ``bad_call``-th training call on."""

    def __init__(self, features: int, classes: int, bad_call: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(features, classes)
        self.bad_call = bad_call
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        logits = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.bad_call:
                return logits * math.nan
        return logits


def quick_config(**changes) -> TrainConfig:
    settings = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "seed": 3}
    settings.update(changes)
    return TrainConfig(**settings)


def metric_columns(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name


class Interrupt(Exception):
    """Stands in for a killed process at the end of an epoch."""


def interrupt_after(stop_epoch: int):
    def callback(epoch: int, row: dict) -> None:
        if epoch == stop_epoch:
            raise Interrupt

    return callback


# ---------------------------------------------------------------------------------------------
# Resume and determinism


def test_resume_after_epoch_matches_straight_run(tmp_path):
    config = quick_config(epochs=3)
    task = sequence_task()
    straight_model = tiny_rnn(seed=0, dropout=0.3)
    straight = train(straight_model, task, config, tmp_path / "straight", progress=False)

    resumed_model = tiny_rnn(seed=0, dropout=0.3)
    with pytest.raises(Interrupt):
        train(
            resumed_model,
            task,
            config,
            tmp_path / "resumed",
            progress=False,
            on_epoch_end=interrupt_after(1),
        )
    fresh_model = tiny_rnn(seed=77, dropout=0.3)
    torch.manual_seed(12345)
    resumed = train(fresh_model, task, config, tmp_path / "resumed", resume=True, progress=False)

    assert_same_weights(straight_model, fresh_model)
    assert metric_columns(resumed.history) == metric_columns(straight.history)
    assert resumed.best_epoch == straight.best_epoch
    straight_steps = pd.read_csv(tmp_path / "straight" / "grad_norms.csv")
    resumed_steps = pd.read_csv(tmp_path / "resumed" / "grad_norms.csv")
    pd.testing.assert_frame_equal(straight_steps, resumed_steps)


def test_resume_mid_epoch_matches_straight_run(tmp_path):
    config = quick_config(epochs=3)
    straight_model = tiny_rnn(seed=0, dropout=0.3)
    straight = train(straight_model, sequence_task(), config, tmp_path / "straight", progress=False)

    task = sequence_task()
    task.interrupt_at = (2, 3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_rnn(seed=0, dropout=0.3), task, config, tmp_path / "resumed", progress=False)
    rows_after_interrupt = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert list(rows_after_interrupt["epoch"]) == [1]

    task.interrupt_at = None
    fresh_model = tiny_rnn(seed=5, dropout=0.3)
    resumed = train(fresh_model, task, config, tmp_path / "resumed", resume=True, progress=False)

    assert_same_weights(straight_model, fresh_model)
    assert metric_columns(resumed.history) == metric_columns(straight.history)
    straight_steps = pd.read_csv(tmp_path / "straight" / "grad_norms.csv")
    resumed_steps = pd.read_csv(tmp_path / "resumed" / "grad_norms.csv")
    pd.testing.assert_frame_equal(straight_steps, resumed_steps)


def test_resume_language_model_matches(tmp_path):
    config = quick_config(epochs=3, batch_size=4, bptt=3)
    task = language_task()
    straight_model = tiny_language_model(seed=1)
    straight = train(straight_model, task, config, tmp_path / "straight", progress=False)

    with pytest.raises(Interrupt):
        train(
            tiny_language_model(seed=1),
            task,
            config,
            tmp_path / "resumed",
            progress=False,
            on_epoch_end=interrupt_after(2),
        )
    fresh_model = tiny_language_model(seed=2)
    resumed = train(fresh_model, task, config, tmp_path / "resumed", resume=True, progress=False)

    assert_same_weights(straight_model, fresh_model)
    assert metric_columns(resumed.history) == metric_columns(straight.history)


def test_resume_adabelief_lookahead_matches(tmp_path):
    # 5 steps per epoch, so the Lookahead counter (every 6 steps) is mid-cycle at the interruption.
    config = quick_config(
        epochs=3, batch_size=10, optimizer="adabelief", lookahead=True, weight_decay=1e-2
    )
    task = sequence_task()
    straight_model = tiny_rnn(seed=0)
    straight = train(straight_model, task, config, tmp_path / "straight", progress=False)

    with pytest.raises(Interrupt):
        train(
            tiny_rnn(seed=0),
            task,
            config,
            tmp_path / "resumed",
            progress=False,
            on_epoch_end=interrupt_after(1),
        )
    fresh_model = tiny_rnn(seed=8)
    resumed = train(fresh_model, task, config, tmp_path / "resumed", resume=True, progress=False)

    assert_same_weights(straight_model, fresh_model)
    assert metric_columns(resumed.history) == metric_columns(straight.history)


def test_resume_with_more_epochs_extends(tmp_path):
    task = sequence_task()
    straight_model = tiny_rnn(seed=0)
    train(straight_model, task, quick_config(epochs=3), tmp_path / "straight", progress=False)

    train(tiny_rnn(seed=0), task, quick_config(epochs=1), tmp_path / "extended", progress=False)
    extended_model = tiny_rnn(seed=9)
    extended = train(
        extended_model,
        task,
        quick_config(epochs=3),
        tmp_path / "extended",
        resume=True,
        progress=False,
    )

    assert extended.epochs_completed == 3
    assert_same_weights(straight_model, extended_model)


def test_same_seed_repeats_exactly(tmp_path):
    task = sequence_task()
    first_model, second_model = tiny_rnn(seed=0, dropout=0.2), tiny_rnn(seed=0, dropout=0.2)
    first = train(first_model, task, quick_config(), tmp_path / "a", progress=False)
    second = train(second_model, task, quick_config(), tmp_path / "b", progress=False)

    assert_same_weights(first_model, second_model)
    assert metric_columns(first.history) == metric_columns(second.history)


def test_different_seeds_differ(tmp_path):
    task = sequence_task()
    first_model, second_model = tiny_rnn(seed=0), tiny_rnn(seed=0)
    train(first_model, task, quick_config(seed=1), tmp_path / "a", progress=False)
    train(second_model, task, quick_config(seed=2), tmp_path / "b", progress=False)

    first_weights = first_model.cells[0].input_weight.weight
    second_weights = second_model.cells[0].input_weight.weight
    assert not torch.equal(first_weights, second_weights)


def test_deterministic_setting_restored(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    train(tiny_rnn(seed=0), sequence_task(), quick_config(epochs=1), tmp_path, progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before


# ---------------------------------------------------------------------------------------------
# Gradient clipping and gradient norms


def full_batch_gradients(model: nn.Module, task: FakeClassificationTask) -> dict[str, float]:
    """Gradient norm per layer and in total of the mean cross-entropy over the training split."""
    y, _ = model(task.inputs["train"])
    loss = F.cross_entropy(y.mean(dim=1), task.targets["train"])
    model.zero_grad()
    loss.backward()
    squares: dict[str, float] = {}
    for name, parameter in model.named_parameters():
        squares.setdefault(layer_name(name), 0.0)
        squares[layer_name(name)] += float(parameter.grad.double().pow(2).sum())
    norms = {group: math.sqrt(square) for group, square in squares.items()}
    norms["total"] = math.sqrt(sum(squares.values()))
    return norms


@pytest.fixture
def step_norms():
    """Global gradient norm seen by every optimizer step, from a hook outside the loop."""
    seen: list[float] = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        seen.append(math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads)))

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


def test_clipping_bounds_step_norm(tmp_path, step_norms):
    clip_norm = 1e-3
    config = quick_config(epochs=2, clip_norm=clip_norm)
    train(tiny_rnn(seed=0), sequence_task(), config, tmp_path, progress=False)

    steps = pd.read_csv(tmp_path / "grad_norms.csv")
    assert len(step_norms) == len(steps)
    assert max(step_norms) <= clip_norm + 1e-6
    assert (steps["grad_norm_total"] > clip_norm).all()


def test_clipping_off_keeps_norm(tmp_path, step_norms):
    train(tiny_rnn(seed=0), sequence_task(), quick_config(epochs=1), tmp_path, progress=False)

    steps = pd.read_csv(tmp_path / "grad_norms.csv")
    np.testing.assert_allclose(steps["grad_norm_total"], step_norms, rtol=1e-5)
    np.testing.assert_allclose(steps["grad_norm_clipped"], step_norms, rtol=1e-5)


def test_first_step_norms_per_layer(tmp_path):
    task = sequence_task(examples=24)
    expected = full_batch_gradients(tiny_rnn(seed=4), task)
    config = quick_config(epochs=1, batch_size=24, clip_norm=1e-4)
    train(tiny_rnn(seed=4), task, config, tmp_path, progress=False)

    first = pd.read_csv(tmp_path / "grad_norms.csv").iloc[0]
    for group in ("cells.0", "cells.1", "readout.1"):
        assert first[f"grad_norm_{group}"] == pytest.approx(expected[group], rel=1e-5), group
    assert first["grad_norm_total"] == pytest.approx(expected["total"], rel=1e-5)
    assert first["grad_norm_clipped"] == pytest.approx(1e-4, rel=1e-4)


def test_parameter_groups_of_stack():
    model = RecurrentStack(
        [ElmanCell(4, 3), ElmanCell(3, 3)], encoder=nn.Embedding(10, 4), readout=nn.Linear(3, 10)
    )
    assert list(parameter_groups(model)) == ["cells.0", "cells.1", "encoder", "readout"]


def test_parameter_groups_of_sequential():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    assert list(parameter_groups(model)) == ["0", "2"]


# ---------------------------------------------------------------------------------------------
# Metrics


def test_uniform_model_perplexity_is_vocabulary(tmp_path):
    vocab_size = 7
    task = language_task(vocab_size)
    result = train(
        UniformLanguageModel(vocab_size),
        task,
        quick_config(epochs=1, batch_size=4),
        tmp_path,
        progress=False,
    )
    row = result.final
    assert row["valid_metric"] == pytest.approx(vocab_size, rel=1e-6)
    assert row["test_metric"] == pytest.approx(vocab_size, rel=1e-6)
    assert row["train_metric"] == pytest.approx(vocab_size, rel=1e-6)
    assert row["valid_loss"] == pytest.approx(math.log(vocab_size), rel=1e-6)


def test_perplexity_carries_states(tmp_path):
    task = language_task(vocab_size=7, sequence_length=4)
    model = tiny_language_model(seed=3)
    batch_size = 3

    # Reference: one pass over whole stream rows, so the state runs through every batch.
    batches = list(task.batches("valid", batch_size, shuffle=False))
    x_all = torch.cat([x for x, _ in batches], dim=1)
    y_all = torch.cat([y for _, y in batches], dim=1).numpy()
    with torch.no_grad():
        logits, _ = model(x_all)
    log_probs = log_softmax(logits.double().numpy(), axis=-1)
    picked = np.take_along_axis(log_probs, y_all[..., None], axis=-1)
    expected = math.exp(-picked.mean())

    # Counter-check: restarting the state at every batch gives another value.
    restarted = []
    with torch.no_grad():
        for x, y in batches:
            batch_logits, _ = model(x)
            restarted.append(
                F.cross_entropy(batch_logits.reshape(-1, 7), y.reshape(-1), reduction="sum")
            )
    restarted_perplexity = math.exp(float(sum(restarted)) / y_all.size)

    evaluation = evaluate(model, task, "valid", batch_size=batch_size)
    assert evaluation.metric == pytest.approx(expected, rel=1e-5)
    assert evaluation.count == y_all.size
    assert abs(restarted_perplexity - expected) > 1e-3


def test_accuracy_hand_computed():
    x = torch.tensor(
        [
            [3.0, 1.0, 0.0],  # predicts 0
            [0.0, 2.0, 1.0],  # predicts 1
            [0.0, 0.5, 4.0],  # predicts 2
            [1.0, 0.0, 0.0],  # predicts 0
            [0.2, 0.1, 0.3],  # predicts 2
            [5.0, 6.0, 7.0],  # predicts 2
            [0.0, -1.0, -2.0],  # predicts 0
            [2.0, 2.5, 2.4],  # predicts 1
        ]
    )
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 0, 2])  # rows 0, 1, 2, 5, 6 are right: 5 of 8
    task = FakeClassificationTask({"valid": x}, {"valid": labels})
    expected_loss = float(np.mean(logsumexp(x.numpy(), axis=1) - x.numpy()[range(8), labels]))

    evaluation = evaluate(IdentityClassifier(), task, "valid", batch_size=3)
    assert evaluation.metric == 5 / 8
    assert evaluation.loss == pytest.approx(expected_loss, rel=1e-6)
    assert evaluation.count == 8


def test_classification_eval_restarts_states():
    task = sequence_task()
    model = tiny_rnn(seed=6)
    with torch.no_grad():
        outputs, _ = model(task.inputs["valid"])
    logits = outputs.mean(dim=1).double().numpy()
    labels = task.targets["valid"].numpy()
    expected_loss = float(np.mean(logsumexp(logits, axis=1) - logits[range(len(labels)), labels]))
    expected_accuracy = float(np.mean(logits.argmax(axis=1) == labels))

    # Batches of 5, 5, 5 and 1: a state carried from one batch into the next changes the loss.
    evaluation = evaluate(model, task, "valid", batch_size=5)
    assert evaluation.loss == pytest.approx(expected_loss, rel=1e-5)
    assert evaluation.metric == expected_accuracy


def test_readout_mean_and_last():
    # Two steps, two classes: the mean favours class 0 in both rows, the last step class 1.
    x = torch.tensor([[[4.0, 0.0], [0.0, 1.0]], [[3.0, 0.0], [0.0, 2.0]]])
    task = FakeClassificationTask({"valid": x}, {"valid": torch.tensor([0, 0])})

    mean = evaluate(IdentityClassifier(), task, "valid", batch_size=2, readout="mean")
    last = evaluate(IdentityClassifier(), task, "valid", batch_size=2, readout="last")
    assert mean.metric == 1.0
    assert last.metric == 0.0


def test_feedforward_model_trains(tmp_path):
    task = image_task()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    result = train(model, task, quick_config(epochs=4, lr=3e-2), tmp_path, progress=False)

    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert list(parameter_groups(model)) == ["0", "2"]


def test_progress_bar_shown(tmp_path, capsys):
    config = quick_config(epochs=1, max_batches_per_epoch=2)
    train(tiny_rnn(seed=0), sequence_task(), config, tmp_path, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_max_batches_per_epoch(tmp_path):
    config = quick_config(epochs=2, max_batches_per_epoch=2)
    train(tiny_rnn(seed=0), sequence_task(), config, tmp_path, progress=False)
    steps = pd.read_csv(tmp_path / "grad_norms.csv")
    assert list(steps["step"]) == [1, 2, 3, 4]


def test_bptt_windows_add_steps(tmp_path):
    # 96 training tokens in 4 rows of 24 columns: 4 batches of 6, each split into 2 windows of 3.
    config = quick_config(epochs=1, batch_size=4, bptt=3)
    train(tiny_language_model(seed=0), language_task(), config, tmp_path, progress=False)
    steps = pd.read_csv(tmp_path / "grad_norms.csv")
    assert len(steps) == 8


# ---------------------------------------------------------------------------------------------
# Files


def test_history_and_result_files(tmp_path):
    config = quick_config(epochs=3)
    train(tiny_rnn(seed=0), sequence_task(), config, tmp_path, progress=False)

    history = pd.read_csv(tmp_path / "history.csv")
    expected_columns = {
        "epoch",
        "train_loss",
        "train_metric",
        "valid_loss",
        "valid_metric",
        "test_loss",
        "test_metric",
        "seconds",
        "grad_norm_total",
        "grad_norm_cells.0",
        "grad_norm_cells.1",
        "grad_norm_readout.1",
    }
    assert expected_columns <= set(history.columns)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["valid_metric"].between(0, 1).all()

    def reject_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    result = json.loads((tmp_path / "result.json").read_text(), parse_constant=reject_constant)
    best_index = int(history["valid_metric"].to_numpy().argmax())
    assert result["task"] == "fake_classification"
    assert result["metric"] == "accuracy"
    assert result["epochs_completed"] == 3
    assert result["best"]["epoch"] == int(history["epoch"][best_index])
    assert result["best"]["test_metric"] == pytest.approx(history["test_metric"][best_index])
    assert result["final"]["test_metric"] == pytest.approx(history["test_metric"].iloc[-1])
    assert result["config"] == config.to_dict()
    assert result["diverged"] is False

    steps = pd.read_csv(tmp_path / "grad_norms.csv")
    assert len(steps) == 3 * math.ceil(48 / 8)


def test_no_temporary_files_left(tmp_path):
    train(tiny_rnn(seed=0), sequence_task(), quick_config(epochs=2), tmp_path, progress=False)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["checkpoint.pt", "grad_norms.csv", "history.csv", "result.json"]


def test_checkpoint_contents(tmp_path):
    model = tiny_rnn(seed=0)
    train(model, sequence_task(), quick_config(epochs=2), tmp_path, progress=False)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 2
    assert set(checkpoint["rng"]) >= {"torch", "python", "numpy"}
    assert "state" in checkpoint["optimizer"]
    assert torch.equal(checkpoint["model"]["readout.1.weight"], model.readout[1].weight)


# ---------------------------------------------------------------------------------------------
# Errors


def write_checkpoint(folder: Path) -> None:
    train(tiny_rnn(seed=0), sequence_task(), quick_config(epochs=1), folder, progress=False)


def resume_error(folder: Path, config: TrainConfig | None = None, model=None) -> str:
    with pytest.raises(DefusalError) as error:
        train(
            model or tiny_rnn(seed=0),
            sequence_task(),
            config or quick_config(epochs=2),
            folder,
            resume=True,
            progress=False,
        )
    return str(error.value)


def test_resume_missing_checkpoint(tmp_path):
    message = resume_error(tmp_path)
    assert "not found" in message
    assert "\n" not in message


def test_resume_garbage_checkpoint(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    message = resume_error(tmp_path)
    assert "corrupt" in message
    assert "\n" not in message


def test_resume_truncated_checkpoint(tmp_path):
    write_checkpoint(tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = resume_error(tmp_path)
    assert "corrupt" in message
    assert "\n" not in message


def test_resume_config_mismatch(tmp_path):
    write_checkpoint(tmp_path)
    message = resume_error(tmp_path, quick_config(epochs=2, lr=0.5))
    assert "lr=0.01" in message
    assert "\n" not in message


def test_resume_other_model(tmp_path):
    write_checkpoint(tmp_path)
    torch.manual_seed(0)
    other = RecurrentStack([ElmanCell(3, 4)], readout=nn.Sequential(nn.Dropout(0), nn.Linear(4, 2)))
    message = resume_error(tmp_path, model=other)
    assert "does not fit" in message
    assert "\n" not in message


def test_nan_loss_marks_divergence(tmp_path, caplog):
    task = image_task()
    model = NaNAfter(features=6, classes=3, bad_call=4)
    with caplog.at_level(logging.WARNING, logger="defusal.train"):
        result = train(model, task, quick_config(epochs=3), tmp_path, progress=False)

    assert result.diverged
    assert result.diverged_at["epoch"] == 1
    assert result.diverged_at["step"] == 4
    assert result.epochs_completed == 1
    assert "diverged" in caplog.text
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for tensor in checkpoint["model"].values():
        assert torch.isfinite(tensor).all()
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["diverged"] is True


def test_resume_diverged_run_stops(tmp_path):
    task = image_task()
    train(NaNAfter(6, 3, bad_call=4), task, quick_config(epochs=3), tmp_path, progress=False)
    model = NaNAfter(6, 3, bad_call=1000)
    result = train(model, task, quick_config(epochs=3), tmp_path, resume=True, progress=False)

    assert result.diverged
    assert result.epochs_completed == 1
    assert model.calls == 0


def test_nonfinite_weights_not_saved(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(ValueError):
        save_checkpoint(path, {"model": {"weight": torch.tensor([1.0, math.inf])}})
    assert not path.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"batch_size": -1},
        {"lr": 0.0},
        {"lr": math.nan},
        {"weight_decay": -0.1},
        {"clip_norm": 0.0},
        {"seed": -1},
        {"readout": "max"},
        {"bptt": 0},
        {"max_batches_per_epoch": 1.5},
    ],
)
def test_config_rejects_bad_value(changes):
    with pytest.raises(DefusalError):
        quick_config(**changes)


def test_unknown_optimizer_rejected():
    with pytest.raises(DefusalError):
        build_optimizer(tiny_rnn(seed=0), quick_config(optimizer="nosuch"))


def test_adamw_settings_applied():
    optimizer = build_optimizer(tiny_rnn(seed=0), quick_config(lr=0.02, weight_decay=0.1))
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.02
    assert group["weight_decay"] == 0.1


# ---------------------------------------------------------------------------------------------
# Real data


def seen_examples_loss(model: nn.Module, task, config: TrainConfig) -> float:
    """Mean cross-entropy over the training batches of epoch 1, drawn as the loop draws them."""
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, 1))
    batches = task.batches(
        "train",
        config.batch_size,
        shuffle=True,
        generator=generator,
        limit=config.max_batches_per_epoch,
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            outputs, _ = model(x)
            total += float(F.cross_entropy(outputs.mean(dim=1), y, reduction="sum"))
            count += y.shape[0]
    return total / count


@pytest.mark.slow
def test_gru_slmnist_slice_lowers_loss(tmp_path, real_data_dir):
    from defusal.nets import build_network
    from defusal.tasks import load_task

    task = load_task("slmnist", data_dir=real_data_dir, size="quick")
    model = build_network("gru", task.input_size, 32, 2, task.output_size, seed=0)
    config = TrainConfig(
        epochs=1, batch_size=32, lr=1e-2, seed=0, max_batches_per_epoch=8, eval_limit=1
    )
    before = seen_examples_loss(model, task, config)
    result = train(model, task, config, tmp_path, progress=False)
    after = seen_examples_loss(model, task, config)

    assert result.history[0]["steps"] == 8
    assert after < before
