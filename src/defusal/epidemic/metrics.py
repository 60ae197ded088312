"""Quantities derived from a fitted quarantine model.

- R_t = beta / (gamma + Q(t)), the effective reproduction number (V2).
- C_p = beta / (gamma + delta + Q(t)), the Covid spread parameter of V3.
- The first day with R_t < 1 and the days from the ``min_cases``-th case to it.
- The quarantine inflection day: the first day on which the second difference of Q, which was
  non-negative, turns negative.
- The doubling time of infected people, ln 2 / r with r = beta S/N - gamma - Q, averaged over
  the days with R_t > 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from defusal.epidemic.fit import FitResult, build_targets, time_scales
from defusal.epidemic.model import QOverride, reproduction_number, spread_parameter

# Curves after a fit use classical RK4 with a tenth of a day per step. Forecasts can drive Q(t)
# beyond the fitted range, where a one-day step is unstable; RK4 with step h stays stable for
# rates up to about 2.8 / h, here 28 per day. The adaptive dopri5 of torchdiffeq took
# thousands of steps per forecast at rtol 1e-6, because |NN| and ReLU kinks make the
# right-hand side non-smooth.
EVALUATION_SOLVER = "fast_rk4"
EVALUATION_STEP = 0.1
EVALUATION_RTOL = 1e-6
EVALUATION_ATOL = 1e-3


@dataclass
class Trajectory:
    """Daily model curves of some members.

    Attributes:
        days: day offsets from the start of the simulation, shape ``(days,)``.
        members: member indices of the fit, shape ``(members,)``.
        states: (S, I, R, T), shape ``(days, members, 4)``.
        q: quarantine strength Q per day, shape ``(days, members)``.
        rt: effective reproduction number R_t, shape ``(days, members)``.
        cp: Covid spread parameter C_p, shape ``(days, members)``.
    """

    days: np.ndarray
    members: list[int]
    states: np.ndarray
    q: np.ndarray
    rt: np.ndarray
    cp: np.ndarray


def simulate_members(
    result: FitResult,
    members: list[int],
    state0: torch.Tensor,
    days: int,
    q_override: QOverride | None = None,
    start_time: float = 0.0,
) -> Trajectory:
    """Simulate members of a fit from ``state0`` (shape ``(all members, 4)``) for ``days`` days.

    All members are integrated (the model is batched, RK4 with ``EVALUATION_STEP``) and
    ``members`` are returned. ``start_time`` is the model time of ``state0``, and
    ``q_override`` receives the time elapsed since then.
    """
    model = result.model
    config = result.config
    scale = time_scales(result.problems, config)
    with torch.no_grad():
        states = model.simulate(
            state0,
            days,
            time_scale=scale,
            q_override=q_override,
            method=EVALUATION_SOLVER,
            step=EVALUATION_STEP,
            rtol=EVALUATION_RTOL,
            atol=EVALUATION_ATOL,
            start_time=start_time,
        )
        times = torch.arange(days + 1, dtype=states.dtype)
        model_times = times + start_time
        pairs = zip(model_times, states, strict=True)
        q = torch.stack([model.quarantine(state, t) for t, state in pairs])
        if q_override is not None:
            pairs = zip(times, states, q, strict=True)
            q = torch.stack([q_override(t, state, q_model) for t, state, q_model in pairs])
        rt = reproduction_number(model.beta, model.gamma, q)
        cp = spread_parameter(model.beta, model.gamma, model.delta, q)
    return Trajectory(
        np.arange(days + 1),
        list(members),
        states[:, members].numpy(),
        q[:, members].numpy(),
        rt[:, members].numpy(),
        cp[:, members].numpy(),
    )


def fitted_trajectory(result: FitResult, region_index: int, extra_days: int = 0) -> Trajectory:
    """Simulate a region's members from day 0 to its last day plus ``extra_days``, fitted Q."""
    targets = build_targets(result.problems, result.config)
    last = int(result.problems[region_index].series.days[-1])
    return simulate_members(
        result, result.members_of(region_index), targets.state0, last + extra_days
    )


def first_day_below_one(values: np.ndarray) -> int | None:
    """Return the first index with ``values < 1`` (shape ``(days,)``), or None."""
    below = np.flatnonzero(values < 1)
    return int(below[0]) if len(below) else None


