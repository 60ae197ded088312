"""Summaries, tables and PNG plots of finished runs, and the Markdown report around them.

A group of runs is the seeds of one configuration. Its summary gives the mean and the sample
standard deviation (``ddof=1``) of the test metric at the best-validation epoch. It also gives
the radii reached after pre-training per edge type (mean over layers, then over seeds), and
whether each radius is within :data:`TARGET_TOLERANCE` of its target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defusal import io
from defusal.experiments.configs import NotApplicable
from defusal.experiments.runner import RunRecord

TARGET_TOLERANCE = 0.05
EDGE_ORDER = ("time", "depth", "encoder", "decoder", "layer")


@dataclass
class SummaryRow:
    """One table row: the seeds of one configuration.

    Attributes:
        key: ``(task, network, activation, depth, width, label, lr)``.
        values: test metric of every finished seed.
        mean: mean of ``values``.
        std: sample standard deviation of ``values``, NaN for a single seed.
        radii_before: edge type to mean radius before pre-training.
        radii_after: edge type to mean radius after pre-training.
        targets: edge type to target radius (empty without LSC).
        target_met: edge type to whether the radius after is within the tolerance of its target.
        pretrain_seconds: mean pre-training time per seed.
        diverged: number of seeds whose training diverged.
    """

    key: tuple
    values: list[float]
    mean: float
    std: float
    radii_before: dict[str, float] = field(default_factory=dict)
    radii_after: dict[str, float] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    target_met: dict[str, bool] = field(default_factory=dict)
    pretrain_seconds: float = 0.0
    diverged: int = 0

    @property
    def task(self) -> str:
        return self.key[0]

    @property
    def label(self) -> str:
        return self.key[5]

    @property
    def lr(self) -> float:
        return self.key[6]


def final_test_metric(record: RunRecord) -> float:
    """Return the test metric of a run at its best-validation epoch, NaN if none is finite."""
    best = record.result.get("best") or {}
    value = best.get("test_metric")
    if value is None and record.history:
        value = record.history[-1].get("test_metric")
    return float("nan") if value is None else float(value)


def best_valid_metric(record: RunRecord) -> float:
    """Return the best validation metric of a run, NaN if none is finite."""
    value = (record.result.get("best") or {}).get("valid_metric")
    return float("nan") if value is None else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (NaN for fewer than two values)."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if array.size == 0:
        return float("nan"), float("nan")
    spread = float(np.std(array, ddof=1)) if array.size > 1 else float("nan")
    return float(np.mean(array)), spread


def edge_means(radii: dict[str, list[float]]) -> dict[str, float]:
    """Return the mean over layers of every edge type."""
    return {edge: float(np.mean(values)) for edge, values in radii.items() if values}


def summarize(records: Sequence[RunRecord]) -> list[SummaryRow]:
    """Group finished runs by configuration and summarize each group over its seeds."""
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        if record.status == "done":
            groups.setdefault(record.spec.group, []).append(record)
    rows = []
    for key, members in groups.items():
        values = [final_test_metric(record) for record in members]
        mean, std = mean_std(values)
        row = SummaryRow(key=key, values=values, mean=mean, std=std)
        row.radii_before = _mean_over_seeds([r.condition.get("radii_before", {}) for r in members])
        row.radii_after = _mean_over_seeds([r.condition.get("radii_after", {}) for r in members])
        row.targets = dict(members[0].condition.get("targets") or {})
        row.target_met = {
            edge: abs(row.radii_after[edge] - target) <= TARGET_TOLERANCE
            for edge, target in row.targets.items()
            if edge in row.radii_after
        }
        row.pretrain_seconds = float(
            np.mean([r.condition.get("pretrain_seconds", 0.0) for r in members])
        )
        row.diverged = sum(bool(r.result.get("diverged")) for r in members)
        rows.append(row)
    return rows


def best_lr_rows(rows: Sequence[SummaryRow], records: Sequence[RunRecord]) -> list[SummaryRow]:
    """Keep, per configuration without the learning rate, the row with the best validation mean.

    Accuracy is maximised and perplexity minimised, as ``result.json`` names the metric.
    """
    validation: dict[tuple, list[float]] = {}
    metric_of: dict[tuple, str] = {}
    for record in records:
        if record.status == "done":
            validation.setdefault(record.spec.group, []).append(best_valid_metric(record))
            metric_of[record.spec.group] = record.result.get("metric", "accuracy")
    best: dict[tuple, tuple[float, SummaryRow]] = {}
    for row in rows:
        score, _ = mean_std(validation.get(row.key, []))
        if metric_of.get(row.key) == "perplexity":
            score = -score
        score = score if math.isfinite(score) else -math.inf
        short = row.key[:6]
        if short not in best or score > best[short][0]:
            best[short] = (score, row)
    return [row for _, row in best.values()]


def summary_table(rows: Sequence[SummaryRow], metric: str) -> str:
    """Return the Markdown summary table of ``rows``."""
    lines = [
        f"| task | network | depth | width | condition | lr | seeds | test {metric} "
        "(mean ± std) | radii after pre-training | pre-training s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=_sort_key):
        task, network, activation, depth, width, label, lr = row.key
        name = f"{network} ({activation})" if activation else network
        lines.append(
            f"| {task} | {name} | {depth} | {width} | {label} | {lr:g} | {len(row.values)} | "
            f"{format_mean_std(row.mean, row.std)}{_diverged_note(row)} | {format_radii(row)} | "
            f"{row.pretrain_seconds:.1f} |"
        )
    return "\n".join(lines)


def not_applicable_table(cells: Sequence[NotApplicable]) -> str:
    """Return a Markdown table of the grid cells that were not run, with the reasons."""
    lines = ["| task | network | depth | condition | reason |", "|---|---|---|---|---|"]
    for cell in cells:
        lines.append(
            f"| {cell.task} | {cell.network} | {cell.depth} | {cell.condition} | n/a: "
            f"{cell.reason} |"
        )
    return "\n".join(lines)


def format_mean_std(mean: float, std: float) -> str:
    """Format ``mean ± std`` with four significant digits; a single seed shows ``(n=1)``."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(std):
        return f"{mean:.4g} (n=1)"
    return f"{mean:.4g} ± {std:.2g}"


