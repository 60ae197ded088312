"""Cost of LSC pre-training: one pre-training step against one training step, and time to target.

A pre-training step is the body of the :func:`defusal.lsc.pretrain_` loop: the local maps of
one time step (:func:`defusal.jacobian.step_maps`), the gain of every edge with gradients
(:func:`defusal.lsc.gains.map_gains`), the LSC loss, its backward pass and an Adam step. A
training step is a forward and backward pass through the whole sequence of the same
cell-by-cell network with a cross-entropy loss on the time-averaged logits, and an Adam step.
"""

from __future__ import annotations

import functools
import tempfile

import torch
from torch import nn

from benchmarks.harness import Table, measure, megabytes, release_freed_memory, verdict
from defusal.jacobian import step_maps
from defusal.lsc import pretrain_, resolve_targets
from defusal.lsc.gains import lsc_loss, map_gains
from defusal.lsc.pretrain import PLAIN_CUTS
from defusal.nets import build_network

SETTINGS = {
    "full": {
        "kinds": ("gru", "lstm"),
        "layers": 5,
        "width": 128,
        "batch": 16,
        "time_steps": 100,
        "input": 49,
        "repeats": 5,
        "task_examples": None,
        "epoch_batch": 64,
        "pretrain_steps": 200,
        "pretrain_repeats": 1,
    },
    "tiny": {
        "kinds": ("gru",),
        "layers": 2,
        "width": 8,
        "batch": 4,
        "time_steps": 6,
        "input": 49,
        "repeats": 2,
        "task_examples": 64,
        "epoch_batch": 32,
        "pretrain_steps": 5,
        "pretrain_repeats": 1,
    },
}
CLASSES = 10
TARGET_STEP_RATIO = 3.0
TARGET_TOLERANCE = 0.05
ESTIMATORS = ("eig", "matrix_free")


