"""The neural quarantine epidemic model (QSIR) of Dandekar and Barbastathis.

A small network inside an SIR-type ODE learns the quarantine strength Q(t) from regional
COVID-19 counts; the effective reproduction number is R_t = beta / (gamma + Q(t)).

Typical use::

    from defusal.epidemic import FitConfig, FitProblem, fit_regions, jhu_region
    series = jhu_region("Italy", until="2020-03-24")
    result = fit_regions([FitProblem(series)], FitConfig(seeds=(50, 51, 52)))
    summary, trajectory = summarize_region(result, 0)
    relaxed = forecast(result, 0, "relax:17")
"""

from defusal.epidemic.data import RegionSeries, jhu_region, load_jhu, tracks_region
from defusal.epidemic.fit import (
    US_FIXED_GAMMA,
    FitConfig,
    FitProblem,
    FitResult,
    fit_region,
    fit_regions,
    load_fit,
    save_fit,
)
from defusal.epidemic.metrics import RegionSummary, Trajectory, summarize_region
from defusal.epidemic.model import QSIRModel, QuarantineNet, reproduction_number, spread_parameter
from defusal.epidemic.populations import Population, population
from defusal.epidemic.quirks import DataProblem
from defusal.epidemic.report import PUBLISHED_V2, run_comparison, run_quick_comparison
from defusal.epidemic.scenarios import Forecast, Scenario, forecast, parse_scenario

__all__ = [
    "US_FIXED_GAMMA",
    "PUBLISHED_V2",
    "DataProblem",
    "FitConfig",
    "FitProblem",
    "FitResult",
    "Forecast",
    "Population",
    "QSIRModel",
    "QuarantineNet",
    "RegionSeries",
    "RegionSummary",
    "Scenario",
    "Trajectory",
    "fit_region",
    "fit_regions",
    "forecast",
    "jhu_region",
    "load_fit",
    "load_jhu",
    "parse_scenario",
    "population",
    "reproduction_number",
    "run_comparison",
    "run_quick_comparison",
    "save_fit",
    "spread_parameter",
    "summarize_region",
    "tracks_region",
]
