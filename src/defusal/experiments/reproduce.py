"""The main job: Figure 1, the training grids, the epidemic comparison, and one report.

``reproduce("quick", "runs/quick")`` writes ``runs/quick/report.md`` with the plots under
``runs/quick/plots``, the runs under ``runs/quick/<experiment>/<run id>/``, Figure 1 under
``runs/quick/fig1`` and the epidemic comparison under ``runs/quick/epidemic``. Every part is
resumable: finished runs are skipped and interrupted ones continue from their checkpoints, so
calling it again after an interruption finishes the job.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defusal import io
from defusal.errors import DefusalError
from defusal.experiments.catalog import (
    EXPERIMENTS,
    FULL_DEFAULT_JOBS,
    JOBS,
    QUICK_DEFAULT_JOBS,
)
from defusal.experiments.configs import SIZES, NotApplicable, RunSpec
from defusal.experiments.report import experiment_section, write_report
from defusal.experiments.runner import Runner

logger = logging.getLogger(__name__)


@dataclass
class ReproduceResult:
    """Files and summary written by :func:`reproduce`.

    Attributes:
        report: path of ``report.md``.
        summary: the summary tables as Markdown, as printed at the end.
        seconds: wall-clock time per job.
    """

    report: Path
    summary: str
    seconds: dict[str, float] = field(default_factory=dict)


def parse_jobs(only: str | Sequence[str] | None, size: str) -> list[str]:
    """Return the jobs to run, in their fixed order.

    Args:
        only: comma-separated job names (or a list of them); ``None`` for the default jobs of
            ``size``.
        size: ``"quick"`` or ``"full"``.

    Raises:
        DefusalError: an unknown size, an unknown job name or an empty selection.
    """
    if size not in SIZES:
        raise DefusalError(f"unknown size {size!r}; use --quick or --full")
    if only is None:
        return list(QUICK_DEFAULT_JOBS if size == "quick" else FULL_DEFAULT_JOBS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in JOBS]
    if unknown:
        raise DefusalError(
            f"unknown job {', '.join(map(repr, unknown))} in --only; choose from {','.join(JOBS)}"
        )
    if not names:
        raise DefusalError(f"--only selects no job; choose from {','.join(JOBS)}")
    return [job for job in JOBS if job in names]


def plan(
    size: str, jobs: Sequence[str], *, seeds: int | None = None
) -> dict[str, tuple[list[RunSpec], list[NotApplicable]]]:
    """Expand the training experiments among ``jobs`` into their runs."""
    return {job: EXPERIMENTS[job].expand(size, seeds=seeds) for job in jobs if job in EXPERIMENTS}


def describe_experiments() -> str:
    """Return the text of ``defusal reproduce --list``: every job and its sizes."""
    lines = []
    for job in JOBS:
        if job == "fig1":
            lines.append("fig1      Figure 1: gradient paths, path counts, PascalRNN gradients")
            lines.append("          quick and full: the same, exact, seconds")
            continue
        if job == "epidemic":
            lines.append("epidemic  neural quarantine model: four regions and a US relax scenario")
            lines.append("          quick and full: the same comparison")
            continue
        experiment = EXPERIMENTS[job]
        lines.append(f"{job:<9} {experiment.description}")
        for size in SIZES:
            runs, skipped = experiment.expand(size)
            tasks = sorted({run.task for run in runs})
            networks = sorted({run.network for run in runs})
            depths = sorted({run.depth for run in runs})
            conditions = sorted({run.label for run in runs})
            seeds = len({run.seed for run in runs})
            lines.append(
                f"          {size}: {len(runs)} runs ({len(skipped)} n/a cells); tasks "
                f"{','.join(tasks)}; networks {','.join(networks)}; depths "
                f"{','.join(map(str, depths))}; {seeds} seed(s); conditions "
                f"{','.join(conditions)}"
            )
    default_quick = ",".join(QUICK_DEFAULT_JOBS)
    lines.append(f"default jobs: --quick {default_quick}; --full {','.join(FULL_DEFAULT_JOBS)}")
    return "\n".join(lines)


def reproduce(
    size: str,
    out_dir: str | Path,
    *,
    only: str | Sequence[str] | None = None,
    seeds: int | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    runner: Runner | None = None,
) -> ReproduceResult:
    """Run the selected jobs of ``size`` into ``out_dir`` and write ``out_dir/report.md``.

    Every dataset the training jobs need is loaded before anything runs, so a missing one
    fails at once.

    Args:
        size: ``"quick"`` or ``"full"``.
        out_dir: results folder.
        only: jobs to run (see :data:`defusal.experiments.catalog.JOBS`), default all of size.
        seeds: number of seeds per configuration, overriding the experiments' own.
        data_dir: data folder.
        progress: show progress bars.
        runner: runner to use (tests pass one with fake tasks), default a :class:`Runner`.

    Returns:
        The report path, the printed summary and the time per job.

    Raises:
        DefusalError: bad arguments, missing data, or an error a part raises for the user.
    """
    jobs = parse_jobs(only, size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DefusalError(f"output folder {out} is a file; pass another --out")
    planned = plan(size, jobs, seeds=seeds)
    runner = runner or Runner(out, data_dir=data_dir)
    for runs, _ in planned.values():
        for spec in runs:
            runner.task(spec.task, spec.task_size)

    sections: list[str] = []
    summaries: list[str] = []
    seconds: dict[str, float] = {}
    for job in jobs:
        started = time.perf_counter()
        if job == "fig1":
            sections.append(_figure1_section(out, out / "fig1"))
        elif job == "epidemic":
            section, summary = _epidemic_section(out, out / "epidemic", data_dir, progress)
            sections.append(section)
            summaries.append(summary)
        else:
            runs, skipped = planned[job]
            records = runner.run_all(runs, progress=progress, description=f"{job} runs")
            section, summary = experiment_section(
                job, EXPERIMENTS[job].description, records, skipped, out
            )
            sections.append(section)
            summaries.append(summary)
        seconds[job] = time.perf_counter() - started
        logger.info("job %s finished in %.1f s", job, seconds[job])

    timing = ", ".join(f"{job} {value:.0f} s" for job, value in seconds.items())
    sections.append(f"## Run time\n\n{timing} (this invocation; skipped runs take no time).")
    title = f"defusal reproduce --{size}"
    report = write_report(out / "report.md", title, sections)
    return ReproduceResult(report=report, summary="\n\n".join(summaries), seconds=seconds)


def _figure1_section(report_dir: Path, folder: Path) -> str:
    from defusal.figures.fig1 import make_figure1

    paths = {key: Path(value) for key, value in make_figure1(folder).items()}
    lines = ["## Figure 1", ""]
    lines.append(
        "(a) random monotone gradient paths on the time-depth grid; (b) number of shortest "
        "paths C(T + Δl, T); (c) PascalRNN input gradients against the closed form."
    )
    lines.append("")
    for key, path in paths.items():
        if path.suffix == ".png":
            lines.append(f"![Figure 1 {key}]({path.relative_to(report_dir).as_posix()})")
    try:
        from defusal.figures.fig1 import summarize_figure1

        numbers = summarize_figure1(paths)
    except (ImportError, KeyError, DefusalError) as error:
        logger.warning("Figure 1 numbers not summarized: %s", error)
        numbers = {}
    if numbers:
        lines += ["", "| quantity | value |", "|---|---|"]
        lines += [f"| {name} | {value:.6g} |" for name, value in numbers.items()]
    return "\n".join(lines)


def _epidemic_section(
    report_dir: Path, folder: Path, data_dir: str | Path | None, progress: bool
) -> tuple[str, str]:
    try:
        from defusal.epidemic import run_quick_comparison
    except ImportError:
        # The package may not re-export it; the function lives in its report module.
        from defusal.epidemic.report import run_quick_comparison

    summary_file = folder / "comparison.json"
    if summary_file.is_file():
        comparison = json.loads(summary_file.read_text())
    else:
        comparison = run_quick_comparison(folder, data_dir=data_dir, progress=progress)
        io.write_json(summary_file, _json_ready(comparison))
    table = _find_markdown(comparison)
    lines = ["## Epidemic: neural quarantine model", "", table, ""]
    for path in _find_pngs(comparison):
        path = Path(path)
        link = path.relative_to(report_dir) if path.is_relative_to(report_dir) else path
        lines.append(f"![epidemic {path.stem}]({Path(link).as_posix()})")
    return "\n".join(lines), f"### epidemic\n\n{table}"


def _find_markdown(data: Any) -> str:
    """Return the Markdown tables in the comparison result, joined by blank lines."""
    found: list[str] = []

    def visit(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                visit(inner, str(inner_key))
        elif isinstance(value, list | tuple):
            for inner in value:
                visit(inner, key)
        elif isinstance(value, str) and ("markdown" in key or "table" in key) and "|" in value:
            found.append(value.strip())

    visit(data)
    return "\n\n".join(found) if found else "(the comparison returned no Markdown table)"


def _find_pngs(data: Any) -> list[str]:
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for inner in value.values():
                visit(inner)
        elif isinstance(value, list | tuple):
            for inner in value:
                visit(inner)
        elif isinstance(value, str | Path) and str(value).endswith(".png"):
            found.append(str(value))

    visit(data)
    return list(dict.fromkeys(found))


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_ready(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(inner) for inner in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "to_dict"):
        return _json_ready(value.to_dict())
    if hasattr(value, "to_markdown"):
        return value.to_markdown()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
