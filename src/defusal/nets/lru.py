"""Linear recurrent units (LRU) and the residual LRU block, with a parallel scan over time.

The LRU of Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences" (ICML
2023), is a complex diagonal linear recurrence::

    x_{t+1} = lambda * x_t + gamma * (B u_t)        lambda = exp(-exp(nu_log) + i exp(theta_log))
    y_t     = Re(C x_{t+1}) + D * u_t               gamma  = exp(gamma_log)

with ``x`` complex of size ``H``, stored as the real state ``[Re x; Im x]`` of size ``2H``. The
time Jacobian of that state is the block matrix ``[[diag Re lambda, -diag Im lambda],
[diag Im lambda, diag Re lambda]]``, whose eigenvalues are ``lambda`` and its conjugate, so its
spectral radius is ``max |lambda|``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from defusal.errors import DefusalError
from defusal.nets.base import Cell, RecurrentStack

# Smallest phase drawn at initialization, so that theta_log = log(theta) is finite.
_MIN_PHASE = 1e-6


def _half_glorot_uniform_(weight: Tensor) -> Tensor:
    """Fill ``weight`` from U(-l, l) with variance ``1 / (fan_in + fan_out)``, half of Glorot."""
    fan_out, fan_in = weight.shape
    limit = math.sqrt(3.0 / (fan_in + fan_out))
    return nn.init.uniform_(weight, -limit, limit)


def lru_parallel_scan(lam: Tensor, bu: Tensor, initial: Tensor | None = None) -> Tensor:
    """Return every state of the linear recurrence ``x_t = lam_t * x_{t-1} + bu_t``.

    The recurrence is an associative scan over pairs ``(a, b)`` with the composition
    ``(a1, b1) then (a2, b2) = (a1 * a2, a2 * b1 + b2)``. The Hillis-Steele doubling used here
    takes ``ceil(log2 T)`` sequential steps of ``O(T)`` parallel work each.

    Args:
        lam: the diagonal recurrence, complex or real, ``(H,)`` or ``(batch, time, H)``.
        bu: the driving input, ``(batch, time, H)``, same kind (complex or real) as ``lam``.
        initial: optional ``x_{-1}``, ``(batch, H)``; zero when omitted.

    Returns:
        ``(batch, time, H)``: ``x_0 .. x_{T-1}``.
    """
    if bu.dim() != 3:
        raise DefusalError(
            f"lru_parallel_scan expects bu of shape (batch, time, H), got {tuple(bu.shape)}"
        )
    a = lam.expand_as(bu)
    b = bu
    if initial is not None:
        b = torch.cat([(a[:, :1] * initial.unsqueeze(1) + b[:, :1]), b[:, 1:]], dim=1)

    length = bu.shape[1]
    offset = 1
    while offset < length:
        # After this step, element t is the composition of elements max(0, t - 2 offset + 1) .. t.
        b = torch.cat([b[:, :offset], a[:, offset:] * b[:, :-offset] + b[:, offset:]], dim=1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], dim=1)
        offset *= 2
    return b


class LRUCell(Cell):
    """A linear recurrent unit (equations in the module docstring), one step at a time.

    State ``[Re x; Im x]`` of size ``2 * hidden_size``; output ``y`` of size ``input_size``.

    Initialization: ``|lambda|`` is drawn uniformly on the ring ``r_min <= |lambda| <= r_max``
    (``|lambda|^2`` uniform on ``[r_min^2, r_max^2]``), phases uniformly on ``[0, max_phase]``,
    ``gamma = sqrt(1 - |lambda|^2)``. ``B`` and ``C`` (real and imaginary parts) are uniform with
    variance ``1 / (fan_in + fan_out)`` and ``D ~ N(0, 1)``.

    Parameters: ``nu_log``, ``theta_log``, ``gamma_log`` ``(H,)``; ``B_re``, ``B_im``
    ``(H, input_size)``; ``C_re``, ``C_im`` ``(input_size, H)``; ``D`` ``(input_size,)``.

    Args:
        input_size: features of ``u_t``, also the output size.
        hidden_size: complex states ``H``.
        r_min: smallest initial ``|lambda|``, in ``[0, 1)``.
        r_max: largest initial ``|lambda|``, in ``(r_min, 1)``.
        max_phase: largest initial phase of ``lambda``, in radians.

    Raises:
        DefusalError: for a ring outside ``0 <= r_min < r_max < 1`` or a non-positive phase.
    """

    parameter_roles: dict[str, str] = {}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        r_min: float = 0.4,
        r_max: float = 0.99,
        max_phase: float = math.pi / 10,
    ) -> None:
        super().__init__(input_size, 2 * int(hidden_size), input_size)
        if not 0.0 <= r_min < r_max < 1.0:
            raise DefusalError(
                f"LRU ring r_min={r_min}, r_max={r_max} is invalid; use 0 <= r_min < r_max < 1"
            )
        if not max_phase > 0:
            raise DefusalError(f"LRU max_phase must be positive, got {max_phase}")
        self.hidden_size = int(hidden_size)
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)

        self.nu_log = nn.Parameter(torch.empty(self.hidden_size))
        self.theta_log = nn.Parameter(torch.empty(self.hidden_size))
        self.gamma_log = nn.Parameter(torch.empty(self.hidden_size))
        self.B_re = nn.Parameter(torch.empty(self.hidden_size, self.input_size))
        self.B_im = nn.Parameter(torch.empty(self.hidden_size, self.input_size))
        self.C_re = nn.Parameter(torch.empty(self.input_size, self.hidden_size))
        self.C_im = nn.Parameter(torch.empty(self.input_size, self.hidden_size))
        self.D = nn.Parameter(torch.empty(self.input_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the ring initialization of ``lambda`` and fresh ``B``, ``C``, ``D``."""
        with torch.no_grad():
            u1 = torch.rand(self.hidden_size)
            modulus = torch.sqrt(u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2)
            phase = (torch.rand(self.hidden_size) * self.max_phase).clamp_min(_MIN_PHASE)
            self.nu_log.copy_(torch.log(-torch.log(modulus)))
            self.theta_log.copy_(torch.log(phase))
            self.gamma_log.copy_(torch.log(torch.sqrt(1.0 - modulus**2)))
        for weight in (self.B_re, self.B_im, self.C_re, self.C_im):
            _half_glorot_uniform_(weight)
        nn.init.normal_(self.D)

    def eigenvalues(self) -> tuple[Tensor, Tensor]:
        """Return ``(Re lambda, Im lambda)``, each ``(H,)``."""
        modulus = torch.exp(-torch.exp(self.nu_log))
        phase = torch.exp(self.theta_log)
        return modulus * torch.cos(phase), modulus * torch.sin(phase)

    def complex_eigenvalues(self) -> Tensor:
        """Return ``lambda`` as a complex tensor ``(H,)``."""
        return torch.complex(*self.eigenvalues())

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        real, imag = state.split(self.hidden_size, dim=-1)
        lam_re, lam_im = self.eigenvalues()
        gamma = torch.exp(self.gamma_log)
        drive_re = gamma * nn.functional.linear(x_t, self.B_re)
        drive_im = gamma * nn.functional.linear(x_t, self.B_im)
        new_real = lam_re * real - lam_im * imag + drive_re
        new_imag = lam_im * real + lam_re * imag + drive_im
        return torch.cat([new_real, new_imag], dim=-1)

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        real, imag = new_state.split(self.hidden_size, dim=-1)
        return (
            nn.functional.linear(real, self.C_re)
            - nn.functional.linear(imag, self.C_im)
            + self.D * x_t
        )

    def forward_sequence(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the whole sequence with :func:`lru_parallel_scan`.

        Args:
            u: ``(batch, time, input_size)``.
            state: optional initial state ``(batch, 2H)``; zero when omitted.

        Returns:
            ``(y, final_state)``: ``y`` ``(batch, time, input_size)``, ``final_state``
            ``(batch, 2H)``, the same as stepping :meth:`forward` over time.
        """
        lam = self.complex_eigenvalues()
        gamma = torch.exp(self.gamma_log)
        bu = torch.complex(
            gamma * nn.functional.linear(u, self.B_re), gamma * nn.functional.linear(u, self.B_im)
        )
        initial = None
        if state is not None:
            real, imag = state.split(self.hidden_size, dim=-1)
            initial = torch.complex(real, imag)
        states = lru_parallel_scan(lam, bu, initial)
        y = (
            nn.functional.linear(states.real, self.C_re)
            - nn.functional.linear(states.imag, self.C_im)
            + self.D * u
        )
        final = torch.cat([states.real[:, -1], states.imag[:, -1]], dim=-1)
        return y, final

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, r_min={self.r_min}, r_max={self.r_max}, "
            f"max_phase={self.max_phase:.4g}"
        )


class GLU(nn.Module):
    """Gated linear unit ``sigmoid(W1 y + b1) * (W3 y + b3)``, width to width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gate = nn.Linear(width, width)
        self.value = nn.Linear(width, width)

    def forward(self, y: Tensor) -> Tensor:
        return torch.sigmoid(self.gate(y)) * self.value(y)


class ResidualLRUCell(Cell):
    """The residual LRU block, as a cell::

        u   = adapter(x_t)                      (a Linear map if input_size != width, else x_t)
        s'  = LRU.transition(LayerNorm(u), s)
        y_t = u + dropout(GLU(dropout(GELU(LRU.output(LayerNorm(u), s')))))

    State ``[Re x; Im x]`` of the LRU, size ``2 * lru_size``; output ``y_t`` of size ``width``.
    The output depends on ``x_t`` through the residual path and the LRU's ``D`` term.

    Args:
        input_size: features of ``x_t``.
        width: model width ``w``, the output size.
        lru_size: complex LRU states; ``2 * width`` when omitted.
        dropout: dropout probability after GELU and after the GLU.
        r_min, r_max, max_phase: ring initialization of the LRU (see :class:`LRUCell`).
    """

    parameter_roles: dict[str, str] = {}

    def __init__(
        self,
        input_size: int,
        width: int,
        *,
        lru_size: int | None = None,
        dropout: float = 0.1,
        r_min: float = 0.4,
        r_max: float = 0.99,
        max_phase: float = math.pi / 10,
    ) -> None:
        lru_size = 2 * int(width) if lru_size is None else int(lru_size)
        super().__init__(input_size, 2 * lru_size, width)
        if not 0.0 <= dropout < 1.0:
            raise DefusalError(f"dropout must be in [0, 1), got {dropout}")
        self.width = int(width)
        self.lru_size = lru_size
        self.adapter = (
            nn.Linear(self.input_size, self.width) if self.input_size != self.width else None
        )
        self.norm = nn.LayerNorm(self.width)
        self.lru = LRUCell(self.width, lru_size, r_min=r_min, r_max=r_max, max_phase=max_phase)
        self.dropout = nn.Dropout(dropout)
        self.glu = GLU(self.width)

    def adapt(self, x: Tensor) -> Tensor:
        """Return the block input ``u`` at width ``w``, ``(..., width)``."""
        return x if self.adapter is None else self.adapter(x)

    def _block_output(self, u: Tensor, lru_output: Tensor) -> Tensor:
        hidden = self.dropout(nn.functional.gelu(lru_output))
        return u + self.dropout(self.glu(hidden))

    def transition(self, x_t: Tensor, state: Tensor) -> Tensor:
        return self.lru.transition(self.norm(self.adapt(x_t)), state)

    def output(self, x_t: Tensor, new_state: Tensor) -> Tensor:
        u = self.adapt(x_t)
        return self._block_output(u, self.lru.output(self.norm(u), new_state))

    def forward_sequence(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the whole sequence with the parallel scan.

        Args:
            x: ``(batch, time, input_size)``.
            state: optional initial state ``(batch, state_size)``.

        Returns:
            ``(y, final_state)``: ``y`` ``(batch, time, width)``, ``final_state``
            ``(batch, state_size)``.
        """
        u = self.adapt(x)
        lru_output, final = self.lru.forward_sequence(self.norm(u), state)
        return self._block_output(u, lru_output), final

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.width}, lru_size={self.lru_size}"


class LRUStack(RecurrentStack):
    """A :class:`RecurrentStack` of LRU cells whose ``forward`` can use the parallel scan.

    ``step`` and the per-cell ``transition``/``output`` work as in every stack, one time step at
    a time. ``forward`` runs each layer over the whole sequence with :func:`lru_parallel_scan`
    when ``parallel`` is true (the default) and steps through time otherwise. The encoder and
    readout must act on each time step independently (``nn.Embedding``, ``nn.Linear``), because
    the parallel path applies them to the whole sequence at once.

    Args:
        cells: :class:`LRUCell` or :class:`ResidualLRUCell` layers, bottom first.
        encoder, readout: as in :class:`RecurrentStack`.
        parallel: the default path of ``forward``.
    """

    def __init__(
        self,
        cells: list[nn.Module] | nn.ModuleList,
        *,
        encoder: nn.Module | None = None,
        readout: nn.Module | None = None,
        parallel: bool = True,
    ) -> None:
        super().__init__(cells, encoder=encoder, readout=readout)
        for depth, cell in enumerate(self.cells):
            if not hasattr(cell, "forward_sequence"):
                raise DefusalError(
                    f"LRUStack layer {depth} is a {type(cell).__name__}, which has no parallel "
                    "path; use LRUCell or ResidualLRUCell layers"
                )
        self.parallel = bool(parallel)

    def forward_parallel(
        self, x: Tensor, states: list[Tensor] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Run the stack with the parallel scan; same inputs and outputs as ``forward``."""
        if x.dim() < 2:
            raise DefusalError(f"expected input of shape (batch, time, ...), got {tuple(x.shape)}")
        if states is None:
            states = [None] * self.num_layers
        layer_input = self.encode(x)
        final_states = []
        for cell, state in zip(self.cells, states, strict=True):
            layer_input, final = cell.forward_sequence(layer_input, state)
            final_states.append(final)
        y = layer_input if self.readout is None else self.readout(layer_input)
        return y, final_states

    def forward(self, x: Tensor, states: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        if self.parallel:
            return self.forward_parallel(x, states)
        return super().forward(x, states)
