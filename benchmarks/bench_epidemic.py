"""Seconds to fit the quarantine model to each of the four original regions, and to all at once.

The regions and settings are those of the four-region comparison
(:func:`defusal.epidemic.report.run_quick_comparison`): the JHU windows of
:data:`defusal.epidemic.report.V2_REGIONS` (Wuhan replaced by Hubei, the US with gamma fixed
at the published value and the infected term only) and
:data:`defusal.epidemic.report.QUICK_CONFIG` (3 seeds, normalised inputs, network monotone in
T, 500 Adam and 20 L-BFGS steps). Each region is fitted alone with
:func:`defusal.epidemic.fit.fit_regions`, then all four together as one batched ensemble.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

from benchmarks.harness import Table, measure, megabytes
from defusal.epidemic.fit import FitConfig, FitProblem, fit_regions
from defusal.epidemic.report import QUICK_CONFIG, V2_REGIONS, comparison_problems

logger = logging.getLogger(__name__)

REGIONS = tuple(region.published for region in V2_REGIONS)
SETTINGS = {
    # One fit of the comparison settings takes about 10 s, so each is timed once.
    "full": {"config": {}, "repeats": 1},
    "tiny": {"config": {"adam_steps": 3, "lbfgs_steps": 1, "stage2_steps": 2}, "repeats": 1},
}
TARGET_SECONDS = 30.0


def problem(region: str) -> FitProblem:
    """Return the fit problem of one comparison region (its JHU window and options)."""
    entry = next(item for item in V2_REGIONS if item.published == region)
    return comparison_problems((entry,))[0]


def _fit_into(results: list, problems: list[FitProblem], config: FitConfig) -> None:
    results.append(fit_regions(problems, config))


def run(size: str) -> list[Table]:
    """Fit each region alone and all together; return one table."""
    settings = SETTINGS[size]
    config = dataclasses.replace(QUICK_CONFIG, **settings["config"])
    table = Table(
        title=f"Quarantine-model fit (comparison settings: {len(config.seeds)} seeds, "
        f"{config.adam_steps} Adam + {config.lbfgs_steps} L-BFGS steps)"
        if size == "full"
        else "Quarantine-model fit (comparison settings, tiny: a few steps)",
        columns=["fit", "days", "two stages", "seconds", "final loss", "peak MiB", "target"],
    )
    # Warm-up: a short fit of one region, so the first timed fit pays no start-up cost.
    warmup = dataclasses.replace(config, adam_steps=2, lbfgs_steps=0, stage2_steps=0)
    fit_regions([problem(REGIONS[0])], warmup)

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
            f"Each fit timed {settings['repeats']} time(s) after a short warm-up fit, to keep "
            "`make bench` short.",
        ]
    )
    return [table]
