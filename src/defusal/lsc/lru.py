"""Gradient-free LSC pre-training of a stack of residual LRU blocks.

Each iteration draws two different layers ``l1`` and ``l2`` at random (not necessarily
adjacent) and Gaussian inputs and states, then takes one step ``(u, s1) -> (y1, s1')`` through
``l1`` and ``(y1, s2) -> s2'`` through ``l2``. Two batch-mean radii follow:

* time, ``a_t = rho(d s1' / d s1)``, which equals ``max |lambda|`` of ``l1``;
* depth, ``a_l = rho(d s2' / d s1)``, through ``l1``'s readout, GELU, GLU and residual path
  and ``l2``'s LayerNorm and input matrix ``B``.

No optimizer runs. The updates are multiplicative and clipped to ``[0.95, 1.05]``:
``nu_log`` of both layers is multiplied by ``clip(rho_t* / a_t)`` (``nu_log < 0`` whenever
``|lambda| > exp(-1)``, so a factor above 1 moves ``|lambda|`` towards 1) and ``B``, ``C`` of
``l2`` by ``clip(rho_l* / a_l)``. Then every tensor of both layers is shuffled (entries
permuted), and the first half of every flattened tensor of ``l1`` is exchanged with ``l2``'s.

The original code meant the exchange as a swap but wrote it as a one-way copy: ``l1``'s first
half receives ``l2``'s values and ``l2`` is unchanged. ``half_swap="copy"`` (the default)
reproduces that; ``half_swap="swap"`` exchanges both halves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.jacobian import LocalMap
from defusal.lsc.gains import edge_gains
from defusal.lsc.measure import evaluation_mode
from defusal.lsc.report import LSCReport, RadiusTable
from defusal.lsc.targets import resolve_targets

CLIP_RANGE = (0.95, 1.05)
HALF_SWAPS = ("copy", "swap")
INPUT_MATRICES = ("B_re", "B_im", "C_re", "C_im")


def pair_maps(
    first: nn.Module, second: nn.Module | None, batch_size: int, generator: torch.Generator
) -> list[LocalMap]:
    """Return the time map of ``first`` and the depth map from ``first`` to ``second``.

    Inputs and both states are standard normal draws; ``second`` may be ``None`` (time only).
    """
    u = torch.randn(batch_size, first.input_size, generator=generator)
    state_1 = torch.randn(batch_size, first.state_size, generator=generator)
    maps = [LocalMap("time", 0, lambda s: first.transition(u, s), state_1)]
    if second is not None:
        state_2 = torch.randn(batch_size, second.state_size, generator=generator)

        def depth(s: Tensor) -> Tensor:
            new_state = first.transition(u, s)
            return second.transition(first.output(u, new_state), state_2)

        maps.append(LocalMap("depth", 1, depth, state_1))
    return maps


def _partner(cells, first: int, order: list[int]) -> int | None:
    for index in order:
        if index != first and cells[index].input_size == cells[first].output_size:
            return index
    return None


@torch.no_grad()
def half_swap_(first: nn.Module, second: nn.Module, how: str = "copy") -> None:
    """Exchange the first half of every flattened tensor of ``first`` with ``second``'s.

    Only tensors of the same name and shape take part. ``how="copy"`` writes ``second``'s
    first halves into ``first`` and leaves ``second`` unchanged (the original behaviour);
    ``how="swap"`` exchanges them.
    """
    if how not in HALF_SWAPS:
        raise DefusalError(f"unknown half_swap {how!r}; use 'copy' or 'swap'")
    others = dict(second.named_parameters())
    for name, parameter in first.named_parameters():
        other = others.get(name)
        if other is None or other.shape != parameter.shape:
            continue
        half = parameter.numel() // 2
        mine, theirs = parameter.view(-1), other.view(-1)
        kept = mine[:half].clone()
        mine[:half] = theirs[:half]
        if how == "swap":
            theirs[:half] = kept


@torch.no_grad()
def _shuffle_(module: nn.Module, generator: torch.Generator) -> None:
    for parameter in module.parameters():
        if parameter.requires_grad:
            order = torch.randperm(parameter.numel(), generator=generator)
            parameter.copy_(parameter.flatten()[order].view_as(parameter))


def measure_lru(
    stack: nn.Module, *, batch_size: int = 8, seed: int = 0, repeats: int = 4
) -> RadiusTable:
    """Return the mean time radius of every layer and depth radius of every adjacent pair.

    The points are Gaussian inputs and states, as in the procedure; ``repeats`` draws are
    averaged.
    """
    generator = torch.Generator().manual_seed(seed)
    cells = list(stack.cells)
    table: RadiusTable = {"time": {}, "depth": {}}
    with evaluation_mode(stack):
        for layer, cell in enumerate(cells):
            below = cells[layer - 1] if layer > 0 else None
            time_sum = depth_sum = 0.0
            for _ in range(repeats):
                gains = edge_gains(pair_maps(cell, None, batch_size, generator))
                time_sum += float(gains[("time", 0)].mean())
                if below is not None:
                    gains = edge_gains(pair_maps(below, cell, batch_size, generator))
                    depth_sum += float(gains[("depth", 1)].mean())
            table["time"][layer] = time_sum / repeats
            if below is not None:
                table["depth"][layer] = depth_sum / repeats
    if not table["depth"]:
        del table["depth"]
    return table


def pretrain_lru_(
    stack: nn.Module,
    *,
    target: float | str | dict = 1.0,
    steps: int = 500,
    batch_size: int = 8,
    tolerance: float = 0.05,
    patience: int = 20,
    time_steps: int | None = None,
    half_swap: str = "copy",
    shuffle: bool = True,
    clip: tuple[float, float] = CLIP_RANGE,
    max_seconds: float | None = None,
    seed: int = 0,
    estimator: str = "eig",
    callback: Callable[[int, float, dict[str, float]], None] | None = None,
) -> LSCReport:
    """Pre-train a stack of residual LRU cells in place with the gradient-free procedure.

    Args:
        stack: a stack whose cells have ``transition``, ``output`` and an ``lru`` with
            ``nu_log``, ``B_re``, ``B_im``, ``C_re``, ``C_im`` (:class:`ResidualLRUCell`).
        target: 1, 0.5, ``"unbalanced"`` or a dict (see
            :func:`defusal.lsc.targets.resolve_targets`).
        steps: iterations (500 in the original).
        batch_size: Gaussian samples per iteration.
        tolerance, patience: stop once the moving averages (decay 0.9) of both radii stay
            within ``tolerance`` of their targets for ``patience`` iterations.
        time_steps: sequence length ``T`` for the ``"unbalanced"`` target.
        half_swap: ``"copy"`` (original one-way copy) or ``"swap"``.
        shuffle: permute every tensor of both layers each iteration.
        clip: range of the multiplicative factors.
        max_seconds: optional wall-clock limit.
        seed: seed of the layer draw, Gaussian points and shuffling.
        estimator: radius estimator for the two Jacobians.
        callback: called after every iteration as ``callback(step, loss, radii)``.

    Returns:
        An :class:`defusal.lsc.report.LSCReport` (mode ``"lru"``).

    Raises:
        DefusalError: for a bad target or half-swap, or cells that are not residual LRUs.
    """
    cells = list(stack.cells)
    for index, cell in enumerate(cells):
        if not hasattr(cell, "lru"):
            raise DefusalError(
                f"layer {index} is a {type(cell).__name__}; the gradient-free LRU procedure "
                "needs ResidualLRUCell layers"
            )
    if half_swap not in HALF_SWAPS:
        raise DefusalError(f"unknown half_swap {half_swap!r}; use 'copy' or 'swap'")
    targets = resolve_targets(target, num_layers=len(cells), time_steps=time_steps)
    start_time = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    before = measure_lru(stack, batch_size=batch_size, seed=seed)
    averages: dict[str, float] = {}
    history: list[dict] = []
    window, done, loss_value, converged = 0, 0, math.nan, False

    with evaluation_mode(stack), torch.no_grad():
        for step in range(1, steps + 1):
            if max_seconds is not None and time.perf_counter() - start_time > max_seconds:
                break
            order = torch.randperm(len(cells), generator=generator).tolist()
            first = order[0]
            second = _partner(cells, first, order[1:])
            maps = pair_maps(
                cells[first], None if second is None else cells[second], batch_size, generator
            )
            gains = edge_gains(maps, estimator, generator=generator)
            radii = {edge: float(gains[(edge, layer)].mean()) for edge, layer in gains}
            loss_value = sum((radii[e] - targets[e]) ** 2 for e in radii) / len(radii)
            done = step
            for edge, value in radii.items():
                averages[edge] = 0.9 * averages.get(edge, value) + 0.1 * value
            inside = all(abs(averages[e] - targets[e]) < tolerance for e in averages)
            window = window + 1 if inside else 0
            history.append({"step": step, "loss": loss_value, "layers": (first, second), **radii})
            if callback is not None:
                callback(step, loss_value, radii)
            if window >= patience:
                converged = True
                break

            time_factor = _clipped(targets["time"], radii["time"], clip)
            cells[first].lru.nu_log.mul_(time_factor)
            if second is not None:
                cells[second].lru.nu_log.mul_(time_factor)
                depth_factor = _clipped(targets["depth"], radii["depth"], clip)
                for name in INPUT_MATRICES:
                    getattr(cells[second].lru, name).mul_(depth_factor)
                if shuffle:
                    _shuffle_(cells[first], generator)
                    _shuffle_(cells[second], generator)
                half_swap_(cells[first], cells[second], half_swap)
            elif shuffle:
                _shuffle_(cells[first], generator)

    after = measure_lru(stack, batch_size=batch_size, seed=seed)
    return LSCReport(
        before=before,
        after=after,
        targets={edge: targets[edge] for edge in before},
        steps=done,
        seconds=time.perf_counter() - start_time,
        converged=converged,
        mode="lru",
        estimator=estimator,
        final_loss=loss_value,
        history=history,
    )


def _clipped(target: float, value: float, clip: tuple[float, float]) -> float:
    if not (value > 0 and math.isfinite(value)):
        return 1.0
    return min(max(target / value, clip[0]), clip[1])
