"""The `defusal fig1` command: regenerate Figure 1 (gradient paths and their count)."""

from __future__ import annotations

import argparse
from pathlib import Path

from defusal.cli.common import common_options

DEFAULT_OUT = Path("runs") / "fig1"


def register(subparsers) -> None:
    """Add the ``fig1`` sub-command."""
    parser = subparsers.add_parser(
        "fig1",
        parents=[common_options()],
        help="regenerate Figure 1: gradient paths in the depth x time grid",
        description=(
            "Write Figure 1 as PNG plots with CSV tables: (a) random gradient paths in the "
            "depth x time grid, (b) the number of paths C(T + dl, T) as the grid grows, and "
            "(c) PascalRNN input gradients from autograd against their closed forms."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder for the PNG and CSV files (default: {DEFAULT_OUT})",
    )
    parser.set_defaults(handler=run_fig1)


def run_fig1(args: argparse.Namespace) -> int:
    """Write the figure files, then print their paths and the headline numbers."""
    from defusal.figures.fig1 import make_figure1, summarize_figure1

    paths = make_figure1(args.out, progress=True)
    print("wrote:")
    for path in paths.values():
        print(f"  {path}")

    summary = summarize_figure1(paths)
    rows = [
        ("log10 C(T + 5, T), T = 5000", f"{summary['log10_paths_depth5_T5000']:.1f}"),
        ("log10 C(T + 5, T), T = 10000", f"{summary['log10_paths_depth5_T10000']:.1f}"),
        ("log10 C(T + T/100, T), T = 5000", f"{summary['log10_paths_T100x_T5000']:.1f}"),
        ("log10 C(T + T/100, T), T = 10000", f"{summary['log10_paths_T100x_T10000']:.1f}"),
        ("PascalRNN gradient at t' = 0, rho = 1", f"{summary['pascal_gradient_t0_rho1']:.4g}"),
        (
            "PascalRNN gradient at t' = 0, rho = 0.5",
            f"{summary['pascal_gradient_t0_rho0.5']:.4g}",
        ),
        (
            "max relative error, autograd vs closed form",
            f"{summary['pascal_max_relative_error']:.1e}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    return 0
