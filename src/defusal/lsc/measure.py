"""Measure the local gains of a recurrent stack along real or Gaussian input trajectories."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.jacobian import EDGES, MAX_DECODER_OUTPUTS, check_input, step_maps
from defusal.lsc.gains import edge_gains
from defusal.lsc.report import RadiusTable


def batch_inputs(batch) -> Tensor:
    """Return the input tensor of a batch given as ``x`` or ``(x, y, ...)``."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise DefusalError(f"expected a tensor batch or an (x, y) pair, got {type(batch).__name__}")
    return batch


def gaussian_inputs(
    stack: nn.Module, batch_size: int, time_steps: int, generator: torch.Generator
) -> Tensor:
    """Draw a Gaussian input sequence for ``stack``, ``(batch, time, input_size)``.

    A stack with an ``nn.Embedding`` encoder gets uniform random token ids ``(batch, time)``.
    """
    encoder = getattr(stack, "encoder", None)
    if isinstance(encoder, nn.Embedding):
        return torch.randint(encoder.num_embeddings, (batch_size, time_steps), generator=generator)
    if encoder is not None:
        raise DefusalError(
            f"cannot draw Gaussian inputs for a {type(encoder).__name__} encoder; pass batches"
        )
    size = stack.cells[0].input_size
    return torch.randn(batch_size, time_steps, size, generator=generator)


@contextmanager
def evaluation_mode(model: nn.Module):
    """Switch ``model`` to eval mode (no dropout) and restore its mode afterwards."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def measure(
    stack: nn.Module,
    data: Tensor | Iterable,
    *,
    estimator: str = "eig",
    time_samples: int = 10,
    max_batches: int = 1,
    nonsquare: str = "subsample",
    edges: tuple[str, ...] = EDGES,
    seed: int = 0,
    iterations: int = 30,
    max_decoder_outputs: int = MAX_DECODER_OUTPUTS,
    cuts: int = 1,
) -> RadiusTable:
    """Return the mean gain of every local Jacobian along input trajectories.

    Each sequence runs step by step from zero states with the states carried forward. At
    ``time_samples`` time steps drawn at random along the trajectory, the gain of every
    ``(edge, layer)`` Jacobian is computed per sample; the table holds the mean over samples,
    sampled steps and batches. The model is measured in eval mode (no dropout).

    Args:
        stack: a recurrent stack.
        data: one input ``(batch, time, features)`` (token ids ``(batch, time)``), a batch
            ``(x, y)`` or an iterable of such batches.
        estimator: see :mod:`defusal.radius`.
        time_samples: time steps measured per sequence (all when the sequence is shorter).
        max_batches: batches taken from an iterable.
        nonsquare: ``"subsample"`` or ``"norm"`` for non-square Jacobians.
        edges: edge types to measure.
        seed: seed of the time-step draw, sub-sampling and start vectors.
        iterations: power iterations of the matrix-free estimators.
        max_decoder_outputs: leave the decoder out for wider readouts.
        cuts: random square cuts averaged per non-square Jacobian and measured step
            (see :func:`defusal.lsc.gains.map_gains`).

    Returns:
        ``{edge: {layer: mean gain}}``.
    """
    if isinstance(data, (Tensor, tuple)):
        data = [data]
    generator = torch.Generator().manual_seed(seed)
    device = _device_of(stack)
    sums: dict[tuple[str, int], float] = {}
    counts: dict[tuple[str, int], int] = {}
    warm_starts: dict = {}
    with evaluation_mode(stack):
        for index, batch in enumerate(data):
            if index >= max_batches:
                break
            x = batch_inputs(batch).to(device)
            check_input(stack, x)
            steps = x.shape[1]
            chosen = torch.randperm(steps, generator=generator)[: min(time_samples, steps)]
            chosen = set(chosen.tolist())
            states = stack.initial_states(x.shape[0], x)
            for t in range(steps):
                if t not in chosen:
                    with torch.no_grad():
                        _, states = stack.step(x[:, t], states)
                    continue
                maps, states = step_maps(
                    stack, x[:, t], states, edges=edges, max_decoder_outputs=max_decoder_outputs
                )
                gains = edge_gains(
                    maps,
                    estimator,
                    nonsquare=nonsquare,
                    generator=generator,
                    iterations=iterations,
                    warm_starts=warm_starts,
                    cuts=cuts,
                )
                for key, value in gains.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach().sum())
                    counts[key] = counts.get(key, 0) + value.numel()
    if not counts:
        raise DefusalError("no data to measure; pass at least one batch with one time step")
    table: RadiusTable = {}
    for (edge, layer), total in sorted(
        sums.items(), key=lambda item: (EDGES.index(item[0][0]), item[0][1])
    ):
        table.setdefault(edge, {})[layer] = total / counts[(edge, layer)]
    return table
