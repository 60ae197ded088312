r"""Spoken digits as spike trains: the Free Spoken Digit Dataset (FSDD) made SHD-like.

Each 8 kHz recording ``{digit}_{speaker}_{take}.wav`` goes through these steps:

1. Short-time power spectrum: periodic Hann window of 256 samples (32 ms), zero-padded to a
   512-point FFT, frames centred every ``hop`` samples (frame ``t`` centred on sample
   ``t * hop``, the signal padded with zeros at both ends).
2. Mel filterbank: ``n_mels`` triangular filters with peak 1, centres evenly spaced on the mel
   scale :math:`m(f) = 2595 \log_{10}(1 + f / 700)` between 50 Hz and 4 kHz.
3. Log envelope per channel in dB, relative to the loudest channel and frame of the clip and
   clipped to ``[-dynamic_range, 0]``. Frames after the end of the clip are silence
   (``-dynamic_range``). Clips are cropped or padded to ``steps`` frames.
4. Delta modulation with a dead zone: each channel tracks its level with a staircase
   :math:`r` that starts at ``-dynamic_range``. At each step, if the level exceeds
   :math:`r + \delta` an ON spike fires and :math:`r \mathrel{+}= \delta`; if it is below
   :math:`r - \delta` an OFF spike fires and :math:`r \mathrel{-}= \delta`. So every channel
   spikes at most once per step, a rising envelope gives a burst of ON spikes whose length
   grows with the rise, and a falling one a burst of OFF spikes.

The input has the ON channels first, then the OFF ones (``2 * n_mels`` channels), or only ON
channels with ``polarity="on"``.

Defaults: quick is ``steps=100`` at a 10 ms hop, full ``steps=250`` at a 4 ms hop (the 4 ms bins
of SHD), both covering the first second; 99.3% of the FSDD clips are shorter (the longest is
2.28 s, the median 0.42 s). Both use 64 mel channels, ``delta=3`` dB and a 60 dB range.

Splits: takes 0-4 are the test set (the dataset's official split), takes 5-49 are training.
From each speaker and digit, ``valid_fraction`` of the training takes (drawn with ``seed``)
form the validation split, so every speaker appears in all splits.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import time
import wave
from typing import Any, BinaryIO

import numpy as np
import torch

from defusal.data import file_path
from defusal.errors import DataCorruptError, DefusalError
from defusal.tasks.base import (
    Task,
    TensorTask,
    cached,
    check_optional_limit,
    check_positive_int,
    check_size,
    source_signature,
    stratified_holdout,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
WINDOW_LENGTH = 256
FFT_SIZE = 512
MEL_FMIN = 50.0
DIGITS = 10
TEST_TAKES = range(5)
POLARITIES = ("both", "on")

# (steps, hop in samples) of each size; both cover 1 s of audio.
_SIZE_DEFAULTS = {"quick": (100, 80), "full": (250, 32)}
_FILE_NAME = re.compile(r"(?:.*/)?(\d)_([A-Za-z]+)_(\d+)\.wav$")


def hz_to_mel(frequency: np.ndarray | float) -> np.ndarray:
    """Return the mel value ``2595 log10(1 + f / 700)`` of frequencies in Hz."""
    return 2595.0 * np.log10(1.0 + np.asarray(frequency, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Return the frequency in Hz of mel values, the inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = FFT_SIZE,
    fmin: float = MEL_FMIN,
    fmax: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Build triangular mel filters over the bins of an ``n_fft``-point real FFT.

    ``n_mels + 2`` edge frequencies are evenly spaced in mel from ``fmin`` to ``fmax``. Filter
    ``i`` rises linearly from edge ``i`` to 1 at edge ``i + 1`` (its centre) and falls to 0 at
    edge ``i + 2``. Between the first and the last centre, the filters sum to 1.

    Args:
        n_mels: number of filters.
        sample_rate: sampling rate in Hz.
        n_fft: FFT size; the filters cover its ``n_fft // 2 + 1`` frequency bins.
        fmin: lowest edge in Hz.
        fmax: highest edge in Hz; ``None`` means ``sample_rate / 2``.

    Returns:
        ``(weights, centres)``: weights ``(n_mels, n_fft // 2 + 1)`` and centre frequencies in
        Hz ``(n_mels,)``.

    Raises:
        DefusalError: an invalid band, or a filter so narrow that no FFT bin falls inside it.
    """
    n_mels = check_positive_int("n_mels", n_mels)
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise DefusalError(
            f"mel band must satisfy 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}"
        )

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    frequencies = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (frequencies - lower) / (centre - lower)
    falling = (upper - frequencies) / (upper - centre)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)

    empty = np.flatnonzero(weights.max(axis=1) == 0)
    if empty.size:
        raise DefusalError(
            f"mel filter {int(empty[0])} of {n_mels} contains no FFT bin; use fewer mel "
            f"channels or a larger n_fft"
        )
    return weights, edges[1:-1]


