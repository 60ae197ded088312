"""Spoken digits: the mel filterbank, delta modulation, WAV reading and the FSDD task."""

from __future__ import annotations

import io
import re
import tarfile
import wave

import numpy as np
import pytest
import torch

from defusal.errors import DataCorruptError
from defusal.tasks import load_task
from defusal.tasks.speech import (
    delta_modulate,
    log_mel_envelope,
    mel_filterbank,
    read_fsdd,
    read_wav,
)


def mel(frequency):
    return 2595.0 * np.log10(1.0 + np.asarray(frequency) / 700.0)


def write_wav(target, samples, rate):
    with wave.open(target, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes((samples * 32767).astype("<i2").tobytes())


def first_archive_names(folder, count):
    names = []
    with tarfile.open(folder / "fsdd" / "fsdd_recordings.tar.xz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".wav"):
                names.append(member.name.rsplit("/", 1)[-1])
            if len(names) == count:
                break
    return names


def take_of(name):
    return int(re.fullmatch(r"\d_[a-z]+_(\d+)\.wav", name)[1])


def test_mel_centres_evenly_spaced():
    _, centres = mel_filterbank(64, fmin=50.0, fmax=4000.0)
    steps = np.diff(mel(centres))
    expected = (mel(4000.0) - mel(50.0)) / 65
    assert np.allclose(steps, expected, rtol=1e-9)
    assert centres[0] == pytest.approx(700 * (10 ** ((mel(50.0) + expected) / 2595) - 1))


def test_mel_filters_are_triangles():
    weights, centres = mel_filterbank(20, n_fft=512, fmin=50.0, fmax=4000.0)
    edges = np.concatenate([[50.0], centres, [4000.0]])
    frequencies = np.arange(257) * 8000 / 512
    for index in range(20):
        triangle = np.interp(
            frequencies, edges[index : index + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0
        )
        assert np.allclose(weights[index], triangle, atol=1e-12)


def test_mel_filters_sum_to_one():
    weights, centres = mel_filterbank(32, n_fft=8000, fmin=50.0)
    frequencies = np.arange(4001) * 8000 / 8000
    inside = (frequencies >= centres[0]) & (frequencies <= centres[-1])
    assert np.allclose(weights[:, inside].sum(axis=0), 1.0, atol=1e-9)


def test_mel_filter_peaks_at_centre():
    weights, centres = mel_filterbank(32, n_fft=8000, fmin=50.0)
    peaks = weights.argmax(axis=1) * 1.0  # bins are 1 Hz apart
    assert np.all(np.abs(peaks - centres) <= 1.0)
    assert weights.max(axis=1).min() > 0.99


def test_sine_excites_nearest_channel(tmp_path):
    rate, frequency = 8000, 1000.0
    time = np.arange(rate // 2) / rate
    path = tmp_path / "sine.wav"
    write_wav(str(path), 0.5 * np.sin(2 * np.pi * frequency * time), rate)

    samples, read_rate = read_wav(path)
    weights, _ = mel_filterbank(64)
    levels = log_mel_envelope(samples, weights, hop=80, steps=40)

    band = np.linspace(mel(50.0), mel(4000.0), 66)
    centres = 700 * (10 ** (band[1:-1] / 2595) - 1)
    assert read_rate == rate
    assert levels[5:35].mean(axis=0).argmax() == np.abs(centres - frequency).argmin()


def test_wav_round_trip(tmp_path):
    signal = np.linspace(-0.9, 0.9, 101)
    path = tmp_path / "ramp.wav"
    write_wav(str(path), signal, 8000)
    samples, _ = read_wav(path)
    assert np.allclose(samples, signal, atol=1.0 / 16384)


def test_delta_modulation_ramp():
    levels = (-60.0 + np.arange(61.0))[:, None]
    on, off = delta_modulate(levels, delta=3.0, start=-60.0)
    assert np.flatnonzero(on[:, 0]).tolist() == list(range(3, 61, 3))
    assert not off.any()


def test_delta_modulation_drop():
    levels = np.concatenate([np.zeros(1), np.full(30, -60.0)])[:, None]
    on, off = delta_modulate(levels, delta=3.0, start=0.0)
    assert not on.any()
    assert np.flatnonzero(off[:, 0]).tolist() == list(range(1, 21))


def test_silence_has_no_spikes():
    weights, _ = mel_filterbank(16)
    levels = log_mel_envelope(np.zeros(4000), weights, hop=80, steps=50)
    on, off = delta_modulate(levels[None], delta=3.0, start=-60.0)
    assert np.all(levels == -60.0)
    assert not on.any()
    assert not off.any()


@pytest.fixture(scope="module")
def slice_task(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_task("fsdd", max_files=20, cache_dir=cache)


def test_real_slice_shapes(slice_task):
    x, y = next(slice_task.batches("train", 4, shuffle=False))
    assert x.shape == (4, 100, 128)
    assert x.dtype == torch.float32
    assert y.dtype == torch.long
    assert slice_task.input_size == 128
    assert slice_task.output_size == 10


def test_real_slice_spikes_and_labels(slice_task):
    for split in ("train", "valid", "test"):
        for x, y in slice_task.batches(split, 8, shuffle=True):
            assert set(x.unique().tolist()) <= {0.0, 1.0}
            assert y.min() >= 0
            assert y.max() <= 9
    assert slice_task.inputs["train"].sum() > 0


def test_real_slice_test_takes(real_data_dir, slice_task):
    names = first_archive_names(real_data_dir, 20)
    expected_test = sorted(name for name in names if take_of(name) < 5)
    assert sorted(slice_task.example_names["test"]) == expected_test
    training = slice_task.example_names["train"] + slice_task.example_names["valid"]
    assert sorted(training) == sorted(name for name in names if take_of(name) >= 5)


def test_real_slice_labels_from_names(slice_task):
    for split in ("train", "valid", "test"):
        digits = [int(name[0]) for name in slice_task.example_names[split]]
        assert slice_task.targets[split].tolist() == digits


def test_real_slice_validation_share(slice_task):
    training = slice_task.num_examples("train") + slice_task.num_examples("valid")
    assert slice_task.num_examples("valid") == int(np.floor(0.1 * training + 0.5))


def test_cache_file_reused(tmp_path):
    first = load_task("fsdd", max_files=3, steps=40, cache_dir=tmp_path)
    files = list(tmp_path.glob("fsdd-*.pt"))
    second = load_task("fsdd", max_files=3, steps=40, cache_dir=tmp_path)
    assert len(files) == 1
    assert torch.equal(first.inputs["test"], second.inputs["test"])


def test_full_size_steps(tmp_path):
    task = load_task("fsdd", size="full", max_files=2, use_cache=False)
    assert task.sequence_length == 250
    assert task.inputs["test"].shape[1:] == (250, 128)


def test_wrong_sample_rate_rejected(tmp_path):
    buffer = io.BytesIO()
    write_wav(buffer, np.zeros(100), 16000)
    archive_path = tmp_path / "recordings.tar"
    with tarfile.open(archive_path, "w") as archive:
        info = tarfile.TarInfo("recordings/3_alice_7.wav")
        info.size = len(buffer.getvalue())
        archive.addfile(info, io.BytesIO(buffer.getvalue()))
    with pytest.raises(DataCorruptError, match="16000 Hz"):
        read_fsdd(archive_path)
