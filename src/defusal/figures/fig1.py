"""Figure 1: gradient paths in the depth x time grid of a deep RNN, and how many there are.

Panels, each written as a PNG with the numbers behind it as a CSV:

- (a) the grid with a few random monotone paths of one long-range Jacobian, plus the single
  path of a feed-forward network (a column) and of a one-layer RNN (a row).
- (b) the path count C(T + dl, T) on a log axis as the grid grows in time, in depth, and in
  both at once (T = 100 * dl).
- (c) PascalRNN input gradients d(sum_t y_t) / dx_t' from torch autograd, with the closed
  forms overlaid, for gains rho = 0.5 (bounded) and rho = 1 (explodes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from defusal.errors import DefusalError
from defusal.growth import (
    log10_path_count,
    pascal_gradient_closed_form,
    pascal_input_gradients,
    path_count,
)
from defusal.io import atomic_path

logger = logging.getLogger(__name__)

# Panel (a): a grid of 6 time steps x 4 layers, and the Jacobian from node (2, 2) to (6, 4).
GRID_TIME_STEPS = 6
GRID_LAYERS = 4
GRID_START = (2, 2)
GRID_PATHS = 3

# Panel (b): the three ways of growing the grid.
FIXED_DEPTH = 5
MAX_TIME_STEPS = 10_000
FIXED_TIME_STEPS = 5
MAX_DEPTH = 100
TIME_STEPS_PER_LAYER = 100

# Panel (c): the PascalRNN set-up.
PASCAL_LAYERS = 10
PASCAL_TIME_STEPS = 100
PASCAL_RHOS = (0.5, 1.0)
PASCAL_BATCH = 6

SERIES_FIXED_DEPTH = f"depth_{FIXED_DEPTH}"
SERIES_FIXED_TIME = f"time_steps_{FIXED_TIME_STEPS}"
SERIES_BOTH = f"time_steps_{TIME_STEPS_PER_LAYER}x_depth"

PATH_COLORS = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def sample_monotone_paths(dt: int, dl: int, count: int, seed: int) -> list[np.ndarray]:
    """Draw random monotone lattice paths of dt time steps and dl depth steps.

    Each path is a uniformly random order of the dt + dl unit moves, so every one of the
    C(dt + dl, dt) paths is equally likely.

    Args:
        dt: number of time steps (moves right), an integer >= 0.
        dl: number of depth steps (moves up), an integer >= 0.
        count: number of paths, an integer >= 1.
        seed: seed of the numpy generator.

    Returns:
        ``count`` integer arrays of shape (dt + dl + 1, 2), each row a node given as
        (time offset, depth offset), from (0, 0) to (dt, dl).

    Raises:
        DefusalError: if an argument is out of range.
    """
    path_count(dt, dl)  # validates dt and dl
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DefusalError(f"count must be an integer >= 1, got {count!r}")

    rng = np.random.default_rng(seed)
    moves = np.array([(1, 0)] * dt + [(0, 1)] * dl, dtype=np.int64).reshape(-1, 2)
    paths = []
    for _ in range(count):
        steps = moves[rng.permutation(len(moves))]
        nodes = np.vstack([np.zeros((1, 2), dtype=np.int64), np.cumsum(steps, axis=0)])
        paths.append(nodes)
    return paths


def grid_path_table(seed: int = 17) -> pd.DataFrame:
    """Tabulate the random paths drawn in panel (a), node by node.

    Args:
        seed: seed of the path sampler.

    Returns:
        Columns path, step, time_step, layer: the grid node (time_step, layer) visited at
        each step of each path, from GRID_START to (GRID_TIME_STEPS, GRID_LAYERS).
    """
    start_time, start_layer = GRID_START
    dt = GRID_TIME_STEPS - start_time
    dl = GRID_LAYERS - start_layer
    rows = []
    for index, nodes in enumerate(sample_monotone_paths(dt, dl, GRID_PATHS, seed)):
        for step, (time_offset, layer_offset) in enumerate(nodes):
            rows.append((index, step, start_time + time_offset, start_layer + layer_offset))
    return pd.DataFrame(rows, columns=["path", "step", "time_step", "layer"])


def path_count_table() -> pd.DataFrame:
    """Tabulate log10 C(T + dl, T) for the three curves of panel (b).

    Returns:
        Columns series, time_steps, depth, log10_path_count. Series ``depth_5`` has dl = 5
        and T = 1..10000, ``time_steps_5`` has T = 5 and dl = 1..100, and
        ``time_steps_100x_depth`` has dl = 1..100 with T = 100 * dl.
    """
    time_steps = np.arange(1, MAX_TIME_STEPS + 1)
    depths = np.arange(1, MAX_DEPTH + 1)
    series = [
        (SERIES_FIXED_DEPTH, time_steps, np.full_like(time_steps, FIXED_DEPTH)),
        (SERIES_FIXED_TIME, np.full_like(depths, FIXED_TIME_STEPS), depths),
        (SERIES_BOTH, TIME_STEPS_PER_LAYER * depths, depths),
    ]
    frames = []
    for name, times, layers in series:
        frame = pd.DataFrame({"series": name, "time_steps": times, "depth": layers})
        frame["log10_path_count"] = log10_path_count(times, layers)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def pascal_gradient_table(seed: int = 0) -> pd.DataFrame:
    """Measure the PascalRNN input gradients of panel (c) and set them beside the closed form.

    Args:
        seed: seed of the torch generator that draws the 2 * N(0, 1) inputs.

    Returns:
        Columns rho, t_prime, dt, autograd_gradient, closed_form_gradient, relative_error
        for L = 10 layers, T = 100 steps and rho in (0.5, 1.0). t_prime is the 0-based input
        position and dt = T - t_prime the number of outputs at or after it.
    """
    frames = []
    for rho in PASCAL_RHOS:
        autograd = pascal_input_gradients(
            PASCAL_LAYERS, PASCAL_TIME_STEPS, rho, batch=PASCAL_BATCH, seed=seed
        )
        closed_form = pascal_gradient_closed_form(PASCAL_LAYERS, PASCAL_TIME_STEPS, rho)
        t_prime = np.arange(PASCAL_TIME_STEPS)
        frames.append(
            pd.DataFrame(
                {
                    "rho": rho,
                    "t_prime": t_prime,
                    "dt": PASCAL_TIME_STEPS - t_prime,
                    "autograd_gradient": autograd,
                    "closed_form_gradient": closed_form,
                    "relative_error": np.abs(autograd - closed_form) / np.abs(closed_form),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _draw_lattice(axes, times: np.ndarray, layers: np.ndarray) -> None:
    """Draw the grid nodes, the input row and the edges between them in grey."""
    # Time edges run right within a layer and depth edges run upwards.
    for layer in layers[1:]:
        axes.plot(times, np.full_like(times, layer), color="0.85", lw=1, zorder=1)
    for time in times:
        axes.plot([time, time], [0, GRID_LAYERS], color="0.85", lw=1, zorder=1)
    grid_t, grid_l = np.meshgrid(times, layers[1:])
    axes.scatter(grid_t, grid_l, s=60, color="0.55", zorder=3)
    axes.scatter(times, np.zeros_like(times), s=60, marker="s", color="0.35", zorder=3)


def _draw_distance_brackets(axes, start_time: int, start_layer: int) -> None:
    """Draw the brackets for the time and depth distances of the highlighted Jacobian."""
    dt = GRID_TIME_STEPS - start_time
    dl = GRID_LAYERS - start_layer
    top = GRID_LAYERS + 0.45
    axes.annotate(
        "",
        (start_time, top),
        (GRID_TIME_STEPS, top),
        arrowprops={"arrowstyle": "<->", "color": "black"},
    )
    axes.text(
        (start_time + GRID_TIME_STEPS) / 2,
        top + 0.1,
        f"Δt = T − t = {dt}",
        ha="center",
        va="bottom",
    )
    right = GRID_TIME_STEPS + 0.45
    axes.annotate(
        "",
        (right, start_layer),
        (right, GRID_LAYERS),
        arrowprops={"arrowstyle": "<->", "color": "black"},
    )
    axes.text(
        right + 0.1,
        (start_layer + GRID_LAYERS) / 2,
        f"Δl = L − l = {dl}",
        ha="left",
        va="center",
        rotation=90,
    )


def plot_grid(paths: pd.DataFrame) -> Figure:
    """Draw panel (a): the depth x time grid, the sampled paths and the single-path cases.

    Args:
        paths: the table of :func:`grid_path_table`.

    Returns:
        The matplotlib figure, rendered with the Agg canvas.
    """
    figure = _new_figure(9.0, 5.0)
    axes = figure.add_subplot()
    times = np.arange(1, GRID_TIME_STEPS + 1)
    layers = np.arange(0, GRID_LAYERS + 1)

    _draw_lattice(axes, times, layers)

    # The single path of a feed-forward network (dt = 0) and of a one-layer RNN (dl = 0).
    axes.plot(
        [1, 1],
        [0, GRID_LAYERS],
        color="tab:blue",
        lw=3,
        ls="--",
        zorder=2,
        label="FFN, Δt = 0: 1 path",
    )
    axes.plot(
        [GRID_START[0], GRID_TIME_STEPS],
        [1, 1],
        color="tab:red",
        lw=3,
        zorder=2,
        label="1-layer RNN, Δl = 0: 1 path",
    )

    # The sampled paths, shifted apart slightly so that shared edges stay visible.
    for index, nodes in paths.groupby("path"):
        shift = 0.06 * (index - (GRID_PATHS - 1) / 2)
        axes.plot(
            nodes["time_step"] + shift,
            nodes["layer"] + shift,
            lw=2.5,
            zorder=4,
            color=PATH_COLORS[index % len(PATH_COLORS)],
            label=f"path j{index}",
        )

    start_time, start_layer = GRID_START
    dt = GRID_TIME_STEPS - start_time
    dl = GRID_LAYERS - start_layer
    axes.scatter(
        [start_time, GRID_TIME_STEPS],
        [start_layer, GRID_LAYERS],
        s=160,
        facecolor="white",
        edgecolor="black",
        lw=2,
        zorder=5,
    )
    axes.annotate(
        "h[t, l]",
        (start_time, start_layer),
        xytext=(-14, -20),
        textcoords="offset points",
        ha="right",
        fontsize=11,
    )
    axes.annotate(
        "h[T, L]",
        (GRID_TIME_STEPS, GRID_LAYERS),
        xytext=(10, 10),
        textcoords="offset points",
        fontsize=11,
    )

    _draw_distance_brackets(axes, start_time, start_layer)

    axes.set_xlim(0.4, GRID_TIME_STEPS + 1.0)
    axes.set_ylim(-0.5, GRID_LAYERS + 1.0)
    axes.set_xticks(times)
    axes.set_yticks(layers, ["0 (input)"] + [str(layer) for layer in layers[1:]])
    axes.set_xlabel("time step t")
    axes.set_ylabel("layer l")
    axes.set_title(
        f"(a) Paths of the Jacobian ∂h[T, L]/∂h[t, l]: C(Δt + Δl, Δt) = {path_count(dt, dl)}"
    )
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    for spine in axes.spines.values():
        spine.set_visible(False)
    return figure


def plot_path_counts(counts: pd.DataFrame) -> Figure:
    """Draw panel (b): the path count C(T + dl, T) on a log axis, three ways.

    Args:
        counts: the table of :func:`path_count_table`.

    Returns:
        The matplotlib figure with three sub-plots, rendered with the Agg canvas.
    """
    figure = _new_figure(13.0, 4.2)
    panels = figure.subplots(1, 3)
    # Per panel: series, x column, x label, title, x values marked with their count.
    layout = [
        (
            SERIES_FIXED_DEPTH,
            "time_steps",
            "time steps T",
            f"Δl = {FIXED_DEPTH}, T grows: polynomial",
            (5000, 10000),
        ),
        (
            SERIES_FIXED_TIME,
            "depth",
            "depth Δl",
            f"T = {FIXED_TIME_STEPS}, Δl grows: polynomial",
            (MAX_DEPTH,),
        ),
        (
            SERIES_BOTH,
            "time_steps",
            f"time steps T (Δl = T / {TIME_STEPS_PER_LAYER})",
            f"T = {TIME_STEPS_PER_LAYER} Δl, both grow: exponential",
            (5000, 10000),
        ),
    ]
    for axes, (series, x_column, x_label, title, marked) in zip(panels, layout, strict=True):
        rows = counts[counts["series"] == series]
        axes.semilogy(rows[x_column], 10.0 ** rows["log10_path_count"], color="tab:blue", lw=2)
        for _, row in rows[rows[x_column].isin(marked)].iterrows():
            point = (row[x_column], 10.0 ** row["log10_path_count"])
            axes.plot(*point, marker="o", color="tab:red", zorder=3)
            axes.annotate(
                f"$10^{{{row['log10_path_count']:.1f}}}$",
                point,
                xytext=(-8, 6),
                textcoords="offset points",
                ha="right",
                va="bottom",
            )
        axes.margins(y=0.12)  # headroom in log space for the labels of the top points
        axes.set_xlabel(x_label)
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
    top = counts.loc[counts["series"] == SERIES_BOTH, "log10_path_count"].max()
    panels[2].set_yticks([10.0**power for power in range(0, int(top) + 1, 50)])
    panels[0].set_ylabel("number of paths C(T + Δl, T)")
    figure.suptitle(
        "(b) Number of gradient paths in the depth × time grid, the Jacobian bound at ρ = 1"
    )
    return figure


def _closed_form_label(rho: float) -> str:
    if rho == 1.0:
        return r"closed form $\binom{L + \Delta t - 1}{L}$"
    return r"closed form $\sum_{k < \Delta t} \binom{L - 1 + k}{k} \rho^{L + k}$"


def plot_pascal_gradients(gradients: pd.DataFrame) -> Figure:
    """Draw panel (c): PascalRNN input gradients, autograd points over the closed forms.

    Args:
        gradients: the table of :func:`pascal_gradient_table`.

    Returns:
        The matplotlib figure with one sub-plot per rho, rendered with the Agg canvas.
    """
    rhos = sorted(gradients["rho"].unique())
    figure = _new_figure(5.5 * len(rhos), 4.4)
    panels = np.atleast_1d(figure.subplots(1, len(rhos)))
    for axes, rho in zip(panels, rhos, strict=True):
        rows = gradients[gradients["rho"] == rho]
        axes.semilogy(
            rows["t_prime"],
            rows["closed_form_gradient"],
            color="black",
            lw=1.5,
            label=_closed_form_label(rho),
        )
        axes.semilogy(
            rows["t_prime"],
            rows["autograd_gradient"],
            ls="none",
            marker="o",
            ms=4,
            mfc="none",
            color="tab:red",
            label="torch autograd",
        )
        axes.axhline(1.0, color="0.6", ls=":", lw=1)
        axes.set_xlabel(r"input position $t'$  ($\Delta t = T - t'$)")
        axes.set_title(f"ρ = {rho:g}")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(loc="best", fontsize=9)
    panels[0].set_ylabel(r"$\partial (\Sigma_t\, y_t) \,/\, \partial x_{t'}$")
    figure.suptitle(
        f"(c) PascalRNN input gradients, L = {PASCAL_LAYERS} layers, T = {PASCAL_TIME_STEPS} steps"
    )
    return figure


def _prepare_out_dir(out_dir) -> Path:
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise DefusalError(
            f"output folder {folder} is an existing file. Choose a folder path instead."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DefusalError(
            f"cannot create output folder {folder} ({error.strerror}). Choose another folder."
        ) from error
    return folder


def _write_png(figure: Figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=150)
    logger.info("wrote %s", path)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=False)
    logger.info("wrote %s", path)


def make_figure1(out_dir, *, seed: int = 17, progress: bool = False) -> dict[str, Path]:
    """Compute and write every panel of Figure 1 into ``out_dir``.

    Files: ``fig1a_grid.png`` with ``fig1a_paths.csv``, ``fig1b_path_counts.png`` with
    ``fig1b_path_counts.csv``, and ``fig1c_pascal_rnn.png`` with ``fig1c_pascal_rnn.csv``.
    Each is written atomically, so an interrupted run leaves no half-written file.

    Args:
        out_dir: output folder, created if missing.
        seed: seed of the random paths of panel (a) and of the PascalRNN inputs.
        progress: show a tqdm progress bar over the three panels.

    Returns:
        The written paths, keyed ``grid_png``, ``grid_csv``, ``path_counts_png``,
        ``path_counts_csv``, ``pascal_png`` and ``pascal_csv``.

    Raises:
        DefusalError: if ``out_dir`` is an existing file or cannot be created.
    """
    folder = _prepare_out_dir(out_dir)
    paths = {
        "grid_png": folder / "fig1a_grid.png",
        "grid_csv": folder / "fig1a_paths.csv",
        "path_counts_png": folder / "fig1b_path_counts.png",
        "path_counts_csv": folder / "fig1b_path_counts.csv",
        "pascal_png": folder / "fig1c_pascal_rnn.png",
        "pascal_csv": folder / "fig1c_pascal_rnn.csv",
    }

    panels = [
        ("grid", lambda: grid_path_table(seed), plot_grid),
        ("path_counts", path_count_table, plot_path_counts),
        ("pascal", lambda: pascal_gradient_table(seed), plot_pascal_gradients),
    ]
    for name, compute_table, plot in tqdm(panels, desc="Figure 1 panels", disable=not progress):
        table = compute_table()
        _write_csv(table, paths[f"{name}_csv"])
        _write_png(plot(table), paths[f"{name}_png"])
    return paths


def summarize_figure1(paths: dict[str, Path]) -> dict[str, float]:
    """Read the headline numbers back from the CSV files that :func:`make_figure1` wrote.

    Args:
        paths: the dictionary returned by :func:`make_figure1`.

    Returns:
        log10 path counts at T = 5000 and T = 10000 for dl = 5 and for T = 100 * dl, the
        autograd gradient at t' = 0 for rho = 1 and rho = 0.5, and the maximum relative
        error of autograd against the closed form.

    Raises:
        DefusalError: if a CSV file is missing.
    """
    for key in ("path_counts_csv", "pascal_csv"):
        if not Path(paths[key]).is_file():
            raise DefusalError(f"figure table {paths[key]} not found. Run make_figure1 first.")
    counts = pd.read_csv(paths["path_counts_csv"])
    gradients = pd.read_csv(paths["pascal_csv"])

    def count_at(series: str, time_steps: int) -> float:
        row = counts[(counts["series"] == series) & (counts["time_steps"] == time_steps)]
        return float(row["log10_path_count"].iloc[0])

    def gradient_at_start(rho: float) -> float:
        row = gradients[(gradients["rho"] == rho) & (gradients["t_prime"] == 0)]
        return float(row["autograd_gradient"].iloc[0])

    return {
        "log10_paths_depth5_T5000": count_at(SERIES_FIXED_DEPTH, 5000),
        "log10_paths_depth5_T10000": count_at(SERIES_FIXED_DEPTH, 10000),
        "log10_paths_T100x_T5000": count_at(SERIES_BOTH, 5000),
        "log10_paths_T100x_T10000": count_at(SERIES_BOTH, 10000),
        "pascal_gradient_t0_rho1": gradient_at_start(1.0),
        "pascal_gradient_t0_rho0.5": gradient_at_start(0.5),
        "pascal_max_relative_error": float(gradients["relative_error"].max()),
    }
