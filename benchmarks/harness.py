"""Timing, peak memory and the table format shared by the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_freed_memory() -> None:
    """Collect garbage and return freed heap pages to the system (glibc ``malloc_trim``).

    Without it, memory freed by an earlier measurement stays resident and the next one would
    reuse it without raising the resident set size, so its peak would read low.
    """
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def resident_bytes() -> int:
    """Return the resident set size of this process in bytes (Linux ``/proc``)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


class PeakMemory:
    """Context manager sampling the resident set size in a thread; ``peak`` is the rise in bytes.

    NOTE: sampling every millisecond can miss a peak shorter than that, so the value is a lower
    bound, accurate for the large, long-lived buffers these benchmarks care about.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        release_freed_memory()
        self._baseline = resident_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes() - self._baseline)
            time.sleep(self.interval)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes() - self._baseline)


@dataclass
class Timing:
    """Median and spread of repeated wall-clock timings, in seconds."""

    median: float
    minimum: float
    maximum: float
    repeats: int
    peak_bytes: int = 0


def measure(function: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``function`` ``repeats`` times after ``warmup`` calls and record its peak memory."""
    for _ in range(warmup):
        function()
    seconds = []
    peak = 0
    for _ in range(repeats):
        with PeakMemory() as memory:
            start = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - start)
        peak = max(peak, memory.peak)
    return Timing(statistics.median(seconds), min(seconds), max(seconds), repeats, peak)


@dataclass
class Table:
    """One benchmark's result table, rendered as markdown."""

    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        for row in self.rows:
            lines.append("| " + " | ".join(_format(value) for value in row) + " |")
        lines.extend([""] + [f"- {note}" for note in self.notes])
        return "\n".join(lines).rstrip() + "\n"


def _format(value: object) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def machine_description() -> list[str]:
    """Return lines naming the machine, software versions, threads and date of this run."""
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}",
    ]


def megabytes(count: int) -> float:
    """Convert bytes to MiB."""
    return count / 2**20


def verdict(met: bool) -> str:
    """Return ``"met"`` or ``"missed"`` for a target check."""
    return "met" if met else "missed"
