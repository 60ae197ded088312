"""Word-level PTB: vocabulary, token counts and truncated-BPTT batches."""

from __future__ import annotations

import gzip
import math

import pytest
import torch

from defusal.errors import DefusalError
from defusal.tasks import load_task


@pytest.fixture(scope="module")
def task():
    return load_task("ptb", bptt=35)


def test_vocabulary_size(task):
    assert len(task.vocabulary) == 10000
    assert task.input_size == 10000
    assert task.output_size == 10000
    assert "<eos>" in task.vocabulary
    assert "<unk>" in task.vocabulary


def test_token_counts(task):
    assert task.num_examples("train") == 929589
    assert task.num_examples("valid") == 73760
    assert task.num_examples("test") == 82430


def test_first_line_round_trip(real_data_dir, task):
    with gzip.open(real_data_dir / "ptb" / "ptb.valid.txt.gz", "rt") as handle:
        first_line = handle.readline().split() + ["<eos>"]
    ids = task.tokens["valid"][: len(first_line)].tolist()
    assert [task.vocabulary[i] for i in ids] == first_line


def test_batch_targets_shifted(task):
    for x, y in task.batches("valid", 16, shuffle=False, limit=3):
        assert x.shape == (16, 35)
        assert x.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_batches_continue_streams(task):
    batches = list(task.batches("valid", 16, shuffle=False, limit=4))
    for previous, following in zip(batches, batches[1:], strict=False):
        assert torch.equal(following[0][:, 0], previous[1][:, -1])


def test_rows_are_contiguous_streams(task):
    stream = task.tokens["test"]
    length = stream.numel() // 8
    x, y = next(task.batches("test", 8, shuffle=False))
    for row in range(8):
        assert torch.equal(x[row], stream[row * length : row * length + 35])
        assert torch.equal(y[row], stream[row * length + 1 : row * length + 36])


def test_batch_count_and_tail(task):
    length = 73760 // 20
    batches = list(task.batches("valid", 20, shuffle=False))
    assert len(batches) == math.ceil((length - 1) / 35)
    assert batches[-1][0].shape[1] == (length - 1) - 35 * (len(batches) - 1)


def test_shuffle_ignored(task):
    plain = next(task.batches("test", 4, shuffle=False))[0]
    shuffled = next(task.batches("test", 4, shuffle=True, generator=torch.Generator()))[0]
    assert torch.equal(plain, shuffled)


def test_too_many_streams_rejected():
    small = load_task("ptb", max_tokens=10)
    with pytest.raises(DefusalError, match="batch_size"):
        small.batches("test", 8, shuffle=False)


def test_max_tokens_keeps_vocabulary():
    small = load_task("ptb", max_tokens=100)
    assert small.num_examples("train") == 100
    assert len(small.vocabulary) == 10000


def test_unknown_split_rejected(task):
    with pytest.raises(DefusalError, match="'dev'"):
        task.batches("dev", 4, shuffle=False)