def pretraining_step(network, x_t, states, targets, optimizer, estimator, warm_starts) -> float:
    """Run one LSC pre-training step at one time step; return the loss."""
    maps, _ = step_maps(network, x_t, states)
    gains = {
        local_map.key: map_gains(
            local_map,
            estimator,
            create_graph=True,
            iterations=30,
            warm_starts=warm_starts,
            cuts=PLAIN_CUTS,
        )
        for local_map in maps
    }
    loss = lsc_loss(gains, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def training_step(network, x, labels, optimizer) -> float:
    """Run one training step through the whole sequence; return the loss."""
    y, _ = network(x)
    loss = nn.functional.cross_entropy(y.mean(dim=1), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_table(settings: dict) -> Table:
    """Time one pre-training step (two estimators) against one training step."""
    layers, width, batch = settings["layers"], settings["width"], settings["batch"]
    steps = settings["time_steps"]
    table = Table(
        title=(
            f"One LSC pre-training step vs one training step (T = {steps}), {layers} layers "
            f"of width {width}, batch {batch}"
        ),
        columns=[
            "network",
            "estimator",
            "pre-training step s",
            "training step s",
            "ratio",
            "pre-training peak MiB",
            "training peak MiB",
            "target (ratio <= 3)",
        ],
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, settings["input"], generator=generator)
    labels = torch.randint(CLASSES, (batch,), generator=generator)
    for kind in settings["kinds"]:
        network = build_network(kind, settings["input"], width, layers, CLASSES, seed=0)
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        training = measure(
            functools.partial(training_step, network, x, labels, optimizer),
            repeats=settings["repeats"],
        )

        # Linearize where the data takes the network: halfway through the sequence.
        states = network.initial_states(batch, x)
        with torch.no_grad():
            for t in range(steps // 2):
                _, states = network.step(x[:, t], states)
        x_t = x[:, steps // 2]
        targets = resolve_targets(1.0, num_layers=layers, time_steps=steps)
        network.eval()
        for estimator in ESTIMATORS:
            warm_starts: dict = {}
            step = functools.partial(
                pretraining_step, network, x_t, states, targets, optimizer, estimator, warm_starts
            )
            pretraining = measure(step, repeats=settings["repeats"])
            ratio = pretraining.median / training.median
            table.rows.append(
                [
                    kind,
                    estimator,
                    pretraining.median,
                    training.median,
                    ratio,
                    megabytes(pretraining.peak_bytes),
                    megabytes(training.peak_bytes),
                    verdict(ratio <= TARGET_STEP_RATIO),
                ]
            )
        network.train()
        release_freed_memory()
    table.notes.extend(
        [
            "Ratio: pre-training step time / training step time, the target is at most 3.",
            "A pre-training step covers every local Jacobian of one time step: time (each "
            "layer), depth (each upper layer), encoder and decoder; the 'eig' estimator forms "
            "the Jacobians and differentiates through eigenvectors, 'matrix_free' runs up to 30 "
            "power iterations warm-started from the previous step. Non-square Jacobians are "
            f"cut to {PLAIN_CUTS} random squares, as plain-mode pre-training does.",
            "Both sides use the cell-by-cell RecurrentStack, the network the pre-training needs "
            "(the experiment runner trains its fused copy).",
            f"Median of {settings['repeats']} repeats after one warm-up.",
        ]
    )
    return table


def time_to_target_table(settings: dict) -> Table:
    """Pre-train a GRU on quick sl-MNIST to radius 1 and compare with one training epoch."""
    from defusal.tasks import load_task
    from defusal.train import TrainConfig, train

    layers, width = settings["layers"], settings["width"]
    options = {}
    if settings["task_examples"] is not None:
        options["max_examples"] = settings["task_examples"]
    task = load_task("slmnist", size="quick", **options)
    generator = torch.Generator().manual_seed(0)
    batches = [
        batch
        for batch, _ in zip(
            task.batches("train", settings["batch"], shuffle=True, generator=generator),
            range(8),
            strict=False,
        )
    ]
    reports = []

    def pretrain_once():
        network = build_network("gru", task.input_size, width, layers, task.output_size, seed=0)
        report = pretrain_(
            network,
            batches,
            target=1.0,
            tolerance=TARGET_TOLERANCE,
            steps=settings["pretrain_steps"],
            batch_size=settings["batch"],
        )
        reports.append(report)

    def train_one_epoch():
        network = build_network("gru", task.input_size, width, layers, task.output_size, seed=0)
        config = TrainConfig(epochs=1, batch_size=settings["epoch_batch"], lr=3e-3, eval_limit=1)
        with tempfile.TemporaryDirectory() as folder:
            train(network, task, config, folder, progress=False)

    repeats = settings["pretrain_repeats"]
    # The step table above already warmed up the kernels, so no separate warm-up run here.
    pretraining = measure(pretrain_once, repeats=repeats, warmup=0)
    epoch = measure(train_one_epoch, repeats=repeats, warmup=0)
    report = reports[-1]
    deviation = max(
        abs(sum(layers_.values()) / len(layers_) - report.targets[edge])
        for edge, layers_ in report.after.items()
        if edge != "decoder"
    )
    fraction = pretraining.median / epoch.median
    table = Table(
        title=(
            f"Time to reach radius 1 within {TARGET_TOLERANCE}: {layers}-layer GRU of width "
            f"{width} on quick sl-MNIST"
        ),
        columns=[
            "pre-training s",
            "steps",
            "converged",
            "max |mean radius - 1| after",
            "one training epoch s",
            "fraction of an epoch",
            "pre-training peak MiB",
            "epoch peak MiB",
        ],
    )
    table.rows.append(
        [
            pretraining.median,
            report.steps,
            str(report.converged),
            deviation,
            epoch.median,
            fraction,
            megabytes(pretraining.peak_bytes),
            megabytes(epoch.peak_bytes),
        ]
    )
    train_examples = task.num_examples("train")
    table.notes.extend(
        [
            f"Pre-training: defusal.lsc.pretrain_ with target 1, tolerance {TARGET_TOLERANCE}, "
            f"the 'eig' estimator, batches of {settings['batch']} training sequences, at most "
            f"{settings['pretrain_steps']} steps; the time includes its before and after "
            "radius measurements.",
            f"One epoch: defusal.train.train over all {train_examples} training examples in "
            f"batches of {settings['epoch_batch']}, with a one-batch evaluation.",
            f"Deviation: the largest gap between an edge type's mean radius (time, depth, "
            f"encoder) after pre-training and its target. Median of {repeats} runs.",
        ]
    )
    return table


def run(size: str) -> list[Table]:
    """Return the step-cost table and the time-to-target table."""
    settings = SETTINGS[size]
    return [step_table(settings), time_to_target_table(settings)]
