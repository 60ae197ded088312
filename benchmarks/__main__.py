"""Run every benchmark and write BENCHMARKS.md (``make bench``)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from benchmarks.harness import machine_description
from defusal.errors import DefusalError

BENCHMARKS = (
    "bench_radius",
    "bench_pretrain",
    "bench_throughput",
    "bench_lru_scan",
    "bench_epidemic",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--out", default="BENCHMARKS.md", help="markdown file to write")
    args = parser.parse_args(argv)

    names = BENCHMARKS if args.only is None else tuple(args.only.split(","))
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark {unknown}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2

    sections = ["# Benchmarks", "", *[f"- {line}" for line in machine_description()], ""]
    for name in names:
        start = time.perf_counter()
        print(f"running {name} ({args.size}) ...", flush=True)
        try:
            tables = importlib.import_module(f"benchmarks.{name}").run(args.size)
        except DefusalError as error:
            print(f"benchmarks: error: {name}: {error}", file=sys.stderr)
            return 2
        for table in tables:
            sections.append(table.to_markdown())
            print(table.to_markdown(), flush=True)
        print(f"{name} took {time.perf_counter() - start:.0f} s", flush=True)

    from defusal.io import write_text

    write_text(Path(args.out), "\n".join(sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
