"""The ``defusal epidemic`` command: fit the quarantine model, forecast scenarios, compare.

Examples::

    defusal epidemic fit --region Italy --until 2020-03-24
    defusal epidemic forecast --region US --scenario relax:17
    defusal epidemic compare --regions Hubei,Italy,"Korea, South",US
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from defusal.cli.common import common_options, positive_float, positive_int
from defusal.errors import DefusalError

DEFAULT_OUT = "runs/epidemic"


def register(subparsers) -> None:
    """Add ``epidemic`` with its ``fit``, ``forecast`` and ``compare`` sub-commands."""
    parser = subparsers.add_parser(
        "epidemic",
        help="fit the neural quarantine (QSIR) model to COVID-19 counts",
        description="Fit the neural quarantine model of Dandekar and Barbastathis to regional "
        "COVID-19 counts, report beta, gamma, Q(t) and R_t, and forecast scenarios.",
    )
    commands = parser.add_subparsers(dest="epidemic_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: _usage(parser))

    fit = commands.add_parser(
        "fit", parents=[common_options()], help="fit one region and save the model"
    )
    _region_options(fit)
    _fit_options(fit)
    fit.set_defaults(handler=run_fit)

    forecast = commands.add_parser(
        "forecast", parents=[common_options()], help="forecast scenarios of one fitted region"
    )
    _region_options(forecast)
    _fit_options(forecast)
    forecast.add_argument(
        "--scenario",
        action="append",
        help="continue, relax:DAYS, adopt:REGION[:DAYS] or fixed:Q (repeatable; "
        "default continue and relax:17)",
    )
    forecast.add_argument("--fit", help="saved fit to use (default: fit now, or reuse --out)")
    forecast.set_defaults(handler=run_forecast)

    compare = commands.add_parser(
        "compare",
        parents=[common_options()],
        help="fit several regions together and compare with the published V2 table",
    )
    compare.add_argument(
        "--regions",
        default="Hubei,Italy,Korea, South,US",
        help="comma-separated regions (names with ', ' such as 'Korea, South' stay whole)",
    )
    compare.add_argument(
        "--days",
        type=positive_int,
        default=30,
        help="window length in days for regions without a published window (default 30)",
    )
    _fit_options(compare)
    compare.set_defaults(handler=run_compare)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _region_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", required=True, help="country, province or tracks region")
    parser.add_argument("--province", help="a province of --region to select alone")
    parser.add_argument("--start", help="first day YYYY-MM-DD (default: first day with "
                        "--min-cases confirmed, or the published window)")  # fmt: skip
    parser.add_argument("--until", help="last fitted day YYYY-MM-DD")
    parser.add_argument(
        "--min-cases", type=positive_int, default=500, help="confirmed cases of day 0"
    )
    parser.add_argument(
        "--source",
        choices=("jhu", "tracks"),
        default="jhu",
        help="JHU CSSE time series or the authors' training tracks (default jhu)",
    )
    parser.add_argument("--population", type=positive_float, help="population to use")
    parser.add_argument("--fixed-gamma", type=positive_float, help="keep gamma fixed (per day)")
    parser.add_argument(
        "--loss", choices=("both", "infected"), default=None, help="loss terms to fit"
    )


def _fit_options(parser: argparse.ArgumentParser) -> None:
    from defusal.epidemic.report import QUICK_CONFIG

    parser.add_argument("--version", choices=("v2", "v3"), default="v2", help="model version")
    parser.add_argument("--seeds", default="50,51,52", help="comma-separated ensemble seeds")
    # Defaults are those of the four-region comparison (defusal.epidemic.report.QUICK_CONFIG).
    parser.add_argument(
        "--steps", type=positive_int, default=QUICK_CONFIG.adam_steps,
        help=f"Adam steps per stage (default {QUICK_CONFIG.adam_steps})",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=positive_float, default=QUICK_CONFIG.adam_lr,
        help=f"Adam learning rate (default {QUICK_CONFIG.adam_lr})",
    )  # fmt: skip
    parser.add_argument(
        "--beta0", type=positive_float, default=QUICK_CONFIG.beta0,
        help=f"initial beta per day (default {QUICK_CONFIG.beta0})",
    )  # fmt: skip
    parser.add_argument(
        "--lbfgs-steps", type=int, default=QUICK_CONFIG.lbfgs_steps,
        help="L-BFGS steps (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--two-stage", choices=("auto", "always", "never"), default="auto",
        help="two-stage fit for unreliable recovered counts (default auto)",
    )  # fmt: skip
    parser.add_argument(
        "--input-scale", choices=("raw", "normalised"), default=QUICK_CONFIG.input_scale,
        help="network input: raw head counts with Q = |NN|/N (the original), or S/N and "
        f"I, R, T over the largest confirmed count (default {QUICK_CONFIG.input_scale})",
    )  # fmt: skip
    parser.add_argument(
        "--monotone-t", action=argparse.BooleanOptionalAction, default=QUICK_CONFIG.monotone_t,
        help="V2 only, ignored for V3: constrain the network so that Q never falls when the "
        "quarantined count T grows (non-negative T weights and output layer), so Q past the "
        "training window keeps rising with T; --no-monotone-t is the original unconstrained "
        "network "
        f"(default {'on' if QUICK_CONFIG.monotone_t else 'off'})",
    )  # fmt: skip
    parser.add_argument(
        "--grid", choices=("day", "stretched"), default="day",
        help="data day k at t = k, or at t = k n/(n-1) as in the original code",
    )  # fmt: skip
    parser.add_argument(
        "--solver", choices=("fast_rk4", "rk4", "dopri5"), default="fast_rk4",
        help="ODE solver: built-in RK4, or torchdiffeq rk4 / dopri5 (default fast_rk4)",
    )  # fmt: skip
    parser.add_argument(
        "--horizon", type=positive_int, default=60, help="forecast days after the last day"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def split_regions(text: str) -> list[str]:
    """Split a comma-separated region list, keeping names such as ``Korea, South`` whole."""
    names = [name.strip() for name in re.split(r",(?! )", text)]
    names = [name for name in names if name]
    if not names:
        raise DefusalError(f"no region in {text!r}; give names separated by commas")
    return names


def _config(args: argparse.Namespace):
    from defusal.epidemic.fit import FitConfig

    try:
        seeds = tuple(int(seed) for seed in args.seeds.split(","))
    except ValueError:
        raise DefusalError(
            f"invalid --seeds {args.seeds!r}; give integers such as 50,51,52"
        ) from None
    return FitConfig(
        version=args.version,
        seeds=seeds,
        input_scale=args.input_scale,
        grid=args.grid,
        solver=args.solver,
        adam_steps=args.steps,
        adam_lr=args.lr,
        lbfgs_steps=args.lbfgs_steps,
        two_stage=args.two_stage,
        stage2_steps=args.steps,
        beta0=args.beta0,
        monotone_t=args.monotone_t and args.version == "v2",
    )


def _published_window(region: str):
    from defusal.epidemic.report import V2_REGIONS

    for entry in V2_REGIONS:
        if region in (entry.published, entry.jhu_name):
            return entry
    return None


def _problem(args: argparse.Namespace, region: str, days: int | None = None):
    """Select a region's window and options from the command-line arguments.

    A region of the published V2 table without ``--start`` gets its published window and
    options. Other regions start on the day of the ``--min-cases``-th case and end at
    ``--until``, or after ``days`` days when given.
    """
    import pandas as pd

    from defusal.epidemic.data import jhu_region, tracks_region
    from defusal.epidemic.fit import FitProblem

    start = getattr(args, "start", None)
    until = getattr(args, "until", None)
    fixed_gamma = getattr(args, "fixed_gamma", None)
    loss = getattr(args, "loss", None)
    population = getattr(args, "population", None)
    two_stage = None
    if getattr(args, "source", "jhu") == "tracks":
        series = tracks_region(
            region, until=until, data_dir=args.data_dir, population_override=population
        )
        return FitProblem(series, fixed_gamma=fixed_gamma, loss=loss or "both")

    entry = _published_window(region)
    if entry is not None and start is None:
        start = entry.start
        until = until or entry.until
        if fixed_gamma is None and loss is None and entry.fixed_gamma is not None:
            fixed_gamma, loss, two_stage = entry.fixed_gamma, entry.loss, entry.two_stage
    if until is None and days is None:
        raise DefusalError(f"no training window known for {region!r}; give --until YYYY-MM-DD")
    series = jhu_region(
        region,
        getattr(args, "province", None),
        min_cases=getattr(args, "min_cases", 500),
        start=start,
        until=until,
        data_dir=args.data_dir,
        faithful_population=entry is not None,
        population_override=population,
    )
    if until is None:
        series = series.until(series.first_date + pd.Timedelta(days=days - 1))
    return FitProblem(series, fixed_gamma=fixed_gamma, loss=loss or "both", two_stage=two_stage)


def _file_stem(region: str) -> str:
    return "epidemic_" + re.sub(r"[^a-z0-9]+", "_", region.lower()).strip("_")


def _print_problems(series) -> None:
    if not series.problems:
        print(f"{series.region}: no data problems in the window")
    for problem in series.problems:
        print(f"{series.region}: {problem.describe()}")


def _print_summary(summary) -> None:
    crossing = summary.days_text()
    date = f" ({summary.rt_below_one_date})" if summary.rt_below_one_date else ""
    doubling = (
        "n/a" if summary.doubling_time_days is None else f"{summary.doubling_time_days:.1f} days"
    )
    print(
        f"{summary.region}: beta {summary.beta:.3f}, gamma {summary.gamma:.4f}, "
        f"delta {summary.delta:.4f}, Q {summary.q_min:.2f}-{summary.q_max:.2f}, "
        f"R_t {summary.rt_start:.2f} -> {summary.rt_end:.2f}"
    )
    print(
        f"{summary.region}: days from the 500th case to R_t < 1: {crossing}{date}; "
        f"quarantine inflection day: {summary.inflection_day}; doubling time: {doubling}; "
        f"loss {summary.loss:.3f}"
    )


def _window_text(series) -> str:
    """Describe the fitted window: first and last date (or day numbers) and its length."""
    days = len(series.days)
    if series.dates is None:
        return f"days {int(series.days[0])} to {int(series.days[-1])} ({days} data days)"
    first, last = series.dates[0].date(), series.dates[-1].date()
    return f"{first} to {last} ({days} days)"


def _fit_and_save(args: argparse.Namespace, problem, out: Path):
    from defusal.epidemic.fit import fit_regions, save_fit

    series = problem.series
    print(f"{series.region}: fitting {_window_text(series)}")
    stem = _file_stem(series.region)
    result = fit_regions(
        [problem],
        _config(args),
        progress=not args.no_progress,
        checkpoint_path=out / f"{stem}.partial.pt",
    )
    save_fit(out / f"{stem}.pt", result)
    print(f"saved fit to {out / f'{stem}.pt'}")
    return result


def run_fit(args: argparse.Namespace) -> int:
    """Fit one region, print its results, save the model and a figure."""
    from defusal.epidemic.metrics import summarize_region
    from defusal.epidemic.plots import plot_region
    from defusal.epidemic.scenarios import forecast

    out = Path(args.out)
    problem = _problem(args, args.region)
    _print_problems(problem.series)
    result = _fit_and_save(args, problem, out)
    summary, trajectory = summarize_region(result, 0, args.horizon)
    _print_summary(summary)
    continued = forecast(result, 0, "continue", args.horizon)
    figure = out / f"{_file_stem(problem.series.region)}.png"
    plot_region(
        figure,
        problem.series,
        result.config.version,
        summary,
        trajectory,
        trajectory.members.index(result.best_member(0)),
        [continued],
    )
    print(f"wrote {figure}")
    return 0


def _load_or_fit(
    args: argparse.Namespace,
    region: str,
    out: Path,
    path: str | None = None,
    fitted_name: str | None = None,
):
    """Load the fit of ``region`` from ``path`` or the output folder, else fit it now.

    ``fitted_name`` is the region name of the saved fit when it differs from ``region``
    (a province selected with --province).
    """
    from defusal.epidemic.fit import load_fit

    fitted_name = fitted_name or region
    saved = Path(path) if path else out / f"{_file_stem(fitted_name)}.pt"
    if saved.is_file():
        result = load_fit(saved)
        _check_fit_region(result, fitted_name, saved)
        return result
    if path:
        raise DefusalError(f"fit file {saved} not found; run `defusal epidemic fit` first")
    problem = _problem(args, region)
    _print_problems(problem.series)
    return _fit_and_save(args, problem, out)


def _region_key(name: str) -> str:
    from defusal.epidemic.populations import ALIASES

    return ALIASES.get(name, name).casefold()


def _check_fit_region(result, region: str, path: Path) -> None:
    """Raise when the saved fit at ``path`` is of another region than ``region``."""
    fitted = [problem.series.region for problem in result.problems]
    wanted = {_region_key(region)}
    entry = _published_window(region)
    if entry is not None:
        wanted |= {_region_key(entry.published), _region_key(entry.jhu_name)}
    if _region_key(fitted[0]) not in wanted:
        raise DefusalError(
            f"fit file {path} is a fit of {', '.join(fitted)}, not of {region}; give the fit "
            f"of {region} with --fit, or omit --fit to fit {region} now"
        )


def run_forecast(args: argparse.Namespace) -> int:
    """Forecast scenarios of one region and flag exponential explosion."""
    from defusal.epidemic.metrics import summarize_region
    from defusal.epidemic.plots import plot_region
    from defusal.epidemic.report import scenario_rows
    from defusal.epidemic.scenarios import explosion_text, forecast, parse_scenario

    out = Path(args.out)
    scenarios = [parse_scenario(text) for text in (args.scenario or ["continue", "relax:17"])]
    result = _load_or_fit(args, args.region, out, args.fit, fitted_name=args.province)
    others = {}
    for scenario in scenarios:
        if scenario.kind == "adopt" and scenario.other not in others:
            other = _load_or_fit(args, scenario.other, out)
            others[scenario.other] = (other, other.best_member(0))
    forecasts = [forecast(result, 0, scenario, args.horizon, others) for scenario in scenarios]
    series = result.problems[0].series
    for item, row in zip(forecasts, scenario_rows(series.region, forecasts, series), strict=True):
        print(
            f"{row['region']} {row['scenario']} from {row['start']}: {explosion_text(item)}; "
            f"{row['explosion_share']:.0%} of seeds explode; best seed: peak infected "
            f"{row['peak_infected']:,} "
            f"on day {row['peak_day']}; infected on day {args.horizon}: "
            f"{row['final_infected']:,} (band {row['final_band']}); R_t {row['rt_final']}"
        )
    summary, trajectory = summarize_region(result, 0, args.horizon)
    figure = out / f"{_file_stem(series.region)}_forecast.png"
    plot_region(
        figure,
        series,
        result.config.version,
        summary,
        trajectory,
        trajectory.members.index(result.best_member(0)),
        forecasts,
    )
    print(f"wrote {figure}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Fit several regions together and print the table beside the published values."""
    from defusal.epidemic.report import ComparisonRegion, run_comparison

    regions = []
    for name in split_regions(args.regions):
        entry = _published_window(name)
        if entry is None:
            problem = _problem(args, name, days=args.days)
            series = problem.series
            entry = ComparisonRegion(
                name, name, str(series.dates[0].date()), str(series.dates[-1].date())
            )
        regions.append(entry)
    summary = run_comparison(
        args.out,
        tuple(regions),
        _config(args),
        horizon=args.horizon,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    print(summary["markdown"])
    for path in summary["files"]:
        print(f"wrote {path}")
    return 0
