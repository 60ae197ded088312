"""The neural quarantine model (QSIR) of Dandekar and Barbastathis, batched over members.

Compartments: susceptible S, infected I, recovered R and quarantined T, population N.

V2 (medRxiv 2020; network input (S, I, R, T), 4 -> 10 -> 1)::

    dS/dt = -beta S I / N
    dI/dt =  beta S I / N - (gamma + Q(t)) I
    dR/dt =  gamma I
    dT/dt =  Q(t) I

V3 (Patterns 2020; network input (S, I, R), 3 -> 10 -> 1): the same, except that quarantined
people recover at rate delta, so dR/dt = gamma I + delta T and dT/dt = Q(t) I - delta T.

The quarantine strength Q(t) comes from a ReLU network with one hidden layer of 10 units. With
``input_scale="raw"`` (the original) the network reads raw head counts and
Q = |NN(u)| / N. With ``input_scale="normalised"`` it reads S / N and I, R, T divided by a
case scale (the largest confirmed count of the training window) and Q = |NN(x)|. beta, gamma
and delta are stored as logarithms, so they stay positive.

``monotone_t=True`` (V2) makes the network's Q non-decreasing in the quarantined count T, all
else fixed: the T-input weights of the first layer, the second layer and its bias enter as
absolute values. The raw-count network of the original is nearly linear in the compartments,
so its Q keeps rising with T (which only grows) after the training window. An unconstrained
network on normalised inputs has no such trend: in fits to the JHU windows of the four V2
regions its Q levelled off or fell after the window, so R_t drifted back above 1 and forecasts
with unchanged policy exploded. The constraint states a mild prior, that quarantine does not
weaken as more people are quarantined. ``input_scale="raw"`` without it remains the faithful
original.

A parametric alternative, ``quarantine="logistic"``, replaces the network by a logistic rise
in time, Q(t) = q_max / (1 + exp(-(t - t_mid) / width)), with three parameters per member. It
serves as a baseline and for recovery tests: with Q(0) pinned near 0, beta is identifiable,
whereas with a network only beta - Q(t) is fixed by the infected curve while S/N stays near 1.

Every tensor carries a leading ``members`` dimension: one member is one independent model
(one region and one seed), so an ensemble over seeds and regions is solved in one call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torchdiffeq import odeint

VERSIONS = ("v2", "v3")
HIDDEN_UNITS = 10
INPUT_SCALES = ("raw", "normalised")
QUARANTINE_MODELS = ("network", "logistic")
DTYPE = torch.float64  # counts reach 1e8 and logs of them enter the loss

# q_fn(t, state, q_model) -> Q of every member, shape (members,); see QSIRModel.rhs.
QOverride = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class QuarantineNet(nn.Module):
    """A batch of independent ReLU networks ``in -> hidden -> 1``, one per member.

    Weights are Glorot-uniform and biases zero (the Flux.jl defaults of the original), drawn
    from ``torch.Generator`` seeded with each member's seed.

    With ``monotone=True`` (V2 only) the output is non-decreasing in the quarantined count T:
    the first-layer weights of the T input, all second-layer weights and the output bias are
    used as their absolute values, so the output is b2 + sum_h w2_h relu(...) with every term
    non-negative and non-decreasing in T. The output is then never negative, and
    Q = |output| grows or stays when T grows with S, I and R fixed.

    Args:
        in_features: 4 for V2 (S, I, R, T), 3 for V3 (S, I, R).
        seeds: one integer seed per member.
        hidden: hidden units (10 in both published versions).
        monotone: constrain the output to be non-decreasing in T (needs ``in_features == 4``).
    """

    def __init__(
        self,
        in_features: int,
        seeds: list[int],
        hidden: int = HIDDEN_UNITS,
        monotone: bool = False,
    ):
        super().__init__()
        if monotone and in_features != 4:
            raise ValueError("a network monotone in T needs the V2 input (S, I, R, T)")
        members = len(seeds)
        self.in_features = in_features
        self.hidden = hidden
        self.monotone = monotone
        self.weight1 = nn.Parameter(torch.zeros(members, in_features, hidden, dtype=DTYPE))
        self.bias1 = nn.Parameter(torch.zeros(members, hidden, dtype=DTYPE))
        self.weight2 = nn.Parameter(torch.zeros(members, hidden, 1, dtype=DTYPE))
        self.bias2 = nn.Parameter(torch.zeros(members, 1, dtype=DTYPE))
        self.reset_parameters(seeds)

    def reset_parameters(self, seeds: list[int], members: torch.Tensor | None = None) -> None:
        """Redraw the weights of ``members`` (default all) from their seeds; zero the biases."""
        chosen = range(len(seeds)) if members is None else members.tolist()
        with torch.no_grad():
            for m in chosen:
                generator = torch.Generator().manual_seed(int(seeds[m]))
                for weight in (self.weight1, self.weight2):
                    fan_in, fan_out = weight.shape[1], weight.shape[2]
                    limit = math.sqrt(6.0 / (fan_in + fan_out))
                    values = torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float64)
                    weight[m] = ((2 * values - 1) * limit).to(weight.dtype)
                self.bias1[m] = 0.0
                self.bias2[m] = 0.0

    def effective_parameters(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the weights and biases the network computes with.

        They are the stored parameters, except for a monotone network, whose T-input row of
        ``weight1``, ``weight2`` and ``bias2`` enter as absolute values.

        Returns:
            ``weight1`` ``(members, in, hidden)``, ``bias1`` ``(members, hidden)``,
            ``weight2`` ``(members, hidden, 1)``, ``bias2`` ``(members, 1)``.
        """
        if not self.monotone:
            return self.weight1, self.bias1, self.weight2, self.bias2
        weight1 = torch.cat([self.weight1[:, :3], self.weight1[:, 3:].abs()], dim=1)
        return weight1, self.bias1, self.weight2.abs(), self.bias2.abs()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Evaluate every member's network on its own input.

        Args:
            inputs: shape ``(members, in_features)``.

        Returns:
            The raw (signed) output, shape ``(members,)``.
        """
        weight1, bias1, weight2, bias2 = self.effective_parameters()
        hidden = torch.relu(torch.baddbmm(bias1.unsqueeze(1), inputs.unsqueeze(1), weight1))
        return torch.baddbmm(bias2.unsqueeze(1), hidden, weight2).reshape(-1)


class QSIRModel(nn.Module):
    """QSIR with a network-valued quarantine strength, for a batch of members.

    Args:
        version: ``"v2"`` or ``"v3"``.
        population: N of each member, shape ``(members,)``.
        seeds: network seed of each member.
        input_scale: ``"raw"`` (Q = |NN(u)|/N on head counts) or ``"normalised"``.
        case_scale: divisor of I, R, T for ``"normalised"``, shape ``(members,)``.
        beta0, gamma0, delta0: initial rates per day (V3 code's initial guesses by default).
        fixed_gamma: gamma per member, NaN where it is fitted, shape ``(members,)``, or None.
        hidden: hidden units of the network.
        quarantine: ``"network"`` (the published model) or ``"logistic"`` (parametric Q(t)).
        logistic0: initial (q_max, t_mid, width) of the logistic Q.
        monotone_t: make the network's Q non-decreasing in T (V2 network only), see
            :class:`QuarantineNet`.
    """

    def __init__(
        self,
        version: str,
        population: torch.Tensor,
        seeds: list[int],
        *,
        input_scale: str = "raw",
        case_scale: torch.Tensor | None = None,
        beta0: float = 0.15,
        gamma0: float = 0.013,
        delta0: float = 0.01,
        fixed_gamma: torch.Tensor | None = None,
        hidden: int = HIDDEN_UNITS,
        quarantine: str = "network",
        logistic0: tuple[float, float, float] = (0.3, 10.0, 3.0),
        monotone_t: bool = False,
    ):
        super().__init__()
        if quarantine not in QUARANTINE_MODELS:
            raise ValueError(f"unknown quarantine model {quarantine!r}")
        if version not in VERSIONS:
            raise ValueError(f"unknown version {version!r}")
        if input_scale not in INPUT_SCALES:
            raise ValueError(f"unknown input_scale {input_scale!r}")
        members = len(seeds)
        self.version = version
        self.input_scale = input_scale
        self.seeds = list(seeds)
        dtype = DTYPE
        self.register_buffer(
            "population", torch.as_tensor(population, dtype=dtype).reshape(members)
        )
        if case_scale is None:
            case_scale = torch.ones(members, dtype=DTYPE)
        self.register_buffer(
            "case_scale", torch.as_tensor(case_scale, dtype=dtype).reshape(members)
        )
        if fixed_gamma is None:
            fixed_gamma = torch.full((members,), float("nan"), dtype=DTYPE)
        self.register_buffer(
            "fixed_gamma", torch.as_tensor(fixed_gamma, dtype=dtype).reshape(members)
        )
        self.quarantine_model = quarantine
        in_features = 4 if version == "v2" else 3
        if quarantine == "network":
            self.net = QuarantineNet(in_features, self.seeds, hidden, monotone=monotone_t)
        else:
            self.net = None
            q_max, t_mid, width = logistic0
            self.log_q_max = nn.Parameter(torch.full((members,), math.log(q_max), dtype=DTYPE))
            self.t_mid = nn.Parameter(torch.full((members,), float(t_mid), dtype=DTYPE))
            self.log_width = nn.Parameter(torch.full((members,), math.log(width), dtype=DTYPE))
        self.log_beta = nn.Parameter(torch.full((members,), math.log(beta0), dtype=DTYPE))
        self.log_gamma = nn.Parameter(torch.full((members,), math.log(gamma0), dtype=DTYPE))
        if version == "v3":
            self.log_delta = nn.Parameter(torch.full((members,), math.log(delta0), dtype=DTYPE))
        else:
            self.log_delta = None
        self.apply_fixed_()

    @property
    def members(self) -> int:
        """Number of independent members."""
        return len(self.seeds)

    def apply_fixed_(self) -> None:
        """Write the fixed gamma values into ``log_gamma`` (in place)."""
        fixed = torch.isfinite(self.fixed_gamma)
        if fixed.any():
            with torch.no_grad():
                self.log_gamma[fixed] = self.fixed_gamma[fixed].log()

    def parameter_count(self) -> int:
        """Number of fitted parameters of one member (V2: 63, V3: 54)."""
        return sum(p[0].numel() for p in self.parameters())

    @property
    def beta(self) -> torch.Tensor:
        """Infection rate per day, shape ``(members,)``."""
        return self.log_beta.exp()

    @property
    def gamma(self) -> torch.Tensor:
        """Recovery rate of infected people per day, shape ``(members,)``."""
        return self.log_gamma.exp()

    @property
    def delta(self) -> torch.Tensor:
        """Recovery rate of quarantined people per day (0 for V2), shape ``(members,)``."""
        if self.log_delta is None:
            return torch.zeros_like(self.log_beta)
        return self.log_delta.exp()

    def input_scales(self) -> torch.Tensor:
        """Divisors of the network inputs (S, I, R, T), shape ``(members, 4)``.

        Raw inputs are not scaled. Normalised inputs are S / N and I, R, T divided by the
        case scale.
        """
        if self.input_scale == "raw":
            return torch.ones(self.members, 4, dtype=DTYPE)
        case = self.case_scale
        return torch.stack([self.population, case, case, case], dim=1)

    def output_scale(self) -> torch.Tensor:
        """Factor from |network output| to Q: 1 / N for raw inputs, else 1; ``(members,)``."""
        if self.input_scale == "raw":
            return 1.0 / self.population
        return torch.ones(self.members, dtype=DTYPE)

    def quarantine(
        self, state: torch.Tensor, t: torch.Tensor | float = 0.0, net: QuarantineNet | None = None
    ) -> torch.Tensor:
        """Quarantine strength Q per member and per day.

        Args:
            state: (S, I, R, T), shape ``(members, 4)``.
            t: time in days (used by the logistic Q only).
            net: another region's network to evaluate on this state (default: own network).

        Returns:
            Q, shape ``(members,)``.
        """
        return self._quarantine_function(net)(state, t)

    def _quarantine_function(
        self, net: QuarantineNet | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor | float], torch.Tensor]:
        # Everything that does not depend on the state is computed once per solve.
        if net is None and self.net is None:
            q_max = self.log_q_max.exp()
            t_mid = self.t_mid
            width = self.log_width.exp()
            return lambda state, t: q_max * torch.sigmoid((t - t_mid) / width)
        net = self.net if net is None else net
        count = net.in_features
        weight1, bias1, weight2, bias2 = net.effective_parameters()
        bias1, bias2 = bias1.unsqueeze(1), bias2.unsqueeze(1)
        if self.input_scale == "raw":
            input_factor = None
            output_factor = self.output_scale()
        else:
            input_factor = (1.0 / self.input_scales()[:, :count]).unsqueeze(1)
            output_factor = None

        def quarantine(state: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
            inputs = state[:, :count].unsqueeze(1)
            if input_factor is not None:
                inputs = inputs * input_factor
            hidden = torch.relu(torch.baddbmm(bias1, inputs, weight1))
            output = torch.baddbmm(bias2, hidden, weight2).reshape(-1).abs()
            return output if output_factor is None else output * output_factor

        return quarantine

    def rhs(
        self,
        t: torch.Tensor,
        state: torch.Tensor,
        time_scale: torch.Tensor | None = None,
        q_override: QOverride | None = None,
    ) -> torch.Tensor:
        """Right-hand side d(S, I, R, T)/dt.

        Args:
            t: time in days (scalar tensor).
            state: shape ``(members, 4)``.
            time_scale: factor per member that stretches the time axis, shape ``(members,)``.
            q_override: function ``(t, state, q_model) -> Q`` that replaces the fitted Q.

        Returns:
            Derivatives, shape ``(members, 4)``.
        """
        return self._make_rhs(time_scale, q_override)(t, state)

    def _make_rhs(
        self,
        time_scale: torch.Tensor | None,
        q_override: QOverride | None,
        start_time: float = 0.0,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        # The rates are computed once per solve, not once per evaluation: the solver calls
        # the right-hand side hundreds of times and per-operation overhead dominates.
        beta_over_n = self.beta / self.population
        gamma = self.gamma
        delta = self.delta if self.version == "v3" else None
        scale = None if time_scale is None else time_scale.unsqueeze(-1)
        quarantine = self._quarantine_function()

        def derivative(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            susceptible, infected, _, quarantined = state.unbind(-1)
            q = quarantine(state, t)
            if q_override is not None:
                q = q_override(t - start_time, state, q)
            infection = beta_over_n * susceptible * infected
            recovery = gamma * infected
            isolation = q * infected
            if delta is None:
                columns = [-infection, infection - recovery - isolation, recovery, isolation]
            else:
                release = delta * quarantined
                columns = [
                    -infection,
                    infection - recovery - isolation,
                    recovery + release,
                    isolation - release,
                ]
            result = torch.stack(columns, dim=-1)
            return result if scale is None else result * scale

        return derivative

    def simulate(
        self,
        state0: torch.Tensor,
        days: int,
        *,
        time_scale: torch.Tensor | None = None,
        q_override: QOverride | None = None,
        method: str = "fast_rk4",
        step: float = 0.5,
        rtol: float = 1e-4,
        atol: float = 1e-2,
        start_time: float = 0.0,
    ) -> torch.Tensor:
        """Integrate from ``state0`` and return daily states.

        Args:
            state0: initial (S, I, R, T), shape ``(members, 4)``.
            days: last day; states are returned at t = 0, 1, ..., days.
            time_scale: per-member stretch c of the time axis: day k is model time k c. The
                original code spaces n data days over [0, n], so c = n / (n - 1).
            q_override: replaces the fitted Q, see :meth:`rhs`.
            method: ``"fast_rk4"`` (built-in classical RK4, fixed step ``step`` days), or
                torchdiffeq ``odeint`` with ``"rk4"`` (fixed step) or ``"dopri5"``
                (``rtol``, ``atol``).
            start_time: model time of ``state0``; ``q_override`` receives the time since then.

        Returns:
            States, shape ``(days + 1, members, 4)``.
        """
        grid = start_time + torch.arange(days + 1, dtype=state0.dtype)
        func = self._make_rhs(time_scale, q_override, start_time)

        if method == "fast_rk4":
            return _classic_rk4(func, state0, grid, step)
        if method == "rk4":
            return odeint(func, state0, grid, method="rk4", options={"step_size": step})
        if method == "dopri5":
            return odeint(func, state0, grid, method="dopri5", rtol=rtol, atol=atol)
        raise ValueError(f"unknown solver {method!r}")


def _classic_rk4(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    state0: torch.Tensor,
    grid: torch.Tensor,
    step: float,
) -> torch.Tensor:
    """Classical fourth-order Runge-Kutta with ``round(1 / step)`` steps per day.

    Output times fall on steps, so no interpolation is needed. torchdiffeq's ``rk4`` uses the
    3/8 rule and interpolates to the output times, which doubles the autograd operations that
    dominate the cost of a fit. This loop was about 2.5 times faster for 24 days and one
    member (measured with torch 2.13 on a shared 2-core CPU).
    """
    substeps = max(1, round(1.0 / step))
    h = 1.0 / substeps
    half = h / 2
    state = state0
    states = [state0]
    start = float(grid[0])
    for day in range(len(grid) - 1):
        for sub in range(substeps):
            t = torch.tensor(start + day + sub * h, dtype=state0.dtype)
            k1 = func(t, state)
            k2 = func(t + half, state + half * k1)
            k3 = func(t + half, state + half * k2)
            k4 = func(t + h, state + h * k3)
            state = state + (h / 6) * (k1 + 2 * (k2 + k3) + k4)
        states.append(state)
    return torch.stack(states)


def reproduction_number(beta: torch.Tensor, gamma: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Effective reproduction number R_t = beta / (gamma + Q(t)) (broadcasting)."""
    return beta / (gamma + q)


def spread_parameter(
    beta: torch.Tensor, gamma: torch.Tensor, delta: torch.Tensor, q: torch.Tensor
) -> torch.Tensor:
    """Covid spread parameter of V3, C_p = beta / (gamma + delta + Q(t)) (broadcasting)."""
    return beta / (gamma + delta + q)
