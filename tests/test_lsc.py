"""LSC pre-training: targets, loss divisor, convergence, NaN guard, checkpoints, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from defusal.errors import DefusalError
from defusal.lsc import load_checkpoint, pretrain_, resolve_targets, save_checkpoint
from defusal.lsc.measure import measure
from defusal.nets.base import Cell, RecurrentStack
from defusal.nets.build import build_network


class TanhCell(Cell):
    """s' = tanh(W_hh s + W_ih x + b), output s'."""

    def __init__(self, input_size: int, state_size: int) -> None:
        super().__init__(input_size, state_size, state_size)
        self.weight_ih = nn.Parameter(torch.randn(state_size, input_size) / input_size**0.5)
        self.weight_hh = nn.Parameter(torch.randn(state_size, state_size) / state_size**0.5)
        self.bias = nn.Parameter(torch.zeros(state_size))

    def transition(self, x_t, state):
        return torch.tanh(x_t @ self.weight_ih.T + state @ self.weight_hh.T + self.bias)

    def output(self, x_t, new_state):
        return new_state


class LinearCell(Cell):
    """s' = W_hh s + W_ih x with square weights, so every radius is a fixed eigenvalue."""

    def __init__(self, size: int) -> None:
        super().__init__(size, size, size)
        self.weight_ih = nn.Parameter(torch.randn(size, size) / size**0.5)
        self.weight_hh = nn.Parameter(torch.randn(size, size) / size**0.5)

    def transition(self, x_t, state):
        return x_t @ self.weight_ih.T + state @ self.weight_hh.T

    def output(self, x_t, new_state):
        return new_state


def _radius(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(matrix.detach().double()).abs().max())


def test_targets_unbalanced():
    targets = resolve_targets("unbalanced", num_layers=3, time_steps=300)
    assert abs(targets["time"] - 300 / 303) < 1e-12
    assert abs(targets["depth"] - 3 / 303) < 1e-12
    assert targets["time"] + targets["depth"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "abc", {"time": 1}])
def test_targets_rejected(bad):
    with pytest.raises(DefusalError):
        resolve_targets(bad, num_layers=2, time_steps=10)


@pytest.mark.parametrize("mode, edges_in_divisor", [("plain", 4), ("faithful", 5)])
def test_loss_divisor(mode, edges_in_divisor):
    torch.manual_seed(0)
    stack = RecurrentStack([LinearCell(6), LinearCell(6)])
    radii = [
        _radius(stack.cells[0].weight_hh),
        _radius(stack.cells[1].weight_hh),
        _radius(stack.cells[0].weight_ih),
        _radius(stack.cells[1].weight_ih),
    ]
    expected = sum((r - 1.0) ** 2 for r in radii) / edges_in_divisor
    report = pretrain_(
        stack, None, target=1.0, mode=mode, steps=1, batch_size=2, time_steps=3, measure_samples=1
    )
    assert report.history[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_pretrain_tanh_cell_to_half():
    torch.manual_seed(1)
    stack = RecurrentStack([TanhCell(12, 12), TanhCell(12, 12)])
    report = pretrain_(
        stack,
        None,
        target=0.5,
        steps=150,
        lr=1e-2,
        batch_size=8,
        time_steps=20,
        patience=5,
        tolerance=0.05,
        measure_samples=5,
    )
    assert report.converged
    assert report.steps < 150
    for edge, layers in report.after.items():
        mean = sum(layers.values()) / len(layers)
        assert abs(mean - 0.5) < 0.08, edge


def test_pretrain_matrix_free_estimator():
    torch.manual_seed(2)
    stack = RecurrentStack([TanhCell(10, 10)])
    pretrain_(
        stack,
        None,
        target=0.5,
        estimator="matrix_free",
        steps=20,
        lr=2e-2,
        batch_size=4,
        time_steps=10,
        patience=5,
        measure_samples=1,
        iterations=10,
    )
    exact = measure(stack, torch.randn(4, 10, 10), estimator="eig", time_samples=5)
    assert abs(exact["time"][0] - 0.5) < 0.08


def test_nan_gradient_restores_best():
    torch.manual_seed(3)
    stack = RecurrentStack([TanhCell(8, 8)])
    initial = {k: v.clone() for k, v in stack.state_dict().items()}
    handle = stack.cells[0].weight_hh.register_hook(lambda grad: torch.full_like(grad, math.nan))
    report = pretrain_(
        stack, None, target=0.5, steps=1, batch_size=2, time_steps=4, measure_samples=1
    )
    handle.remove()
    assert report.nonfinite_restores == 1
    for name, value in stack.state_dict().items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, initial[name]), name


def test_nan_guard_keeps_training_finite():
    torch.manual_seed(4)
    stack = RecurrentStack([TanhCell(8, 8)])
    calls = {"count": 0}

    def poison(grad):
        calls["count"] += 1
        return torch.full_like(grad, math.inf) if calls["count"] == 3 else grad

    stack.cells[0].weight_hh.register_hook(poison)
    report = pretrain_(
        stack,
        None,
        target=0.5,
        steps=10,
        batch_size=2,
        time_steps=6,
        measure_samples=1,
        patience=50,
    )
    assert report.nonfinite_restores == 1
    assert all(torch.isfinite(p).all() for p in stack.parameters())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"target": 0}, "positive"),
        ({"target": -0.5}, "positive"),
        ({"estimator": "qr"}, "unknown radius estimator"),
        ({"mode": "fast"}, "unknown LSC mode"),
    ],
)
def test_pretrain_bad_arguments(options, message):
    stack = RecurrentStack([TanhCell(4, 4)])
    with pytest.raises(DefusalError, match=message) as error:
        pretrain_(stack, None, steps=1, **options)
    assert "\n" not in str(error.value)


def test_pretrain_input_size_mismatch():
    stack = RecurrentStack([TanhCell(4, 4)])
    with pytest.raises(DefusalError, match="first layer expects"):
        pretrain_(stack, torch.zeros(2, 5, 3), steps=1)


def test_checkpoint_round_trip(tmp_path):
    config = dict(kind="gru", input_size=5, hidden_size=6, num_layers=2, output_size=3, seed=0)
    model = build_network(**config)
    report = pretrain_(model, None, steps=2, batch_size=2, time_steps=4, measure_samples=1)
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, model, config=config, report=report)
    loaded = load_checkpoint(path)
    x = torch.randn(2, 7, 5)
    assert torch.equal(loaded(x)[0], model(x)[0])


def test_checkpoint_not_lsc(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(DefusalError, match="not a defusal LSC checkpoint"):
        load_checkpoint(path)


def test_report_markdown_and_dict():
    stack = RecurrentStack([TanhCell(4, 4)])
    report = pretrain_(stack, None, steps=1, batch_size=2, time_steps=3, measure_samples=1)
    data = report.to_dict()
    assert set(data["before"]) == {"time", "encoder"}
    assert "0" in data["after"]["time"]
    assert "| layer |" in report.to_markdown()
