"""Spectral radius of an LSTM time Jacobian: exact eigenvalues against matrix-free power iteration.

The exact path forms every sample's time Jacobian ``d[h'; c'] / d[h; c]`` (``2w x 2w``) with
batched vector-Jacobian products (:func:`defusal.jacobian.jacobian`) and takes
``max |eigvals|`` (:func:`defusal.radius.spectral_radius`). The matrix-free path runs
:func:`defusal.radius.power_radius` (block power iteration on Jacobian-vector products) on the
same linearization, so it never forms the matrix. It runs with its defaults: a block of 4
vectors, at most 100 iterations, and a stop at a relative change of 1e-3. Points of 8192 entries
or more are linearized once by ``torch.func.linearize``.
"""

from __future__ import annotations

import time

import torch

from benchmarks.harness import Table, measure, megabytes, release_freed_memory, verdict
from defusal.jacobian import jacobian, step_maps
from defusal.nets import build_network
from defusal.radius import power_radius, spectral_radius

SETTINGS = {
    "full": {"widths": (128, 512, 2048), "batch": 16, "input": 64, "repeats": 3},
    "tiny": {"widths": (8, 16), "batch": 4, "input": 4, "repeats": 2},
}
# The exact path is skipped, and extrapolated, when its predicted run would exceed these.
EXACT_MAX_SECONDS = 180.0
EXACT_MAX_BYTES = 8 * 2**30
TARGET_WIDTH = 512
TARGET_SPEEDUP = 10.0
TARGET_ERROR = 0.02
TARGET_MATRIX_FREE_BYTES = 4 * 10**9
WARMUP_STEPS = 10


def time_map(width: int, batch: int, input_size: int):
    """Return the time-Jacobian local map of a one-layer LSTM after a few Gaussian input steps."""
    network = build_network("lstm", input_size, width, 1, None, seed=0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, WARMUP_STEPS + 1, input_size, generator=generator)
    states = network.initial_states(batch, x)
    with torch.no_grad():
        for t in range(WARMUP_STEPS):
            _, states = network.step(x[:, t], states)
    maps, _ = step_maps(network, x[:, WARMUP_STEPS], states, edges=("time",))
    return network, maps[0]


def exact_radius(local_map) -> torch.Tensor:
    """Form the per-sample Jacobians and return their spectral radii, ``(batch,)``."""
    return spectral_radius(jacobian(local_map))


def matrix_free_radius(local_map):
    """Return the power-iteration result with a fixed start, so every repeat does the same work."""
    generator = torch.Generator().manual_seed(1)
    return power_radius(local_map.operator(), generator=generator)


def _timed_once(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run(size: str) -> list[Table]:
    """Measure both paths at every width of ``size`` and return one table."""
    settings = SETTINGS[size]
    batch, repeats = settings["batch"], settings["repeats"]
    table = Table(
        title=f"Spectral radius of an LSTM time Jacobian, batch {batch}: exact vs matrix-free",
        columns=[
            "width",
            "matrix",
            "exact s",
            "matrix-free s",
            "speed-up",
            "exact peak MiB",
            "matrix-free peak MiB",
            "mean rel. error",
            "max rel. error",
            "power iterations",
            "target",
        ],
    )
    previous: tuple[int, float, int] | None = None  # width, exact seconds, exact peak bytes
    for width in settings["widths"]:
        _, local_map = time_map(width, batch, settings["input"])
        side = 2 * width
        jacobian_bytes = batch * side * side * 4

        estimate = matrix_free_radius(local_map)
        free = measure(lambda local_map=local_map: matrix_free_radius(local_map), repeats=repeats)

        predicted_seconds = predicted_bytes = None
        if previous is not None:
            scale = width / previous[0]
            predicted_seconds = previous[1] * scale**3
            predicted_bytes = max(previous[2] * scale**2, 2 * jacobian_bytes)
        # The target width is always measured: its verdict needs the exact radii.
        if (
            predicted_seconds is None
            or (size == "full" and width == TARGET_WIDTH)
            or (predicted_seconds <= EXACT_MAX_SECONDS and predicted_bytes <= EXACT_MAX_BYTES)
        ):
            exact_values = exact_radius(local_map)
            # The warm-up above ran once; an expensive width gets fewer repeats.
            warm_seconds = _timed_once(lambda local_map=local_map: exact_radius(local_map))
            exact_repeats = repeats if warm_seconds < 20 else 2
            exact = measure(
                lambda local_map=local_map: exact_radius(local_map),
                repeats=exact_repeats,
                warmup=0,
            )
            errors = (estimate.value - exact_values).abs() / exact_values
            row_exact_seconds, row_exact_peak = exact.median, megabytes(exact.peak_bytes)
            mean_error, max_error = float(errors.mean()), float(errors.max())
            previous = (width, exact.median, exact.peak_bytes)
            measured = True
        else:
            row_exact_seconds = f"~{predicted_seconds:.0f} (est.)"
            row_exact_peak = f"~{megabytes(predicted_bytes):.0f} (est.)"
            mean_error = max_error = "n/a"
            measured = False
            table.notes.append(
                f"width {width}: the exact path was not run. Its time is extrapolated as "
                f"{previous[1]:.2f} s x ({width}/{previous[0]})^3 (the eigenvalue solver is "
                f"O(n^3) per matrix) and its memory as the larger of twice the Jacobian "
                f"(batch x (2w)^2 x 4 bytes = {megabytes(jacobian_bytes):.0f} MiB, once for the "
                f"matrix and once for the solver's copy) and the measured peak at width "
                f"{previous[0]} x ({width}/{previous[0]})^2."
            )

        if measured:
            speedup = row_exact_seconds / free.median
        else:
            speedup = f"~{predicted_seconds / free.median:.0f} (est.)"
        status = "-"
        if size == "full" and width == TARGET_WIDTH and measured:
            status = verdict(speedup >= TARGET_SPEEDUP and max_error <= TARGET_ERROR)
        elif size == "full" and width == max(settings["widths"]):
            status = verdict(free.peak_bytes < TARGET_MATRIX_FREE_BYTES)
        table.rows.append(
            [
                width,
                f"{side} x {side}",
                row_exact_seconds,
                free.median,
                speedup,
                row_exact_peak,
                megabytes(free.peak_bytes),
                mean_error,
                max_error,
                estimate.iterations,
                status,
            ]
        )
        del local_map, estimate
        release_freed_memory()

    table.notes.extend(
        [
            f"Targets: at width {TARGET_WIDTH} the matrix-free path is at least "
            f"{TARGET_SPEEDUP:.0f}x faster with at most {TARGET_ERROR:.0%} relative error; at "
            f"width {max(SETTINGS['full']['widths'])} it runs in under 4 GB.",
            "Relative error: |matrix-free - exact| / exact per sample. Power iteration (block of "
            "4) stops at 100 iterations or when the estimate changes by less than 1e-3 between "
            "iterations; each iteration applies the Jacobian to the whole block with one "
            "vmapped Jacobian-vector product of the map linearized once.",
            f"Median of {repeats} repeats after one warm-up (2 repeats for an exact run over "
            "20 s). Peak memory is the rise of the resident set size during one call.",
        ]
    )
    return [table]
