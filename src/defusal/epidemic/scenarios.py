"""Forecast scenarios from the last fitted day, and the exponential-explosion flag.

Day 0 of a forecast is the last day of the training window. The forecast starts from the
fitted model's state on that day, with beta, gamma, delta and the networks frozen. Scenarios:

- ``continue``: the fitted Q(t) goes on.
- ``relax:K``: quarantine relaxes linearly to 0 over K days,
  Q(t) = ((K - t) / K) Q_own(t) for t <= K and 0 after.
- ``adopt:REGION[:K]``: another region's Q replaces this one's, blended over K days (default
  1) as Q(t) = ((K - t) / K) Q_own(t) + (t / K) Q_other(t), with Q_other the other region's
  network evaluated on this region's state (raw inputs divided by this region's N).
- ``fixed:Q``: a constant quarantine strength Q per day.

A forecast is flagged as exponential explosion when either rule holds:

- growth at the horizon: R_t stays above 1 over the last ``EXPLOSION_WINDOW`` days of the
  horizon and infected people grow on each of those days. The growth must also not stagnate,
  so the mean daily growth rate of log I over those days is at least ``STAGNATION_RATIO``
  times its rate over the first ``EXPLOSION_WINDOW`` days.
- growth within the horizon: infected I reaches at least ``EXPLOSION_GROWTH`` times its value
  on day 0 on some day of the horizon. This catches an outbreak that explodes and then burns
  out by depleting the susceptibles before the horizon ends.

The flag of a region is computed on the ensemble median (per day, over seeds) of I and R_t, so
one seed with a runaway or a stalled network does not decide it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from defusal.epidemic.fit import FitResult, build_targets
from defusal.epidemic.metrics import (
    EVALUATION_ATOL,
    EVALUATION_RTOL,
    EVALUATION_SOLVER,
    EVALUATION_STEP,
    Trajectory,
    first_day_below_one,
    simulate_members,
)
from defusal.epidemic.model import QOverride, QuarantineNet
from defusal.errors import DefusalError

EXPLOSION_WINDOW = 7
# Growth that slows to less than half its initial rate counts as stagnation, not explosion.
STAGNATION_RATIO = 0.5
# Infected growing to this many times the day-0 value within the horizon counts as explosion.
EXPLOSION_GROWTH = 10.0
KINDS = ("continue", "relax", "adopt", "fixed")


@dataclass(frozen=True)
class Scenario:
    """A forecast scenario: ``kind`` with blend days, fixed Q or other region."""

    kind: str
    days: int = 1
    value: float = 0.0
    other: str | None = None

    @property
    def label(self) -> str:
        """Short label such as ``relax:17``."""
        if self.kind == "continue":
            return "continue"
        if self.kind == "relax":
            return f"relax:{self.days}"
        if self.kind == "fixed":
            return f"fixed:{self.value:g}"
        return f"adopt:{self.other}:{self.days}"


def parse_scenario(text: str) -> Scenario:
    """Parse ``continue``, ``relax:K``, ``adopt:REGION[:K]`` or ``fixed:Q``.

    Raises:
        DefusalError: unknown kind or invalid number.
    """
    kind, _, rest = text.partition(":")
    try:
        if kind == "continue" and not rest:
            return Scenario("continue")
        if kind == "relax":
            days = int(rest)
            if days < 1:
                raise ValueError
            return Scenario("relax", days=days)
        if kind == "fixed":
            value = float(rest)
            if not value >= 0:
                raise ValueError
            return Scenario("fixed", value=value)
        if kind == "adopt" and rest:
            region, _, days_text = rest.rpartition(":")
            if not region or not days_text.isdigit():
                region, days_text = rest, "1"
            days = int(days_text)
            if days < 1:
                raise ValueError
            return Scenario("adopt", days=days, other=region)
    except ValueError:
        pass
    raise DefusalError(
        f"invalid scenario {text!r}; use continue, relax:DAYS, adopt:REGION[:DAYS] or fixed:Q"
    )


def blend_quarantine(
    t: torch.Tensor, q_own: torch.Tensor, q_other: torch.Tensor, days: int
) -> torch.Tensor:
    """Blend two quarantine strengths over ``days`` days.

    Q(t) = ((K - t) / K) Q_own(t) + (t / K) Q_other(t) for 0 <= t <= K, and Q_other(t) after.
    """
    weight = torch.clamp(torch.as_tensor(t, dtype=q_own.dtype) / days, 0.0, 1.0)
    return (1 - weight) * q_own + weight * q_other


def _member_network_output(net: QuarantineNet, member: int, inputs: torch.Tensor) -> torch.Tensor:
    """Evaluate network ``member`` of ``net`` on every row of ``inputs`` (members, in)."""
    weight1, bias1, weight2, bias2 = net.effective_parameters()
    hidden = torch.relu(inputs @ weight1[member] + bias1[member])
    return (hidden @ weight2[member] + bias2[member]).reshape(-1)


def other_quarantine(result: FitResult, other: FitResult, other_member: int) -> QOverride:
    """Return a function giving another region's Q evaluated on this fit's states.

    Raw networks see this region's head counts and are divided by this region's N;
    normalised networks see this region's state scaled by this region's N and case scale.
    """
    model = result.model
    net = other.model.net
    if net is None:
        raise DefusalError("only a network quarantine model can be adopted by another region")
    if net.in_features != model.net.in_features:
        raise DefusalError("cannot adopt a network of another model version")

    def q_other(t: torch.Tensor, state: torch.Tensor, q_own: torch.Tensor) -> torch.Tensor:
        inputs = state[:, : net.in_features]
        if other.model.input_scale == "raw":
            return _member_network_output(net, other_member, inputs).abs() / model.population
        scale = torch.stack(
            [model.population, model.case_scale, model.case_scale, model.case_scale], dim=1
        )[:, : net.in_features]
        return _member_network_output(net, other_member, inputs / scale).abs()

    return q_other


def scenario_override(
    scenario: Scenario, result: FitResult, others: dict[str, tuple[FitResult, int]] | None
) -> QOverride | None:
    """Build the Q override of ``scenario``; ``others`` maps region names to (fit, member)."""
    if scenario.kind == "continue":
        return None
    if scenario.kind == "fixed":
        value = scenario.value
        return lambda t, state, q: torch.full_like(q, value)
    if scenario.kind == "relax":
        days = scenario.days
        return lambda t, state, q: blend_quarantine(t, q, torch.zeros_like(q), days)
    others = others or {}
    if scenario.other not in others:
        known = ", ".join(others) or "none"
        raise DefusalError(
            f"no fitted network for region {scenario.other!r} to adopt; fitted regions: {known}"
        )
    other_fit, other_member = others[scenario.other]
    q_other = other_quarantine(result, other_fit, other_member)
    days = scenario.days
    return lambda t, state, q: blend_quarantine(t, q, q_other(t, state, q), days)


@dataclass
class Forecast:
    """A scenario forecast of one region's members, day 0 = last fitted day.

    Attributes:
        scenario: the scenario.
        trajectory: daily curves, ``states`` shape ``(horizon + 1, members, 4)``.
        best_column: column of the lowest-loss member in the trajectory.
        explosion: the ensemble median forecast is an exponential explosion.
        explosion_share: share of members whose own forecast is an explosion.
        rt_below_one_day: first forecast day with R_t < 1 (best member), or None.
    """

    scenario: Scenario
    trajectory: Trajectory
    best_column: int
    explosion: bool
    explosion_share: float
    rt_below_one_day: int | None

    @property
    def median_infected(self) -> np.ndarray:
        """Median of infected I over members per day, shape ``(horizon + 1,)``."""
        return np.median(self.trajectory.states[:, :, 1], axis=1)

    @property
    def median_growth(self) -> tuple[float, int]:
        """Largest ratio of the median I to its day-0 value, and its day (:func:`peak_growth`)."""
        return peak_growth(self.median_infected)

    def infected_band(self, low: float = 10, high: float = 90) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``low`` and ``high`` percentiles of infected I over members per day."""
        infected = self.trajectory.states[:, :, 1]
        return np.percentile(infected, low, axis=1), np.percentile(infected, high, axis=1)

    @property
    def best_infected(self) -> np.ndarray:
        """Infected I of the best member per day, shape ``(horizon + 1,)``."""
        return self.trajectory.states[:, self.best_column, 1]


