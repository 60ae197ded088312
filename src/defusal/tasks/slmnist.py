r"""Spike-latency MNIST (sl-MNIST): each pixel becomes at most one spike, brighter ones earlier.

A pixel of intensity :math:`x \in [0, 1]` spikes after

.. math::  t(x) = \tau \ln \frac{x}{x - \theta} \quad (x > \theta), \qquad
           t(x) = \infty \quad (x \le \theta),

in reference time units: the time a leaky integrator with time constant :math:`\tau`, driven
by a constant input :math:`x` from rest, takes to reach the threshold :math:`\theta`. The
defaults :math:`\tau = 500`, :math:`\theta = 0.004` and a window of 100 units give
``500 ln(50x / (50x - 0.2))`` with spikes later than 100 units dropped, the sl-MNIST encoding
of the LSC experiments. The window is cut into ``steps`` equal bins: a spike at latency ``t``
falls in bin ``floor(t * steps / window)``. Because ``t(x)`` decreases with ``x``, a brighter
pixel never spikes in a later bin than a dimmer one. A full-intensity pixel spikes at
``t = 2.004``, and pixels dimmer than about 0.022 never spike within the window.

Pixels can be grouped into input channels to keep the input small:

- ``"pixels"``: one channel per pixel (784), binary spikes.
- ``"pool2"`` / ``"pool4"``: the image is first average-pooled over 2 x 2 or 4 x 4 blocks
  (196 or 49 channels), then each pooled pixel is encoded as a binary spike.
- ``"rows"``: one channel per image row (28); the input counts the spikes of that row's
  pixels in each bin (0 to 28).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from defusal.errors import DefusalError
from defusal.tasks.base import Task, TensorTask, check_positive_int, check_size
from defusal.tasks.mnist import IMAGE_SIDE, MNIST_CLASSES, load_mnist_splits

CHANNEL_MODES = ("pixels", "pool2", "pool4", "rows")
LAYOUTS = ("transpose", "reshape")

# (steps, channels) of each size: the quick size is small enough to train on a CPU.
_SIZE_DEFAULTS = {"quick": (50, "pool4"), "full": (100, "pixels")}


def spike_latency(
    intensity: np.ndarray | Tensor, *, tau: float = 500.0, theta: float = 0.004
) -> np.ndarray:
    r"""Return the spike latency :math:`\tau \ln(x / (x - \theta))` of each intensity.

    Args:
        intensity: pixel intensities in ``[0, 1]``, any shape.
        tau: time constant, in reference time units.
        theta: threshold; intensities ``<= theta`` never spike.

    Returns:
        float64 latencies of the same shape, ``inf`` where no spike occurs.
    """
    x = np.asarray(intensity, dtype=np.float64)
    latency = np.full(x.shape, np.inf)
    spiking = x > theta
    latency[spiking] = tau * np.log(x[spiking] / (x[spiking] - theta))
    return latency


def latency_bins(latency: np.ndarray, *, steps: int, window: float = 100.0) -> np.ndarray:
    """Return the time bin ``floor(latency * steps / window)`` of each spike, or -1 for none.

    Args:
        latency: spike latencies in reference time units (``inf`` for no spike).
        steps: number of bins covering ``[0, window)``.
        window: latencies at or beyond it are dropped.

    Returns:
        int16 bins in ``[0, steps)``, -1 where the latency is outside the window.
    """
    bins = np.full(latency.shape, -1, dtype=np.int16)
    inside = latency < window
    bins[inside] = np.floor(latency[inside] * steps / window).astype(np.int16)
    # Rounding can put a latency just below the window into bin `steps`.
    bins[bins >= steps] = -1
    return bins


def pool_images(images: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Average-pool images and assign each (pooled) pixel to an input channel.

    Args:
        images: intensities in ``[0, 1]``, shape ``(examples, 28, 28)``.
        mode: one of :data:`CHANNEL_MODES`.

    Returns:
        ``(pixels, channel)``: intensities ``(examples, pixels)`` and the channel index of each
        pixel, ``(pixels,)``.
    """
    count = images.shape[0]
    if mode in ("pixels", "rows"):
        pixels = images.reshape(count, -1)
        if mode == "pixels":
            channel = np.arange(IMAGE_SIDE * IMAGE_SIDE)
        else:
            channel = np.repeat(np.arange(IMAGE_SIDE), IMAGE_SIDE)
        return pixels, channel

    block = {"pool2": 2, "pool4": 4}[mode]
    side = IMAGE_SIDE // block
    pooled = images.reshape(count, side, block, side, block).mean(axis=(2, 4))
    return pooled.reshape(count, -1), np.arange(side * side)


def encode_images(
    images: np.ndarray,
    *,
    steps: int,
    channels: str = "pixels",
    tau: float = 500.0,
    theta: float = 0.004,
    window: float = 100.0,
) -> tuple[Tensor, Tensor]:
    """Encode MNIST images as spike bins, the compact form that :func:`spike_trains` expands.

    Args:
        images: ``uint8`` pixels 0-255, shape ``(examples, 28, 28)``.
        steps: number of time bins.
        channels: one of :data:`CHANNEL_MODES`.
        tau: latency time constant, in reference units.
        theta: intensity threshold below which a pixel never spikes.
        window: latency window cut into ``steps`` bins, in reference units.

    Returns:
        ``(bins, channel)``: int16 spike bin of each (pooled) pixel, -1 for none,
        ``(examples, pixels)``, and the input channel of each pixel, long ``(pixels,)``.
    """
    pixels, channel = pool_images(np.asarray(images, dtype=np.float64) / 255.0, channels)
    latency = spike_latency(pixels, tau=tau, theta=theta)
    bins = latency_bins(latency, steps=steps, window=window)
    return torch.from_numpy(bins), torch.from_numpy(channel).long()


