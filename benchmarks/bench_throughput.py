"""Training throughput of defusal's LSTM and GRU stacks against ``torch.nn.LSTM`` and ``GRU``.

Three networks with the same layers, widths and weights train on the same batches:

- torch: ``torch.nn.LSTM`` / ``GRU`` (``batch_first``) and an ``nn.Linear`` readout;
- stack: defusal's cell-by-cell :class:`defusal.nets.RecurrentStack`, the network that
  LSC pre-training needs;
- fused: :class:`defusal.nets.FusedRecurrentNetwork`, the stack's weights in the torch module,
  which the experiment runner trains for LSTM and GRU stacks.

One training step is a forward pass, cross-entropy on the time-averaged logits, the backward
pass and an AdamW step.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.harness import Table, measure, megabytes, release_freed_memory, verdict
from defusal.nets import FusedRecurrentNetwork, build_network, to_torch

SETTINGS = {
    "full": {"layers": 5, "width": 128, "batch": 64, "time_steps": 50, "input": 49, "repeats": 5},
    "tiny": {"layers": 2, "width": 8, "batch": 4, "time_steps": 5, "input": 3, "repeats": 2},
}
CLASSES = 10
TARGET_RATIO = 0.8


class TorchReference(nn.Module):
    """``torch.nn.LSTM`` or ``GRU`` with a linear readout, returning ``(logits, None)``."""

    def __init__(self, rnn: nn.Module, readout: nn.Linear) -> None:
        super().__init__()
        self.rnn = rnn
        self.readout = readout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        outputs, _ = self.rnn(x)
        return self.readout(outputs), None


def training_step(network: nn.Module, optimizer, x: torch.Tensor, labels: torch.Tensor) -> None:
    """Run one forward, backward and optimizer step."""
    y, _ = network(x)
    loss = nn.functional.cross_entropy(y.mean(dim=1), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def networks(kind: str, settings: dict) -> dict[str, nn.Module]:
    """Return the torch, stack and fused networks, all with the same initial weights."""
    stack = build_network(
        kind, settings["input"], settings["width"], settings["layers"], CLASSES, seed=0
    )
    fused = FusedRecurrentNetwork.from_stack(stack)
    readout = nn.Linear(settings["width"], CLASSES)
    readout.load_state_dict(stack.readout.state_dict())
    reference = TorchReference(to_torch(stack), readout)
    return {"torch": reference, "stack": stack, "fused": fused}


def run(size: str) -> list[Table]:
    """Measure training sequences per second of the three networks, LSTM and GRU."""
    settings = SETTINGS[size]
    batch, steps = settings["batch"], settings["time_steps"]
    table = Table(
        title=(
            f"Training throughput, {settings['layers']} layers of width {settings['width']}, "
            f"batch {batch}, T = {steps}, {torch.get_num_threads()} threads"
        ),
        columns=[
            "network",
            "torch seq/s",
            "stack seq/s",
            "fused seq/s",
            "stack / torch",
            "fused / torch",
            "torch peak MiB",
            "stack peak MiB",
            "fused peak MiB",
            "target (>= 0.8): stack",
            "target (>= 0.8): fused",
        ],
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, settings["input"], generator=generator)
    labels = torch.randint(CLASSES, (batch,), generator=generator)
    for kind in ("lstm", "gru"):
        rates, peaks = {}, {}
        for name, network in networks(kind, settings).items():
            optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
            timing = measure(
                lambda network=network, optimizer=optimizer: training_step(
                    network, optimizer, x, labels
                ),
                repeats=settings["repeats"],
            )
            rates[name] = batch / timing.median
            peaks[name] = megabytes(timing.peak_bytes)
            release_freed_memory()
        stack_ratio = rates["stack"] / rates["torch"]
        fused_ratio = rates["fused"] / rates["torch"]
        table.rows.append(
            [
                kind,
                rates["torch"],
                rates["stack"],
                rates["fused"],
                stack_ratio,
                fused_ratio,
                peaks["torch"],
                peaks["stack"],
                peaks["fused"],
                verdict(stack_ratio >= TARGET_RATIO),
                verdict(fused_ratio >= TARGET_RATIO),
            ]
        )
    table.notes.extend(
        [
            "Target: at least 0.8 of torch's sequences per second.",
            "defusal.train.train trains whatever module it is given; the experiment runner "
            "pre-trains the cell-by-cell stack and trains its fused copy (the 'fused' column) "
            "for LSTM and GRU networks.",
            f"Median of {settings['repeats']} training steps after one warm-up step, per network.",
        ]
    )
    return [table]
