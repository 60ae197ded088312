"""LSTM, GRU and simple RNN cells with the parameter layout of ``torch.nn.LSTM``, ``GRU``, ``RNN``.

The weights are named and shaped as in the fused PyTorch modules (``weight_ih``, ``weight_hh``,
``bias_ih``, ``bias_hh``, gates stacked along dimension 0), so they copy across exactly (see
:mod:`defusal.nets.convert`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.nets.base import Cell

ACTIVATIONS = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "swish": nn.functional.silu,
}


class _GatedCell(Cell):
    """Shared parameters of the cells below: ``num_gates`` stacked ``(hidden, ·)`` blocks.

    ``parameter_roles`` maps each tensor name to its role for :func:`defusal.nets.init.initialize_`
    (input kernel, recurrent kernel or bias), and ``num_gates`` is the number of gate blocks.
    """

    num_gates = 1
    parameter_roles = {
        "weight_ih": "input",
        "weight_hh": "recurrent",
        "bias_ih": "bias",
        "bias_hh": "bias",
    }

    def __init__(self, input_size: int, hidden_size: int, state_size: int) -> None:
        super().__init__(input_size, state_size, hidden_size)
        self.hidden_size = int(hidden_size)
        rows = self.num_gates * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, self.hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every weight from U(-1/sqrt(hidden), 1/sqrt(hidden)), the PyTorch default."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class LSTMCell(_GatedCell):
    """Long short-term memory cell, the math and layout of ``torch.nn.LSTM``.

    With ``[i; f; g; o] = W_ih x + b_ih + W_hh h + b_hh`` (gate order i, f, g, o)::

        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    State ``[h; c]`` of size ``2 * hidden_size``; output ``h'``.

    Args:
        input_size: features of ``x_t``.
        hidden_size: units ``H``; ``weight_ih`` is ``(4H, input_size)``, ``weight_hh`` ``(4H, H)``.
    """

    num_gates = 4

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, 2 * int(hidden_size))

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        h, c = state.split(self.hidden_size, dim=-1)
        gates = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            h, self.weight_hh, self.bias_hh
        )
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return torch.cat([h_new, c_new], dim=-1)

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        return new_state[..., : self.hidden_size]


class GRUCell(_GatedCell):
    """Gated recurrent unit, the math and layout of ``torch.nn.GRU`` (gate order r, z, n)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    State and output ``h`` of size ``hidden_size``.

    Args:
        input_size: features of ``x_t``.
        hidden_size: units ``H``; ``weight_ih`` is ``(3H, input_size)``, ``weight_hh`` ``(3H, H)``.
    """

    num_gates = 3

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, int(hidden_size))

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        input_r, input_z, input_n = nn.functional.linear(x_t, self.weight_ih, self.bias_ih).chunk(
            3, dim=-1
        )
        hidden_r, hidden_z, hidden_n = nn.functional.linear(
            state, self.weight_hh, self.bias_hh
        ).chunk(3, dim=-1)
        r = torch.sigmoid(input_r + hidden_r)
        z = torch.sigmoid(input_z + hidden_z)
        n = torch.tanh(input_n + r * hidden_n)
        return (1.0 - z) * n + z * state

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        return new_state


class SimpleRNNCell(_GatedCell):
    """Elman RNN cell, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, the layout of ``torch.nn.RNN``.

    State and output ``h`` of size ``hidden_size``.

    Args:
        input_size: features of ``x_t``.
        hidden_size: units ``H``.
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"swish"`` (``x * sigmoid(x)``).

    Raises:
        DefusalError: for an unknown activation.
    """

    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int, activation: str = "relu") -> None:
        if activation not in ACTIVATIONS:
            raise DefusalError(
                f"unknown RNN activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        self.activation = activation
        super().__init__(input_size, hidden_size, int(hidden_size))

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        pre_activation = nn.functional.linear(
            x_t, self.weight_ih, self.bias_ih
        ) + nn.functional.linear(state, self.weight_hh, self.bias_hh)
        return ACTIVATIONS[self.activation](pre_activation)

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        return new_state

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"
