"""Seconds to fit the quarantine model to each of the four original regions, and to all at once.

The four regions are the medRxiv 2020 training tracks (Wuhan, Italy, South Korea, US, the US
with gamma fixed at the published value). Each region is fitted alone with
:func:`defusal.epidemic.fit.fit_regions` and the default :class:`FitConfig` (Adam, then L-BFGS,
then the second stage where recovered counts are unreliable), then all four together as one
batched ensemble.
"""

from __future__ import annotations

import functools
import logging
import math

from benchmarks.harness import Table, measure, megabytes
from defusal.epidemic.data import tracks_region
from defusal.epidemic.fit import US_FIXED_GAMMA, FitConfig, FitProblem, fit_regions

logger = logging.getLogger(__name__)

REGIONS = ("Wuhan", "Italy", "South Korea", "US")
SETTINGS = {
    # NOTE: one fit takes minutes on a loaded 2-core machine, so each is timed once.
    "full": {"config": {}, "repeats": 1},
    "tiny": {"config": {"adam_steps": 3, "lbfgs_steps": 1, "stage2_steps": 2}, "repeats": 1},
}
TARGET_SECONDS = 30.0


def problem(region: str) -> FitProblem:
    """Return the fit problem of one original region."""
    series = tracks_region(region, "medrxiv")
    return FitProblem(series, fixed_gamma=US_FIXED_GAMMA if region == "US" else None)


def _fit_into(results: list, problems: list[FitProblem], config: FitConfig) -> None:
    results.append(fit_regions(problems, config))


def run(size: str) -> list[Table]:
    """Fit each region alone and all together; return one table."""
    settings = SETTINGS[size]
    config = FitConfig(**settings["config"])
    table = Table(
        title="Quarantine-model fit (defaults: 300 Adam + 20 L-BFGS steps per stage)"
        if size == "full"
        else "Quarantine-model fit (tiny: a few steps)",
        columns=["fit", "days", "two stages", "seconds", "final loss", "peak MiB", "target"],
    )
    # Warm-up: a short fit of one region, so the first timed fit pays no start-up cost.
    fit_regions([problem(REGIONS[0])], FitConfig(adam_steps=2, lbfgs_steps=0, stage2_steps=0))

    problems, total = [], 0.0
    for region in REGIONS:
        try:
            current = problem(region)
        except Exception as error:  # noqa: BLE001 - a broken region must not hide the others
            logger.warning("cannot load %s: %s", region, error)
            table.rows.append([region, "-", "-", math.nan, math.nan, math.nan, "failed"])
            table.notes.append(
                f"{region}: loading the track failed: {type(error).__name__}: {error}"
            )
            continue
        problems.append(current)
        results: list = []
        timing = measure(
            functools.partial(_fit_into, results, [current], config),
            repeats=settings["repeats"],
            warmup=0,
        )
        total += timing.median
        table.rows.append(
            [
                region,
                len(current.series.days),
                str(current.uses_two_stage(config)),
                timing.median,
                float(results[-1].losses.min()),
                megabytes(timing.peak_bytes),
                "met" if timing.median < TARGET_SECONDS else "missed",
            ]
        )

    results = []
    ensemble = measure(
        functools.partial(_fit_into, results, problems, config),
        repeats=settings["repeats"],
        warmup=0,
    )
    names = ", ".join(p.series.region for p in problems)
    table.rows.append(
        [
            f"ensemble ({len(problems)} regions batched)",
            max(len(p.series.days) for p in problems),
            "-",
            ensemble.median,
            float(results[-1].losses.max()),
            megabytes(ensemble.peak_bytes),
            "-",
        ]
    )
    table.rows.append(
        [
            "separate fits, sum",
            "-",
            "-",
            total,
            "-",
            "-",
            "-",
        ]
    )
    table.notes.extend(
        [
            f"Target: one region under {TARGET_SECONDS:.0f} s.",
            f"Ensemble: {names} fitted as members of one batched model; ensemble / sum of "
            f"separate fits = {ensemble.median / max(total, 1e-9):.2f}.",
            "Final loss: the region's lowest member loss; for the ensemble the largest "
            "member loss.",
            f"Each fit timed {settings['repeats']} time(s) after a short warm-up fit: a full "
            "fit takes minutes, so repeats would break the time budget of `make bench`.",
        ]
    )
    return [table]
