"""LRU recurrence: the parallel (associative) scan against the step-by-step loop.

Both sides compute ``x_t = lambda * x_{t-1} + (B u)_t`` for complex ``lambda`` of width ``H``
over ``T`` steps: :func:`defusal.nets.lru_parallel_scan` and a Python loop of one complex
multiply-add per step. A second comparison runs a whole residual LRU stack
(:class:`defusal.nets.LRUStack`) with its parallel path against its step-by-step path.
"""

from __future__ import annotations

import math

import torch

from benchmarks.harness import Table, measure, megabytes, release_freed_memory, verdict
from defusal.nets import build_network, lru_parallel_scan

SETTINGS = {
    "full": {"time_steps": 1000, "width": 256, "batches": (1, 16), "repeats": 5},
    "tiny": {"time_steps": 20, "width": 8, "batches": (1, 2), "repeats": 2},
}
TARGET_SPEEDUP = 5.0
TARGET_DIFFERENCE = 1e-5


def step_by_step(lam: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """Return every state of ``x_t = lam * x_{t-1} + bu_t`` from ``x_{-1} = 0``, one step at a time.

    Args:
        lam: ``(H,)`` complex.
        bu: ``(batch, time, H)`` complex.

    Returns:
        ``(batch, time, H)``.
    """
    state = torch.zeros_like(bu[:, 0])
    states = []
    for t in range(bu.shape[1]):
        state = lam * state + bu[:, t]
        states.append(state)
    return torch.stack(states, dim=1)


def ring_eigenvalues(width: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``lambda`` as the LRU does: ``|lambda|`` in [0.4, 0.99], phase in [0, pi/10]."""
    modulus = torch.sqrt(torch.rand(width, generator=generator) * (0.99**2 - 0.4**2) + 0.4**2)
    phase = torch.rand(width, generator=generator) * math.pi / 10
    return torch.polar(modulus, phase)


def run(size: str) -> list[Table]:
    """Return the recurrence table and the LRU stack table."""
    settings = SETTINGS[size]
    steps, width, repeats = settings["time_steps"], settings["width"], settings["repeats"]
    scan_table = Table(
        title=f"LRU recurrence, T = {steps}, width {width} (complex64): parallel scan vs loop",
        columns=[
            "batch",
            "loop s",
            "parallel scan s",
            "speed-up",
            "loop peak MiB",
            "scan peak MiB",
            "max |scan - loop|",
            "max |loop - float64|",
            "max |scan - float64|",
            "target",
        ],
    )
    generator = torch.Generator().manual_seed(0)
    lam = ring_eigenvalues(width, generator)
    for batch in settings["batches"]:
        real = torch.randn(batch, steps, width, generator=generator)
        imag = torch.randn(batch, steps, width, generator=generator)
        bu = torch.complex(real, imag)
        loop = measure(lambda bu=bu: step_by_step(lam, bu), repeats=repeats)
        scan = measure(lambda bu=bu: lru_parallel_scan(lam, bu), repeats=repeats)
        loop_states = step_by_step(lam, bu)
        scan_states = lru_parallel_scan(lam, bu)
        exact = step_by_step(lam.to(torch.complex128), bu.to(torch.complex128))
        difference = float((scan_states - loop_states).abs().max())
        speedup = loop.median / scan.median
        scan_table.rows.append(
            [
                batch,
                loop.median,
                scan.median,
                speedup,
                megabytes(loop.peak_bytes),
                megabytes(scan.peak_bytes),
                difference,
                float((loop_states - exact).abs().max()),
                float((scan_states - exact).abs().max()),
                verdict(speedup >= TARGET_SPEEDUP and difference < TARGET_DIFFERENCE),
            ]
        )
        release_freed_memory()
    scan_table.notes.extend(
        [
            f"Target: at least {TARGET_SPEEDUP:.0f}x faster with the same states within "
            f"{TARGET_DIFFERENCE:g} (largest absolute difference of a complex state).",
            "The float64 columns compare each float32 result with the loop run in float64, "
            "so they show which side the rounding difference comes from.",
            f"Inputs B u ~ N(0, 1) in real and imaginary parts. Median of {repeats} repeats "
            "after one warm-up.",
        ]
    )
    return [scan_table, stack_table(settings)]


def stack_table(settings: dict) -> Table:
    """Time a one-layer residual LRU stack, parallel path against step-by-step path."""
    steps, width, repeats = settings["time_steps"], settings["width"], settings["repeats"]
    table = Table(
        title=(
            f"Residual LRU layer (width {width}, {2 * width} complex states), T = {steps}, "
            "forward in eval mode: parallel vs step-by-step"
        ),
        columns=[
            "batch",
            "step-by-step s",
            "parallel s",
            "speed-up",
            "step-by-step peak MiB",
            "parallel peak MiB",
            "max |parallel - step-by-step|",
        ],
    )
    network = build_network("lru", width, width, 1, None, seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    for batch in settings["batches"]:
        x = torch.randn(batch, steps, width, generator=generator)

        def forward(parallel: bool, x=x) -> torch.Tensor:
            network.parallel = parallel
            with torch.no_grad():
                return network(x)[0]

        sequential = measure(lambda: forward(False), repeats=repeats)
        parallel = measure(lambda: forward(True), repeats=repeats)
        difference = float((forward(True) - forward(False)).abs().max())
        table.rows.append(
            [
                batch,
                sequential.median,
                parallel.median,
                sequential.median / parallel.median,
                megabytes(sequential.peak_bytes),
                megabytes(parallel.peak_bytes),
                difference,
            ]
        )
        release_freed_memory()
    table.notes.append(
        "LRUStack.forward with parallel=True (lru_parallel_scan per layer) against "
        f"parallel=False (cell.step over time). Median of {repeats} repeats after one warm-up."
    )
    return table