def power_spectrogram(
    samples: np.ndarray, *, hop: int, frames: int, n_fft: int = FFT_SIZE
) -> np.ndarray:
    """Return the power spectrum of the first ``frames`` centred frames of a signal.

    Args:
        samples: the signal, float, shape ``(samples,)``.
        hop: frame step in samples; frame ``t`` is centred on sample ``t * hop``.
        frames: maximum number of frames; a short signal gives ``1 + len(samples) // hop``.
        n_fft: FFT size, at least :data:`WINDOW_LENGTH`.

    Returns:
        ``|FFT|^2`` of the Hann-windowed frames, float32, shape ``(frames, n_fft // 2 + 1)``.
    """
    half = WINDOW_LENGTH // 2
    padded = np.concatenate([np.zeros(half), samples, np.zeros(half)]).astype(np.float32)
    count = min(frames, 1 + len(samples) // hop)
    windows = np.lib.stride_tricks.sliding_window_view(padded, WINDOW_LENGTH)[::hop][:count]
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WINDOW_LENGTH) / WINDOW_LENGTH)
    # float32 halves the cost of the FFT, the bulk of the encoding time.
    spectrum = np.fft.rfft(windows * hann.astype(np.float32), n=n_fft, axis=1)
    return spectrum.real**2 + spectrum.imag**2


def log_mel_envelope(
    samples: np.ndarray,
    filterbank: np.ndarray,
    *,
    hop: int,
    steps: int,
    dynamic_range: float = 60.0,
) -> np.ndarray:
    """Return the clip-normalised log mel envelope of a signal, cropped or padded to ``steps``.

    Args:
        samples: the signal, float, shape ``(samples,)``.
        filterbank: mel weights, shape ``(n_mels, n_fft // 2 + 1)``.
        hop: frame step in samples.
        steps: output frames.
        dynamic_range: levels are in dB below the clip's loudest value, clipped to this range.

    Returns:
        Levels in ``[-dynamic_range, 0]`` dB, shape ``(steps, n_mels)``; frames after the clip's
        end are ``-dynamic_range``.
    """
    n_fft = 2 * (filterbank.shape[1] - 1)
    power = power_spectrogram(samples, hop=hop, frames=steps, n_fft=n_fft)
    energy = (power @ filterbank.T.astype(np.float32)).astype(np.float64)
    levels = np.full((steps, filterbank.shape[0]), -dynamic_range)
    if energy.size and energy.max() > 0:
        decibels = 10.0 * np.log10(np.maximum(energy, energy.max() * 1e-12) / energy.max())
        levels[: len(decibels)] = np.maximum(decibels, -dynamic_range)
    return levels


