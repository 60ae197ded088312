"""Word-level Penn Treebank (Mikolov's split) as a language-modelling task.

Each line is split on whitespace and ends with an ``<eos>`` token. The vocabulary is the
training set's 10,000 word types (``<unk>`` and ``<eos>`` included), numbered in order of first
appearance. The splits have 929,589 / 73,760 / 82,430 tokens.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from defusal.data import file_path
from defusal.errors import DataCorruptError, DefusalError
from defusal.tasks.base import (
    SPLITS,
    Task,
    check_batching,
    check_optional_limit,
    check_positive_int,
    check_size,
    check_split,
)

EOS = "<eos>"


def read_ptb_words(path: str | os.PathLike) -> list[str]:
    """Return the tokens of a gzipped PTB text file, with ``<eos>`` after each line.

    Raises:
        DataCorruptError: the file cannot be read as gzipped UTF-8 text.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return [word for line in handle for word in [*line.split(), EOS]]
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataCorruptError(f"cannot read PTB file {path} ({error}); fetch it again") from None


@dataclass
class LanguageModelTask(Task):
    """A next-token prediction task over token streams, batched for truncated BPTT.

    A split's stream is cut into ``batch_size`` contiguous streams of equal length (the tail
    that does not fill a row is dropped), laid out as rows of a ``(batch_size, length)``
    matrix. Batch ``k`` contains columns ``[k * bptt, (k + 1) * bptt)`` as ``x`` and the next tokens
    as ``y``, so row ``b`` of batch ``k + 1`` continues row ``b`` of batch ``k`` and a recurrent
    state can be carried over. The last batch may be shorter than ``bptt``.

    Attributes:
        tokens: per split, token ids, shape ``(tokens,)``.
        vocabulary: the word of each id.
    """

    tokens: dict[str, Tensor] = field(default_factory=dict)
    vocabulary: list[str] = field(default_factory=list)

    @property
    def bptt(self) -> int:
        """Truncated-BPTT length, the same as ``sequence_length``."""
        return self.sequence_length

    def num_examples(self, split: str) -> int:
        check_split(split)
        return int(self.tokens[split].numel())

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)``, both long ``(batch_size, <= bptt)``, in stream order.

        ``shuffle`` and ``generator`` are ignored, because the order carries the state.

        Raises:
            DefusalError: unknown split, invalid ``batch_size`` or ``limit``, or a split with
                fewer than two tokens per stream.
        """
        check_split(split)
        check_batching(batch_size, limit)
        stream = self.tokens[split]
        length = stream.numel() // batch_size
        if length < 2:
            raise DefusalError(
                f"split {split!r} has {stream.numel()} tokens, too few for {batch_size} streams; "
                "use a smaller batch_size"
            )
        rows = stream[: length * batch_size].view(batch_size, length)
        return self._iterate(rows, limit)

    def _iterate(self, rows: Tensor, limit: int | None) -> Iterator[tuple[Tensor, Tensor]]:
        length = rows.shape[1]
        for number, start in enumerate(range(0, length - 1, self.bptt)):
            if limit is not None and number >= limit:
                return
            stop = min(start + self.bptt, length - 1)
            yield rows[:, start:stop], rows[:, start + 1 : stop + 1]


def load_ptb(
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    bptt: int = 100,
    max_tokens: int | None = None,
) -> LanguageModelTask:
    """Build the word-level PTB language-modelling task.

    ``size`` and ``seed`` do not change this task (the split is fixed); limit training with the
    ``limit`` argument of :meth:`LanguageModelTask.batches` instead.

    Args:
        data_dir: data folder.
        size: ``"quick"`` or ``"full"`` (identical here).
        seed: unused; accepted for a uniform interface.
        bptt: truncated-BPTT length, the ``sequence_length`` of the task.
        max_tokens: keep only the first tokens of each split, for quick checks; the vocabulary
            still comes from the whole training set.

    Returns:
        A task yielding ``x`` and ``y`` long ``(batch, bptt)``, ``y`` the next tokens.

    Raises:
        DataMissingError: a PTB file is not in the data folder.
        DataCorruptError: a validation or test word is not in the training vocabulary.
    """
    check_size(size)
    bptt = check_positive_int("bptt", bptt)
    max_tokens = check_optional_limit("max_tokens", max_tokens)

    words = {
        split: read_ptb_words(file_path("ptb", f"ptb.{split}.txt.gz", data_dir)) for split in SPLITS
    }
    vocabulary = list(dict.fromkeys(words["train"]))
    index = {word: number for number, word in enumerate(vocabulary)}
    tokens = {}
    for split, split_words in words.items():
        try:
            ids = [index[word] for word in split_words[:max_tokens]]
        except KeyError as error:
            raise DataCorruptError(
                f"PTB {split} word {error.args[0]!r} is not in the training vocabulary; "
                "fetch the PTB files again"
            ) from None
        tokens[split] = torch.tensor(ids, dtype=torch.long)

    return LanguageModelTask(
        name="ptb",
        kind="language_model",
        input_size=len(vocabulary),
        output_size=len(vocabulary),
        sequence_length=bptt,
        tokens=tokens,
        vocabulary=vocabulary,
    )
