"""Real-data tasks of the LSC experiments, behind one interface.

=========  ==============  =====================================================================
name       kind            data
=========  ==============  =====================================================================
slmnist    classification  spike-latency MNIST, ``(batch, T, channels)`` spikes
fsdd       classification  spoken digits (FSDD) as mel delta-modulation spikes
ptb        language_model  word-level Penn Treebank, 10,000 words, truncated-BPTT batches
mnist      classification  MNIST images, flattened and standardised, ``(batch, 784)``
cifar10    classification  CIFAR-10 (JPEG copy), flattened and standardised, ``(batch, 3072)``
cifar100   classification  CIFAR-100 from a user-supplied python-pickle copy, ``(batch, 3072)``
=========  ==============  =====================================================================

Example::

    task = load_task("slmnist", size="quick")
    generator = torch.Generator().manual_seed(0)
    for x, y in task.batches("train", 256, shuffle=True, generator=generator):
        ...
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from defusal.errors import DefusalError
from defusal.tasks.base import SPLITS, Task, TensorTask, check_size
from defusal.tasks.images import load_cifar10, load_cifar100
from defusal.tasks.mnist import load_mnist
from defusal.tasks.ptb import LanguageModelTask, load_ptb
from defusal.tasks.slmnist import load_slmnist
from defusal.tasks.speech import load_fsdd

__all__ = [
    "SPLITS",
    "TASKS",
    "LanguageModelTask",
    "Task",
    "TensorTask",
    "load_task",
]

_LOADERS: dict[str, Callable[..., Task]] = {
    "slmnist": load_slmnist,
    "fsdd": load_fsdd,
    "ptb": load_ptb,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}
TASKS = tuple(_LOADERS)


def load_task(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    **options: Any,
) -> Task:
    """Load a task by name.

    Args:
        name: one of :data:`TASKS`.
        data_dir: data folder (default ``$DEFUSAL_DATA``, else ``~/.cache/defusal``).
        size: ``"quick"`` (small enough for a CPU) or ``"full"``.
        seed: seed of the validation split draw.
        **options: task-specific options, the keyword arguments of the task's loader
            (for example ``steps=`` for slmnist, ``max_files=`` for fsdd, ``bptt=`` for ptb).

    Returns:
        The task.

    Raises:
        DefusalError: unknown task, size or option.
        DataMissingError: a data file is missing.
    """
    if name not in _LOADERS:
        raise DefusalError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    check_size(size)
    loader = _LOADERS[name]
    accepted = set(inspect.signature(loader).parameters) - {"data_dir", "size", "seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DefusalError(
            f"task {name!r} has no option {unknown[0]!r}; its options are: "
            f"{', '.join(sorted(accepted))}"
        )
    return loader(data_dir=data_dir, size=size, seed=seed, **options)
