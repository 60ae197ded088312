"""ALIF cell: spikes, surrogate gradient, adaptation and one step against its equations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev, vmap

from defusal.errors import DefusalError
from defusal.nets import ALIFCell, spike


def _single_neuron(beta: float) -> ALIFCell:
    """One neuron with input weight 1 and no recurrence."""
    cell = ALIFCell(1, 1, tau_m=20.0, tau_adapt=200.0, thr=0.01, beta=beta)
    with torch.no_grad():
        cell.input_weights.fill_(1.0)
        cell.recurrent_weights.zero_()
    return cell


def _spike_train(cell: ALIFCell, current: float, steps: int) -> torch.Tensor:
    state = cell.initial_state(1)
    x = torch.full((1, 1), current)
    spikes = []
    with torch.no_grad():
        for _ in range(steps):
            z, state = cell(x, state)
            spikes.append(z.item())
    return torch.tensor(spikes)


def test_spikes_are_binary():
    torch.manual_seed(0)
    cell = ALIFCell(5, 16)
    state = cell.initial_state(3)
    outputs = []
    for _ in range(30):
        z, state = cell(torch.rand(3, 5) * 3.0, state)
        outputs.append(z)
    spikes = torch.stack(outputs)
    assert bool(((spikes == 0) | (spikes == 1)).all())
    assert spikes.sum().item() > 0


def test_surrogate_derivative_closed_form():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.5], requires_grad=True)
    spike(v, 0.5).sum().backward()
    # dampening * max(0, 1 - |v|)
    expected = torch.tensor([0.0, 0.25, 0.5, 0.375, 0.0])
    assert torch.allclose(v.grad, expected)


def test_surrogate_gradient_reaches_weights():
    torch.manual_seed(1)
    cell = ALIFCell(4, 8)
    state = cell.initial_state(2)
    total = 0.0
    for _ in range(40):
        z, state = cell(torch.rand(2, 4) * 2.0, state)
        total = total + z.sum()
    total.backward()
    for parameter in (cell.input_weights, cell.thr, cell.tau_m):
        assert bool(torch.isfinite(parameter.grad).all())
        assert bool(parameter.grad.ne(0).any())


def test_adaptation_lowers_firing_rate():
    adaptive = _spike_train(_single_neuron(beta=0.5), current=0.2, steps=300)
    plain = _spike_train(_single_neuron(beta=0.0), current=0.2, steps=300)
    assert adaptive[:50].sum() > adaptive[-50:].sum()
    assert plain[-50:].sum() > adaptive[-50:].sum()


def test_adaptation_grows_with_spikes():
    cell = _single_neuron(beta=0.5)
    state = cell.initial_state(1)
    with torch.no_grad():
        for _ in range(50):
            _, state = cell(torch.full((1, 1), 0.2), state)
    assert state[0, 1].item() > 0.0


def test_one_step_equations():
    cell = ALIFCell(2, 2, tau_m=10.0, tau_adapt=100.0, thr=0.5, beta=2.0, detach_reset=False)
    with torch.no_grad():
        cell.input_weights.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        cell.recurrent_weights.copy_(torch.tensor([[0.0, 0.3], [0.4, 0.0]]))
    x = torch.tensor([[0.2, 0.1]])
    # neuron 0 above its threshold 0.5 + 2 * 0.05 = 0.6, neuron 1 below 0.5 + 2 * 0.1 = 0.7
    v, a = [0.9, 0.3], [0.05, 0.1]
    state = torch.tensor([v + a])

    alpha, rho = math.exp(-1 / 10), math.exp(-1 / 100)
    z = [1.0, 0.0]
    threshold = [0.5 + 2.0 * a[0], 0.5 + 2.0 * a[1]]
    current = [0.2 + 0.3 * z[1], 2.0 * 0.1 + 0.4 * z[0]]
    expected = [alpha * v[i] + (1 - alpha) * current[i] - threshold[i] * z[i] for i in range(2)]
    expected += [rho * a[i] + (1 - rho) * z[i] for i in range(2)]

    new_state = cell.transition(x, state)
    assert torch.allclose(new_state, torch.tensor([expected]), atol=1e-6)


def test_jacobian_under_vmap():
    torch.manual_seed(2)
    cell = ALIFCell(3, 4, thr=0.1).double()
    x = torch.rand(5, 3, dtype=torch.float64)
    state = torch.rand(5, 8, dtype=torch.float64) * 0.2
    batched = vmap(jacrev(cell.transition, argnums=1))(x, state)
    for sample in (0, 4):
        single = torch.autograd.functional.jacobian(
            lambda s, i=sample: cell.transition(x[i : i + 1], s.unsqueeze(0)).squeeze(0),
            state[sample],
        )
        assert torch.allclose(batched[sample], single, atol=1e-12)


def test_bad_time_constant():
    with pytest.raises(DefusalError, match="tau_m"):
        ALIFCell(2, 3, tau_m=0.0)


def test_random_beta_spread():
    torch.manual_seed(3)
    cell = ALIFCell(100, 2000, beta=1.8, random_beta=True)
    assert abs(cell.beta.std().item() - 1.8 / 10.0) < 0.02
    assert cell.beta.min().item() < 0.0
