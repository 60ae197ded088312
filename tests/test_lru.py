"""LRU: ring initialization, time-Jacobian radius, parallel scan and the residual block."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev, vmap

from defusal.errors import DefusalError
from defusal.nets import LRUCell, LRUStack, ResidualLRUCell, build_network, lru_parallel_scan


def test_ring_initialization():
    torch.manual_seed(0)
    cell = LRUCell(8, 500, r_min=0.4, r_max=0.9, max_phase=math.pi / 10)
    lam = cell.complex_eigenvalues().detach()
    modulus, phase = lam.abs(), torch.angle(lam)
    gamma = torch.exp(cell.gamma_log.detach())

    assert modulus.min().item() >= 0.4 - 1e-6
    assert modulus.max().item() <= 0.9 + 1e-6
    assert phase.min().item() >= 0.0
    assert phase.max().item() <= math.pi / 10 + 1e-6
    assert torch.allclose(gamma, torch.sqrt(1 - modulus**2), atol=1e-6)


def test_ring_area_uniform():
    torch.manual_seed(1)
    cell = LRUCell(2, 20000, r_min=0.4, r_max=0.99)
    squared = cell.complex_eigenvalues().detach().abs() ** 2
    # |lambda|^2 is uniform on [r_min^2, r_max^2]; its mean is the midpoint.
    assert abs(squared.mean().item() - (0.4**2 + 0.99**2) / 2) < 0.01


def test_time_jacobian_radius():
    torch.manual_seed(2)
    cell = LRUCell(6, 16).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    state = torch.randn(3, 32, dtype=torch.float64)
    jacobian = vmap(jacrev(cell.transition, argnums=1))(x, state)
    radius = torch.linalg.eigvals(jacobian).abs().amax(-1)

    # max |lambda| computed from the parameters: |lambda| = exp(-exp(nu_log))
    expected = torch.exp(-torch.exp(cell.nu_log.detach())).max()
    assert torch.allclose(radius, expected.expand(3), atol=1e-6)


def test_time_jacobian_blocks():
    torch.manual_seed(3)
    cell = LRUCell(4, 5).double()
    jacobian = jacrev(cell.transition, argnums=1)(
        torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 10, dtype=torch.float64)
    ).reshape(10, 10)
    modulus = torch.exp(-torch.exp(cell.nu_log.detach()))
    phase = torch.exp(cell.theta_log.detach())
    re, im = torch.diag(modulus * torch.cos(phase)), torch.diag(modulus * torch.sin(phase))
    expected = torch.cat([torch.cat([re, -im], 1), torch.cat([im, re], 1)], 0)
    assert torch.allclose(jacobian, expected, atol=1e-12)


def test_output_equation():
    torch.manual_seed(4)
    cell = LRUCell(3, 4)
    u = torch.randn(2, 3)
    state = torch.randn(2, 8)
    with torch.no_grad():
        y, new_state = cell(u, state)
        lam = cell.complex_eigenvalues()
        b = torch.complex(cell.B_re, cell.B_im)
        c = torch.complex(cell.C_re, cell.C_im)
        gamma = torch.exp(cell.gamma_log)
        x_old = torch.complex(state[:, :4], state[:, 4:])
        x_new = lam * x_old + gamma * (u.to(b.dtype) @ b.T)
        expected_y = (x_new @ c.T).real + cell.D * u
    assert torch.allclose(new_state, torch.cat([x_new.real, x_new.imag], 1), atol=1e-6)
    assert torch.allclose(y, expected_y, atol=1e-6)


def _sequential_scan(lam, bu, initial=None):
    x = torch.zeros_like(bu[:, 0]) if initial is None else initial
    states = []
    for t in range(bu.shape[1]):
        x = lam * x + bu[:, t]
        states.append(x)
    return torch.stack(states, 1)


@pytest.mark.parametrize("with_initial", [False, True])
def test_parallel_scan_matches_loop(with_initial):
    torch.manual_seed(5)
    width, length = 16, 1000
    modulus = torch.sqrt(torch.rand(width) * (0.999**2 - 0.4**2) + 0.4**2)
    lam = torch.polar(modulus, torch.rand(width) * math.pi)
    bu = torch.randn(2, length, width, dtype=torch.complex64) * 0.1
    initial = torch.randn(2, width, dtype=torch.complex64) if with_initial else None

    parallel = lru_parallel_scan(lam, bu, initial)
    expected = _sequential_scan(lam, bu, initial)
    assert parallel.shape == (2, length, width)
    assert torch.allclose(parallel, expected, atol=1e-5)


def test_parallel_scan_real_varying():
    torch.manual_seed(6)
    a = torch.rand(3, 37, 4)
    bu = torch.randn(3, 37, 4)
    expected = torch.zeros(3, 4)
    for t in range(37):
        expected = a[:, t] * expected + bu[:, t]
    assert torch.allclose(lru_parallel_scan(a, bu)[:, -1], expected, atol=1e-5)


def test_lru_stack_parallel_matches_loop():
    network = build_network("lru", 5, 16, 2, 4, seed=7).eval()
    x = torch.randn(2, 300, 5)
    states = [torch.randn(2, cell.state_size) * 0.1 for cell in network.cells]
    with torch.no_grad():
        y_parallel, final_parallel = network.forward_parallel(x, states)
        network.parallel = False
        y_loop, final_loop = network(x, states)

    assert isinstance(network, LRUStack)
    assert torch.allclose(y_parallel, y_loop, atol=1e-5)
    for ours, theirs in zip(final_parallel, final_loop, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_parallel_path_backpropagates():
    network = build_network("lru", None, 8, 2, 20, vocab_size=20, tie_weights=True, seed=8)
    y, _ = network(torch.randint(0, 20, (3, 50)))
    y.logsumexp(-1).mean().backward()
    for parameter in network.parameters():
        assert bool(torch.isfinite(parameter.grad).all())


def test_residual_block_shapes():
    cell = ResidualLRUCell(10, 6)
    same = ResidualLRUCell(6, 6, lru_size=3)
    y, state = cell(torch.randn(4, 10), cell.initial_state(4))
    assert (cell.state_size, cell.output_size) == (24, 6)
    assert y.shape == (4, 6)
    assert state.shape == (4, 24)
    assert cell.adapter is not None
    assert same.adapter is None
    assert same.state_size == 6


def test_residual_block_equation():
    torch.manual_seed(9)
    cell = ResidualLRUCell(3, 3, dropout=0.0).eval()
    x = torch.randn(2, 3)
    state = torch.randn(2, cell.state_size)
    with torch.no_grad():
        y, new_state = cell(x, state)
        normed = torch.nn.functional.layer_norm(x, (3,), cell.norm.weight, cell.norm.bias)
        lru_y, lru_state = cell.lru(normed, state)
        hidden = torch.nn.functional.gelu(lru_y)
        glu = torch.sigmoid(cell.glu.gate(hidden)) * cell.glu.value(hidden)
    assert torch.allclose(new_state, lru_state)
    assert torch.allclose(y, x + glu, atol=1e-6)


def test_bad_ring():
    with pytest.raises(DefusalError, match="r_min"):
        LRUCell(3, 4, r_min=0.9, r_max=0.5)
