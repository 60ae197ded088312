"""Adaptive leaky integrate-and-fire (ALIF) neurons with a surrogate gradient.

The cell follows the adaptive spiking neurons of Bellec et al., "Long short-term memory and
learning-to-learn in networks of spiking neurons" (NeurIPS 2018), in discrete time with step 1.
The state is ``[v; a]``, voltage and threshold adaptation, each of size ``H``. The spike of a
state is a function of the state itself::

    A_t = thr + beta * a_t                       (adaptive threshold)
    z_t = H((v_t - A_t) / thr)                   (Heaviside step, surrogate gradient below)

and one step of the cell is::

    v_{t+1} = alpha * v_t + (1 - alpha) * (W_in x_t + W_rec z_t) - A_t * z_t
    a_{t+1} = rho * a_t + (1 - rho) * z_t
    y_t     = z_{t+1} = H((v_{t+1} - A_{t+1}) / thr)

with ``alpha = exp(-1 / tau_m)`` and ``rho = exp(-1 / tau_adapt)``. The reset subtracts the
adaptive threshold from the voltage after a spike. The spike emitted at step ``t`` (the output)
is the same spike that enters the recurrent input and the reset at step ``t + 1``, so the state
``[v; a]`` is the whole memory of the layer.

The derivative of the step is replaced by a triangular pseudo-derivative,
``dz/dv_scaled = dampening * max(0, 1 - |v_scaled|)`` with ``v_scaled = (v - A) / thr``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.nets.base import Cell

# Lower bounds that keep a trained threshold or time constant from dividing by zero or making
# the leak factor exceed 1.
_MIN_THRESHOLD = 1e-4
_MIN_TIME_CONSTANT = 1e-2


class SpikeFunction(torch.autograd.Function):
    """Heaviside step ``z = (v_scaled > 0)`` with a triangular surrogate derivative.

    Forward: ``z = 1`` where ``v_scaled > 0``, else ``0``. Backward and forward-mode derivative:
    ``dampening * max(0, 1 - |v_scaled|)``. Works under ``torch.func`` (``jacrev``, ``jacfwd``,
    ``vmap``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(v_scaled: Tensor, dampening: float) -> Tensor:
        return (v_scaled > 0).to(v_scaled.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        v_scaled, dampening = inputs
        ctx.save_for_backward(v_scaled)
        ctx.save_for_forward(v_scaled)
        ctx.dampening = dampening

    @staticmethod
    def _pseudo_derivative(v_scaled: Tensor, dampening: float) -> Tensor:
        return dampening * torch.clamp(1.0 - v_scaled.abs(), min=0.0)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:
        (v_scaled,) = ctx.saved_tensors
        return grad_output * SpikeFunction._pseudo_derivative(v_scaled, ctx.dampening), None

    @staticmethod
    def jvp(ctx, v_tangent: Tensor, dampening_tangent: None) -> Tensor:
        (v_scaled,) = ctx.saved_tensors
        return v_tangent * SpikeFunction._pseudo_derivative(v_scaled, ctx.dampening)


def spike(v_scaled: Tensor, dampening: float = 0.5) -> Tensor:
    """Return ``H(v_scaled)`` as 0/1 floats with the triangular surrogate derivative."""
    return SpikeFunction.apply(v_scaled, dampening)


class ALIFCell(Cell):
    """A layer of adaptive leaky integrate-and-fire neurons (equations in the module docstring).

    State ``[v; a]`` of size ``2 * hidden_size``; output the spikes ``z`` (0 or 1) of size
    ``hidden_size``. Trainable: ``input_weights`` ``(H, input_size)``, ``recurrent_weights``
    ``(H, H)`` (both Glorot-uniform), and per neuron ``tau_m``, ``tau_adapt``, ``thr``, ``beta``.
    Time constants are clamped at 0.01 steps and the threshold at 1e-4 when used.

    Args:
        input_size: features of ``x_t``.
        hidden_size: neurons ``H``.
        tau_m: membrane time constant in steps, initial value.
        tau_adapt: adaptation time constant in steps, initial value.
        thr: baseline threshold, initial value.
        beta: adaptation strength, initial value.
        dampening: factor of the surrogate derivative.
        detach_reset: stop the gradient through the spike in the reset term ``A_t * z_t``
            (the gradient through ``A_t`` is kept).
        random_beta: draw ``beta`` per neuron from ``N(0, (beta / sqrt(input_size))^2)``, so
            some neurons adapt negatively, instead of the constant ``beta``.

    Raises:
        DefusalError: for a non-positive ``tau_m``, ``tau_adapt``, ``thr`` or ``dampening``.
    """

    num_gates = 1
    parameter_roles = {"input_weights": "input", "recurrent_weights": "recurrent"}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        tau_m: float = 20.0,
        tau_adapt: float = 200.0,
        thr: float = 0.01,
        beta: float = 1.8,
        dampening: float = 0.5,
        detach_reset: bool = True,
        random_beta: bool = False,
    ) -> None:
        super().__init__(input_size, 2 * int(hidden_size), hidden_size)
        for name, value in (
            ("tau_m", tau_m),
            ("tau_adapt", tau_adapt),
            ("thr", thr),
            ("dampening", dampening),
        ):
            if not value > 0:
                raise DefusalError(f"ALIFCell: {name} must be positive, got {value}")
        self.hidden_size = int(hidden_size)
        self.dampening = float(dampening)
        self.detach_reset = bool(detach_reset)
        self.random_beta = bool(random_beta)
        self._initial = {"tau_m": tau_m, "tau_adapt": tau_adapt, "thr": thr, "beta": beta}

        self.input_weights = nn.Parameter(torch.empty(self.hidden_size, self.input_size))
        self.recurrent_weights = nn.Parameter(torch.empty(self.hidden_size, self.hidden_size))
        self.tau_m = nn.Parameter(torch.empty(self.hidden_size))
        self.tau_adapt = nn.Parameter(torch.empty(self.hidden_size))
        self.thr = nn.Parameter(torch.empty(self.hidden_size))
        self.beta = nn.Parameter(torch.empty(self.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw Glorot-uniform weights and set the neuron constants to their initial values."""
        nn.init.xavier_uniform_(self.input_weights)
        nn.init.xavier_uniform_(self.recurrent_weights)
        with torch.no_grad():
            self.tau_m.fill_(self._initial["tau_m"])
            self.tau_adapt.fill_(self._initial["tau_adapt"])
            self.thr.fill_(self._initial["thr"])
            if self.random_beta:
                self.beta.normal_(0.0, self._initial["beta"] / math.sqrt(self.input_size))
            else:
                self.beta.fill_(self._initial["beta"])

    def decays(self) -> tuple[Tensor, Tensor]:
        """Return ``(alpha, rho) = (exp(-1 / tau_m), exp(-1 / tau_adapt))``, each ``(H,)``."""
        alpha = torch.exp(-1.0 / self.tau_m.clamp_min(_MIN_TIME_CONSTANT))
        rho = torch.exp(-1.0 / self.tau_adapt.clamp_min(_MIN_TIME_CONSTANT))
        return alpha, rho

    def spikes(self, state: Tensor) -> Tensor:
        """Return the spikes ``z = H((v - thr - beta * a) / thr)`` of a state, ``(batch, H)``."""
        v, a = state.split(self.hidden_size, dim=-1)
        thr = self.thr.clamp_min(_MIN_THRESHOLD)
        return spike((v - thr - self.beta * a) / thr, self.dampening)

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        v, a = state.split(self.hidden_size, dim=-1)
        threshold = self.thr.clamp_min(_MIN_THRESHOLD) + self.beta * a
        z = self.spikes(state)
        alpha, rho = self.decays()

        current = nn.functional.linear(x_t, self.input_weights) + nn.functional.linear(
            z, self.recurrent_weights
        )
        reset_spikes = z.detach() if self.detach_reset else z
        v_new = alpha * v + (1.0 - alpha) * current - threshold * reset_spikes
        a_new = rho * a + (1.0 - rho) * z
        return torch.cat([v_new, a_new], dim=-1)

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        return self.spikes(new_state)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, dampening={self.dampening}, "
            f"detach_reset={self.detach_reset}, random_beta={self.random_beta}"
        )
