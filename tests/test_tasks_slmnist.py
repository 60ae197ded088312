"""Spike-latency MNIST: the latency code against its closed form, and the task on real images."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

from defusal.tasks import load_task
from defusal.tasks.slmnist import encode_images, latency_bins, spike_latency, spike_trains

# Intensity above which a pixel spikes before 100 reference units:
# 500 ln(x / (x - 0.004)) < 100  <=>  x > 0.004 e^0.2 / (e^0.2 - 1).
SPIKE_THRESHOLD = 0.004 * math.exp(0.2) / (math.exp(0.2) - 1.0)


def reference_latency(x: float) -> float:
    """The reference encoding 500 ln(50x / (50x - 0.2)), infinite for no spike."""
    if 50 * x <= 0.2:
        return math.inf
    return 500.0 * math.log(50 * x / (50 * x - 0.2))


def read_test_images(folder, count):
    with gzip.open(folder / "mnist" / "t10k-images-idx3-ubyte.gz", "rb") as handle:
        raw = handle.read()
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / "mnist" / "t10k-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images[:count], labels[:count]


def test_latency_closed_form():
    intensities = [1.0, 0.5, 0.1, 0.03, 0.0041, 0.004, 0.0]
    latencies = spike_latency(np.array(intensities))
    for x, latency in zip(intensities, latencies, strict=True):
        assert latency == pytest.approx(reference_latency(x), rel=1e-12)


def test_latency_full_intensity_value():
    assert spike_latency(np.array([1.0]))[0] == pytest.approx(-500 * math.log(0.996), rel=1e-12)


def test_latency_bins_window():
    latency = np.array([0.0, 2.004, 49.99, 99.99, 100.0, np.inf])
    bins = latency_bins(latency, steps=50, window=100.0)
    assert bins.tolist() == [0, 1, 24, 49, -1, -1]


def test_brighter_pixel_spikes_earlier():
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 3, 4] = 255
    image[0, 10, 20] = 26  # intensity 0.102
    bins, channel = encode_images(image, steps=50, channels="pixels")
    x = spike_trains(bins, channel, steps=50, channels=784)

    bright = x[0, :, 3 * 28 + 4].nonzero().flatten().tolist()
    dim = x[0, :, 10 * 28 + 20].nonzero().flatten().tolist()
    assert bright == [math.floor(reference_latency(1.0) * 50 / 100)]
    assert dim == [math.floor(reference_latency(26 / 255) * 50 / 100)]
    assert bright[0] < dim[0]
    assert x.sum() == 2


def test_latency_monotone_in_intensity():
    image = np.round(np.linspace(0, 255, 784)).astype(np.uint8).reshape(1, 28, 28)
    bins, _ = encode_images(image, steps=100, channels="pixels")
    spiking = bins[0][bins[0] >= 0].numpy()
    assert np.all(np.diff(spiking) <= 0)


@pytest.fixture(scope="module")
def slice_task():
    return load_task("slmnist", size="full", max_examples=32)


def test_real_slice_shapes(slice_task):
    x, y = next(slice_task.batches("test", 16, shuffle=False))
    assert x.shape == (16, 100, 784)
    assert x.dtype == torch.float32
    assert y.shape == (16,)
    assert y.dtype == torch.long
    assert slice_task.input_size == 784
    assert slice_task.sequence_length == 100


def test_real_slice_binary_one_spike(slice_task):
    for split in ("train", "valid", "test"):
        for x, y in slice_task.batches(split, 16, shuffle=True):
            assert set(x.unique().tolist()) <= {0.0, 1.0}
            assert x.sum(dim=1).max() <= 1
            assert y.min() >= 0
            assert y.max() <= 9


def test_real_slice_matches_closed_form(real_data_dir, slice_task):
    images, labels = read_test_images(real_data_dir, 4)
    x, y = next(slice_task.batches("test", 4, shuffle=False))
    assert y.tolist() == labels.tolist()

    expected = torch.zeros(4, 100, 784)
    for example in range(4):
        for pixel, value in enumerate(images[example].flatten()):
            latency = reference_latency(value / 255.0)
            if latency < 100.0:
                expected[example, math.floor(latency), pixel] = 1.0
    assert torch.equal(x, expected)


def test_real_slice_spike_count(real_data_dir, slice_task):
    images, _ = read_test_images(real_data_dir, 8)
    x, _ = next(slice_task.batches("test", 8, shuffle=False))
    expected = (images.reshape(8, -1) / 255.0 > SPIKE_THRESHOLD).sum(axis=1)
    assert x.sum(dim=(1, 2)).long().tolist() == expected.tolist()


def test_quick_size_pooled():
    task = load_task("slmnist", max_examples=8)
    x, _ = next(task.batches("train", 8, shuffle=False))
    assert x.shape == (8, 50, 49)
    assert x.sum(dim=1).max() <= 1


def test_pool4_channel_is_block_mean(real_data_dir):
    images, _ = read_test_images(real_data_dir, 2)
    bins, _ = encode_images(images, steps=50, channels="pool4")
    block = images[1, 8:12, 12:16].astype(np.float64).mean() / 255.0
    latency = reference_latency(block)
    expected = math.floor(latency * 50 / 100) if latency < 100 else -1
    assert int(bins[1, 2 * 7 + 3]) == expected


def test_rows_channel_counts(real_data_dir):
    images, _ = read_test_images(real_data_dir, 2)
    bins, channel = encode_images(images, steps=50, channels="rows")
    x = spike_trains(bins, channel, steps=50, channels=28)
    expected = (images[0] / 255.0 > SPIKE_THRESHOLD).sum(axis=1)
    assert x[0].sum(dim=0).long().tolist() == expected.tolist()


def test_reshape_layout_reads_memory():
    bins = torch.tensor([[0, 2, -1, 1, 3, 0]], dtype=torch.int16)
    channel = torch.arange(6)
    dense = spike_trains(bins, channel, steps=4, channels=6)
    scrambled = spike_trains(bins, channel, steps=4, channels=6, layout="reshape")
    flat_channel_major = dense[0].T.flatten()
    assert torch.equal(scrambled[0].flatten(), flat_channel_major)
    assert scrambled.shape == (1, 4, 6)


def test_time_repeat_doubles_steps():
    bins = torch.tensor([[0, 2, 1]], dtype=torch.int16)
    x = spike_trains(bins, torch.arange(3), steps=3, channels=3, time_repeat=2)
    assert x.shape == (1, 6, 3)
    assert torch.equal(x[:, 0::2], x[:, 1::2])
    assert x[0, 4, 1] == 1


def test_validation_split_per_class():
    task = load_task("slmnist", seed=3)
    assert task.num_examples("train") == 4500
    assert task.num_examples("valid") == 500
    assert task.num_examples("test") == 10000
    counts = torch.bincount(task.targets["valid"], minlength=10)
    assert counts.tolist() == [50] * 10
