"""Declarative experiment configurations and their expansion into runs with stable ids.

An :class:`Experiment` contains :class:`Grid` objects per size (``quick`` for a 2-core CPU, ``full``
for the settings of the original LSC study). A grid expands into :class:`RunSpec` objects, one
per combination of task, network, depth, activation, condition, learning rate, clipping and
seed. Each run has a stable id, a readable prefix followed by a hash of its whole
specification, so changing any setting gives a new id and never reuses an old result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from defusal.errors import DefusalError

SIZES = ("quick", "full")
TASK_NAMES = ("slmnist", "fsdd", "ptb", "mnist", "cifar10", "cifar100")
RECURRENT_KINDS = ("lstm", "gru", "relu_rnn", "sigmoid_rnn", "alif", "lru")
FFN_KIND = "ffn"
ACTIVATIONS = ("sin", "relu", "cos", "tanh", "sigmoid")
INIT_SCHEMES = ("default", "glorot", "he", "orthogonal", "identity")
PEERS = ("lsuv", "gradinit")


@dataclass(frozen=True)
class TrainingSpec:
    """Training settings of one run; converted to ``defusal.train.TrainConfig`` at run time.

    Attributes:
        epochs: passes over the (possibly truncated) training split.
        batch_size: examples, or parallel token streams, per gradient step.
        lr: learning rate.
        weight_decay: decoupled weight decay.
        optimizer: ``"adamw"``, ``"adam"``, ``"adabelief"`` or ``"sgd"``.
        lookahead: wrap the optimizer in Lookahead.
        clip_norm: maximum global gradient norm, ``None`` for no clipping.
        max_batches_per_epoch: truncates each epoch to this many batches, ``None`` for all.
        eval_limit: batches of the validation and test splits evaluated, ``None`` for all.
        readout: ``"mean"`` or ``"last"``: how per-step logits become a class prediction.
        bptt: truncated backpropagation window of language models, ``None`` for none.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    lookahead: bool = False
    clip_norm: float | None = None
    max_batches_per_epoch: int | None = None
    eval_limit: int | None = None
    readout: str = "mean"
    bptt: int | None = None


@dataclass(frozen=True)
class LSCSpec:
    """Settings of LSC pre-training, passed to ``defusal.lsc.pretrain_``.

    Attributes:
        target: target spectral radius of every local Jacobian (1.0 or 0.5), or ``"unbalanced"``
            (time and depth targets that sum to 1, for the residual LRU).
        mode: ``"plain"`` or ``"faithful"`` (the original heuristics).
        batch_size: examples per pre-training batch.
        num_batches: task batches fed to pre-training.
        options: further keyword arguments of ``pretrain_`` (for example ``max_steps``).
    """

    target: float | str = 1.0
    mode: str = "plain"
    batch_size: int = 16
    num_batches: int = 2
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Condition:
    """Initial condition of a network: an initialisation, optional LSC, optional peer method.

    Attributes:
        name: label used in run ids, tables and plots.
        init: initialisation scheme applied after construction (see ``INIT_SCHEMES``).
        lsc: LSC pre-training settings, ``None`` for none.
        peer: data-dependent initialisation from a third-party package (``"lsuv"`` or
            ``"gradinit"``), ``None`` for none.
    """

    name: str
    init: str = "default"
    lsc: LSCSpec | None = None
    peer: str | None = None

    def __post_init__(self) -> None:
        if self.init not in INIT_SCHEMES:
            raise DefusalError(
                f"condition {self.name!r}: unknown init {self.init!r}; use one of {INIT_SCHEMES}"
            )
        if self.peer is not None and self.peer not in PEERS:
            raise DefusalError(
                f"condition {self.name!r}: unknown peer {self.peer!r}; use one of {PEERS}"
            )


