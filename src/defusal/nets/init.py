"""Weight initialization schemes for the networks of :mod:`defusal.nets`, applied in place.

Every weight is classified as a cell *input kernel*, a cell *recurrent kernel*, a cell *bias*,
a plain kernel (``nn.Linear``, ``nn.Embedding``) or a plain bias. Cells declare the role of each
tensor in ``parameter_roles`` and the number of stacked gate blocks in ``num_gates``. The fused
``torch.nn.LSTM``, ``GRU`` and ``RNN`` modules are recognized by their parameter names. Tensors of
other modules (LayerNorm, the structured LRU parameters ``nu_log``, ``B_re``, ...) are left as
they are, since they have their own initialization.

Schemes:

- ``"default"``: leave the weights as constructed (PyTorch defaults, Glorot for ALIF, the ring
  initialization for LRU).
- ``"glorot"``: Xavier (Glorot) kernels, variance ``2 / (fan_in + fan_out)``, zero biases.
- ``"he"``: Kaiming (He) kernels for ReLU, variance ``2 / fan_in``, zero biases. Embeddings get
  Glorot.
- ``"orthogonal"``: every gate block of a recurrent kernel orthogonal, square plain kernels
  orthogonal, other kernels Glorot, zero biases.
- ``"identity"`` (IRNN, Le et al. 2015): every gate block of a recurrent kernel the identity,
  cell input kernels ``N(0, input_std^2)``, plain kernels Glorot, zero biases.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.nets.cells import LSTMCell

INIT_SCHEMES = ("default", "glorot", "he", "orthogonal", "identity")
DISTRIBUTIONS = ("uniform", "normal")

_TORCH_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _glorot_(weight: Tensor, distribution: str) -> None:
    if distribution == "uniform":
        nn.init.xavier_uniform_(weight)
    else:
        nn.init.xavier_normal_(weight)


def _he_(weight: Tensor, distribution: str) -> None:
    if distribution == "uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity="relu")
    else:
        nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _per_gate_(weight: Tensor, num_gates: int, fill) -> None:
    """Apply ``fill`` to each of the ``num_gates`` row blocks of ``weight`` separately."""
    with torch.no_grad():
        for block in weight.chunk(num_gates, dim=0):
            fill(block)


def _init_kernel_(weight: Tensor, scheme: str, distribution: str) -> None:
    """Initialize a plain kernel (Linear, Embedding)."""
    if scheme == "he":
        _he_(weight, distribution)
    elif scheme == "orthogonal" and weight.shape[0] == weight.shape[1]:
        nn.init.orthogonal_(weight)
    else:
        _glorot_(weight, distribution)


def _init_cell_tensor_(
    tensor: Tensor,
    role: str,
    num_gates: int,
    scheme: str,
    distribution: str,
    input_std: float,
) -> None:
    """Initialize one tensor of a cell given its role: input, recurrent or bias."""
    if role == "bias":
        nn.init.zeros_(tensor)
    elif role == "recurrent" and scheme == "orthogonal":
        _per_gate_(tensor, num_gates, nn.init.orthogonal_)
    elif role == "recurrent" and scheme == "identity":
        _per_gate_(tensor, num_gates, nn.init.eye_)
    elif role == "input" and scheme == "identity":
        nn.init.normal_(tensor, 0.0, input_std)
    elif scheme == "he":
        _he_(tensor, distribution)
    else:
        _glorot_(tensor, distribution)


def _cell_tensors(module: nn.Module) -> list[tuple[str, Tensor, str, int]]:
    """Return ``(name, tensor, role, num_gates)`` for the classified tensors of a cell."""
    if isinstance(module, nn.RNNBase):
        num_gates = _TORCH_GATES[module.mode]
        tensors = []
        for name, tensor in module.named_parameters(recurse=False):
            if name.startswith("weight_ih"):
                role = "input"
            elif name.startswith("weight_hh"):
                role = "recurrent"
            elif name.startswith("bias"):
                role = "bias"
            else:
                continue
            tensors.append((name, tensor, role, num_gates))
        return tensors
    roles = getattr(module, "parameter_roles", None)
    if roles is None:
        return []
    num_gates = getattr(module, "num_gates", 1)
    return [(name, getattr(module, name), role, num_gates) for name, role in roles.items()]


def _is_lstm(module: nn.Module) -> bool:
    return isinstance(module, LSTMCell) or (
        isinstance(module, nn.RNNBase) and module.mode == "LSTM"
    )


def initialize_(
    model: nn.Module,
    scheme: str,
    *,
    distribution: str = "uniform",
    input_std: float = 1e-3,
    forget_bias: float = 0.0,
) -> nn.Module:
    """Initialize the weights of ``model`` in place with a named scheme (see the module docstring).

    Args:
        model: any module; its cells, fused RNNs, Linear and Embedding layers are initialized.
        scheme: one of :data:`INIT_SCHEMES`.
        distribution: ``"uniform"`` or ``"normal"`` draws for the Glorot and He kernels.
        input_std: standard deviation of the cell input kernels in the ``"identity"`` scheme.
        forget_bias: value of the LSTM forget-gate input bias (``bias_ih`` rows ``H:2H``) in
            every scheme but ``"default"``; 1.0 reproduces the Keras ``unit_forget_bias``.

    Returns:
        ``model``, for chaining.

    Raises:
        DefusalError: for an unknown scheme or distribution.
    """
    if scheme not in INIT_SCHEMES:
        raise DefusalError(
            f"unknown initialization {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}"
        )
    if distribution not in DISTRIBUTIONS:
        raise DefusalError(
            f"unknown distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}"
        )
    if scheme == "default":
        return model

    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            for name, tensor, role, num_gates in _cell_tensors(module):
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                _init_cell_tensor_(tensor, role, num_gates, scheme, distribution, input_std)
                if _is_lstm(module) and name.startswith("bias_ih"):
                    tensor.chunk(4)[1].fill_(forget_bias)

            if isinstance(module, nn.Linear | nn.Embedding):
                if id(module.weight) not in seen:
                    seen.add(id(module.weight))
                    kernel_scheme = "glorot" if isinstance(module, nn.Embedding) else scheme
                    _init_kernel_(module.weight, kernel_scheme, distribution)
                bias = getattr(module, "bias", None)
                if bias is not None and id(bias) not in seen:
                    seen.add(id(bias))
                    nn.init.zeros_(bias)
    return model
