"""The ``defusal data`` command: list, verify and fetch the datasets in the registry."""

from __future__ import annotations

import argparse

from defusal.cli.common import common_options
from defusal.data import DATASETS, dataset, resolve_data_dir
from defusal.data.fetch import fetch
from defusal.data.verify import FileCheck, require_data_dir, status, verify
from defusal.errors import DataMissingError

BYTES_PER_MB = 1_000_000


def register(subparsers) -> None:
    """Add ``defusal data`` with the sub-commands ``list``, ``verify`` and ``fetch``."""
    parser = subparsers.add_parser(
        "data",
        help="list, verify and download datasets",
        description="List, verify and download the datasets that defusal uses.",
    )
    parser.set_defaults(handler=lambda _args: _print_help(parser))
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")

    list_parser = actions.add_parser(
        "list",
        parents=[common_options()],
        help="show every dataset, whether it is present, its size and licence",
    )
    list_parser.set_defaults(handler=list_command)

    verify_parser = actions.add_parser(
        "verify",
        parents=[common_options()],
        help="check the sha256 checksum of every file",
        description="Check the sha256 checksum of every file of NAME, or of every dataset "
        "present in the data folder. Exits 1 when a file is missing or differs.",
    )
    verify_parser.add_argument("name", nargs="?", metavar="NAME", help="dataset name")
    verify_parser.set_defaults(handler=verify_command)

    fetch_parser = actions.add_parser(
        "fetch",
        parents=[common_options()],
        help="download the missing files of a dataset",
        description="Download the missing files of NAME into the data folder, resuming an "
        "interrupted download, and check their sha256 checksums.",
    )
    fetch_parser.add_argument("name", metavar="NAME", help="dataset name")
    fetch_parser.add_argument(
        "--mirror",
        metavar="URL",
        default=None,
        help="base address serving URL/<dataset folder>/<file name> (http, https, file or a "
        "local folder); needed for datasets without a canonical address",
    )
    fetch_parser.add_argument(
        "--no-progress", action="store_true", help="do not show download progress bars"
    )
    fetch_parser.set_defaults(handler=fetch_command)


def list_command(args: argparse.Namespace) -> int:
    """Print a table of every dataset: name, state, size in MB and licence."""
    root = resolve_data_dir(args.data_dir)
    if root.exists():
        require_data_dir(root)
    print(f"data folder: {root}")
    rows = [("name", "state", "size MB", "licence")]
    for name, entry in DATASETS.items():
        state = status(name, args.data_dir).state
        rows.append((name, state, f"{entry.size / BYTES_PER_MB:.1f}", entry.licence))
    name_width = max(len(row[0]) for row in rows)
    state_width = max(len(row[1]) for row in rows)
    size_width = max(len(row[2]) for row in rows)
    for name, state, size, licence in rows:
        print(f"{name:<{name_width}}  {state:<{state_width}}  {size:>{size_width}}  {licence}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    """Check every file of one dataset, or of every dataset present, and return 1 if any is bad."""
    if args.name is not None:
        dataset(args.name)
        names = [args.name]
    else:
        root = require_data_dir(args.data_dir)
        names = [name for name in DATASETS if status(name, args.data_dir).state != "missing"]
        if not names:
            raise DataMissingError(
                f"no dataset found in {root}. Set DEFUSAL_DATA or --data-dir to the folder that "
                "contains the datasets, or run `defusal data fetch NAME`"
            )

    bad = 0
    for name in names:
        for check in verify(name, args.data_dir):
            print(_check_line(check))
            bad += not check.ok
    checked = sum(len(DATASETS[name].files) for name in names)
    print(f"{checked - bad} of {checked} files OK in {', '.join(names)}")
    return 1 if bad else 0


def fetch_command(args: argparse.Namespace) -> int:
    """Download the missing files of one dataset and print what was done per file."""
    results = fetch(args.name, args.data_dir, mirror=args.mirror, progress=not args.no_progress)
    for result in results:
        print(f"{result.action:<10}  {result.path}")
    return 0


def _check_line(check: FileCheck) -> str:
    label = f"{check.dataset}/{check.name}"
    if check.state == "ok":
        return f"OK        {label}"
    if check.state == "missing":
        return f"MISSING   {label}: {check.path} not found"
    return (
        f"MISMATCH  {label}: sha256 {check.actual_sha256}, expected {check.expected_sha256} "
        f"({check.path})"
    )


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