def format_radii(row: SummaryRow) -> str:
    """Format the radii after pre-training per edge type, ``✓``/``✗`` against the target."""
    parts = []
    for edge in _edges(row.radii_after):
        text = f"{edge} {row.radii_after[edge]:.2f}"
        if edge in row.target_met:
            mark = "✓" if row.target_met[edge] else "✗"
            text += f" {mark} (target {row.targets[edge]:.3g})"
        parts.append(text)
    return ", ".join(parts) if parts else "not measured"


def write_experiment_plots(
    name: str, records: Sequence[RunRecord], rows: Sequence[SummaryRow], out_dir: Path
) -> dict[str, list[Path]]:
    """Write the PNG plots of one experiment into ``out_dir/plots``.

    One set of three plots per configuration without the condition (task, network,
    activation, depth, width), at the learning rate with the best validation mean:

    - the test metric against the epoch, one line per condition (mean over seeds, band of
      ± one standard deviation);
    - the gradient norm per layer against the optimizer step, one panel per condition (first
      seed);
    - the radii before and after pre-training per condition and edge type.

    Returns:
        ``{"metric": [...], "grad_norms": [...], "radii": [...]}`` paths of the written files.
    """
    import matplotlib

    matplotlib.use("Agg")
    chosen = {row.key for row in best_lr_rows(rows, records)}
    by_plot: dict[tuple, list[RunRecord]] = {}
    for record in records:
        if record.status == "done" and record.spec.group in chosen:
            by_plot.setdefault(record.spec.group[:5], []).append(record)
    folder = out_dir / "plots"
    written: dict[str, list[Path]] = {"metric": [], "grad_norms": [], "radii": []}
    for plot_key, members in sorted(by_plot.items(), key=lambda item: str(item[0])):
        stem = f"{name}_" + "_".join(str(part) for part in plot_key if part != "")
        title = " ".join(str(part) for part in plot_key if part != "")
        conditions = _by_label(members)
        written["metric"].append(_plot_metric(conditions, title, folder / f"{stem}_metric.png"))
        written["grad_norms"].append(
            _plot_grad_norms(conditions, title, folder / f"{stem}_grad_norms.png")
        )
        plot_rows = [row for row in rows if row.key in chosen and row.key[:5] == plot_key]
        written["radii"].append(_plot_radii(plot_rows, title, folder / f"{stem}_radii.png"))
    return written


def experiment_section(
    name: str,
    description: str,
    records: Sequence[RunRecord],
    skipped: Sequence[NotApplicable],
    report_dir: Path,
) -> tuple[str, str]:
    """Return the Markdown section of one experiment and its summary table alone.

    Writes the plots under ``report_dir/plots`` and links them relative to ``report_dir``.
    """
    rows = summarize(records)
    metric = next((r.result.get("metric") for r in records if r.status == "done"), "metric")
    table = summary_table(rows, metric)
    runtime_na = [record for record in records if record.status == "n/a"]
    lines = [f"## {name}", "", description, "", table, ""]
    lines.append(
        f"Test {metric} at the best-validation epoch. Radii: mean local spectral radius per "
        f"edge type after pre-training (mean over layers and seeds); ✓ means within "
        f"{TARGET_TOLERANCE} of the target."
    )
    if len({row.lr for row in rows}) > 1:
        lines += ["", "### Best learning rate per condition", ""]
        lines.append(summary_table(best_lr_rows(rows, records), metric))
    if skipped or runtime_na:
        cells = list(skipped) + [
            NotApplicable(
                r.spec.experiment,
                r.spec.task,
                r.spec.network,
                r.spec.depth,
                r.spec.condition.name,
                r.reason or "",
            )
            for r in runtime_na
        ]
        lines += ["", "### Not applicable", "", not_applicable_table(cells)]
    if rows:
        plots = write_experiment_plots(name, records, rows, report_dir)
        lines += ["", "### Plots", ""]
        for kind, title in (
            ("metric", f"test {metric} per epoch"),
            ("grad_norms", "gradient norm per layer"),
            ("radii", "radii before and after pre-training"),
        ):
            for path in plots[kind]:
                relative = path.relative_to(report_dir)
                lines.append(f"![{name}: {title}]({relative.as_posix()})")
        lines.append("")
    return "\n".join(lines), f"### {name}\n\n{table}"


