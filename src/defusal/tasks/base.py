"""The task interface, in-memory classification tasks, and the cache of processed datasets."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from defusal.errors import DefusalError
from defusal.io import save_torch

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SIZES = ("quick", "full")


@dataclass
class Task:
    """A dataset with train, validation and test splits, served as mini-batches.

    Attributes:
        name: task name, one of :data:`defusal.tasks.TASKS`.
        kind: ``"classification"`` (sequences or images) or ``"language_model"``.
        input_size: features per time step (classification) or vocabulary size (language model).
        output_size: number of classes, or the vocabulary size.
        sequence_length: time steps ``T`` per example, or the truncated-BPTT length of a
            language model; 0 for static images.
    """

    name: str
    kind: str
    input_size: int
    output_size: int
    sequence_length: int

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the mini-batches ``(x, y)`` of one split.

        Args:
            split: ``"train"``, ``"valid"`` or ``"test"``.
            batch_size: examples per batch (classification) or parallel streams (language model).
            shuffle: draw a random order of examples; ignored by language models.
            generator: random generator for the order, for reproducible epochs.
            limit: yield at most this many batches; ``None`` yields the whole split.

        Raises:
            DefusalError: unknown split, or a non-positive ``batch_size`` or negative ``limit``.
        """
        raise NotImplementedError

    def num_examples(self, split: str) -> int:
        """Return the number of examples (classification) or tokens (language model) in a split.

        Raises:
            DefusalError: unknown split.
        """
        raise NotImplementedError


def check_split(split: str) -> None:
    """Raise :class:`DefusalError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise DefusalError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def check_batching(batch_size: int, limit: int | None) -> None:
    """Raise :class:`DefusalError` for a non-positive batch size or a negative batch limit."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise DefusalError(f"batch_size must be a positive integer, got {batch_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise DefusalError(f"limit must be None or a non-negative integer, got {limit!r}")


@dataclass
class TensorTask(Task):
    """A classification task whose splits are stored as tensors in memory.

    ``inputs[split]`` contains one row per example in a compact form (for example ``uint8`` pixels
    or spike times). ``transform`` turns a batch of rows into the float32 network input, so the
    dense form of a large split never has to fit in memory at once.

    Attributes:
        inputs: per split, the stored examples, shape ``(examples, ...)``.
        targets: per split, the class labels, shape ``(examples,)``, dtype ``long``.
        transform: maps a batch of stored rows to the network input; ``None`` only converts
            to float32.
        example_names: per split, an identifier of each example (a file name), or empty.
        info: the settings that produced the data (encoding, sizes, normalisation).
    """

    inputs: dict[str, Tensor] = field(default_factory=dict)
    targets: dict[str, Tensor] = field(default_factory=dict)
    transform: Callable[[Tensor], Tensor] | None = None
    example_names: dict[str, list[str]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def num_examples(self, split: str) -> int:
        check_split(split)
        return int(self.targets[split].shape[0])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        # Validate now rather than on the first next(), so mistakes surface at the call.
        check_split(split)
        check_batching(batch_size, limit)
        return self._iterate(split, batch_size, shuffle, generator, limit)

    def _iterate(
        self,
        split: str,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        limit: int | None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        inputs = self.inputs[split]
        targets = self.targets[split]
        count = targets.shape[0]
        if shuffle:
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.arange(count)

        for number, start in enumerate(range(0, count, batch_size)):
            if limit is not None and number >= limit:
                return
            index = order[start : start + batch_size]
            rows = inputs[index]
            x = self.transform(rows) if self.transform is not None else rows.float()
            yield x, targets[index]


def stratified_holdout(
    groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into kept and held-out parts, the same fraction from every group.

    From each group of ``n`` examples, ``floor(fraction * n + 0.5)`` are drawn at random into
    the held-out part.

    Args:
        groups: group label of each example, shape ``(examples,)`` (a class, or a speaker and
            class pair encoded as one integer).
        fraction: share of each group to hold out, in ``[0, 1)``.
        seed: seed of the random choice.

    Returns:
        ``(kept, held_out)``: sorted index arrays.

    Raises:
        DefusalError: ``fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise DefusalError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held_out = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        count = int(np.floor(fraction * len(members) + 0.5))
        held_out.append(rng.permutation(members)[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(groups)), held)
    return kept, held


def default_cache_dir() -> Path:
    """Return the folder for processed datasets: ``$DEFUSAL_CACHE``, else
    ``~/.cache/defusal/processed``."""
    from_environment = os.environ.get("DEFUSAL_CACHE")
    if from_environment:
        return Path(from_environment).expanduser()
    return Path("~/.cache/defusal/processed").expanduser()


def source_signature(path: Path) -> dict[str, int]:
    """Return the size and modification time of a source file, part of a cache key."""
    status = path.stat()
    return {"bytes": status.st_size, "mtime_ns": status.st_mtime_ns}


def cached(
    name: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, Any]],
    *,
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
) -> dict[str, Any]:
    """Return ``build()``, read from or written to a cache file keyed by ``key``.

    The file is ``<cache_dir>/<name>-<hash of key>.pt``. A cache file that cannot be read is
    rebuilt, and a cache that cannot be written only logs a warning.

    Args:
        name: prefix of the cache file name.
        key: JSON-serialisable settings that determine the result.
        build: computes the result, a dict of tensors, numbers, strings and lists of them.
        cache_dir: cache folder; ``None`` uses :func:`default_cache_dir`.
        use_cache: ``False`` always builds and writes nothing.
    """
    if not use_cache:
        return build()

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"{name}-{digest}.pt"
    if path.is_file():
        try:
            result = torch.load(path, map_location="cpu", weights_only=True)
            logger.info("read cached %s from %s", name, path)
            return result
        except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
            logger.warning("cache file %s is unreadable (%s); rebuilding it", path, error)

    result = build()
    try:
        save_torch(path, result)
        logger.info("wrote cache %s", path)
    except OSError as error:
        logger.warning("could not write cache file %s (%s); continuing without it", path, error)
    return result


def check_size(size: str) -> None:
    """Raise :class:`DefusalError` unless ``size`` is ``"quick"`` or ``"full"``."""
    if size not in SIZES:
        raise DefusalError(f"unknown size {size!r}; use one of {', '.join(SIZES)}")


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, raising :class:`DefusalError` unless it is a positive int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DefusalError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_optional_limit(name: str, value: Any) -> int | None:
    """Return ``None`` or a positive int, raising :class:`DefusalError` otherwise."""
    if value is None:
        return None
    return check_positive_int(name, value)
