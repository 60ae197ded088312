"""Local Jacobians of a deep recurrent network, one matrix per sample.

In a stack of ``L`` cells with states ``s^l_t`` the local Jacobians at one time step are

* **time**, every layer ``l``: ``M = d s^l_{t+1} / d s^l_t``;
* **depth**, every layer ``l >= 1``: ``M = d s^l_{t+1} / d s^{l-1}_{t+1}``, through the lower
  cell's ``output`` when it has one (so with respect to its full state, ``[h; c]`` for an
  LSTM), else with respect to the lower cell's output;
* **encoder**, layer 0: ``M = d s^0_{t+1} / d u_t`` with ``u_t`` the first cell's input after
  the stack's encoder (the embedded token for word models);
* **decoder**: ``M = d y_t / d s^{L-1}_{t+1}``, the readout output with respect to the top
  state. It is left out when the readout is wider than ``max_decoder_outputs`` (100 by
  default), because a 10,000-word readout gives a Jacobian too large to be worth forming.

Each Jacobian is described by a :class:`LocalMap`, a batched function and the point where it
is linearized, so the same object serves explicit Jacobians (:func:`jacobian`) and the
matrix-free estimators of :mod:`defusal.radius`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.radius import LinearOperator, block_product

EDGES = ("time", "depth", "encoder", "decoder")
MAX_DECODER_OUTPUTS = 100


@dataclass
class LocalMap:
    """One local Jacobian at one time step: ``d function(point) / d point``.

    Attributes:
        edge: ``"time"``, ``"depth"``, ``"encoder"`` or ``"decoder"``.
        layer: the layer the edge belongs to (the upper layer for depth, 0 for the encoder, the
            top layer for the decoder).
        function: batched map ``(batch, n_in) -> (batch, n_out)``; samples are independent and
            the weights are closed over, so gradients reach them.
        point: ``(batch, n_in)`` detached input where the map is linearized.
    """

    edge: str
    layer: int
    function: Callable[[Tensor], Tensor]
    point: Tensor

    @property
    def key(self) -> tuple[str, int]:
        """``(edge, layer)``."""
        return self.edge, self.layer

    def operator(self) -> LinearOperator:
        """Return the linearization as a :class:`defusal.radius.LinearOperator`."""
        return LinearOperator(self.function, self.point)


def transition_of(cell: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """Return ``(x_t, s_t) -> s_{t+1}``: ``cell.transition`` or the state part of ``forward``."""
    if hasattr(cell, "transition"):
        return cell.transition
    return lambda x_t, state: cell(x_t, state)[1]


def has_output(cell: nn.Module) -> bool:
    """Return whether ``cell`` defines ``output(x_t, new_state)``."""
    return callable(getattr(cell, "output", None))


def check_input(stack: nn.Module, x: Tensor) -> None:
    """Raise :class:`DefusalError` unless ``x`` fits the stack's first layer.

    Args:
        stack: a recurrent stack.
        x: ``(batch, time, features)``, or ``(batch, time)`` token ids for a stack with an
            encoder.
    """
    if x.dim() < 2:
        raise DefusalError(f"expected input of shape (batch, time, ...), got {tuple(x.shape)}")
    if getattr(stack, "encoder", None) is None:
        expected = stack.cells[0].input_size
        if x.dim() != 3 or x.shape[-1] != expected:
            raise DefusalError(
                f"input has shape {tuple(x.shape)} but the first layer expects "
                f"(batch, time, {expected}); build the network with input size {x.shape[-1]}"
            )
        if not x.is_floating_point():
            raise DefusalError(
                f"expected a float input for a network without encoder, got {x.dtype}"
            )


def step_maps(
    stack: nn.Module,
    x_t: Tensor,
    states: list[Tensor],
    *,
    edges: tuple[str, ...] = EDGES,
    max_decoder_outputs: int = MAX_DECODER_OUTPUTS,
) -> tuple[list[LocalMap], list[Tensor]]:
    """Build the local maps of one time step and advance the states.

    Args:
        stack: a :class:`defusal.nets.base.RecurrentStack` (``cells``, ``encoder``, ``readout``).
        x_t: one input step, ``(batch, features)`` or ``(batch,)`` token ids.
        states: ``L`` tensors ``(batch, state_size)``, the states ``s_t``.
        edges: edge types to build.
        max_decoder_outputs: leave the decoder out when the readout has more outputs.

    Returns:
        ``(maps, new_states)``: the local maps at this step (points detached) and the states
        ``s_{t+1}``, detached.
    """
    unknown = set(edges) - set(EDGES)
    if unknown:
        raise DefusalError(f"unknown edge types {sorted(unknown)}; use {', '.join(EDGES)}")
    cells = list(stack.cells)
    maps: list[LocalMap] = []
    with torch.no_grad():
        layer_input = stack.encode(x_t).detach()
    inputs, new_states = [], []
    with torch.no_grad():
        for cell, state in zip(cells, states, strict=True):
            inputs.append(layer_input)
            output, new_state = cell(layer_input, state)
            layer_input = output.detach()
            new_states.append(new_state.detach())
    top_output = layer_input

    for layer, cell in enumerate(cells):
        step = transition_of(cell)
        state = states[layer].detach()
        x_l = inputs[layer]
        if "time" in edges:
            maps.append(LocalMap("time", layer, _bind_state(step, x_l), state))
        if "encoder" in edges and layer == 0:
            maps.append(LocalMap("encoder", 0, _bind_input(step, state), x_l))
        if "depth" in edges and layer > 0:
            lower = cells[layer - 1]
            if has_output(lower):
                function = _bind_lower_state(step, lower.output, inputs[layer - 1], state)
                maps.append(LocalMap("depth", layer, function, new_states[layer - 1]))
            else:
                maps.append(LocalMap("depth", layer, _bind_input(step, state), x_l))

    readout = getattr(stack, "readout", None)
    if "decoder" in edges and readout is not None:
        with torch.no_grad():
            width = readout(top_output[:1]).shape[-1]
        if width <= max_decoder_outputs:
            top = cells[-1]
            if has_output(top):
                function = _bind_decoder(readout, top.output, inputs[-1])
                maps.append(LocalMap("decoder", len(cells) - 1, function, new_states[-1]))
            else:
                maps.append(LocalMap("decoder", len(cells) - 1, readout, top_output))
    return maps, new_states


def _bind_state(step, x_t):
    return lambda state: step(x_t, state)


def _bind_input(step, state):
    return lambda x_t: step(x_t, state)


def _bind_lower_state(step, lower_output, lower_input, state):
    return lambda lower_state: step(lower_output(lower_input, lower_state), state)


def _bind_decoder(readout, top_output, top_input):
    return lambda top_state: readout(top_output(top_input, top_state))


def jacobian(local_map: LocalMap, *, create_graph: bool = False) -> Tensor:
    """Return the per-sample Jacobians of a local map, shape ``(batch, n_out, n_in)``.

    Args:
        local_map: the map and its point.
        create_graph: keep the graph so the Jacobian is differentiable with respect to the
            weights.
    """
    return operator_jacobian(local_map.operator(), create_graph=create_graph)


def operator_jacobian(operator: LinearOperator, *, create_graph: bool = False) -> Tensor:
    """Return the per-sample Jacobians of a batched map at its point, ``(batch, n_out, n_in)``.

    Uses one forward pass and ``n_out`` batched vector-Jacobian products (the rows). Because
    samples are independent, the gradient of output coordinate ``i`` summed over the batch is
    row ``i`` of every sample's Jacobian. Without ``create_graph``, a map with fewer inputs
    than outputs (an encoder edge) is instead formed column by column with ``n_in`` batched
    Jacobian-vector products.
    """
    point = operator.point.detach().requires_grad_(True)
    if not create_graph:
        columns = _forward_columns(operator)
        if columns is not None:
            return columns
    with torch.enable_grad():
        output = operator.function(point)
        if output.dim() != 2 or output.shape[0] != point.shape[0]:
            raise DefusalError(
                f"a local map returned shape {tuple(output.shape)}; expected (batch, features)"
            )
        rows = output.shape[-1]
        basis = torch.eye(rows, dtype=output.dtype, device=output.device)
        basis = basis.unsqueeze(1).expand(rows, *output.shape)
        try:
            (grads,) = torch.autograd.grad(
                output,
                point,
                basis,
                is_grads_batched=True,
                create_graph=create_graph,
                retain_graph=True,
            )
        except RuntimeError:
            # Some custom autograd functions cannot be batched: one row at a time.
            grads = torch.stack(
                [
                    torch.autograd.grad(
                        output, point, basis[i], create_graph=create_graph, retain_graph=True
                    )[0]
                    for i in range(rows)
                ]
            )
    return grads.transpose(0, 1)


def _forward_columns(operator: LinearOperator) -> Tensor | None:
    """Return the Jacobians from ``n_in`` batched JVPs when ``n_in < n_out``, else ``None``."""
    point = operator.point.detach()
    n_in = point.shape[-1]
    with torch.no_grad():
        n_out = operator.function(point).shape[-1]
    if n_in >= n_out:
        return None
    basis = torch.eye(n_in, dtype=point.dtype, device=point.device)
    block = basis.unsqueeze(0).expand(point.shape[0], n_in, n_in)
    with torch.no_grad():
        return block_product(operator, linearize=False)(block)


def step_jacobians(
    stack: nn.Module,
    x_t: Tensor,
    states: list[Tensor],
    *,
    edges: tuple[str, ...] = EDGES,
    create_graph: bool = False,
    max_decoder_outputs: int = MAX_DECODER_OUTPUTS,
) -> tuple[dict[tuple[str, int], Tensor], list[Tensor]]:
    """Return every local Jacobian of one step, keyed by ``(edge, layer)``, and the new states.

    Each Jacobian has shape ``(batch, n_out, n_in)``; see :func:`step_maps` for the arguments.
    """
    maps, new_states = step_maps(
        stack, x_t, states, edges=edges, max_decoder_outputs=max_decoder_outputs
    )
    return {m.key: jacobian(m, create_graph=create_graph) for m in maps}, new_states
