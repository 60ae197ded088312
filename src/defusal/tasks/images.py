"""Image classification tasks for feed-forward networks: CIFAR-10 and CIFAR-100.

Images are flattened channel-first, ``(3, 32, 32)`` to 3,072 features, as in the CIFAR python
pickles, and standardised with the scalar mean and standard deviation of all training pixels.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from defusal.data import file_path, resolve_data_dir
from defusal.errors import DataCorruptError, DataMissingError, DefusalError
from defusal.tasks.base import (
    Task,
    TensorTask,
    cached,
    check_optional_limit,
    check_size,
    source_signature,
    stratified_holdout,
)

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR_SIDE = 32
CIFAR_FEATURES = 3 * CIFAR_SIDE * CIFAR_SIDE
_TAR_BLOCK = 512

# Images per class of the quick size, for train and test.
_QUICK_PER_CLASS = {"cifar10": (500, 100), "cifar100": (50, 10)}


def make_image_task(
    name: str,
    splits: dict[str, tuple[Tensor, Tensor]],
    *,
    classes: int,
    info: dict[str, Any],
) -> TensorTask:
    """Build a standardised image task from flattened ``uint8`` images.

    The scalar mean and standard deviation over all training pixels define
    ``x = (pixel - mean) / std``; the same constants apply to validation and test.

    Args:
        name: task name.
        splits: per split, ``(images, labels)``: ``uint8 (examples, features)`` and
            ``long (examples,)``.
        classes: number of classes.
        info: settings to record in the task.

    Raises:
        DefusalError: the training split is empty.
    """
    train = splits["train"][0]
    if train.shape[0] == 0:
        raise DefusalError(f"{name}: the training split is empty; use more examples")
    pixels = train.double()
    mean = float(pixels.mean())
    std = float(pixels.std())
    if not std > 0:
        raise DefusalError(f"{name}: training pixels are constant; cannot standardise them")

    def standardise(rows: Tensor) -> Tensor:
        return ((rows.float() - mean) / std).to(torch.float32)

    return TensorTask(
        name=name,
        kind="classification",
        input_size=int(train.shape[1]),
        output_size=classes,
        sequence_length=0,
        inputs={split: x for split, (x, _) in splits.items()},
        targets={split: y.long() for split, (_, y) in splits.items()},
        transform=standardise,
        info={**info, "pixel_mean": mean, "pixel_std": std},
    )


def _per_class_counts(
    dataset: str, size: str, train_per_class: int | None, test_per_class: int | None
) -> tuple[int | None, int | None]:
    check_size(size)
    train_per_class = check_optional_limit("train_per_class", train_per_class)
    test_per_class = check_optional_limit("test_per_class", test_per_class)
    if size == "quick":
        quick_train, quick_test = _QUICK_PER_CLASS[dataset]
        train_per_class = train_per_class or quick_train
        test_per_class = test_per_class or quick_test
    return train_per_class, test_per_class


def _split_train_valid(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    kept, held = stratified_holdout(labels, fraction, seed)
    return {"train": (images[kept], labels[kept]), "valid": (images[held], labels[held])}


def _to_tensors(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, tuple[Tensor, Tensor]]:
    return {
        name: (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))
        for name, (x, y) in splits.items()
    }


def iter_tar_files(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, content)`` of the regular files of an uncompressed ustar or pax archive.

    A plain header walk, because :mod:`tarfile` spends about 15 s on the 60,000 headers of the
    CIFAR-10 archive and this loop about 1 s. Pax extended headers may override the next
    file's ``path``; links, folders and other entries are skipped.

    Raises:
        ValueError: a header's checksum or size field is invalid.
    """
    offset = 0
    pending_path: str | None = None
    while offset + _TAR_BLOCK <= len(raw):
        header = raw[offset : offset + _TAR_BLOCK]
        if header.count(0) == _TAR_BLOCK:
            return
        stored_checksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        checksum = sum(header[:148]) + 8 * ord(" ") + sum(header[156:])
        if checksum != stored_checksum:
            raise ValueError(f"tar header checksum mismatch at byte {offset}")
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0].decode()
        prefix = header[345:500].split(b"\0", 1)[0].decode()
        if prefix:
            name = f"{prefix}/{name}"
        start = offset + _TAR_BLOCK
        content = raw[start : start + size]
        offset = start + -(-size // _TAR_BLOCK) * _TAR_BLOCK

        if kind == b"x":
            for record in content.decode().splitlines():
                if " path=" in record:
                    pending_path = record.split(" path=", 1)[1]
        elif kind in (b"0", b"\0"):
            yield (pending_path or name), content
            pending_path = None
        elif kind != b"g":
            pending_path = None


def read_cifar10_jpegs(
    path: str | os.PathLike,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode CIFAR-10 JPEGs from a tar archive of ``{train,test}/<class>/NNNN.jpg``.

    Args:
        path: the ``.tar.gz`` archive.
        train_per_class: keep the images numbered below this in each training class
            (``None`` keeps all 5,000).
        test_per_class: the same for the test classes (all 1,000 when ``None``).

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}`` with ``uint8`` images
        ``(examples, 3, 32, 32)`` and ``int64`` labels in :data:`CIFAR10_CLASSES` order, sorted
        by class and image number.

    Raises:
        DataCorruptError: the archive or an image cannot be read, or an image is not 32 x 32.
    """
    from PIL import Image, UnidentifiedImageError

    limits = {"train": train_per_class, "test": test_per_class}
    found: dict[str, list[tuple[int, int, np.ndarray]]] = {"train": [], "test": []}
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
        for name, data in iter_tar_files(raw):
            parts = PurePosixPath(name).parts
            if len(parts) != 3 or parts[0] not in found:
                continue
            split, class_name, file_name = parts
            if class_name not in CIFAR10_CLASSES or not file_name.endswith(".jpg"):
                continue
            number = int(PurePosixPath(file_name).stem)
            limit = limits[split]
            if limit is not None and number >= limit:
                continue
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("RGB"))
            if pixels.shape != (CIFAR_SIDE, CIFAR_SIDE, 3):
                raise DataCorruptError(f"{path}: {name} is {pixels.shape}, not 32x32")
            label = CIFAR10_CLASSES.index(class_name)
            found[split].append((label, number, pixels.transpose(2, 0, 1)))
    except (OSError, EOFError, ValueError, UnidentifiedImageError) as error:
        raise DataCorruptError(f"cannot read CIFAR-10 archive {path} ({error})") from None

    result = {}
    for split, items in found.items():
        if not items:
            raise DataCorruptError(f"{path}: no {split} images found; fetch the archive again")
        items.sort(key=lambda item: (item[0], item[1]))
        images = np.stack([item[2] for item in items])
        labels = np.array([item[0] for item in items], dtype=np.int64)
        result[split] = (images, labels)
    return result


def load_cifar10(
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    valid_fraction: float = 0.1,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Task:
    """Build the CIFAR-10 image task from the JPEG archive.

    The quick size reads the first 500 training and 100 test images of each class (5,000 and
    1,000), and the full size reads all 50,000 and 10,000. A class-stratified ``valid_fraction`` of
    the training images, drawn with ``seed``, forms the validation split. Decoded images are
    cached (see :func:`defusal.tasks.base.cached`).

    NOTE: the JPEGs are lossy (quality 75), so pixels differ slightly from the official batches.

    Args:
        data_dir: data folder.
        size: ``"quick"`` or ``"full"``.
        seed: seed of the validation draw.
        valid_fraction: share of each class held out for validation.
        train_per_class: training images per class, overriding the size's default.
        test_per_class: test images per class, overriding the size's default.
        cache_dir: folder of the decoded-image cache.
        use_cache: read and write the cache.

    Returns:
        A task yielding ``x`` float32 ``(batch, 3072)`` and ``y`` long ``(batch,)``.
    """
    train_per_class, test_per_class = _per_class_counts(
        "cifar10", size, train_per_class, test_per_class
    )
    path = file_path("cifar10", "cifar10_jpeg_full.tar.gz", data_dir)
    key = {
        "source": source_signature(path),
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "version": 1,
    }

    def build() -> dict[str, Any]:
        decoded = read_cifar10_jpegs(
            path, train_per_class=train_per_class, test_per_class=test_per_class
        )
        return {
            f"{split}_{part}": torch.from_numpy(array)
            for split, pair in decoded.items()
            for part, array in zip(("images", "labels"), pair, strict=True)
        }

    arrays = cached("cifar10", key, build, cache_dir=cache_dir, use_cache=use_cache)
    train_images = arrays["train_images"].numpy().reshape(-1, CIFAR_FEATURES)
    test_images = arrays["test_images"].numpy().reshape(-1, CIFAR_FEATURES)
    splits = _split_train_valid(train_images, arrays["train_labels"].numpy(), valid_fraction, seed)
    splits["test"] = (test_images, arrays["test_labels"].numpy())
    return make_image_task(
        "cifar10",
        _to_tensors(splits),
        classes=len(CIFAR10_CLASSES),
        info={
            "size": size,
            "seed": seed,
            "valid_fraction": valid_fraction,
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
        },
    )


def cifar100_folder(
    data_dir: str | os.PathLike | None = None, cifar100_dir: str | os.PathLike | None = None
) -> Path:
    """Return the ``cifar-100-python`` folder, checking that ``train`` and ``test`` are in it.

    The folder is ``cifar100_dir`` if given, else ``<data dir>/cifar100/cifar-100-python``.

    Raises:
        DataMissingError: a file is missing. The message names the folder for the files.
    """
    if cifar100_dir is not None:
        folder = Path(cifar100_dir).expanduser()
    else:
        folder = resolve_data_dir(data_dir) / "cifar100" / "cifar-100-python"
    for name in ("train", "test"):
        if not (folder / name).is_file():
            raise DataMissingError(
                f"CIFAR-100 is missing: {folder / name} not found; download "
                f"cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
                f"unpack it into {folder.parent} or pass cifar100_dir=<its cifar-100-python folder>"
            )
    return folder


def read_cifar100_pickle(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-100 python pickle (``train`` or ``test``).

    The pickle contains a dict with ``b"data"``, ``uint8 (examples, 3072)`` with the red, green
    and blue planes of each 32 x 32 image in turn, and ``b"fine_labels"``, 100 classes.

    NOTE: unpickling can run code, so read only files from the official source.

    Returns:
        ``(images, labels)``: ``uint8 (examples, 3072)`` and ``int64 (examples,)``.

    Raises:
        DataCorruptError: the file is not such a pickle.
    """
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="bytes")
        data = np.asarray(content[b"data"], dtype=np.uint8)
        labels = np.asarray(content[b"fine_labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise DataCorruptError(
            f"{path} is not a CIFAR-100 python pickle ({error!r}); download it again"
        ) from None
    if data.ndim != 2 or data.shape[1] != CIFAR_FEATURES or len(labels) != len(data):
        raise DataCorruptError(
            f"{path}: data shape {data.shape} and {len(labels)} labels do not match "
            f"(examples, {CIFAR_FEATURES})"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= 100):
        raise DataCorruptError(f"{path}: fine labels outside 0..99")
    return data, labels


def _first_per_class(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Return the sorted indices of the first ``per_class`` examples of every class."""
    if per_class is None:
        return np.arange(len(labels))
    chosen = [np.flatnonzero(labels == label)[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def load_cifar100(
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    valid_fraction: float = 0.1,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    cifar100_dir: str | os.PathLike | None = None,
) -> Task:
    """Build the CIFAR-100 image task (fine labels) from a user-supplied python-pickle copy.

    The quick size keeps the first 50 training and 10 test images of each class (5,000 and
    1,000), and the full size keeps all 50,000 and 10,000. A class-stratified ``valid_fraction``
    of the training images, drawn with ``seed``, forms the validation split.

    Args:
        data_dir: data folder, searched for ``cifar100/cifar-100-python/{train,test}``.
        size: ``"quick"`` or ``"full"``.
        seed: seed of the validation draw.
        valid_fraction: share of each class held out for validation.
        train_per_class: training images per class, overriding the size's default.
        test_per_class: test images per class, overriding the size's default.
        cifar100_dir: the ``cifar-100-python`` folder, overriding the data folder.

    Returns:
        A task yielding ``x`` float32 ``(batch, 3072)`` and ``y`` long ``(batch,)``.

    Raises:
        DataMissingError: the pickles are not found.
    """
    train_per_class, test_per_class = _per_class_counts(
        "cifar100", size, train_per_class, test_per_class
    )
    folder = cifar100_folder(data_dir, cifar100_dir)
    train_images, train_labels = read_cifar100_pickle(folder / "train")
    test_images, test_labels = read_cifar100_pickle(folder / "test")

    chosen = _first_per_class(train_labels, train_per_class)
    splits = _split_train_valid(train_images[chosen], train_labels[chosen], valid_fraction, seed)
    chosen = _first_per_class(test_labels, test_per_class)
    splits["test"] = (test_images[chosen], test_labels[chosen])
    return make_image_task(
        "cifar100",
        _to_tensors(splits),
        classes=100,
        info={
            "size": size,
            "seed": seed,
            "valid_fraction": valid_fraction,
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "folder": str(folder),
        },
    )
