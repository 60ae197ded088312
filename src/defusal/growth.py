"""Path counting in the depth x time grid of a deep RNN, and why gain 1 explodes there.

A deep RNN with L layers run for T steps is a grid of nodes (t, l). The long-range Jacobian
from node (t, l) to node (T, L) is a sum over monotone lattice paths, each path a product of
local Jacobians (one time edge per step right, one depth edge per step up):

    J = dh[T, L] / dh[t, l] = sum over paths j of prod_{k in j} M_k

With dt = T - t and dl = L - l there are C(dt + dl, dt) such paths, each of dt + dl factors.
If every time edge has gain rho_t, every depth edge gain rho_l, and the gains along a path are
independent, then E||J|| <= C(dt + dl, dt) * rho_t**dt * rho_l**dl. With rho_t = rho_l = 1 this
bound is the path count, which grows polynomially in one side of the grid and exponentially
when both grow, although no single step amplifies. With rho_t + rho_l = 1 the bound is a
binomial probability and never exceeds 1.

:class:`PascalRNN` makes the bound exact: a stack of scalar linear layers whose input gradients
are sums of path counts times gains, computed here both by autograd and in closed form.
"""

from __future__ import annotations

import logging
import math
import numbers
from fractions import Fraction

import numpy as np
import torch
from scipy.special import gammaln, logsumexp, xlogy
from torch import nn

from defusal.errors import DefusalError

logger = logging.getLogger(__name__)

_LN10 = math.log(10.0)

__all__ = [
    "PascalRNN",
    "jacobian_bound",
    "log10_jacobian_bound",
    "log10_path_count",
    "pascal_gradient_closed_form",
    "pascal_input_gradients",
    "path_count",
    "total_gradient_bound",
    "unbalanced_targets",
]


def _check_count(name: str, value, *, minimum: int = 0) -> int:
    """Return ``value`` as a Python int, raising DefusalError unless it is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DefusalError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DefusalError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_count_array(name: str, value) -> np.ndarray:
    """Return ``value`` as a float64 array, raising DefusalError unless all are integers >= 0."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DefusalError(f"{name} must be non-negative integers, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise DefusalError(f"{name} must be finite non-negative integers, got {value!r}")
    if np.any(array < 0) or np.any(array != np.floor(array)):
        raise DefusalError(f"{name} must be non-negative integers, got {value!r}")
    return array


