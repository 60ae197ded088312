"""LSC pre-training of deep recurrent networks: drive every local gain to its target.

Two modes share one loop (one iteration per time step of the input sequences, states carried
forward, so the Jacobians are taken where the data takes the network):

``"plain"``
    Adam (lr 1e-2) on the LSC loss alone, ``(1/K) sum_k mean_b (rho_{k,b} - rho*_k)^2`` over
    the ``K`` edges present, with every trainable tensor (biases included) in the optimizer.
    After each step the kernels are rescaled multiplicatively towards the targets
    (:mod:`defusal.lsc.rescale`, exponent ``rescale``; 0 turns it off).

``"faithful"``
    The original procedure: AdaBelief (lr 7.2e-3, weight decay 1e-4) inside Lookahead (6 steps,
    alpha 0.5); the loss divided by ``2L + 1`` whether or not the decoder is present; after
    each step the clipped rescaling and, with probability 1/3, the weight shuffling of
    :mod:`defusal.lsc.faithful`; the best weights reloaded after ``2 * patience`` steps without
    improvement.

Both keep an exponential moving average (decay 0.9) of every edge type's mean gain over layers
and samples. Once every average has stayed within ``tolerance`` of its target for ``patience``
consecutive steps, and for at least one whole input sequence because the gains change along a
sequence, the gains are measured again with learning off on a fixed set of batches. The run
stops if every edge type's mean is then within ``tolerance``; otherwise the window starts
again. Without such a stop, the run ends after ``steps`` steps with the weights whose moving
averages had the lowest squared distance to the targets. The reported ``after`` table is the
same clean measurement.

In plain mode a non-square Jacobian (encoder, decoder) is cut to 8 random squares per step and
their gains averaged, and each kernel's Adam learning rate shrinks with its fan-in beyond 64
(:func:`width_scaled_groups`), so a width-2048 layer moves as cautiously as a width-64 one.

A step with a NaN or Inf loss, gradient or weight restores the best weights and halves the
learning rate, so no NaN weight is returned.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.jacobian import EDGES, MAX_DECODER_OUTPUTS, check_input, step_maps
from defusal.lsc import faithful
from defusal.lsc.gains import edge_gains, lsc_loss
from defusal.lsc.measure import _device_of, batch_inputs, evaluation_mode, gaussian_inputs, measure
from defusal.lsc.report import LSCReport, edge_means
from defusal.lsc.rescale import rescale_to_targets_
from defusal.lsc.targets import resolve_targets
from defusal.radius import NONSQUARE_POLICIES, check_estimator

logger = logging.getLogger(__name__)

MODES = ("plain", "faithful")
DEFAULT_LR = {"plain": 1e-2, "faithful": 7.2e-3}
DEFAULT_RESCALE = 0.5
MAX_RESTORES = 8
EMA_DECAY = 0.9
# Warm-started power iterations stop at this relative change: the estimate then moves less
# than the per-step noise of the batch.
POWER_TOLERANCE = 1e-3
# Random square cuts averaged per non-square Jacobian and step in plain mode. One cut, as in
# the original procedure, makes the per-step encoder and decoder gains of a 5-layer width-64
# LSTM on sl-MNIST vary by about 0.1; eight cut that spread by a factor of about 2.8.
PLAIN_CUTS = 8
# Kernels wider than this get a proportionally smaller Adam step (see width_scaled_groups).
REFERENCE_FAN = 64
# Batches in the clean measurements: before, at each stop check and after.
MEASURE_BATCHES = 4


def width_scaled_groups(parameters, lr: float, reference_fan: int = REFERENCE_FAN) -> list[dict]:
    """Return one optimizer parameter group per tensor, with ``lr`` scaled down for wide kernels.

    An Adam step moves every entry by about ``lr``, so a coherent step on an ``n``-wide kernel
    has a spectral norm near ``lr * n``, while the kernel's own spectral norm stays near 1 at
    the usual ``1 / sqrt(n)`` initialization. Each tensor of two or more dimensions therefore
    gets ``lr * min(1, reference_fan / fan_in)`` with ``fan_in = numel / shape[0]``, which
    keeps the relative change per step of every kernel what it is at width ``reference_fan``.
    Vectors (biases) keep ``lr``.
    """
    groups = []
    for parameter in parameters:
        scale = 1.0
        if parameter.dim() >= 2:
            fan_in = parameter.numel() // max(parameter.shape[0], 1)
            scale = min(1.0, reference_fan / max(fan_in, 1))
        groups.append({"params": [parameter], "lr": lr * scale, "lr_scale": scale})
    return groups


def make_optimizer(
    mode: str, parameters, lr: float, *, width_scaled: bool = False
) -> torch.optim.Optimizer:
    """Return Adam (plain) or AdaBelief in Lookahead (faithful).

    With ``width_scaled`` each kernel gets its own learning rate (:func:`width_scaled_groups`).
    """
    parameters = list(parameters)
    if width_scaled:
        parameters = width_scaled_groups(parameters, lr)
    if mode == "plain":
        return torch.optim.Adam(parameters, lr=lr)
    from defusal.optim import AdaBelief, Lookahead

    return Lookahead(AdaBelief(parameters, lr=lr, weight_decay=1e-4), k=6, alpha=0.5)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group, times the group's ``lr_scale`` if any."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Return a detached copy of the model's state dict."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def all_finite(model: nn.Module) -> bool:
    """Return whether every parameter and buffer of ``model`` is finite."""
    return all(
        bool(torch.isfinite(value).all())
        for value in model.state_dict().values()
        if value.is_floating_point()
    )


def grads_finite(parameters: Iterable[nn.Parameter]) -> bool:
    """Return whether every existing gradient is finite."""
    return all(bool(torch.isfinite(p.grad).all()) for p in parameters if p.grad is not None)


class BestTracker:
    """Moving averages of the mean gain per edge type, the best weights and the stop window.

    ``update`` takes the mean gain of each edge type at one step (measured with the weights
    before that step's update). The weights whose moving averages have the lowest
    ``sum_e (ema_e - target_e)^2`` so far are kept in ``best_state``; ``window`` counts the
    consecutive steps with every moving average within ``tolerance`` of its target.
    """

    def __init__(self, model: nn.Module, targets: dict[str, float], tolerance: float) -> None:
        self.targets = targets
        self.tolerance = tolerance
        self.averages: dict[str, float] = {}
        self.best_state = snapshot(model)
        self.best_score = math.inf
        self.window = 0
        self.stale = 0

    def update(self, model: nn.Module, means: dict[str, float]) -> bool:
        """Record one step; keep the weights if best; return whether all averages are in band."""
        for edge, value in means.items():
            previous = self.averages.get(edge, value)
            self.averages[edge] = EMA_DECAY * previous + (1 - EMA_DECAY) * value
        score = sum((self.averages[e] - self.targets[e]) ** 2 for e in means)
        if score < self.best_score:
            self.best_score = score
            self.best_state = snapshot(model)
            self.stale = 0
        else:
            self.stale += 1
        inside = all(
            abs(self.averages[edge] - self.targets[edge]) < self.tolerance for edge in means
        )
        self.window = self.window + 1 if inside else 0
        return inside

    def restore(self, model: nn.Module) -> None:
        """Load the best weights into ``model``."""
        model.load_state_dict(self.best_state)


def _sequences(
    model: nn.Module,
    batches,
    batch_size: int,
    time_steps: int,
    generator: torch.Generator,
) -> Iterator[Tensor]:
    if batches is None or (isinstance(batches, str) and batches == "gaussian"):
        while True:
            yield gaussian_inputs(model, batch_size, time_steps, generator)
    if isinstance(batches, str):
        raise DefusalError(f"unknown input source {batches!r}; pass batches or 'gaussian'")
    if isinstance(batches, (Tensor, tuple)):
        batches = [batches]
    for batch in itertools.cycle(batches):
        yield batch_inputs(batch)


def _check_options(mode, estimator, nonsquare, steps, tolerance, patience) -> None:
    if mode not in MODES:
        raise DefusalError(f"unknown LSC mode {mode!r}; choose one of {', '.join(MODES)}")
    check_estimator(estimator)
    if nonsquare not in NONSQUARE_POLICIES:
        raise DefusalError(f"unknown nonsquare policy {nonsquare!r}; use 'subsample' or 'norm'")
    if int(steps) < 0:
        raise DefusalError(f"steps must be zero or positive, got {steps}")
    if not tolerance > 0:
        raise DefusalError(f"tolerance must be positive, got {tolerance}")
    if int(patience) <= 0:
        raise DefusalError(f"patience must be positive, got {patience}")


def pretrain_(
    model: nn.Module,
    batches: Iterable | Tensor | str | None = None,
    *,
    target: float | str | dict = 1.0,
    mode: str = "plain",
    estimator: str = "eig",
    steps: int = 400,
    lr: float | None = None,
    tolerance: float = 0.05,
    patience: int = 20,
    batch_size: int = 16,
    time_steps: int = 50,
    nonsquare: str = "subsample",
    edges: tuple[str, ...] = EDGES,
    max_decoder_outputs: int = MAX_DECODER_OUTPUTS,
    measure_samples: int = 10,
    iterations: int = 30,
    max_seconds: float | None = None,
    seed: int = 0,
    callback: Callable[[int, float, dict[str, float]], None] | None = None,
    rescale: float | None = None,
    cuts: int | None = None,
    measure_batches: int = MEASURE_BATCHES,
    width_scaled_lr: bool | None = None,
    **kwargs,
) -> LSCReport:
    """Pre-train ``model`` in place so that every local gain meets its target.

    Dispatches on the model: a ``DeepFFN`` goes to :func:`defusal.lsc.ffn.pretrain_ffn_`
    (random blocks, target 1); a stack of residual LRU cells in ``"faithful"`` mode goes to the
    gradient-free :func:`defusal.lsc.lru.pretrain_lru_`; any other recurrent stack runs the
    loop described in this module.

    Args:
        model: a :class:`defusal.nets.base.RecurrentStack`, a ``DeepFFN`` or an LRU stack.
        batches: input sequences ``(batch, time, features)`` (or token ids), ``(x, y)`` batches
            or an iterable of them, cycled as needed; ``None`` or ``"gaussian"`` draws
            standard normal inputs of shape ``(batch_size, time_steps, input_size)``.
        target: 1, 0.5, ``"unbalanced"`` or a dict per edge type
            (see :func:`defusal.lsc.targets.resolve_targets`).
        mode: ``"plain"`` or ``"faithful"`` (see the module docstring).
        estimator: ``"eig"``, ``"norm"``, ``"matrix_free"`` or ``"matrix_free_norm"``.
        steps: maximum optimization steps (one per time step).
        lr: learning rate; 1e-2 (plain) or 7.2e-3 (faithful) when ``None``.
        tolerance: half-width of the band around each target for the stop rule, applied to
            the moving average of each edge type's mean gain.
        patience: consecutive in-band steps of the moving averages before a stop check, at
            least one sequence length. The check measures the gains with learning off
            (:func:`defusal.lsc.measure.measure` over ``measure_batches`` batches,
            ``measure_samples`` time steps each); the run stops only if every edge type's mean
            is within ``tolerance`` of its target, else the window starts again.
        batch_size, time_steps: shape of Gaussian inputs.
        nonsquare: ``"subsample"`` or ``"norm"`` for non-square Jacobians.
        edges: edge types in the loss.
        max_decoder_outputs: leave the decoder out for wider readouts.
        measure_samples: time steps measured per sequence for the before, stop-check and
            after tables.
        iterations: power iterations per matrix-free estimate (warm-started between steps).
        max_seconds: optional wall-clock limit for the optimization loop.
        seed: seed of inputs, sub-sampling, start vectors and shuffling.
        callback: called after every step as ``callback(step, loss, mean gain per edge type)``.
        rescale: exponent ``eta`` of the plain-mode kernel rescaling
            ``clip((rho* / rho)^eta, 0.85, 1.15)`` after each step; 0 turns it off, ``None``
            means 0.5. Faithful mode always uses its own rescaling.
        cuts: random square cuts averaged per non-square Jacobian (encoder, decoder) at each
            step and in the measurements, with ``nonsquare="subsample"``. ``None`` means 8 in
            plain mode and 1 (a fresh single cut per step, as the original) in faithful mode.
        measure_batches: distinct batches in the clean measurements. The first
            ``measure_batches`` of a list of batches are used; Gaussian inputs draw that many
            fixed sequences from ``seed``; any other iterable gives its first batch only.
        width_scaled_lr: give each kernel the learning rate ``lr * min(1, 64 / fan_in)``
            (see :func:`width_scaled_groups`); ``None`` means on in plain mode and off in
            faithful mode. A network of width 64 or less is unaffected.
        **kwargs: passed to the FFN or LRU procedure.

    Returns:
        An :class:`defusal.lsc.report.LSCReport`.

    Raises:
        DefusalError: for a bad target, mode, estimator, input size or non-finite initial
            weights.
    """
    _check_options(mode, estimator, nonsquare, steps, tolerance, patience)
    from defusal.nets.ffn import DeepFFN

    if isinstance(model, DeepFFN):
        from defusal.lsc.ffn import pretrain_ffn_

        return pretrain_ffn_(
            model,
            batches,
            target=target,
            mode=mode,
            estimator=estimator,
            steps=steps,
            lr=lr,
            tolerance=tolerance,
            patience=patience,
            nonsquare=nonsquare,
            batch_size=batch_size,
            max_seconds=max_seconds,
            seed=seed,
            callback=callback,
            **kwargs,
        )
    if not hasattr(model, "cells"):
        raise DefusalError(
            f"cannot pre-train a {type(model).__name__}; pass a RecurrentStack or a DeepFFN"
        )
    if mode == "faithful" and _is_residual_lru(model):
        from defusal.lsc.lru import pretrain_lru_

        return pretrain_lru_(
            model,
            target=target,
            steps=steps,
            batch_size=batch_size,
            tolerance=tolerance,
            patience=patience,
            time_steps=time_steps,
            max_seconds=max_seconds,
            seed=seed,
            estimator=estimator,
            callback=callback,
            **kwargs,
        )
    if kwargs:
        raise DefusalError(f"unexpected options for a recurrent stack: {sorted(kwargs)}")
    if not all_finite(model):
        raise DefusalError("the model has NaN or Inf weights before pre-training; re-initialize it")

    start_time = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    device = _device_of(model)
    sequences = _sequences(model, batches, batch_size, time_steps, generator)
    reference = next(sequences).to(device)
    check_input(model, reference)
    num_layers = len(model.cells)
    targets = resolve_targets(target, num_layers=num_layers, time_steps=reference.shape[1])
    if cuts is None:
        cuts = PLAIN_CUTS if mode == "plain" else 1
    cuts = int(cuts)
    if cuts < 1:
        raise DefusalError(f"cuts must be a positive integer, got {cuts}")
    if int(measure_batches) < 1:
        raise DefusalError(f"measure_batches must be a positive integer, got {measure_batches}")
    if width_scaled_lr is None:
        width_scaled_lr = mode == "plain"
    measure_data = _measure_batches(
        model, batches, reference, int(measure_batches), batch_size, time_steps, seed
    )
    measure_options = dict(
        estimator=estimator,
        time_samples=measure_samples,
        max_batches=len(measure_data),
        nonsquare=nonsquare,
        edges=edges,
        seed=seed,
        iterations=iterations,
        max_decoder_outputs=max_decoder_outputs,
        cuts=cuts,
    )
    before = measure(model, measure_data, **measure_options)

    rescale = DEFAULT_RESCALE if rescale is None else float(rescale)
    if not (math.isfinite(rescale) and rescale >= 0):
        raise DefusalError(f"rescale must be zero or positive, got {rescale}")
    lr = DEFAULT_LR[mode] if lr is None else float(lr)
    if not lr > 0:
        raise DefusalError(f"learning rate must be positive, got {lr}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(mode, parameters, lr, width_scaled=width_scaled_lr)
    divisor = 2 * num_layers + 1 if mode == "faithful" else None
    tracker = BestTracker(model, targets, tolerance)
    warm_starts: dict = {}
    history: list[dict] = []
    x, t, states = reference, 0, None
    restores, done, loss_value, converged = 0, 0, math.nan, False

    with evaluation_mode(model):
        for step in range(1, steps + 1):
            if max_seconds is not None and time.perf_counter() - start_time > max_seconds:
                logger.info("LSC stopped at the time limit after %d steps", done)
                break
            if states is None or t >= x.shape[1]:
                if states is not None:
                    x = next(sequences).to(device)
                    check_input(model, x)
                states, t = model.initial_states(x.shape[0], x), 0
            maps, new_states = step_maps(
                model, x[:, t], states, edges=edges, max_decoder_outputs=max_decoder_outputs
            )
            gains = edge_gains(
                maps,
                estimator,
                nonsquare=nonsquare,
                create_graph=True,
                generator=generator,
                iterations=iterations,
                tolerance=POWER_TOLERANCE,
                warm_starts=warm_starts,
                cuts=cuts,
            )
            loss = lsc_loss(gains, targets, divisor)
            means = _edge_means(gains)
            loss_value = float(loss.detach())
            done = step

            if not math.isfinite(loss_value) or not all(map(math.isfinite, means.values())):
                restores, lr, optimizer = _recover(
                    model, tracker, mode, parameters, lr, restores, width_scaled_lr
                )
                states = None
                if restores > MAX_RESTORES:
                    break
                continue
            inside = tracker.update(model, means)
            history.append({"step": step, "loss": loss_value, **means})
            if callback is not None:
                callback(step, loss_value, means)
            # In band for a whole sequence: early time steps alone are not representative.
            # The moving averages mix weights of past steps, so a clean measurement decides.
            if inside and tracker.window >= max(patience, x.shape[1]):
                if _within_tolerance(
                    measure(model, measure_data, **measure_options), targets, tolerance
                ):
                    converged = True
                    break
                tracker.window = 0

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            finite = grads_finite(parameters)
            if finite:
                optimizer.step()
            if finite and mode == "plain" and rescale > 0:
                batch_means = {key: float(value.detach().mean()) for key, value in gains.items()}
                rescale_to_targets_(model, batch_means, targets, exponent=rescale)
            if finite and mode == "faithful":
                factors = {
                    key: float((targets[key[0]] / value.detach().clamp_min(1e-6)).mean())
                    for key, value in gains.items()
                }
                faithful.rescale_(model, factors)
                if float(torch.rand((), generator=generator)) < faithful.SHUFFLE_PROBABILITY:
                    faithful.shuffle_(model, generator)
                if tracker.stale >= 2 * patience:
                    tracker.restore(model)
                    tracker.stale = 0
            # A NaN or Inf gradient or weight restores the best weights and lowers the step size.
            if not finite or not all_finite(model):
                restores, lr, optimizer = _recover(
                    model, tracker, mode, parameters, lr, restores, width_scaled_lr
                )
                states = None
                if restores > MAX_RESTORES:
                    break
                continue
            states, t = new_states, t + 1

    if not converged:
        tracker.restore(model)
    if not all_finite(model):
        tracker.restore(model)
    after = measure(model, measure_data, **measure_options)
    return LSCReport(
        before=before,
        after=after,
        targets={edge: targets[edge] for edge in before},
        steps=done,
        seconds=time.perf_counter() - start_time,
        converged=converged,
        mode=mode,
        estimator=estimator,
        final_loss=loss_value,
        nonfinite_restores=restores,
        history=history,
    )


def _measure_batches(model, batches, reference, count, batch_size, time_steps, seed) -> list:
    """Return the fixed batches of the clean measurements (see ``measure_batches``)."""
    if batches is None or (isinstance(batches, str) and batches == "gaussian"):
        generator = torch.Generator().manual_seed(seed + 1)
        draws = [reference]
        while len(draws) < count:
            draws.append(gaussian_inputs(model, batch_size, time_steps, generator))
        return draws
    if isinstance(batches, list):
        return [batch_inputs(batch) for batch in batches[:count]]
    return [reference]


def _within_tolerance(table, targets: dict[str, float], tolerance: float) -> bool:
    return all(abs(value - targets[edge]) < tolerance for edge, value in edge_means(table).items())


def _edge_means(gains: dict[tuple[str, int], Tensor]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for (edge, _), value in gains.items():
        sums.setdefault(edge, []).append(float(value.detach().mean()))
    return {edge: sum(values) / len(values) for edge, values in sums.items()}


def _recover(model, tracker, mode, parameters, lr, restores, width_scaled):
    """Restore the best weights after a non-finite step, halve the rate, reset the optimizer."""
    restores += 1
    tracker.restore(model)
    lr = lr * 0.5
    logger.warning("non-finite LSC step: best weights restored, learning rate lowered to %.3g", lr)
    return restores, lr, make_optimizer(mode, parameters, lr, width_scaled=width_scaled)


def _is_residual_lru(model: nn.Module) -> bool:
    from defusal.nets.lru import ResidualLRUCell

    return all(isinstance(cell, ResidualLRUCell) for cell in model.cells)


def copy_model(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` (for comparing before and after)."""
    return copy.deepcopy(model)