def spike_trains(
    bins: Tensor,
    channel: Tensor,
    *,
    steps: int,
    channels: int,
    layout: str = "transpose",
    time_repeat: int = 1,
) -> Tensor:
    """Build the spike input of a batch from its spike bins.

    Args:
        bins: spike bin of each pixel, -1 for none, shape ``(batch, pixels)``.
        channel: input channel of each pixel, shape ``(pixels,)``.
        steps: number of time bins ``T``.
        channels: number of input channels ``C``.
        layout: ``"transpose"`` gives ``x[b, t, c]`` = spikes of channel ``c`` in bin ``t``.
            ``"reshape"`` lays out the ``(batch, C, T)`` spike tensor in memory and reads it as
            ``(batch, T, C)``, as the reference sl-MNIST generator does. Its time axis is a
            fixed scramble of the latency code.
        time_repeat: repeat each time step this many times.

    Returns:
        float32 spike counts, shape ``(batch, steps * time_repeat, channels)``.
    """
    batch = bins.shape[0]
    x = torch.zeros(batch, steps, channels)
    example, pixel = (bins >= 0).nonzero(as_tuple=True)
    time = bins[example, pixel].long()
    x.index_put_((example, time, channel[pixel]), torch.ones(len(example)), accumulate=True)
    if layout == "reshape":
        x = x.transpose(1, 2).contiguous().reshape(batch, steps, channels)
    if time_repeat > 1:
        x = x.repeat_interleave(time_repeat, dim=1)
    return x


def load_slmnist(
    *,
    data_dir: str | os.PathLike | None = None,
    size: str = "quick",
    seed: int = 0,
    steps: int | None = None,
    channels: str | None = None,
    tau: float = 500.0,
    theta: float = 0.004,
    window: float = 100.0,
    time_repeat: int = 1,
    layout: str = "transpose",
    valid_fraction: float = 0.1,
    max_examples: int | None = None,
) -> Task:
    """Build the spike-latency MNIST task.

    Defaults per size: quick is ``steps=50`` over 49 channels (``"pool4"``), which keeps an
    RNN on a CPU fast. Full is ``steps=100`` over 784 channels (``"pixels"``), the reference
    encoding except for ``time_repeat`` (2 in the reference). Training images are the 5,000
    CSV images less a class-stratified ``valid_fraction`` (drawn with ``seed``); the test set is
    the official 10,000 images. Spike bins are stored as int16 and expanded per batch.

    Args:
        data_dir: data folder.
        size: ``"quick"`` or ``"full"``.
        seed: seed of the validation draw.
        steps: number of time bins, overriding the size's default.
        channels: one of :data:`CHANNEL_MODES`, overriding the size's default.
        tau: latency time constant, in reference units.
        theta: intensity threshold below which a pixel never spikes.
        window: latency window cut into ``steps`` bins, in reference units.
        time_repeat: repeat each time step this many times (``T = steps * time_repeat``).
        layout: ``"transpose"`` or ``"reshape"`` (see :func:`spike_trains`).
        valid_fraction: share of each class held out for validation.
        max_examples: keep at most this many examples of each split.

    Returns:
        A task yielding ``x`` float32 ``(batch, T, channels)`` and ``y`` long ``(batch,)``.

    Raises:
        DefusalError: an invalid option.
    """
    check_size(size)
    default_steps, default_channels = _SIZE_DEFAULTS[size]
    steps = check_positive_int("steps", steps if steps is not None else default_steps)
    time_repeat = check_positive_int("time_repeat", time_repeat)
    channels = channels if channels is not None else default_channels
    if channels not in CHANNEL_MODES:
        raise DefusalError(f"unknown channels {channels!r}; use one of {', '.join(CHANNEL_MODES)}")
    if layout not in LAYOUTS:
        raise DefusalError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if not (tau > 0 and theta > 0 and window > 0):
        raise DefusalError(f"tau, theta and window must be positive, got {tau}, {theta}, {window}")

    splits = load_mnist_splits(
        data_dir, seed=seed, valid_fraction=valid_fraction, max_examples=max_examples
    )
    inputs, targets = {}, {}
    for name, (images, labels) in splits.items():
        inputs[name], channel = encode_images(
            images, steps=steps, channels=channels, tau=tau, theta=theta, window=window
        )
        targets[name] = torch.from_numpy(labels.astype(np.int64))
    channel_count = int(channel.max()) + 1

    def expand(bins: Tensor) -> Tensor:
        return spike_trains(
            bins,
            channel,
            steps=steps,
            channels=channel_count,
            layout=layout,
            time_repeat=time_repeat,
        )

    return TensorTask(
        name="slmnist",
        kind="classification",
        input_size=channel_count,
        output_size=MNIST_CLASSES,
        sequence_length=steps * time_repeat,
        inputs=inputs,
        targets=targets,
        transform=expand,
        info={
            "size": size,
            "seed": seed,
            "steps": steps,
            "channels": channels,
            "tau": tau,
            "theta": theta,
            "window": window,
            "time_repeat": time_repeat,
            "layout": layout,
            "valid_fraction": valid_fraction,
        },
    )
