"""LSC pre-training of a deep feed-forward network, one random block at a time.

Each step picks one block of a :class:`defusal.nets.ffn.DeepFFN` at random: a hidden
``Linear -> activation`` pair, or the output ``Linear`` alone. It runs a batch of real inputs
up to the block, takes the per-sample Jacobian ``d block(z) / d z`` at the block's actual input
``z`` (cut to a square by random sub-sampling when the block is not square), and updates only
that block's parameters on ``mean_b (rho_b - rho*)^2``, with ``rho*`` = 1 for feed-forward
networks.

Non-gradient steps, with the original probabilities:

* rescaling, probability 1/3, of the block's kernel by ``m = 1 / n`` with ``n`` the kernel's
  "local norm": ``std(W) sqrt(fan_out)`` for the first kernel, ``std(W) sqrt(fan_in)`` for the
  output kernel and the current mean radius otherwise; ``m`` is clipped to ``[0.85, 3]`` when
  ``n < 0.5``, else to ``[0.85, 1.15]``;
* faithful mode only: shuffling, probability 0.2, of every tensor of the block, biases
  included;
* with a ``cos`` activation, zero biases are redrawn from ``U(0, 1)`` before the first step,
  because ``cos'(0) = 0`` makes the Jacobian vanish.

A moving average of the step radius (time constant ``(number of weight tensors) / 2``) decides
the stop: within ``tolerance`` of the target for ``patience`` consecutive steps. The weights
with the best moving average are kept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.jacobian import LocalMap
from defusal.lsc.gains import edge_gains
from defusal.lsc.measure import batch_inputs, evaluation_mode
from defusal.lsc.report import LSCReport, RadiusTable

logger = logging.getLogger(__name__)

DEFAULT_LR = {"plain": 1e-3, "faithful": 1e-4}
RESCALE_PROBABILITY = 1.0 / 3.0
SHUFFLE_PROBABILITY = 0.2


def block_ranges(model: nn.Module) -> list[tuple[int, int]]:
    """Return ``(start, stop)`` module ranges of every block: Linear + activation, last Linear.

    Args:
        model: a :class:`defusal.nets.ffn.DeepFFN`.
    """
    count = len(model.layers)
    blocks = [(start, start + 2) for start in range(0, count - 1, 2)]
    blocks.append((count - 1, count))
    return blocks


def block_map(model: nn.Module, x: Tensor, block: tuple[int, int], index: int) -> LocalMap:
    """Return the local map of one block at the block input reached by ``x``.

    Args:
        model: a DeepFFN.
        x: ``(batch, input_size)`` network inputs.
        block: ``(start, stop)`` module range.
        index: block number, stored as the map's layer.
    """
    start, stop = block
    with torch.no_grad():
        point = model.forward_range(x, 0, start).detach()

    def function(z: Tensor) -> Tensor:
        return model.forward_range(z, start, stop)

    return LocalMap("depth", index, function, point)


def measure_ffn(
    model: nn.Module, x: Tensor, *, estimator: str = "eig", seed: int = 0
) -> RadiusTable:
    """Return the batch-mean radius of every block, ``{"depth": {block: radius}}``.

    Args:
        model: a DeepFFN.
        x: ``(batch, input_size)`` or ``(batch, ...)`` inputs that flatten to it.
        estimator: see :mod:`defusal.radius`.
        seed: seed of the square sub-sampling.
    """
    generator = torch.Generator().manual_seed(seed)
    x = _flat_inputs(model, x)
    maps = [block_map(model, x, block, i) for i, block in enumerate(block_ranges(model))]
    with evaluation_mode(model):
        gains = edge_gains(maps, estimator, generator=generator)
    return {"depth": {layer: float(value.mean()) for (_, layer), value in gains.items()}}


def _flat_inputs(model: nn.Module, batch) -> Tensor:
    x = batch_inputs(batch)
    x = x.reshape(x.shape[0], -1).to(next(model.parameters()).dtype)
    if x.shape[1] != model.input_size:
        raise DefusalError(
            f"DeepFFN expects {model.input_size} features per example, got {x.shape[1]}; "
            "pass inputs of the network's input size"
        )
    return x


def _redraw_zero_biases_(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for linear in model.linears:
            if linear.bias is not None and bool((linear.bias == 0).all()):
                linear.bias.copy_(torch.rand(linear.bias.shape, generator=generator))


def _local_norm(model: nn.Module, block_index: int, blocks: int, radius: float) -> float:
    weight = model.linears[block_index].weight
    fan_out, fan_in = weight.shape
    if block_index == 0:
        return float(weight.std()) * math.sqrt(fan_out)
    if block_index == blocks - 1:
        return float(weight.std()) * math.sqrt(fan_in)
    return radius


def pretrain_ffn_(
    model: nn.Module,
    batches: Iterable | Tensor | str | None = None,
    *,
    target: float = 1.0,
    mode: str = "plain",
    estimator: str = "eig",
    steps: int = 400,
    lr: float | None = None,
    tolerance: float = 0.02,
    patience: int = 10,
    nonsquare: str = "subsample",
    batch_size: int = 64,
    max_seconds: float | None = None,
    seed: int = 0,
    callback: Callable[[int, float, dict[str, float]], None] | None = None,
) -> LSCReport:
    """Pre-train a DeepFFN in place so that every block's radius approaches ``target``.

    Args:
        model: a :class:`defusal.nets.ffn.DeepFFN`.
        batches: inputs ``(batch, input_size)`` (or images that flatten to it), ``(x, y)``
            batches or an iterable of them, cycled; ``None`` or ``"gaussian"`` draws standard
            normal inputs ``(batch_size, input_size)``.
        target: target radius of every block (1 in the original procedure).
        mode: ``"plain"`` (Adam, lr 1e-3) or ``"faithful"`` (AdaBelief in Lookahead, lr 1e-4,
            weight decay 1e-4, and the shuffling step).
        estimator: ``"eig"``, ``"norm"``, ``"matrix_free"`` or ``"matrix_free_norm"``.
        steps: maximum steps.
        lr: learning rate, or ``None`` for the mode's default.
        tolerance: stop band around the target for the moving average.
        patience: consecutive in-band steps needed to stop.
        nonsquare: ``"subsample"`` or ``"norm"`` for non-square blocks.
        batch_size: Gaussian batch size.
        max_seconds: optional wall-clock limit.
        seed: seed of the block draw, sub-sampling, rescaling and shuffling.
        callback: called after every step as ``callback(step, loss, {"depth": radius})``.

    Returns:
        An :class:`defusal.lsc.report.LSCReport` with the per-block radii under ``"depth"``.

    Raises:
        DefusalError: for a bad target, mode, learning rate or input size.
    """
    from defusal.lsc.pretrain import all_finite, make_optimizer, snapshot
    from defusal.lsc.targets import resolve_targets

    if mode not in DEFAULT_LR:
        raise DefusalError(f"unknown LSC mode {mode!r}; choose one of plain, faithful")
    target_value = resolve_targets(target, num_layers=1)["depth"]
    start_time = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if batches is None or (isinstance(batches, str) and batches == "gaussian"):
        batches = [torch.randn(batch_size, model.input_size, generator=generator)]
    elif isinstance(batches, str):
        raise DefusalError(f"unknown input source {batches!r}; pass batches or 'gaussian'")
    elif isinstance(batches, (Tensor, tuple)):
        batches = [batches]
    inputs = [_flat_inputs(model, batch) for batch in batches]
    if not inputs:
        raise DefusalError("no input batch for FFN pre-training; pass at least one batch")
    if model.activation == "cos":
        _redraw_zero_biases_(model, generator)
    before = measure_ffn(model, inputs[0], estimator=estimator, seed=seed)

    lr = DEFAULT_LR[mode] if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise DefusalError(f"learning rate must be positive, got {lr}")
    optimizer = make_optimizer(mode, model.parameters(), lr)
    blocks = block_ranges(model)
    weights = sum(1 for p in model.parameters() if p.dim() >= 2)
    decay = 1.0 - 1.0 / max(weights / 2.0, 1.0)
    average, best_score, best_state = None, math.inf, snapshot(model)
    window, done, loss_value, converged = 0, 0, math.nan, False
    history: list[dict] = []

    with evaluation_mode(model):
        for step in range(1, steps + 1):
            if max_seconds is not None and time.perf_counter() - start_time > max_seconds:
                break
            index = int(torch.randint(len(blocks), (), generator=generator))
            x = inputs[(step - 1) % len(inputs)]
            local_map = block_map(model, x, blocks[index], index)
            gains = edge_gains(
                [local_map], estimator, nonsquare=nonsquare, create_graph=True, generator=generator
            )[local_map.key]
            loss = ((gains - target_value) ** 2).mean()
            radius = float(gains.detach().mean())
            loss_value = float(loss.detach())
            done = step
            if not math.isfinite(loss_value):
                model.load_state_dict(best_state)
                break

            average = radius if average is None else decay * average + (1 - decay) * radius
            score = abs(average - target_value)
            if score < best_score:
                best_score, best_state = score, snapshot(model)
            window = window + 1 if score < tolerance else 0
            history.append({"step": step, "loss": loss_value, "block": index, "depth": radius})
            if callback is not None:
                callback(step, loss_value, {"depth": radius})
            if window >= patience:
                converged = True
                break

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _non_gradient_steps_(model, blocks, index, radius, mode, generator)
            if not all_finite(model):
                model.load_state_dict(best_state)
                break

    if not converged:
        model.load_state_dict(best_state)
    after = measure_ffn(model, inputs[0], estimator=estimator, seed=seed)
    return LSCReport(
        before=before,
        after=after,
        targets={"depth": target_value},
        steps=done,
        seconds=time.perf_counter() - start_time,
        converged=converged,
        mode=f"ffn-{mode}",
        estimator=estimator,
        final_loss=loss_value,
        history=history,
    )


@torch.no_grad()
def _non_gradient_steps_(model, blocks, index, radius, mode, generator) -> None:
    """Apply the random rescaling (and, in faithful mode, shuffling) to the chosen block."""
    start, stop = blocks[index]
    if float(torch.rand((), generator=generator)) < RESCALE_PROBABILITY:
        norm = _local_norm(model, index, len(blocks), radius)
        if norm > 0 and math.isfinite(norm):
            low, high = (0.85, 3.0) if norm < 0.5 else (0.85, 1.15)
            model.linears[index].weight.mul_(min(max(1.0 / norm, low), high))
    if mode == "faithful" and float(torch.rand((), generator=generator)) < SHUFFLE_PROBABILITY:
        for module in model.layers[start:stop]:
            for parameter in module.parameters():
                order = torch.randperm(parameter.numel(), generator=generator)
                parameter.copy_(parameter.flatten()[order].view_as(parameter))
