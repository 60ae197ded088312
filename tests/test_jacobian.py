"""Local Jacobians against weight matrices and independent autograd Jacobians."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from defusal.errors import DefusalError
from defusal.jacobian import check_input, step_jacobians, step_maps
from defusal.nets.base import Cell, RecurrentStack
from defusal.nets.cells import LSTMCell
from defusal.nets.lru import LRUCell
from defusal.radius import spectral_radius


class LinearCell(Cell):
    """s' = W_hh s + W_ih x, y = W_out s': every local Jacobian is a product of weights."""

    def __init__(self, input_size: int, state_size: int, output_size: int) -> None:
        super().__init__(input_size, state_size, output_size)
        self.weight_ih = nn.Parameter(torch.randn(state_size, input_size, dtype=torch.float64))
        self.weight_hh = nn.Parameter(torch.randn(state_size, state_size, dtype=torch.float64))
        self.weight_out = nn.Parameter(torch.randn(output_size, state_size, dtype=torch.float64))

    def transition(self, x_t, state):
        return x_t @ self.weight_ih.T + state @ self.weight_hh.T

    def output(self, x_t, new_state):
        return new_state @ self.weight_out.T


class ForwardOnlyCell(nn.Module):
    """A cell with only ``forward`` (no transition/output): depth is w.r.t. the lower output."""

    def __init__(self, input_size: int, state_size: int) -> None:
        super().__init__()
        self.input_size, self.state_size, self.output_size = input_size, state_size, state_size
        self.weight_ih = nn.Parameter(torch.randn(state_size, input_size, dtype=torch.float64))
        self.weight_hh = nn.Parameter(torch.randn(state_size, state_size, dtype=torch.float64))

    def forward(self, x_t, state):
        new_state = torch.tanh(x_t @ self.weight_ih.T + state @ self.weight_hh.T)
        return new_state, new_state


def _linear_stack() -> RecurrentStack:
    torch.manual_seed(0)
    cells = [LinearCell(3, 5, 4), LinearCell(4, 6, 2)]
    readout = nn.Linear(2, 7).double()
    return RecurrentStack(cells, readout=readout)


def test_linear_cell_jacobians_exact():
    stack = _linear_stack()
    x_t = torch.randn(4, 3, dtype=torch.float64)
    states = [torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)]
    jacobians, _ = step_jacobians(stack, x_t, states)
    lower, upper = stack.cells
    expected = {
        ("time", 0): lower.weight_hh,
        ("time", 1): upper.weight_hh,
        ("encoder", 0): lower.weight_ih,
        ("depth", 1): upper.weight_ih @ lower.weight_out,
        ("decoder", 1): stack.readout.weight @ upper.weight_out,
    }
    assert set(jacobians) == set(expected)
    for key, matrix in expected.items():
        assert torch.allclose(jacobians[key], matrix.detach().expand(4, -1, -1), atol=1e-12), key


def test_forward_only_cell_depth():
    torch.manual_seed(1)
    stack = RecurrentStack([ForwardOnlyCell(3, 5), ForwardOnlyCell(5, 5)])
    x_t = torch.randn(2, 3, dtype=torch.float64)
    states = [torch.randn(2, 5, dtype=torch.float64) for _ in range(2)]
    jacobians, new_states = step_jacobians(stack, x_t, states)
    upper = stack.cells[1]
    slope = 1 - torch.tanh(new_states[0] @ upper.weight_ih.T + states[1] @ upper.weight_hh.T) ** 2
    expected = slope[:, :, None] * upper.weight_ih.detach()
    assert torch.allclose(jacobians[("depth", 1)], expected, atol=1e-12)


def test_lstm_jacobians_match_autograd():
    torch.manual_seed(2)
    cells = [LSTMCell(3, 4).double(), LSTMCell(4, 4).double()]
    stack = RecurrentStack(cells)
    x_t = torch.randn(3, 3, dtype=torch.float64)
    states = [torch.randn(3, 8, dtype=torch.float64) for _ in range(2)]
    jacobians, new_states = step_jacobians(stack, x_t, states)
    lower, upper = cells
    for b in range(3):
        time0 = torch.autograd.functional.jacobian(
            lambda s, b=b: lower(x_t[b : b + 1], s[None])[1][0], states[0][b]
        )
        depth1 = torch.autograd.functional.jacobian(
            lambda s, b=b: upper(s[None, :4], states[1][b : b + 1])[1][0], new_states[0][b]
        )
        assert torch.allclose(jacobians[("time", 0)][b], time0, atol=1e-10)
        assert torch.allclose(jacobians[("depth", 1)][b], depth1, atol=1e-10)


def test_lru_time_radius_is_max_modulus():
    torch.manual_seed(3)
    cell = LRUCell(6, 32).double()
    stack = RecurrentStack([cell])
    x_t = torch.randn(2, 6, dtype=torch.float64)
    jacobians, _ = step_jacobians(stack, x_t, [torch.randn(2, 64, dtype=torch.float64)])
    expected = cell.complex_eigenvalues().abs().max()
    radius = spectral_radius(jacobians[("time", 0)])
    assert torch.allclose(radius, expected.expand(2), atol=1e-6)


def test_decoder_skipped_for_wide_readout():
    stack = _linear_stack()
    stack.readout = nn.Linear(2, 101).double()
    x_t = torch.randn(2, 3, dtype=torch.float64)
    states = [torch.zeros(2, 5, dtype=torch.float64), torch.zeros(2, 6, dtype=torch.float64)]
    maps, _ = step_maps(stack, x_t, states)
    assert "decoder" not in {m.edge for m in maps}


def test_check_input_size_mismatch():
    stack = _linear_stack()
    with pytest.raises(DefusalError, match="first layer expects"):
        check_input(stack, torch.zeros(2, 5, 4, dtype=torch.float64))
