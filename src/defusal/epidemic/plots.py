"""Figures of a fitted region: data against fit, Q(t), R_t and scenario forecasts."""

from __future__ import annotations

import os

import numpy as np

from defusal.epidemic.data import RegionSeries
from defusal.epidemic.metrics import RegionSummary, Trajectory
from defusal.epidemic.scenarios import Forecast
from defusal.io import atomic_path


def plot_region(
    path: str | os.PathLike,
    series: RegionSeries,
    version: str,
    summary: RegionSummary,
    trajectory: Trajectory,
    best_column: int,
    forecasts: list[Forecast] | None = None,
    band: tuple[float, float] = (10, 90),
    name: str | None = None,
) -> None:
    """Write a 2 x 2 figure (PNG) for one region.

    Panels: data against the fitted compartments (log scale), Q(t), R_t with the line at 1,
    and the infected curve of each forecast scenario (the panel is dropped when
    ``forecasts`` is empty). Shaded bands span the ``band`` percentiles over the ensemble
    members; lines are the lowest-loss member. The legends label both.

    Args:
        name: region name for the titles (default ``series.region``), such as
            ``Wuhan (JHU Hubei)`` when another region's counts stand in.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    last = int(series.days[-1])
    days = trajectory.days
    low, high = band
    name = name or series.region
    seeds = trajectory.states.shape[1]
    best_label = "best seed (lowest loss)"
    band_label = f"band: {low:g}th-{high:g}th percentile over {seeds} seeds"

    axis = axes[0, 0]
    states = trajectory.states
    if version == "v2":
        curves = [
            ("cumulative confirmed vs I", series.confirmed, states[:, :, 1], "C0"),
            ("recovered + deaths + 1 vs R + 1", series.removed + 1, states[:, :, 2] + 1, "C1"),
        ]
    else:
        curves = [
            ("active vs I + T", series.active, states[:, :, 1] + states[:, :, 3], "C0"),
            ("recovered + deaths vs R", series.removed, states[:, :, 2], "C1"),
        ]
    shown = slice(0, last + 1)
    for index, (label, observed, model_values, color) in enumerate(curves):
        axis.plot(series.days, observed, "o", color=color, markersize=3, label=f"data: {label}")
        axis.plot(
            days[shown],
            model_values[shown, best_column],
            color=color,
            label=best_label if index == 0 else None,
        )
        axis.fill_between(
            days[shown],
            np.percentile(model_values[shown], low, axis=1),
            np.percentile(model_values[shown], high, axis=1),
            color=color,
            alpha=0.2,
            label=band_label if index == 0 else None,
        )
    axis.set_yscale("log")
    axis.set_title(f"{name}: data and fit ({version.upper()}, {series.source})")
    axis.set_xlabel("day")
    axis.legend(fontsize=7)

    for axis, values, title in (
        (axes[0, 1], trajectory.q, "quarantine strength Q(t) per day"),
        (axes[1, 0], trajectory.rt, "R_t = beta / (gamma + Q(t))"),
    ):
        axis.plot(days, values[:, best_column], color="C2", label=best_label)
        axis.fill_between(
            days,
            np.percentile(values, low, axis=1),
            np.percentile(values, high, axis=1),
            color="C2",
            alpha=0.25,
            label=band_label,
        )
        axis.axvline(last, color="grey", linestyle=":", label="last fitted day")
        axis.set_title(title)
        axis.set_xlabel("day")
    axes[1, 0].axhline(1.0, color="red", linewidth=1, label="R_t = 1")
    axes[0, 1].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)

    axis = axes[1, 1]
    for index, item in enumerate(forecasts or []):
        color = f"C{index + 3}"
        forecast_days = item.trajectory.days
        lower, upper = item.infected_band(low, high)
        flag = " (explosion)" if item.explosion else ""
        axis.plot(
            forecast_days,
            item.best_infected,
            color=color,
            label=f"{item.scenario.label}{flag}: {best_label}",
        )
        axis.fill_between(forecast_days, lower, upper, color=color, alpha=0.2)
    if forecasts:
        axis.fill_between([], [], [], color="grey", alpha=0.2, label=band_label)
        axis.set_yscale("log")
        axis.set_title("forecast of infected I from the last fitted day")
        axis.set_xlabel("days after the last fitted day")
        axis.legend(fontsize=7)
    else:
        axis.remove()

    figure.suptitle(
        f"{name}: beta {summary.beta:.3f}, gamma {summary.gamma:.4f}, "
        f"Q {summary.q_min:.2f}-{summary.q_max:.2f}, days to R_t < 1: {summary.days_text()}"
    )
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)