def delta_modulate(levels: np.ndarray, *, delta: float, start: float) -> tuple[np.ndarray, ...]:
    """Encode level trajectories as ON and OFF spikes by delta modulation with a dead zone.

    A staircase ``r``, starting at ``start``, follows each trajectory. At step ``t``, an ON
    spike fires if ``levels[t] >= r + delta``, and then ``r += delta``. An OFF spike fires if
    ``levels[t] <= r - delta``, and then ``r -= delta``.

    Args:
        levels: trajectories, shape ``(..., time, channels)``.
        delta: staircase step, positive.
        start: initial value of the staircase.

    Returns:
        ``(on, off)``: boolean spikes, each of the shape of ``levels``.

    Raises:
        DefusalError: ``delta`` is not positive.
    """
    if not delta > 0:
        raise DefusalError(f"delta must be positive, got {delta}")
    on = np.zeros(levels.shape, dtype=bool)
    off = np.zeros(levels.shape, dtype=bool)
    staircase = np.full(levels[..., 0, :].shape, float(start))
    for step in range(levels.shape[-2]):
        current = levels[..., step, :]
        rising = current >= staircase + delta
        falling = current <= staircase - delta
        on[..., step, :] = rising
        off[..., step, :] = falling
        staircase += delta * (rising.astype(np.float64) - falling)
    return on, off


