"""The `defusal reproduce` command: Figure 1, the LSC experiments and the epidemic comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from defusal.cli.common import common_options
from defusal.errors import DefusalError


def register(subparsers) -> None:
    """Add the ``reproduce`` sub-command."""
    parser = subparsers.add_parser(
        "reproduce",
        parents=[common_options()],
        help="run Figure 1, the LSC experiments and the epidemic comparison; write a report",
        description=(
            "Run the selected jobs one configuration at a time and write OUT/report.md with "
            "tables and PNG plots. Finished runs are skipped and interrupted ones resume from "
            "their checkpoints, so running the same command again completes an interrupted job."
        ),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="size",
        action="store_const",
        const="quick",
        help="small grids for a 2-core CPU, about ten minutes",
    )
    size.add_argument(
        "--full",
        dest="size",
        action="store_const",
        const="full",
        help="the grids at the settings of the original study (days of CPU time)",
    )
    parser.add_argument(
        "--out", default=None, help="results folder (default: runs/quick or runs/full)"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated jobs out of fig1,rnn,lru,ffn,epidemic (default: the size's set)",
    )
    parser.add_argument(
        "--seeds", default=None, help="seeds per configuration, overriding each experiment's"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the experiments and their sizes, then exit"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``defusal reproduce`` and print the summary tables; return the exit status."""
    from defusal.experiments.reproduce import describe_experiments, parse_jobs, reproduce

    if args.list:
        print(describe_experiments())
        return 0
    if args.size is None:
        raise DefusalError("choose a size: defusal reproduce --quick or --full (or --list)")
    jobs = parse_jobs(args.only, args.size)
    seeds = _parse_seeds(args.seeds)
    out = Path(args.out) if args.out else Path("runs") / args.size
    result = reproduce(
        args.size,
        out,
        only=jobs,
        seeds=seeds,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    print(result.summary)
    print(f"\nreport: {result.report}")
    return 0


def _parse_seeds(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise DefusalError(f"--seeds must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise DefusalError(f"--seeds must be a positive integer, got {value}")
    return value
