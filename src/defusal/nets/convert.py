"""Exact conversion between cell stacks and the fused ``torch.nn.LSTM``, ``GRU`` and ``RNN``.

Training runs fastest on the fused cuDNN/oneDNN kernels, while Jacobians and LSC pre-training
need the step-by-step cells. The cells of :mod:`defusal.nets.cells` share the fused modules'
parameter layout, so weights copy across without any change. :class:`FusedRecurrentNetwork` is
the fused twin of a :class:`RecurrentStack`, with the same ``forward`` signature and the same
flat per-layer state format.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.nets.base import RecurrentStack
from defusal.nets.cells import GRUCell, LSTMCell, SimpleRNNCell

logger = logging.getLogger(__name__)

_FUSED_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _cells_of(stack: RecurrentStack | list[nn.Module] | nn.ModuleList) -> list[nn.Module]:
    return list(stack.cells) if isinstance(stack, RecurrentStack) else list(stack)


def _check_convertible(cells: list[nn.Module]) -> None:
    """Raise unless ``cells`` are all LSTM, all GRU or all simple RNN (relu or tanh), one width."""
    kinds = {type(cell) for cell in cells}
    if len(kinds) != 1 or not kinds <= {LSTMCell, GRUCell, SimpleRNNCell}:
        names = ", ".join(sorted(kind.__name__ for kind in kinds))
        raise DefusalError(
            f"only stacks of one cell type (LSTMCell, GRUCell or SimpleRNNCell) convert to a "
            f"fused torch module; this stack has {names}"
        )
    widths = {cell.hidden_size for cell in cells}
    if len(widths) != 1:
        raise DefusalError(
            f"a fused torch module needs one hidden size for all layers, got {sorted(widths)}"
        )
    if isinstance(cells[0], SimpleRNNCell):
        activations = {cell.activation for cell in cells}
        if len(activations) != 1 or not activations <= {"relu", "tanh"}:
            raise DefusalError(
                f"torch.nn.RNN supports one activation, relu or tanh, for all layers; "
                f"got {sorted(activations)}"
            )


def _check_fused(module: nn.Module) -> None:
    if not isinstance(module, nn.LSTM | nn.GRU | nn.RNN):
        raise DefusalError(f"expected torch.nn.LSTM, GRU or RNN, got {type(module).__name__}")
    if module.bidirectional:
        raise DefusalError("bidirectional torch RNNs have no cell equivalent; use a one-way RNN")
    if getattr(module, "proj_size", 0):
        raise DefusalError(
            f"LSTM with proj_size={module.proj_size} has no cell equivalent; use proj_size=0"
        )


def _copy_cells_to_fused_(cells: list[nn.Module], module: nn.RNNBase) -> None:
    if len(cells) != module.num_layers:
        raise DefusalError(
            f"cannot copy {len(cells)} layers into a torch RNN of {module.num_layers} layers"
        )
    with torch.no_grad():
        for layer, cell in enumerate(cells):
            for name in _FUSED_NAMES:
                target = getattr(module, f"{name}_l{layer}", None)
                source = getattr(cell, name)
                if target is None:
                    if bool(source.ne(0).any()):
                        raise DefusalError(
                            f"layer {layer} has nonzero {name} but the torch RNN has bias=False"
                        )
                    continue
                if target.shape != source.shape:
                    raise DefusalError(
                        f"layer {layer} {name}: shape {tuple(source.shape)} does not match the "
                        f"torch RNN's {tuple(target.shape)}"
                    )
                target.copy_(source)


def _copy_fused_to_cells_(module: nn.RNNBase, cells: list[nn.Module]) -> None:
    if len(cells) != module.num_layers:
        raise DefusalError(
            f"cannot copy a torch RNN of {module.num_layers} layers into {len(cells)} cells"
        )
    with torch.no_grad():
        for layer, cell in enumerate(cells):
            for name in _FUSED_NAMES:
                target = getattr(cell, name)
                source = getattr(module, f"{name}_l{layer}", None)
                if source is None:
                    target.zero_()
                    continue
                if target.shape != source.shape:
                    raise DefusalError(
                        f"layer {layer} {name}: shape {tuple(source.shape)} does not match the "
                        f"cell's {tuple(target.shape)}"
                    )
                target.copy_(source)


def to_torch(stack: RecurrentStack | list[nn.Module]) -> nn.LSTM | nn.GRU | nn.RNN:
    """Return a fused ``batch_first`` torch RNN with the weights of an all-LSTM/GRU/RNN stack.

    Encoder and readout are not part of the result (see :class:`FusedRecurrentNetwork`).

    Args:
        stack: a :class:`RecurrentStack` or a list of cells, all :class:`LSTMCell`, all
            :class:`GRUCell` or all :class:`SimpleRNNCell` (relu or tanh), one hidden size.

    Returns:
        ``torch.nn.LSTM``, ``GRU`` or ``RNN`` with ``num_layers = len(cells)``, on the cells'
        device and dtype.

    Raises:
        DefusalError: for mixed cell types, mixed widths or a sigmoid/swish simple RNN.
    """
    cells = _cells_of(stack)
    _check_convertible(cells)
    first = cells[0]
    options = {"num_layers": len(cells), "batch_first": True}
    if isinstance(first, LSTMCell):
        module = nn.LSTM(first.input_size, first.hidden_size, **options)
    elif isinstance(first, GRUCell):
        module = nn.GRU(first.input_size, first.hidden_size, **options)
    else:
        module = nn.RNN(
            first.input_size, first.hidden_size, nonlinearity=first.activation, **options
        )
    module.to(device=first.weight_ih.device, dtype=first.weight_ih.dtype)
    _copy_cells_to_fused_(cells, module)
    return module


def from_torch(module: nn.LSTM | nn.GRU | nn.RNN) -> list[nn.Module]:
    """Return cells with the weights of a fused torch RNN, bottom layer first.

    Inter-layer dropout of the torch module is not carried over (a warning is logged). A module
    with ``bias=False`` gives cells with zero biases.

    Args:
        module: a one-way ``torch.nn.LSTM`` (``proj_size=0``), ``GRU`` or ``RNN``.

    Returns:
        ``num_layers`` :class:`LSTMCell`, :class:`GRUCell` or :class:`SimpleRNNCell`.

    Raises:
        DefusalError: for another module type, a bidirectional RNN or an LSTM projection.
    """
    _check_fused(module)
    if module.dropout:
        logger.warning("inter-layer dropout %.3g of the torch RNN is not copied", module.dropout)
    cells: list[nn.Module] = []
    for layer in range(module.num_layers):
        input_size = module.input_size if layer == 0 else module.hidden_size
        if isinstance(module, nn.LSTM):
            cell = LSTMCell(input_size, module.hidden_size)
        elif isinstance(module, nn.GRU):
            cell = GRUCell(input_size, module.hidden_size)
        else:
            cell = SimpleRNNCell(input_size, module.hidden_size, activation=module.nonlinearity)
        cells.append(cell)
    reference = module.weight_ih_l0
    for cell in cells:
        cell.to(device=reference.device, dtype=reference.dtype)
    _copy_fused_to_cells_(module, cells)
    return cells


def stack_from_torch(
    module: nn.LSTM | nn.GRU | nn.RNN,
    *,
    encoder: nn.Module | None = None,
    readout: nn.Module | None = None,
) -> RecurrentStack:
    """Return a :class:`RecurrentStack` of the :func:`from_torch` cells, encoder and readout."""
    return RecurrentStack(from_torch(module), encoder=encoder, readout=readout)


class FusedRecurrentNetwork(nn.Module):
    """A fused torch RNN with an encoder and a readout, the fast twin of a :class:`RecurrentStack`.

    ``forward(x, states=None) -> (y, states)`` has the signature, the shapes and the flat state
    format of :class:`RecurrentStack`: ``states`` is a list of ``num_layers`` tensors
    ``(batch, state_size)``, ``[h; c]`` per layer for an LSTM and ``h`` otherwise.

    Args:
        rnn: a ``batch_first`` one-way ``torch.nn.LSTM``, ``GRU`` or ``RNN``.
        encoder: optional module applied to the whole input ``x`` (``nn.Embedding``, ``nn.Linear``).
        readout: optional module applied to the whole top output.

    Raises:
        DefusalError: for an unsupported or non-``batch_first`` module.
    """

    def __init__(
        self,
        rnn: nn.LSTM | nn.GRU | nn.RNN,
        *,
        encoder: nn.Module | None = None,
        readout: nn.Module | None = None,
    ) -> None:
        super().__init__()
        _check_fused(rnn)
        if not rnn.batch_first:
            raise DefusalError(
                "FusedRecurrentNetwork needs a torch RNN built with batch_first=True"
            )
        self.rnn = rnn
        self.encoder = encoder
        self.readout = readout

    @classmethod
    def from_stack(cls, stack: RecurrentStack) -> FusedRecurrentNetwork:
        """Return a fused network with copies of the weights, encoder and readout of ``stack``.

        Weight tying between encoder and readout is kept in the copy.
        """
        encoder, readout = copy.deepcopy((stack.encoder, stack.readout))
        return cls(to_torch(stack), encoder=encoder, readout=readout)

    def to_stack(self) -> RecurrentStack:
        """Return a :class:`RecurrentStack` with copies of all weights of this network."""
        encoder, readout = copy.deepcopy((self.encoder, self.readout))
        return stack_from_torch(self.rnn, encoder=encoder, readout=readout)

    def copy_to_stack_(self, stack: RecurrentStack) -> RecurrentStack:
        """Copy all weights of this network into ``stack`` in place; return ``stack``."""
        _copy_fused_to_cells_(self.rnn, list(stack.cells))
        _copy_module_(self.encoder, stack.encoder, "encoder")
        _copy_module_(self.readout, stack.readout, "readout")
        return stack

    def copy_from_stack_(self, stack: RecurrentStack) -> FusedRecurrentNetwork:
        """Copy all weights of ``stack`` into this network in place; return ``self``."""
        _copy_cells_to_fused_(list(stack.cells), self.rnn)
        _copy_module_(stack.encoder, self.encoder, "encoder")
        _copy_module_(stack.readout, self.readout, "readout")
        return self

    @property
    def num_layers(self) -> int:
        """Number of stacked layers ``L``."""
        return self.rnn.num_layers

    @property
    def state_size(self) -> int:
        """Size of one layer's flat state: ``2 * hidden`` for an LSTM, ``hidden`` otherwise."""
        factor = 2 if isinstance(self.rnn, nn.LSTM) else 1
        return factor * self.rnn.hidden_size

    def initial_states(self, batch_size: int, reference: Tensor) -> list[Tensor]:
        """Return zero states for every layer, on the device and dtype of the weights."""
        weight = self.rnn.weight_ih_l0
        return [weight.new_zeros(batch_size, self.state_size) for _ in range(self.num_layers)]

    def forward(self, x: Tensor, states: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run the sequence ``x`` ``(batch, time, ...)``; return ``(y, final states)``."""
        if x.dim() < 2:
            raise DefusalError(f"expected input of shape (batch, time, ...), got {tuple(x.shape)}")
        inputs = x if self.encoder is None else self.encoder(x)
        hidden = self.rnn.hidden_size
        initial = None
        if states is not None:
            if len(states) != self.num_layers:
                raise DefusalError(f"expected {self.num_layers} layer states, got {len(states)}")
            stacked = torch.stack(list(states), dim=0)
            if isinstance(self.rnn, nn.LSTM):
                initial = (
                    stacked[..., :hidden].contiguous(),
                    stacked[..., hidden:].contiguous(),
                )
            else:
                initial = stacked.contiguous()

        outputs, final = self.rnn(inputs, initial)
        if isinstance(self.rnn, nn.LSTM):
            h_n, c_n = final
            final_states = [
                torch.cat([h_n[layer], c_n[layer]], dim=-1) for layer in range(len(h_n))
            ]
        else:
            final_states = list(final.unbind(0))
        y = outputs if self.readout is None else self.readout(outputs)
        return y, final_states


def _copy_module_(source: nn.Module | None, target: nn.Module | None, role: str) -> None:
    if (source is None) != (target is None):
        raise DefusalError(f"cannot copy weights: only one of the two networks has an {role}")
    if source is not None:
        target.load_state_dict(source.state_dict())
