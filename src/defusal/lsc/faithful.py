"""Non-gradient steps of LSC pre-training: clipped rescaling and weight shuffling.

After each optimizer step the faithful mode rescales each weight tensor by
``m = clip(mean_b(rho* / rho_b), 0.85, 1.15)``, where ``rho_b`` is the per-sample gain of the
edge the tensor drives in its own layer:

* recurrent-side tensors (``weight_hh``, ``recurrent_weights``, ALIF time constants, the LRU
  log-decay ``nu_log``) use the layer's time edge;
* input-side tensors (``weight_ih``, ``input_weights``, ALIF ``thr`` and ``beta``, LRU ``B`` and
  ``C``, GLU kernels) use the layer's depth edge, or the encoder edge for layer 0;
* GRU and simple-RNN input kernels keep ``m = 1``: the original name rules match the LSTM
  input kernel but not theirs;
* the readout kernel and an embedding use ``m = clip(1 / (std(W) sqrt(fan)), 0.85, 1.15)``,
  which drives ``Var(W)`` towards ``1 / fan``. The fan is the readout's fan-in or the
  embedding width. The decoder radius enters the loss but never sets this multiplier.

Biases and every other tensor keep ``m = 1``. With probability about 1/3 per step, every tensor
with at least two dimensions then has its entries randomly permuted, which keeps each tensor's
value distribution and drops its structure.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

RECURRENT_NAMES = (
    "weight_hh",
    "recurrent_weights",
    "recurrent_kernel",
    "tau_m",
    "tau_adapt",
    "nu_log",
)
INPUT_NAMES = (
    "weight_ih",
    "input_weights",
    "kernel",
    "thr",
    "beta",
    "B_re",
    "B_im",
    "C_re",
    "C_im",
)
CLIP_RANGE = (0.85, 1.15)
# Cells whose input kernel the original rescaling leaves alone (its name rules miss them).
UNSCALED_INPUT_CELLS = ("GRUCell", "SimpleRNNCell")
SHUFFLE_PROBABILITY = 1.0 / 3.0


def parameter_side(module: nn.Module, name: str) -> str | None:
    """Return ``"recurrent"``, ``"input"`` or ``None`` for the parameter ``name`` of a cell.

    A module's ``parameter_roles`` dict (local name -> ``"input"``/``"recurrent"``) wins over the
    name rules of this module.
    """
    owner_path, _, local = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    roles = getattr(owner, "parameter_roles", None) or {}
    role = roles.get(local)
    if role in ("input", "recurrent"):
        return role
    if local in RECURRENT_NAMES:
        return "recurrent"
    if local in INPUT_NAMES:
        return "input"
    if local == "weight" and ".glu." in f".{owner_path}.":
        return "input"
    return None


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@torch.no_grad()
def rescale_(
    stack: nn.Module,
    factors: dict[tuple[str, int], float],
    clip: tuple[float, float] = CLIP_RANGE,
) -> None:
    """Multiply each cell tensor by the clipped factor of the edge it drives (see module doc).

    Args:
        stack: a recurrent stack (``cells``, ``encoder``, ``readout``).
        factors: ``mean_b(rho* / rho_b)`` per ``(edge, layer)``.
        clip: the range of the applied multipliers.
    """
    for layer, cell in enumerate(stack.cells):
        for name, parameter in cell.named_parameters():
            side = parameter_side(cell, name)
            if side == "recurrent":
                key = ("time", layer)
            elif side == "input" and type(cell).__name__ in UNSCALED_INPUT_CELLS:
                continue
            elif side == "input":
                key = ("encoder", 0) if layer == 0 else ("depth", layer)
            else:
                continue
            factor = factors.get(key)
            if factor is not None and math.isfinite(factor):
                parameter.mul_(_clip(factor, *clip))
    readout = getattr(stack, "readout", None)
    if isinstance(readout, nn.Linear):
        _variance_rescale_(readout.weight, readout.weight.shape[1], clip)
    encoder = getattr(stack, "encoder", None)
    if isinstance(encoder, nn.Embedding):
        _variance_rescale_(encoder.weight, encoder.weight.shape[1], clip)


def _variance_rescale_(weight: Tensor, fan: int, clip: tuple[float, float]) -> None:
    spread = float(weight.std()) * math.sqrt(fan)
    if spread > 0 and math.isfinite(spread):
        weight.mul_(_clip(1.0 / spread, *clip))


@torch.no_grad()
def shuffle_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Randomly permute the entries of every parameter with at least two dimensions."""
    for parameter in module.parameters():
        if parameter.dim() >= 2:
            order = torch.randperm(parameter.numel(), generator=generator).to(parameter.device)
            parameter.copy_(parameter.flatten()[order].view_as(parameter))


@torch.no_grad()
def shuffle_all_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Randomly permute the entries of every parameter, vectors included."""
    for parameter in module.parameters():
        order = torch.randperm(parameter.numel(), generator=generator).to(parameter.device)
        parameter.copy_(parameter.flatten()[order].view_as(parameter))
