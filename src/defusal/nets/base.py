"""The cell interface and the stack that runs cells over time and depth.

A *cell* is one layer of a deep recurrent network, written as a step function::

    y_t, s_{t+1} = cell(x_t, s_t)

with ``x_t`` of shape ``(batch, input_size)``, the flat state ``s_t`` of shape
``(batch, state_size)`` and the output ``y_t`` of shape ``(batch, output_size)``. The state is the
whole memory of the layer: ``[h]`` for GRU and simple RNNs, ``[h; c]`` for LSTM, ``[v; a]``
(voltage, adaptation) for ALIF and ``[Re x; Im x]`` for LRU. Any ``torch.nn.Module`` with that
``forward`` and the three size attributes works as a cell.

A cell may also define ``output(x_t, new_state) -> y_t``, the output as a function of the new
state (and, for residual cells, of the input), such that ``forward`` returns
``(output(x_t, s_{t+1}), s_{t+1})``. Depth Jacobians then differentiate with respect to the full
lower state, as the Local Stability Condition defines them. Without it they differentiate with
respect to the lower layer's output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError


class Cell(nn.Module):
    """Base class for cells: sizes, a zero initial state, and ``forward`` built on two steps.

    Subclasses implement :meth:`transition` (``s_{t+1}`` from ``x_t`` and ``s_t``) and
    :meth:`output` (``y_t`` from ``x_t`` and ``s_{t+1}``).
    """

    def __init__(self, input_size: int, state_size: int, output_size: int) -> None:
        super().__init__()
        for name, value in (
            ("input_size", input_size),
            ("state_size", state_size),
            ("output_size", output_size),
        ):
            if int(value) <= 0:
                raise DefusalError(f"{type(self).__name__}: {name} must be positive, got {value}")
        self.input_size = int(input_size)
        self.state_size = int(state_size)
        self.output_size = int(output_size)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Return the zero state, shape ``(batch_size, state_size)``."""
        return torch.zeros(batch_size, self.state_size, device=device, dtype=dtype)

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        """Return the next state ``s_{t+1}``, shape ``(batch, state_size)``."""
        raise NotImplementedError

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        """Return the output ``y_t`` from ``x_t`` and the new state, ``(batch, output_size)``."""
        raise NotImplementedError

    def forward(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        new_state = self.transition(x_t, state)
        return self.output(x_t, new_state), new_state


def initial_state_of(cell: nn.Module, batch_size: int, reference: Tensor) -> Tensor:
    """Return the initial state of any cell, zeros unless it defines ``initial_state``."""
    if hasattr(cell, "initial_state"):
        return cell.initial_state(batch_size, device=reference.device, dtype=reference.dtype)
    return reference.new_zeros(batch_size, cell.state_size)


class RecurrentStack(nn.Module):
    """A deep RNN: an optional encoder, ``L`` cells stacked in depth, and an optional readout.

    Args:
        cells: the layers, bottom first; ``cells[l].input_size`` must equal
            ``cells[l - 1].output_size``.
        encoder: optional module applied to each input step before the first cell, for example
            ``nn.Embedding`` for token ids (input ``(batch, time)`` of ``long``).
        readout: optional module from the top output to the network output, for example
            ``nn.Linear(hidden, classes)``.

    Inputs: ``x`` of shape ``(batch, time, features)`` (or ``(batch, time)`` token ids with an
    embedding encoder) and optional ``states``, a list of ``L`` tensors ``(batch, state_size)``.

    Outputs: ``(y, states)`` with ``y`` of shape ``(batch, time, output)`` and the final states.
    """

    def __init__(
        self,
        cells: list[nn.Module] | nn.ModuleList,
        *,
        encoder: nn.Module | None = None,
        readout: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(cells) == 0:
            raise DefusalError("a recurrent stack needs at least one cell, got 0")
        for depth in range(1, len(cells)):
            below, above = cells[depth - 1], cells[depth]
            if above.input_size != below.output_size:
                raise DefusalError(
                    f"cell {depth} expects input size {above.input_size} but cell {depth - 1} "
                    f"outputs {below.output_size}; make the sizes match"
                )
        self.cells = nn.ModuleList(cells)
        self.encoder = encoder
        self.readout = readout

    @property
    def num_layers(self) -> int:
        """Number of stacked cells ``L``."""
        return len(self.cells)

    def initial_states(self, batch_size: int, reference: Tensor) -> list[Tensor]:
        """Return the initial state of every layer, on the device and dtype of ``reference``."""
        if not reference.is_floating_point():
            reference = next(self.parameters()).new_zeros(())
        return [initial_state_of(cell, batch_size, reference) for cell in self.cells]

    def encode(self, x_t: Tensor) -> Tensor:
        """Return the first cell's input for one step, ``(batch, cells[0].input_size)``."""
        return x_t if self.encoder is None else self.encoder(x_t)

    def step(self, x_t: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Advance every layer by one time step.

        Args:
            x_t: one input step, ``(batch, features)`` or ``(batch,)`` token ids.
            states: ``L`` tensors ``(batch, state_size)``.

        Returns:
            ``(y_t, new_states)``, ``y_t`` the readout of the top output.
        """
        layer_input = self.encode(x_t)
        new_states = []
        for cell, state in zip(self.cells, states, strict=True):
            layer_input, new_state = cell(layer_input, state)
            new_states.append(new_state)
        y_t = layer_input if self.readout is None else self.readout(layer_input)
        return y_t, new_states

    def forward(self, x: Tensor, states: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        if x.dim() < 2:
            raise DefusalError(f"expected input of shape (batch, time, ...), got {tuple(x.shape)}")
        if states is None:
            states = self.initial_states(x.shape[0], x)
        outputs = []
        for t in range(x.shape[1]):
            y_t, states = self.step(x[:, t], states)
            outputs.append(y_t)
        return torch.stack(outputs, dim=1), states
