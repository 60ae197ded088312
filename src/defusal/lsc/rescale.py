"""Multiplicative rescaling of the kernels of a recurrent stack towards target radii.

Plain-mode LSC pre-training may follow every optimizer step with this step: each kernel is
multiplied by ``m = clip((rho* / rho)^eta, low, high)``, where ``rho`` is the batch-mean gain of
the edge the kernel drives in its own layer:

* the recurrent kernel (``weight_hh``, or any tensor a cell marks ``"recurrent"`` in its
  ``parameter_roles``) follows the layer's time edge;
* the input kernel (``weight_ih``, or a tensor marked ``"input"``) follows the layer's depth
  edge, or the encoder edge in layer 0;
* an ``nn.Linear`` readout follows the decoder edge.

Biases and gains of gates keep their values, so the forget-gate bias that sets the ``c -> c``
block of an LSTM time Jacobian is left to the gradient. Unlike the faithful rescaling, which
uses the batch mean of ``rho* / rho_b``, the ratio here is taken of the batch-mean gain, so
one sample with a near-zero gain cannot push the multiplier to its upper clip.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from defusal.lsc.faithful import parameter_side

CLIP_RANGE = (0.85, 1.15)


def _edge_of(side: str, layer: int) -> tuple[str, int]:
    if side == "recurrent":
        return "time", layer
    return ("encoder", 0) if layer == 0 else ("depth", layer)


@torch.no_grad()
def rescale_to_targets_(
    stack: nn.Module,
    gains: dict[tuple[str, int], float],
    targets: dict[str, float],
    *,
    exponent: float = 0.5,
    clip: tuple[float, float] = CLIP_RANGE,
) -> dict[tuple[str, int], float]:
    """Multiply each kernel by the clipped factor of the edge it drives (see module doc).

    Args:
        stack: a recurrent stack (``cells``, optional ``readout``).
        gains: batch-mean gain per ``(edge, layer)``.
        targets: target gain per edge type.
        exponent: ``eta``; 1 assumes the gain is proportional to the kernel scale, smaller
            values damp the step where gates saturate.
        clip: range of the applied multipliers.

    Returns:
        The applied multiplier per ``(edge, layer)``.
    """
    factors: dict[tuple[str, int], float] = {}
    for key, value in gains.items():
        if value > 0 and math.isfinite(value):
            ratio = (targets[key[0]] / value) ** exponent
            factors[key] = min(max(ratio, clip[0]), clip[1])
    for layer, cell in enumerate(stack.cells):
        for name, parameter in cell.named_parameters():
            side = parameter_side(cell, name)
            if side is None or parameter.dim() < 2:
                continue
            factor = factors.get(_edge_of(side, layer))
            if factor is not None:
                parameter.mul_(factor)
    readout = getattr(stack, "readout", None)
    factor = factors.get(("decoder", len(stack.cells) - 1))
    if isinstance(readout, nn.Linear) and factor is not None:
        readout.weight.mul_(factor)
    return factors