def write_report(path: Path, title: str, sections: Sequence[str]) -> Path:
    """Write the Markdown report ``path`` from its sections, atomically."""
    text = f"# {title}\n\n" + "\n\n".join(section.rstrip() for section in sections) + "\n"
    io.write_text(path, text)
    return path


def _plot_metric(conditions: dict[str, list[RunRecord]], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    metric = "metric"
    for label, members in conditions.items():
        metric = members[0].result.get("metric", metric)
        curves = [
            [row.get("test_metric", float("nan")) for row in record.history] for record in members
        ]
        length = min(len(curve) for curve in curves)
        if length == 0:
            continue
        values = np.asarray([curve[:length] for curve in curves], dtype=float)
        epochs = np.arange(1, length + 1)
        mean = np.nanmean(values, axis=0)
        axes.plot(epochs, mean, marker="o", label=label)
        if len(members) > 1:
            spread = np.nanstd(values, axis=0, ddof=1)
            axes.fill_between(epochs, mean - spread, mean + spread, alpha=0.2)
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"test {metric}")
    if metric == "perplexity":
        axes.set_yscale("log")
    axes.set_title(title)
    axes.legend(fontsize="small")
    return _save(figure, path)


def _plot_grad_norms(conditions: dict[str, list[RunRecord]], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    count = max(len(conditions), 1)
    figure = Figure(figsize=(4 * count, 3.4))
    axes_list = figure.subplots(1, count, sharey=True, squeeze=False)[0]
    for axes, (label, members) in zip(axes_list, conditions.items(), strict=False):
        rows = members[0].grad_norms
        columns = [
            c
            for c in (rows[0] if rows else {})
            if c.startswith("grad_norm_") and c not in ("grad_norm_total", "grad_norm_clipped")
        ]
        steps = np.arange(1, len(rows) + 1)
        for column in columns:
            values = np.asarray([row.get(column, np.nan) for row in rows], dtype=float)
            values[values <= 0] = np.nan
            axes.plot(steps, values, linewidth=1, label=column.removeprefix("grad_norm_"))
        axes.set_yscale("log")
        axes.set_xlabel("optimizer step")
        axes.set_title(label, fontsize="medium")
        if columns:
            axes.legend(fontsize="x-small", ncol=2)
    axes_list[0].set_ylabel("gradient norm")
    figure.suptitle(f"{title}: gradient norm per layer")
    return _save(figure, path)


def _plot_radii(rows: Sequence[SummaryRow], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5, 1.6 * len(rows) + 2), 4))
    axes = figure.add_subplot()
    edges = _edges({edge: 0 for row in rows for edge in (*row.radii_before, *row.radii_after)})
    width = 0.8 / max(2 * len(edges), 1)
    positions = np.arange(len(rows))
    for index, edge in enumerate(edges):
        before = [row.radii_before.get(edge, np.nan) for row in rows]
        after = [row.radii_after.get(edge, np.nan) for row in rows]
        offset = (2 * index - len(edges)) * width
        bars = axes.bar(positions + offset, before, width, alpha=0.45, label=f"{edge} before")
        axes.bar(
            positions + offset + width,
            after,
            width,
            color=bars.patches[0].get_facecolor()[:3] if bars.patches else None,
            label=f"{edge} after",
        )
    for level in (1.0, 0.5):
        axes.axhline(level, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xticks(positions, [row.label for row in rows], rotation=20, fontsize="small")
    axes.set_ylabel("mean local spectral radius")
    axes.set_title(f"{title}: radii before (light) and after pre-training")
    axes.legend(fontsize="x-small", ncol=2)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    with io.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return path


def _by_label(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = {}
    for record in sorted(records, key=lambda r: (r.spec.label, r.spec.seed)):
        grouped.setdefault(record.spec.label, []).append(record)
    return grouped


def _mean_over_seeds(tables: Sequence[dict[str, list[float]]]) -> dict[str, float]:
    collected: dict[str, list[float]] = {}
    for table in tables:
        for edge, value in edge_means(table).items():
            collected.setdefault(edge, []).append(value)
    return {edge: float(np.mean(values)) for edge, values in collected.items()}


def _edges(table: dict[str, Any]) -> list[str]:
    known = [edge for edge in EDGE_ORDER if edge in table]
    return known + sorted(set(table) - set(EDGE_ORDER))


def _diverged_note(row: SummaryRow) -> str:
    return f" ({row.diverged} diverged)" if row.diverged else ""


def _sort_key(row: SummaryRow) -> tuple:
    task, network, activation, depth, width, label, lr = row.key
    return (task, network, activation, depth, width, label, lr)