def read_wav(source: str | os.PathLike | BinaryIO) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV file, averaging channels to mono.

    Returns:
        ``(samples, sample_rate)``: float64 samples in ``[-1, 1)`` and the rate in Hz.

    Raises:
        DataCorruptError: the file is not 16-bit PCM WAV.
    """
    try:
        with wave.open(source if not isinstance(source, os.PathLike) else str(source)) as reader:
            width = reader.getsampwidth()
            channels = reader.getnchannels()
            rate = reader.getframerate()
            raw = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as error:
        raise DataCorruptError(f"cannot read WAV {source!r} ({error})") from None
    if width != 2:
        raise DataCorruptError(f"WAV {source!r} has {8 * width}-bit samples; expected 16-bit")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1), rate


def read_fsdd(
    path: str | os.PathLike, *, max_files: int | None = None
) -> list[tuple[str, int, str, int, np.ndarray]]:
    """Read FSDD recordings from its tar archive, in archive order.

    Args:
        path: ``fsdd_recordings.tar.xz``.
        max_files: stop after this many recordings.

    Returns:
        One ``(file name, digit, speaker, take, samples)`` per recording, samples float64 at
        8 kHz.

    Raises:
        DataCorruptError: the archive cannot be read or a recording is not 8 kHz.
    """
    recordings = []
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = _FILE_NAME.match(member.name)
                if not member.isfile() or match is None:
                    continue
                data = archive.extractfile(member).read()
                samples, rate = read_wav(io.BytesIO(data))
                if rate != SAMPLE_RATE:
                    raise DataCorruptError(
                        f"{path}: {member.name} is sampled at {rate} Hz, expected {SAMPLE_RATE}"
                    )
                name = member.name.rsplit("/", 1)[-1]
                digit, speaker, take = int(match[1]), match[2], int(match[3])
                recordings.append((name, digit, speaker, take, samples))
                if max_files is not None and len(recordings) >= max_files:
                    break
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataCorruptError(f"cannot read FSDD archive {path} ({error})") from None
    if not recordings:
        raise DataCorruptError(
            f"{path} contains no recordings named digit_speaker_take.wav; fetch it again"
        )
    return recordings


def encode_fsdd(
    recordings: list[tuple[str, int, str, int, np.ndarray]],
    *,
    steps: int,
    hop: int,
    n_mels: int,
    delta: float,
    dynamic_range: float,
    polarity: str,
) -> np.ndarray:
    """Turn recordings into spike trains, ``uint8 (recordings, steps, channels)``."""
    filterbank, _ = mel_filterbank(n_mels)
    levels = np.stack(
        [
            log_mel_envelope(samples, filterbank, hop=hop, steps=steps, dynamic_range=dynamic_range)
            for *_, samples in recordings
        ]
    )
    on, off = delta_modulate(levels, delta=delta, start=-dynamic_range)
    spikes = np.concatenate([on, off], axis=-1) if polarity == "both" else on
    return spikes.astype(np.uint8)


def load_fsdd(
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    steps: int | None = None,
    hop: int | None = None,
    n_mels: int = 64,
    delta: float = 3.0,
    dynamic_range: float = 60.0,
    polarity: str = "both",
    valid_fraction: float = 0.1,
    max_files: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Task:
    """Build the spoken-digit spike task from FSDD (see the module docstring for the encoding).

    The spike trains are cached by settings (see :func:`defusal.tasks.base.cached`); building
    them for all 3,000 recordings takes a few seconds.

    Args:
        data_dir: data folder.
        size: ``"quick"`` (100 steps of 10 ms) or ``"full"`` (250 steps of 4 ms).
        seed: seed of the validation draw.
        steps: time steps ``T``, overriding the size's default.
        hop: frame step in samples at 8 kHz, overriding the size's default.
        n_mels: mel channels.
        delta: delta-modulation step in dB.
        dynamic_range: level range in dB below the clip's maximum.
        polarity: ``"both"`` (ON and OFF channels) or ``"on"``.
        valid_fraction: share of each speaker's training takes of each digit held out.
        max_files: read only the first recordings of the archive, for quick checks.
        cache_dir: folder of the spike cache.
        use_cache: read and write the cache.

    Returns:
        A task yielding ``x`` float32 ``(batch, T, channels)`` with 0/1 spikes and ``y`` long
        ``(batch,)``. ``example_names`` contains the file name of each example.

    Raises:
        DefusalError: an invalid option.
    """
    check_size(size)
    default_steps, default_hop = _SIZE_DEFAULTS[size]
    steps = check_positive_int("steps", steps if steps is not None else default_steps)
    hop = check_positive_int("hop", hop if hop is not None else default_hop)
    n_mels = check_positive_int("n_mels", n_mels)
    max_files = check_optional_limit("max_files", max_files)
    if polarity not in POLARITIES:
        raise DefusalError(f"unknown polarity {polarity!r}; use one of {', '.join(POLARITIES)}")
    if not (delta > 0 and dynamic_range > 0):
        raise DefusalError(
            f"delta and dynamic_range must be positive, got {delta}, {dynamic_range}"
        )
    settings = {
        "steps": steps,
        "hop": hop,
        "n_mels": n_mels,
        "delta": delta,
        "dynamic_range": dynamic_range,
        "polarity": polarity,
    }
    path = file_path("fsdd", "fsdd_recordings.tar.xz", data_dir)
    key = {**settings, "max_files": max_files, "source": source_signature(path), "version": 1}

    def build() -> dict[str, Any]:
        started = time.perf_counter()
        recordings = read_fsdd(path, max_files=max_files)
        spikes = encode_fsdd(recordings, **settings)
        logger.info(
            "encoded %d FSDD recordings in %.1f s", len(recordings), time.perf_counter() - started
        )
        return {
            "spikes": torch.from_numpy(spikes),
            "names": [item[0] for item in recordings],
            "digits": torch.tensor([item[1] for item in recordings]),
            "speakers": [item[2] for item in recordings],
            "takes": torch.tensor([item[3] for item in recordings]),
        }

    data = cached("fsdd", key, build, cache_dir=cache_dir, use_cache=use_cache)
    return _fsdd_task(data, settings, size=size, seed=seed, valid_fraction=valid_fraction)


def _fsdd_task(
    data: dict[str, Any], settings: dict[str, Any], *, size: str, seed: int, valid_fraction: float
) -> TensorTask:
    spikes, digits, takes = data["spikes"], data["digits"].numpy(), data["takes"].numpy()
    names = list(data["names"])
    speaker_ids = np.unique(data["speakers"], return_inverse=True)[1]

    is_test = np.isin(takes, TEST_TAKES)
    training = np.flatnonzero(~is_test)
    groups = speaker_ids[training] * DIGITS + digits[training]
    kept, held = stratified_holdout(groups, valid_fraction, seed)
    indices = {"train": training[kept], "valid": training[held], "test": np.flatnonzero(is_test)}

    return TensorTask(
        name="fsdd",
        kind="classification",
        input_size=int(spikes.shape[2]),
        output_size=DIGITS,
        sequence_length=int(spikes.shape[1]),
        inputs={split: spikes[torch.from_numpy(index)] for split, index in indices.items()},
        targets={split: torch.from_numpy(digits[index]).long() for split, index in indices.items()},
        example_names={split: [names[i] for i in index] for split, index in indices.items()},
        info={**settings, "size": size, "seed": seed, "valid_fraction": valid_fraction},
    )