@dataclass(frozen=True)
class RunSpec:
    """One training run: everything needed to rebuild it from scratch.

    ``network`` is a recurrent kind (``RECURRENT_KINDS``) or ``"ffn"``; ``depth`` counts
    recurrent layers or hidden FFN layers; ``width`` is the hidden size. ``task_size`` is the
    data size passed to ``defusal.tasks.load_task``.
    """

    experiment: str
    task: str
    task_size: str
    network: str
    depth: int
    width: int
    condition: Condition
    seed: int
    training: TrainingSpec
    activation: str | None = None
    embedding_size: int | None = None
    tie_weights: bool = False

    @property
    def clipped(self) -> bool:
        """Whether training clips the gradient norm."""
        return self.training.clip_norm is not None

    @property
    def label(self) -> str:
        """Condition label as tables show it, ``+clip`` appended for clipped runs."""
        return self.condition.name + ("+clip" if self.clipped else "")

    @property
    def group(self) -> tuple:
        """Key shared by the seeds of one table row."""
        return (
            self.task,
            self.network,
            self.activation or "",
            self.depth,
            self.width,
            self.label,
            self.training.lr,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the specification as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @property
    def run_id(self) -> str:
        """Stable id: a readable prefix and the first 8 hex digits of a SHA-1 of the spec."""
        digest = hashlib.sha1(
            json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        parts = [self.task, self.network]
        if self.activation:
            parts.append(self.activation)
        parts += [
            f"d{self.depth}",
            f"w{self.width}",
            self.label.replace("+", "-"),
            f"lr{self.training.lr:g}",
            f"s{self.seed}",
            digest,
        ]
        return "-".join(parts)


@dataclass(frozen=True)
class NotApplicable:
    """A grid cell that is not run, with the reason shown in the report."""

    experiment: str
    task: str
    network: str
    depth: int
    condition: str
    reason: str


@dataclass(frozen=True)
class Grid:
    """A grid of runs; :meth:`expand` lists them.

    Attributes:
        tasks: task names.
        networks: network kinds.
        depths: numbers of layers.
        conditions: initial conditions.
        training: training settings per task name (``"*"`` matches every task).
        seeds: number of seeds, 0 to ``seeds - 1``.
        widths: hidden size per network kind (``"*"`` matches every kind).
        task_size: ``"quick"`` or ``"full"`` data size.
        lrs: learning rates to sweep; empty to use each task's ``training.lr``.
        activations: FFN activations; empty for recurrent networks.
        clip_norms: gradient clipping settings to cross with everything else; empty to use each
            task's ``training.clip_norm``.
        embedding_size: token embedding size for language tasks, ``None`` for the width.
        tie_weights: tie the readout to the token embedding on language tasks.
    """

    tasks: tuple[str, ...]
    networks: tuple[str, ...]
    depths: tuple[int, ...]
    conditions: tuple[Condition, ...]
    training: Mapping[str, TrainingSpec]
    seeds: int = 1
    widths: Mapping[str, int] = field(default_factory=lambda: {"*": 64})
    task_size: str = "quick"
    lrs: tuple[float, ...] = ()
    activations: tuple[str, ...] = ()
    clip_norms: tuple[float | None, ...] = ()
    embedding_size: int | None = None
    tie_weights: bool = False

    def width_of(self, network: str) -> int:
        """Return the hidden size of ``network``."""
        return int(self.widths.get(network, self.widths.get("*", 64)))

    def training_of(self, task: str) -> TrainingSpec:
        """Return the training settings of ``task``."""
        if task in self.training:
            return self.training[task]
        if "*" in self.training:
            return self.training["*"]
        raise DefusalError(f"grid has no training settings for task {task!r}; add them")

    def expand(
        self, experiment: str, *, seeds: int | None = None
    ) -> tuple[list[RunSpec], list[NotApplicable]]:
        """List the runs of this grid and the cells skipped because a condition does not apply.

        Args:
            experiment: experiment name stored in every run.
            seeds: number of seeds, overriding :attr:`seeds`.

        Returns:
            ``(runs, not_applicable)``, runs ordered seed-major so that the first seed of every
            condition finishes before the second seed starts.

        Raises:
            DefusalError: ``seeds`` is not positive.
        """
        from defusal.experiments.conditions import applicability

        count = self.seeds if seeds is None else seeds
        if count <= 0:
            raise DefusalError(f"number of seeds must be positive, got {count}")
        runs: list[RunSpec] = []
        skipped: list[NotApplicable] = []
        for seed in range(count):
            for task in self.tasks:
                base = self.training_of(task)
                for network in self.networks:
                    for depth in self.depths:
                        for condition in self.conditions:
                            reason = applicability(condition, network)
                            if reason is not None:
                                if seed == 0:
                                    skipped.append(
                                        NotApplicable(
                                            experiment, task, network, depth, condition.name, reason
                                        )
                                    )
                                continue
                            for training in self._training_variants(base):
                                for activation in self.activations or (None,):
                                    runs.append(
                                        RunSpec(
                                            experiment=experiment,
                                            task=task,
                                            task_size=self.task_size,
                                            network=network,
                                            depth=depth,
                                            width=self.width_of(network),
                                            condition=condition,
                                            seed=seed,
                                            training=training,
                                            activation=activation,
                                            embedding_size=self.embedding_size,
                                            tie_weights=self.tie_weights,
                                        )
                                    )
        return runs, skipped

    def _training_variants(self, base: TrainingSpec) -> list[TrainingSpec]:
        variants = [base]
        if self.lrs:
            variants = [dataclasses.replace(t, lr=lr) for t in variants for lr in self.lrs]
        if self.clip_norms:
            variants = [
                dataclasses.replace(t, clip_norm=clip) for t in variants for clip in self.clip_norms
            ]
        return variants


@dataclass(frozen=True)
class Experiment:
    """A named experiment with grids per size.

    Attributes:
        name: short name used by ``--only`` and as the results sub-folder.
        description: one line for ``--list`` and the report.
        quick: grids sized for a 2-core CPU in minutes.
        full: grids with the settings of the original study.
        metric: ``"accuracy"`` (higher is better) or ``"perplexity"`` (lower is better).
    """

    name: str
    description: str
    quick: tuple[Grid, ...]
    full: tuple[Grid, ...]
    metric: str = "accuracy"

    def grids(self, size: str) -> tuple[Grid, ...]:
        """Return the grids of ``size`` (``"quick"`` or ``"full"``)."""
        if size not in SIZES:
            raise DefusalError(f"unknown size {size!r}; use one of {SIZES}")
        return self.quick if size == "quick" else self.full

    def expand(
        self, size: str, *, seeds: int | None = None
    ) -> tuple[list[RunSpec], list[NotApplicable]]:
        """Return the runs and the not-applicable cells of the grids of ``size``.

        Runs are ordered seed-major across all grids, so that with several seeds the first seed
        of every configuration finishes first.
        """
        runs: list[RunSpec] = []
        skipped: list[NotApplicable] = []
        for grid in self.grids(size):
            grid_runs, grid_skipped = grid.expand(self.name, seeds=seeds)
            runs += grid_runs
            skipped += grid_skipped
        runs.sort(key=lambda run: run.seed)
        return runs, skipped


def lsc_options(**options: Any) -> tuple[tuple[str, Any], ...]:
    """Return keyword options as the sorted, hashable tuple :class:`LSCSpec` stores."""
    return tuple(sorted(options.items()))
