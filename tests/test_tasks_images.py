"""Image tasks for feed-forward networks: MNIST, CIFAR-10 and a CIFAR-100 pickle copy."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from defusal.errors import DataMissingError
from defusal.tasks import load_task
from defusal.tasks.images import iter_tar_files


def stacked(task, split):
    xs, ys = zip(*task.batches(split, 1000, shuffle=False), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_mnist_shapes_and_sizes():
    task = load_task("mnist")
    x, y = next(task.batches("train", 64, shuffle=True))
    assert x.shape == (64, 784)
    assert x.dtype == torch.float32
    assert y.dtype == torch.long
    assert task.num_examples("train") == 4500
    assert task.num_examples("valid") == 500
    assert task.num_examples("test") == 10000
    assert task.sequence_length == 0


def test_mnist_standardised_on_train():
    task = load_task("mnist")
    x, _ = stacked(task, "train")
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_mnist_test_labels(real_data_dir):
    with gzip.open(real_data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    task = load_task("mnist")
    _, y = stacked(task, "test")
    assert y.tolist() == labels.tolist()


@pytest.fixture(scope="module")
def cifar10():
    return load_task("cifar10", train_per_class=20, test_per_class=10, use_cache=False)


def test_cifar10_class_balance(cifar10):
    assert torch.bincount(cifar10.targets["train"]).tolist() == [18] * 10
    assert torch.bincount(cifar10.targets["valid"]).tolist() == [2] * 10
    assert torch.bincount(cifar10.targets["test"]).tolist() == [10] * 10


def test_cifar10_shapes_and_standardisation(cifar10):
    x, _ = stacked(cifar10, "train")
    assert x.shape == (180, 3072)
    assert cifar10.input_size == 3072
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_cifar10_pixels_match_jpeg(real_data_dir, cifar10):
    # The file is near the start of the archive: stop there rather than index all members.
    with tarfile.open(real_data_dir / "cifar10" / "cifar10_jpeg_full.tar.gz") as archive:
        member = next(item for item in archive if item.name == "test/airplane/0000.jpg")
        data = archive.extractfile(member).read()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    expected = pixels.transpose(2, 0, 1).flatten()
    x, y = next(cifar10.batches("test", 1, shuffle=False))
    restored = x[0].double() * cifar10.info["pixel_std"] + cifar10.info["pixel_mean"]
    assert y.item() == 0
    assert np.allclose(restored.numpy(), expected, atol=1e-3)


def test_tar_walk_matches_tarfile(tmp_path):
    contents = {
        "short.txt": b"abc",
        "folder/" + "n" * 120 + ".bin": bytes(range(256)) * 3,
        "empty": b"",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, content in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    assert dict(iter_tar_files(buffer.getvalue())) == contents


def write_cifar100(folder, per_class, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for split, count in (("train", per_class), ("test", 2)):
        labels = np.repeat(np.arange(100), count)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        content = {
            b"data": data,
            b"fine_labels": labels.tolist(),
            b"coarse_labels": (labels // 5).tolist(),
            b"filenames": [f"{i}.png".encode() for i in range(len(labels))],
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(content, handle)
        written[split] = (data, labels)
    return written


def test_cifar100_pickle_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    written = write_cifar100(folder, per_class=10, seed=1)
    task = load_task("cifar100", size="full", cifar100_dir=folder)
    x, y = stacked(task, "test")
    restored = x.double() * task.info["pixel_std"] + task.info["pixel_mean"]
    assert np.allclose(restored.numpy(), written["test"][0], atol=1e-3)
    assert y.tolist() == written["test"][1].tolist()
    assert task.output_size == 100


def test_cifar100_split_sizes(tmp_path):
    write_cifar100(tmp_path / "cifar100" / "cifar-100-python", per_class=10, seed=2)
    task = load_task("cifar100", data_dir=tmp_path, size="full")
    assert task.num_examples("train") == 900
    assert task.num_examples("valid") == 100
    assert torch.bincount(task.targets["valid"]).tolist() == [1] * 100


def test_cifar100_quick_per_class(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar100(folder, per_class=10, seed=3)
    task = load_task("cifar100", cifar100_dir=folder, train_per_class=5, test_per_class=1)
    assert task.num_examples("train") + task.num_examples("valid") == 500
    assert task.num_examples("test") == 100


def test_cifar100_missing_message(tmp_path):
    with pytest.raises(DataMissingError) as raised:
        load_task("cifar100", data_dir=tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar100" / "cifar-100-python" / "train") in message
