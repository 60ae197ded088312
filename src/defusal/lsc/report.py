"""The result of LSC pre-training: radii before and after, steps, time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from defusal.jacobian import EDGES

RadiusTable = dict[str, dict[int, float]]


def edge_means(table: RadiusTable) -> dict[str, float]:
    """Return the mean over layers of every edge type of a radius table."""
    return {edge: sum(layers.values()) / len(layers) for edge, layers in table.items() if layers}


def format_table(table: RadiusTable, title: str = "radius") -> str:
    """Format ``{edge: {layer: radius}}`` as a Markdown table, one row per layer."""
    edges = [edge for edge in EDGES if edge in table] + sorted(set(table) - set(EDGES))
    layers = sorted({layer for values in table.values() for layer in values})
    lines = [
        "| layer | " + " | ".join(f"{edge} {title}" for edge in edges) + " |",
        "|---|" + "---|" * len(edges),
    ]
    for layer in layers:
        cells = [f"{table[edge][layer]:.4f}" if layer in table[edge] else "" for edge in edges]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    means = edge_means(table)
    lines.append("| mean | " + " | ".join(f"{means[edge]:.4f}" for edge in edges) + " |")
    return "\n".join(lines)


@dataclass
class LSCReport:
    """What :func:`defusal.lsc.pretrain_` did.

    Attributes:
        before: mean radius per edge type and layer before pre-training.
        after: the same after pre-training, measured with learning off on the same data.
        targets: target gain per edge type.
        steps: optimization (or rescaling) steps taken.
        seconds: wall-clock time of the whole call, measurements included.
        converged: whether every edge type stayed within ``tolerance`` of its target for
            ``patience`` consecutive steps.
        mode: ``"plain"``, ``"faithful"``, ``"ffn"`` or ``"lru"``.
        estimator: the radius estimator.
        final_loss: the LSC loss of the last step.
        nonfinite_restores: how often a NaN or Inf step restored the best weights.
        history: per-step loss and mean radius per edge type.
    """

    before: RadiusTable
    after: RadiusTable
    targets: dict[str, float]
    steps: int
    seconds: float
    converged: bool
    mode: str
    estimator: str
    final_loss: float = float("nan")
    nonfinite_restores: int = 0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the report as JSON-ready built-in types (layer keys become strings)."""
        data = asdict(self)
        for name in ("before", "after"):
            data[name] = {
                edge: {str(layer): value for layer, value in layers.items()}
                for edge, layers in data[name].items()
            }
        return data

    def to_markdown(self) -> str:
        """Return a Markdown summary with the before and after tables."""
        targets = ", ".join(f"{edge} {value:.4g}" for edge, value in self.targets.items())
        status = "converged" if self.converged else "not converged"
        return "\n".join(
            [
                f"LSC pre-training ({self.mode}, {self.estimator}): {self.steps} steps, "
                f"{self.seconds:.1f} s, {status}, final loss {self.final_loss:.4g}",
                f"targets: {targets}",
                "",
                "before:",
                format_table(self.before),
                "",
                "after:",
                format_table(self.after),
            ]
        )
