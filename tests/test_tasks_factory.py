"""The task factory and the shared interface: names, errors, batching options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defusal.errors import DataMissingError, DefusalError
from defusal.tasks import TASKS, load_task
from defusal.tasks.base import stratified_holdout


def test_task_names():
    assert TASKS == ("slmnist", "fsdd", "ptb", "mnist", "cifar10", "cifar100")


def test_unknown_task_lists_names():
    with pytest.raises(DefusalError) as raised:
        load_task("shd")
    message = str(raised.value)
    assert "'shd'" in message
    assert "slmnist" in message
    assert "\n" not in message


def test_unknown_option_rejected():
    with pytest.raises(DefusalError, match="no option 'stepz'"):
        load_task("slmnist", stepz=10)


def test_unknown_size_rejected():
    with pytest.raises(DefusalError, match="'medium'"):
        load_task("mnist", size="medium")


@pytest.mark.parametrize("name", ["slmnist", "fsdd", "ptb", "mnist", "cifar10"])
def test_missing_data_one_line(tmp_path, name):
    with pytest.raises(DataMissingError) as raised:
        load_task(name, data_dir=tmp_path)
    assert "\n" not in str(raised.value)


def test_unknown_split_rejected_at_call():
    task = load_task("mnist", max_examples=10)
    with pytest.raises(DefusalError, match="'validation'"):
        task.batches("validation", 4, shuffle=False)
    with pytest.raises(DefusalError, match="'dev'"):
        task.num_examples("dev")


def test_bad_batch_size_rejected():
    task = load_task("mnist", max_examples=10)
    with pytest.raises(DefusalError, match="batch_size"):
        task.batches("train", 0, shuffle=False)


def test_limit_counts_batches():
    task = load_task("mnist", max_examples=10)
    batches = list(task.batches("train", 3, shuffle=False, limit=2))
    assert len(batches) == 2
    assert [len(y) for _, y in task.batches("train", 3, shuffle=False)] == [3, 3, 3, 1]


def test_shuffle_reproducible_with_generator():
    task = load_task("mnist", max_examples=50)
    first, _ = next(
        task.batches("train", 50, shuffle=True, generator=torch.Generator().manual_seed(4))
    )
    again, _ = next(
        task.batches("train", 50, shuffle=True, generator=torch.Generator().manual_seed(4))
    )
    plain, _ = next(task.batches("train", 50, shuffle=False))
    assert torch.equal(first, again)
    assert not torch.equal(first, plain)
    assert torch.equal(first.sum(dim=1).sort().values, plain.sum(dim=1).sort().values)


def test_mnist_slice_mixes_classes():
    task = load_task("mnist", max_examples=50)
    assert len(task.targets["train"].unique()) == 10


def test_holdout_fraction_per_group():
    groups = np.repeat([0, 1, 2], [10, 20, 45])
    kept, held = stratified_holdout(groups, 0.1, seed=0)
    assert [int((groups[held] == g).sum()) for g in range(3)] == [1, 2, 5]
    assert len(kept) + len(held) == 75
    assert set(kept.tolist()).isdisjoint(held.tolist())