def _check_gain(name: str, value) -> float:
    """Return ``value`` as a float, raising DefusalError unless it is finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DefusalError(f"{name} must be a non-negative number, got {value!r}")
    gain = float(value)
    if not math.isfinite(gain) or gain < 0:
        raise DefusalError(f"{name} must be finite and >= 0, got {value!r}")
    return gain


def _as_scalar_or_array(array: np.ndarray):
    return float(array) if array.ndim == 0 else array


def path_count(dt: int, dl: int) -> int:
    """Count the monotone lattice paths between two grid nodes dt steps and dl layers apart.

    The count is the binomial coefficient C(dt + dl, dt), computed exactly.

    Args:
        dt: time distance T - t, an integer >= 0.
        dl: depth distance L - l, an integer >= 0.

    Returns:
        C(dt + dl, dt) as an exact Python int.

    Raises:
        DefusalError: if dt or dl is not a non-negative integer.
    """
    dt = _check_count("dt", dt)
    dl = _check_count("dl", dl)
    return math.comb(dt + dl, dt)


def _ln_path_count(dt: np.ndarray, dl: np.ndarray) -> np.ndarray:
    return gammaln(dt + dl + 1.0) - gammaln(dt + 1.0) - gammaln(dl + 1.0)


def log10_path_count(dt, dl):
    """Compute log10 C(dt + dl, dt) with log-gamma, so grids of any size stay finite.

    Args:
        dt: time distance, a non-negative integer or an array of them.
        dl: depth distance, a non-negative integer or an array broadcastable with ``dt``.

    Returns:
        A float for scalar inputs, else a float64 array of the broadcast shape.

    Raises:
        DefusalError: if any value is negative, not an integer or not finite.
    """
    dt_array = _check_count_array("dt", dt)
    dl_array = _check_count_array("dl", dl)
    return _as_scalar_or_array(_ln_path_count(dt_array, dl_array) / _LN10)


def _ln_jacobian_bound(dt: np.ndarray, dl: np.ndarray, rho_t: float, rho_l: float) -> np.ndarray:
    # xlogy(0, 0) = 0 keeps the convention 0**0 = 1 for a path with no edges of one kind.
    return _ln_path_count(dt, dl) + xlogy(dt, rho_t) + xlogy(dl, rho_l)


def log10_jacobian_bound(dt, dl, rho_t: float, rho_l: float):
    """Compute log10 of the long-range Jacobian bound C(dt + dl, dt) * rho_t**dt * rho_l**dl.

    Args:
        dt: time distance, a non-negative integer or an array of them.
        dl: depth distance, a non-negative integer or an array broadcastable with ``dt``.
        rho_t: expected gain of a time edge, finite and >= 0.
        rho_l: expected gain of a depth edge, finite and >= 0.

    Returns:
        A float (or float64 array), -inf where a zero gain is raised to a positive power.

    Raises:
        DefusalError: if a distance is not a non-negative integer or a gain is negative or
            not finite.
    """
    dt_array = _check_count_array("dt", dt)
    dl_array = _check_count_array("dl", dl)
    rho_t = _check_gain("rho_t", rho_t)
    rho_l = _check_gain("rho_l", rho_l)
    return _as_scalar_or_array(_ln_jacobian_bound(dt_array, dl_array, rho_t, rho_l) / _LN10)


def jacobian_bound(dt, dl, rho_t: float, rho_l: float):
    """Compute the bound C(dt + dl, dt) * rho_t**dt * rho_l**dl on E||dh[T, L] / dh[t, l]||.

    The bound holds when the gains of the local Jacobians along a path are independent, so
    the expected product is the product of the expected gains.

    Args:
        dt: time distance, a non-negative integer or an array of them.
        dl: depth distance, a non-negative integer or an array broadcastable with ``dt``.
        rho_t: expected gain of a time edge, finite and >= 0.
        rho_l: expected gain of a depth edge, finite and >= 0.

    Returns:
        A float (or float64 array), computed in log space: inf where the bound exceeds the
        float64 range, 0 where it underflows.

    Raises:
        DefusalError: if a distance is not a non-negative integer or a gain is negative or
            not finite.
    """
    dt_array = _check_count_array("dt", dt)
    dl_array = _check_count_array("dl", dl)
    rho_t = _check_gain("rho_t", rho_t)
    rho_l = _check_gain("rho_l", rho_l)
    with np.errstate(over="ignore"):
        bound = np.exp(_ln_jacobian_bound(dt_array, dl_array, rho_t, rho_l))
    return _as_scalar_or_array(bound)


def total_gradient_bound(dl: int, horizon: int, rho_t: float, rho_l: float) -> float:
    """Sum the Jacobian bound over the time distances dt = 0, 1, ..., horizon - 1 at fixed dl.

    This bounds the gradient that reaches a node from every later time step of a layer dl
    layers above it. For rho_t + rho_l = 1 each term is a negative-binomial probability
    divided by rho_l, so the sum stays below 1 / rho_l for every horizon.

    Args:
        dl: depth distance, an integer >= 0.
        horizon: number of time distances summed, an integer >= 0 (0 gives 0).
        rho_t: expected gain of a time edge, finite and >= 0.
        rho_l: expected gain of a depth edge, finite and >= 0.

    Returns:
        The sum as a float, computed in log space, or inf beyond the float64 range.

    Raises:
        DefusalError: if dl or horizon is not a non-negative integer, or a gain is invalid.
    """
    dl = _check_count("dl", dl)
    horizon = _check_count("horizon", horizon)
    rho_t = _check_gain("rho_t", rho_t)
    rho_l = _check_gain("rho_l", rho_l)
    if horizon == 0:
        return 0.0
    dt = np.arange(horizon, dtype=np.float64)
    ln_terms = _ln_jacobian_bound(dt, np.float64(dl), rho_t, rho_l)
    with np.errstate(over="ignore"):
        return float(np.exp(logsumexp(ln_terms)))


def unbalanced_targets(time_steps: int, num_layers: int) -> tuple[float, float]:
    """Return the unbalanced gain targets (rho_t, rho_l) = (T / (T + L), L / (T + L)).

    The two targets sum to 1, so the Jacobian bound stays <= 1, and among such pairs they
    maximize the corner term C(T + L, T) * rho_t**T * rho_l**L of the whole T x L grid. A
    long sequence in a shallow network thus keeps its time gain near 1, where the balanced
    choice 0.5 would cut memory to a few steps.

    Args:
        time_steps: sequence length T, an integer >= 1.
        num_layers: network depth L, an integer >= 1.

    Returns:
        (rho_t, rho_l), the time and depth gain targets.

    Raises:
        DefusalError: if either argument is not a positive integer.
    """
    time_steps = _check_count("time_steps", time_steps, minimum=1)
    num_layers = _check_count("num_layers", num_layers, minimum=1)
    total = time_steps + num_layers
    return time_steps / total, num_layers / total


class PascalRNN(nn.Module):
    """Stack of scalar linear recurrent layers whose gradients count grid paths exactly.

    For t = 1..T and l = 1..L, in float64:

        h[t, l] = rho * h[t, l - 1] + rho * h[t - 1, l],   h[t, 0] = x_t,   h[0, l] = 0,

    and the output is y_t = h[t, L]. Every time and depth edge has gain rho, so
    d(sum_t y_t) / dx_t' sums rho**(L + k) over the C(L - 1 + k, k) paths that reach each
    output k steps later (see :func:`pascal_gradient_closed_form`).

    Args:
        num_layers: number of layers L, an integer >= 1.
        rho: gain of every edge, finite and >= 0.

    Inputs: x of shape (batch, time), cast to float64.
    Outputs: y of shape (batch, time), float64.
    """

    def __init__(self, num_layers: int, rho: float) -> None:
        super().__init__()
        self.num_layers = _check_count("num_layers", num_layers, minimum=1)
        self.rho = _check_gain("rho", rho)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, rho={self.rho}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise DefusalError(
                f"PascalRNN expects input of shape (batch, time), got {tuple(x.shape)}"
            )
        signal = x.to(torch.float64)
        for _ in range(self.num_layers):
            state = signal.new_zeros(signal.shape[0])
            outputs = []
            for t in range(signal.shape[1]):
                state = self.rho * signal[:, t] + self.rho * state
                outputs.append(state)
            signal = torch.stack(outputs, dim=1)
        return signal


def pascal_input_gradients(
    num_layers: int, time_steps: int, rho: float, *, batch: int = 6, seed: int = 0
) -> np.ndarray:
    """Measure d(sum_t y_t) / dx_t' of a :class:`PascalRNN` with torch autograd.

    The inputs are 2 * N(0, 1) draws of shape (batch, time_steps). Because the network is
    linear, the gradient does not depend on them and every batch row is the same. The
    function returns the batch mean.

    Args:
        num_layers: number of layers L, an integer >= 1.
        time_steps: sequence length T, an integer >= 1.
        rho: gain of every edge, finite and >= 0.
        batch: number of input sequences, an integer >= 1.
        seed: seed of the torch generator that draws the inputs.

    Returns:
        Float64 array of shape (time_steps,). Entry t' (0-based) is the gradient with
        respect to the input at that position.

    Raises:
        DefusalError: if an argument is out of range.
    """
    time_steps = _check_count("time_steps", time_steps, minimum=1)
    batch = _check_count("batch", batch, minimum=1)
    model = PascalRNN(num_layers, rho)

    generator = torch.Generator().manual_seed(int(seed))
    x = 2.0 * torch.randn(batch, time_steps, generator=generator, dtype=torch.float64)
    x.requires_grad_(True)
    y = model(x)
    (gradient,) = torch.autograd.grad(y.sum(), x)
    logger.debug(
        "PascalRNN L=%d T=%d rho=%g: autograd gradient at t'=0 is %.6g",
        num_layers,
        time_steps,
        rho,
        gradient[0, 0].item(),
    )
    return gradient.mean(dim=0).numpy()


def pascal_gradient_closed_form(num_layers: int, time_steps: int, rho: float) -> np.ndarray:
    """Compute d(sum_t y_t) / dx_t' of a :class:`PascalRNN` exactly, for every t'.

    With dt = T - t' the number of outputs at or after position t':

        d(sum_t y_t) / dx_t' = sum_{k=0}^{dt-1} C(L - 1 + k, k) * rho**(L + k),

    because the output k steps later is reached by C(L - 1 + k, k) paths of L depth edges
    and k time edges. For rho = 1 the sum is C(L + dt - 1, L). The float ``rho`` is taken as
    the exact rational it stores and the sum is accumulated in integers, so each entry is
    the exact value rounded once to float64 (inf beyond the float64 range).

    NOTE: the integers grow by up to 53 bits per time step when rho is not a short binary
    fraction, so long sequences are slow: T = 10,000 with rho = 0.7 took about 4 s on one
    CPU core (measured with L = 10).

    Args:
        num_layers: number of layers L, an integer >= 1.
        time_steps: sequence length T, an integer >= 1.
        rho: gain of every edge, finite and >= 0.

    Returns:
        Float64 array of shape (time_steps,), indexed by the 0-based input position t'.

    Raises:
        DefusalError: if an argument is out of range.
    """
    num_layers = _check_count("num_layers", num_layers, minimum=1)
    time_steps = _check_count("time_steps", time_steps, minimum=1)
    numerator, denominator = Fraction(_check_gain("rho", rho)).as_integer_ratio()

    gradients = np.empty(time_steps, dtype=np.float64)
    # The k-th summand is term / scale, with term = C(L - 1 + k, k) * numerator**(L + k) and
    # scale = denominator**(L + k). The running total is kept over the current scale.
    term = numerator**num_layers
    scale = denominator**num_layers
    total = 0
    for k in range(time_steps):
        total = total * denominator + term
        try:
            value = total / scale
        except OverflowError:
            value = math.inf
        gradients[time_steps - 1 - k] = value  # dt = k + 1, so t' = T - 1 - k
        # C(L + k, k + 1) = C(L - 1 + k, k) * (L + k) / (k + 1), an exact integer division.
        term = term * (num_layers + k) // (k + 1) * numerator
        scale *= denominator
    return gradients