def peak_growth(infected: np.ndarray) -> tuple[float, int]:
    """Return the largest ratio I(t) / I(0) over a forecast and the first day it occurs.

    Args:
        infected: infected I per day, shape ``(days,)``; day 0 is the forecast start.

    Returns:
        ``(ratio, day)``; the ratio is ``inf`` when I(0) is 0 and I grows later.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = infected / infected[0]
    ratios = np.nan_to_num(ratios, nan=1.0)
    day = int(np.argmax(ratios))
    return float(ratios[day]), day


def growing_at_horizon(
    infected: np.ndarray, rt: np.ndarray, window: int = EXPLOSION_WINDOW
) -> bool:
    """Return whether I grows exponentially without stagnation at the end of a forecast.

    True when, over the last ``window`` days, R_t > 1, I grows on each day, and the mean
    growth rate of log I is at least ``STAGNATION_RATIO`` times its rate over the first
    ``window`` days (or the first rate is not positive).

    Args:
        infected: infected I per day, shape ``(days,)``.
        rt: R_t per day, shape ``(days,)``.
    """
    window = min(window, len(rt) - 1)
    growing = np.diff(infected[-(window + 1) :]) > 0
    if not (np.all(rt[-window:] > 1) and np.all(growing)):
        return False
    with np.errstate(divide="ignore", invalid="ignore"):
        log_infected = np.log(np.maximum(infected, 1e-300))
    first_rate = (log_infected[window] - log_infected[0]) / window
    last_rate = (log_infected[-1] - log_infected[-(window + 1)]) / window
    return bool(first_rate <= 0 or last_rate >= STAGNATION_RATIO * first_rate)


def is_explosion(
    infected: np.ndarray,
    rt: np.ndarray,
    window: int = EXPLOSION_WINDOW,
    growth: float = EXPLOSION_GROWTH,
) -> bool:
    """Return whether a forecast of I is an exponential explosion.

    True when I still grows exponentially at the horizon (:func:`growing_at_horizon`), or
    when I(t) >= ``growth`` * I(0) on any day t of the forecast, so that an outbreak that
    explodes and burns out before the horizon also counts.

    Args:
        infected: infected I per day, shape ``(days,)``; day 0 is the forecast start.
        rt: R_t per day, shape ``(days,)``.
        window: days at the start and end of the horizon compared by the first rule.
        growth: growth factor over day 0 that makes the second rule hold.
    """
    return peak_growth(infected)[0] >= growth or growing_at_horizon(infected, rt, window)


def explosion_text(forecast: Forecast) -> str:
    """Describe the explosion verdict of ``forecast`` in one phrase, with the rule that applies.

    The numbers are those of the ensemble median, on which the verdict is computed.
    """
    ratio, day = forecast.median_growth
    peak = forecast.median_infected[day]
    factor = f"{ratio:,.0f}" if ratio >= EXPLOSION_GROWTH else f"{ratio:.1f}"
    grew = f"median infected grew {factor}x to {peak:,.0f} on day {day}"
    if not forecast.explosion:
        return (
            f"no explosion: {grew} (explosion needs {EXPLOSION_GROWTH:g}x, or R_t > 1 and "
            "growth over the last days)"
        )
    if ratio >= EXPLOSION_GROWTH:
        return f"EXPLOSION: {grew} (at least {EXPLOSION_GROWTH:g}x)"
    return (
        f"EXPLOSION: R_t > 1 and median infected still growing on day "
        f"{len(forecast.median_infected) - 1}"
    )


def forecast(
    result: FitResult,
    region_index: int,
    scenario: Scenario | str,
    horizon: int = 60,
    others: dict[str, tuple[FitResult, int]] | None = None,
) -> Forecast:
    """Forecast a region under a scenario from its last fitted day.

    Args:
        result: the fit.
        region_index: region of the fit.
        scenario: a :class:`Scenario` or its text form.
        horizon: forecast days.
        others: fitted regions whose networks ``adopt`` scenarios may use: name ->
            (fit, member).

    Raises:
        DefusalError: invalid scenario, unknown region to adopt, or horizon < 2.
    """
    if isinstance(scenario, str):
        scenario = parse_scenario(scenario)
    if horizon < 2:
        raise DefusalError(f"forecast horizon must be at least 2 days, got {horizon}")
    last = int(result.problems[region_index].series.days[-1])
    targets = build_targets(result.problems, result.config)
    members = result.members_of(region_index)
    with torch.no_grad():
        fitted = result.model.simulate(
            targets.state0,
            last,
            time_scale=targets.time_scale,
            method=EVALUATION_SOLVER,
            step=EVALUATION_STEP,
            rtol=EVALUATION_RTOL,
            atol=EVALUATION_ATOL,
        )
    override = scenario_override(scenario, result, others)
    trajectory = simulate_members(
        result, members, fitted[-1], horizon, override, start_time=float(last)
    )
    best_column = members.index(result.best_member(region_index))
    flags = [
        is_explosion(trajectory.states[:, c, 1], trajectory.rt[:, c]) for c in range(len(members))
    ]
    median_infected = np.median(trajectory.states[:, :, 1], axis=1)
    median_rt = np.median(trajectory.rt, axis=1)
    return Forecast(
        scenario,
        trajectory,
        best_column,
        is_explosion(median_infected, median_rt),
        float(np.mean(flags)),
        first_day_below_one(trajectory.rt[:, best_column]),
    )
