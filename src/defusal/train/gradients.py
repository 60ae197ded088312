"""Gradient norms per layer and gradient clipping."""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Group the trainable parameters of ``model`` by layer.

    A layer is the top-level child module that contains the parameter, and for a child that is a
    container indexed by numbers (``nn.ModuleList``, ``nn.Sequential``) the numbered entry. A
    :class:`~defusal.nets.base.RecurrentStack` therefore gives ``encoder``, ``cells.0``,
    ``cells.1``, ... and ``readout``, or ``readout.1`` when the readout is an ``nn.Sequential``
    whose entry 1 contains the weights. A parameter registered on ``model`` itself is its own group.

    Returns:
        Group name to parameters, in the order of ``model.named_parameters()``.
    """
    groups: dict[str, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        groups.setdefault(layer_name(name), []).append(parameter)
    return groups


_FUSED_LAYER = re.compile(r"^(?:weight|bias)_(?:ih|hh)_l(\d+)$")


def layer_name(parameter_name: str) -> str:
    """Return the layer of a dotted parameter name, as :func:`parameter_groups` defines it."""
    parts = parameter_name.split(".")
    fused_layer = _FUSED_LAYER.match(parts[-1]) if len(parts) == 2 else None
    if fused_layer:
        # A fused torch.nn.LSTM/GRU names layer l "weight_ih_l{l}"; report it as the stack does.
        return f"cells.{fused_layer.group(1)}"
    if len(parts) >= 3 and parts[1].isdigit():
        return ".".join(parts[:2])
    if len(parts) >= 2:
        return parts[0]
    return parameter_name


def group_norms(groups: dict[str, list[nn.Parameter]]) -> Tensor:
    """Return the L2 norm of the gradient of every group, shape ``(len(groups),)``.

    The norm of a group is ``sqrt(sum_p ||grad_p||^2)`` over its parameters. A parameter without
    a gradient counts as zero.
    """
    norms = []
    for parameters in groups.values():
        squares = [p.grad.detach().pow(2).sum() for p in parameters if p.grad is not None]
        if squares:
            norms.append(torch.stack(squares).sum().sqrt())
        else:
            norms.append(torch.zeros((), device=parameters[0].device))
    return torch.stack([norm.float().cpu() for norm in norms])


def clip_gradients(parameters: list[nn.Parameter], clip_norm: float | None) -> tuple[float, float]:
    """Clip the global gradient norm to ``clip_norm`` and return the norm before and after.

    Clipping uses ``torch.nn.utils.clip_grad_norm_``, which scales every gradient by
    ``clip_norm / (norm + 1e-6)`` when ``norm > clip_norm``. With ``clip_norm=None`` nothing is
    changed and both returned norms are the same.

    Returns:
        ``(raw_norm, clipped_norm)``, global L2 norms over all parameters.
    """
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return 0.0, 0.0
    if clip_norm is None:
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in with_grad]))
        return norm, norm
    raw = float(torch.nn.utils.clip_grad_norm_(with_grad, clip_norm))
    clipped = float(torch.nn.utils.get_total_norm([p.grad for p in with_grad]))
    return raw, clipped