def inflection_day(q: np.ndarray, tolerance: float = 1e-9) -> int | None:
    """Return the first day whose second difference of Q turns negative, or None.

    Args:
        q: daily quarantine strength, shape ``(days,)``.
        tolerance: second differences within this of 0 count as 0.
    """
    second = q[2:] - 2 * q[1:-1] + q[:-2]
    seen_convex = False
    for index, value in enumerate(second):
        if value >= -tolerance:
            seen_convex = True
        elif seen_convex:
            return index + 1
    return None


def growth_rate(
    states: np.ndarray, q: np.ndarray, beta: float, gamma: float, population: float
) -> np.ndarray:
    """Per-day growth rate of infected people, r = beta S / N - gamma - Q, shape ``(days,)``."""
    return beta * states[:, 0] / population - gamma - q


def doubling_time(rate: np.ndarray, rt: np.ndarray) -> float | None:
    """Return ln 2 / mean growth rate over the days with R_t > 1 and r > 0, or None."""
    growing = (rt > 1) & (rate > 0)
    if not growing.any():
        return None
    return math.log(2) / float(rate[growing].mean())


@dataclass
class RegionSummary:
    """Fitted values of one region (best member) and their spread over seeds.

    Day numbers count from day 0 of the training window; ``days_to_rt_below_one`` counts from
    the day of the ``min_cases``-th case. ``cp_below_one_day`` is the first day with
    C_p < 1 (equal to the R_t crossing for V2, where delta = 0).
    """

    region: str
    version: str
    beta: float
    gamma: float
    delta: float
    q_min: float
    q_max: float
    rt_start: float
    rt_end: float
    rt_below_one_day: int | None
    rt_below_one_date: str | None
    days_to_rt_below_one: int | None
    cp_below_one_day: int | None
    inflection_day: int | None
    doubling_time_days: float | None
    loss: float
    beta_range: tuple[float, float]
    gamma_range: tuple[float, float]
    q_band: tuple[float, float]
    crossing_range: tuple[int | None, int | None]
    forecast_crossing: bool
    two_stage: bool

    def days_text(self) -> str:
        """Return the days to R_t < 1, or ``never``."""
        return "never" if self.days_to_rt_below_one is None else str(self.days_to_rt_below_one)


def summarize_region(
    result: FitResult, region_index: int, horizon: int = 60
) -> tuple[RegionSummary, Trajectory]:
    """Summarise one region: rates, Q range, R_t crossing (forecast up to ``horizon`` days).

    Returns:
        The summary and the trajectory of all the region's members over the window and the
        forecast.
    """
    problem = result.problems[region_index]
    series = problem.series
    trajectory = fitted_trajectory(result, region_index, horizon)
    model = result.model
    best = result.best_member(region_index)
    column = trajectory.members.index(best)
    last = int(series.days[-1])
    window = slice(0, last + 1)
    q_best = trajectory.q[:, column]
    rt_best = trajectory.rt[:, column]
    crossing = first_day_below_one(rt_best)
    offset = series.offset_to_first_case()
    beta = float(model.beta[best])
    gamma = float(model.gamma[best])
    rate = growth_rate(
        trajectory.states[window, column], q_best[window], beta, gamma, series.population.people
    )
    crossings = [first_day_below_one(trajectory.rt[:, c]) for c in range(len(trajectory.members))]
    found = [c for c in crossings if c is not None]
    members = result.members_of(region_index)
    summary = RegionSummary(
        region=series.region,
        version=result.config.version,
        beta=beta,
        gamma=gamma,
        delta=float(model.delta[best]),
        q_min=float(q_best[window].min()),
        q_max=float(q_best[window].max()),
        rt_start=float(rt_best[0]),
        rt_end=float(rt_best[last]),
        rt_below_one_day=crossing,
        rt_below_one_date=None
        if crossing is None or series.date_of(crossing) is None
        else str(series.date_of(crossing).date()),
        days_to_rt_below_one=None if crossing is None else crossing + offset,
        cp_below_one_day=first_day_below_one(trajectory.cp[:, column]),
        inflection_day=inflection_day(q_best[window]),
        doubling_time_days=doubling_time(rate, rt_best[window]),
        loss=float(result.losses[best]),
        beta_range=(float(model.beta[members].min()), float(model.beta[members].max())),
        gamma_range=(float(model.gamma[members].min()), float(model.gamma[members].max())),
        q_band=(float(trajectory.q[window].min()), float(trajectory.q[window].max())),
        crossing_range=(min(found) if found else None, max(found) if found else None),
        forecast_crossing=crossing is not None and crossing > last,
        two_stage=problem.uses_two_stage(result.config),
    )
    return summary, trajectory
