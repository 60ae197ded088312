"""Closed-form checks of the quarantine model: sizes, conservation, SIR limit, formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn

from defusal.epidemic.fit import FitConfig, FitProblem, time_scales
from defusal.epidemic.metrics import doubling_time, first_day_below_one, inflection_day
from defusal.epidemic.model import QSIRModel, reproduction_number, spread_parameter
from defusal.epidemic.scenarios import (
    blend_quarantine,
    is_explosion,
    parse_scenario,
    peak_growth,
)

POPULATION = 1.0e6


def make_model(version: str, seeds=(0,), **options) -> QSIRModel:
    population = torch.full((len(seeds),), POPULATION, dtype=torch.float64)
    return QSIRModel(version, population, list(seeds), **options)


def start_state(members: int = 1) -> torch.Tensor:
    return torch.tensor([[POPULATION - 530.0, 500.0, 20.0, 10.0]] * members, dtype=torch.float64)


def test_parameter_count_v2():
    reference = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 1))
    expected = sum(p.numel() for p in reference.parameters()) + 2
    assert make_model("v2").parameter_count() == expected
    assert expected == 63


def test_parameter_count_v3():
    reference = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 1))
    expected = sum(p.numel() for p in reference.parameters()) + 3
    assert make_model("v3").parameter_count() == expected
    assert expected == 54


def test_network_matches_torch_reference():
    model = make_model("v2", seeds=(3, 4))
    net = model.net
    inputs = torch.rand(2, 4, dtype=torch.float64) * 1e3
    for member in range(2):
        reference = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 1)).double()
        with torch.no_grad():
            reference[0].weight.copy_(net.weight1[member].T)
            reference[0].bias.copy_(net.bias1[member])
            reference[2].weight.copy_(net.weight2[member].T)
            reference[2].bias.copy_(net.bias2[member])
        expected = reference(inputs[member : member + 1]).reshape(())
        assert torch.allclose(net(inputs)[member], expected)


def test_quarantine_raw_scaling():
    model = make_model("v2")
    state = start_state()
    expected = model.net(state).abs() / POPULATION
    assert torch.allclose(model.quarantine(state), expected)


def test_glorot_init_bounds():
    net = make_model("v2", seeds=(50,)).net
    limit = math.sqrt(6.0 / (4 + 10))
    assert float(net.weight1.detach().abs().max()) <= limit
    assert float(net.bias1.detach().abs().max()) == 0.0


def test_same_seed_same_network():
    first = make_model("v2", seeds=(7,)).net.weight1
    second = make_model("v2", seeds=(7,)).net.weight1
    assert torch.equal(first, second)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_total_conserved(version):
    model = make_model(version, seeds=(1, 2))
    with torch.no_grad():
        states = model.simulate(start_state(2), 40, method="dopri5", rtol=1e-8, atol=1e-6)
    totals = states.sum(-1)
    assert torch.allclose(totals, torch.full_like(totals, POPULATION), rtol=1e-9)


def test_derivative_sums_to_zero():
    model = make_model("v3", seeds=(5,))
    derivative = model.rhs(torch.tensor(0.0), start_state())
    assert abs(float(derivative.detach().sum())) < 1e-9 * POPULATION


def test_zero_quarantine_is_sir():
    beta, gamma = 0.4, 0.05
    model = make_model("v2", beta0=beta, gamma0=gamma)

    def no_quarantine(t, state, q):
        return torch.zeros_like(q)

    state0 = start_state()
    with torch.no_grad():
        states = model.simulate(state0, 30, q_override=no_quarantine, step=0.05)

    def sir(t, y):
        s, i, r = y
        infection = beta * s * i / POPULATION
        return [-infection, infection - gamma * i, gamma * i]

    reference = solve_ivp(
        sir, (0, 30), state0[0, :3].numpy(), t_eval=np.arange(31), rtol=1e-11, atol=1e-8
    )
    assert np.allclose(states[:, 0, :3].numpy(), reference.y.T, rtol=1e-6)
    assert torch.all(states[:, 0, 3] == state0[0, 3])


def test_zero_quarantine_rt_is_beta_over_gamma():
    beta, gamma = torch.tensor(0.4), torch.tensor(0.05)
    assert float(reproduction_number(beta, gamma, torch.tensor(0.0))) == pytest.approx(8.0)


def test_v3_quarantined_decay_rate():
    delta = 0.02
    model = make_model("v3", delta0=delta)
    state0 = torch.tensor([[POPULATION - 1000.0, 0.0, 0.0, 1000.0]], dtype=torch.float64)
    with torch.no_grad():
        states = model.simulate(state0, 20, method="dopri5", rtol=1e-10, atol=1e-10)
    expected = 1000.0 * np.exp(-delta * np.arange(21))
    assert np.allclose(states[:, 0, 3].numpy(), expected, rtol=1e-7)


def test_reproduction_number_formula():
    value = reproduction_number(torch.tensor(0.5), torch.tensor(0.1), torch.tensor(0.15))
    assert float(value) == pytest.approx(0.5 / 0.25)


def test_spread_parameter_formula():
    value = spread_parameter(
        torch.tensor(0.5), torch.tensor(0.1), torch.tensor(0.05), torch.tensor(0.1)
    )
    assert float(value) == pytest.approx(0.5 / 0.25)


def test_logistic_quarantine_value():
    model = make_model("v2", quarantine="logistic", logistic0=(0.6, 12.0, 3.0))
    q = model.quarantine(start_state(), torch.tensor(15.0)).detach()
    assert float(q) == pytest.approx(0.6 / (1 + math.exp(-1.0)))


def test_blend_starts_at_own():
    own = torch.tensor([0.7], dtype=torch.float64)
    other = torch.tensor([0.2], dtype=torch.float64)
    assert torch.equal(blend_quarantine(torch.tensor(0.0), own, other, 17), own)


def test_blend_ends_at_other():
    own = torch.tensor([0.7], dtype=torch.float64)
    other = torch.tensor([0.2], dtype=torch.float64)
    assert torch.allclose(blend_quarantine(torch.tensor(17.0), own, other, 17), other)


def test_blend_to_zero_is_linear_ramp():
    own = torch.tensor([0.6], dtype=torch.float64)
    for day in range(0, 25):
        value = blend_quarantine(torch.tensor(float(day)), own, torch.zeros_like(own), 17)
        expected = 0.6 * max(17 - day, 0) / 17
        assert float(value) == pytest.approx(expected, abs=1e-15)


def test_stretched_grid_spacing(tmp_path):
    class Window:
        days = np.arange(95)

    problem = FitProblem.__new__(FitProblem)
    problem.series = Window()
    config = FitConfig(grid="stretched")
    assert float(time_scales([problem], config)[0]) == pytest.approx(95 / 94)


def test_day_grid_has_no_stretch():
    assert time_scales([], FitConfig(grid="day")) is None


def test_first_day_below_one():
    assert first_day_below_one(np.array([1.5, 1.2, 1.0, 0.9])) == 3


def test_first_day_below_one_never():
    assert first_day_below_one(np.array([1.5, 1.2])) is None


def test_inflection_of_logistic():
    days = np.arange(30)
    q = 1 / (1 + np.exp(-(days - 12.5) / 3))
    assert inflection_day(q) == 13


def test_doubling_time_constant_rate():
    rate = np.full(10, 0.2)
    assert doubling_time(rate, np.full(10, 2.0)) == pytest.approx(math.log(2) / 0.2)


def test_explosion_when_growing():
    days = np.arange(20)
    assert is_explosion(np.exp(0.1 * days), np.full(20, 1.5))


def test_no_explosion_when_growth_stalls():
    infected = np.concatenate([np.exp(0.1 * np.arange(15)), np.full(5, math.exp(1.4))])
    assert not is_explosion(infected, np.full(20, 1.5))


def test_no_explosion_when_growth_slows():
    # Logistic growth from 2e5 to below 1e6 (under 10-fold): the rate of log I falls from
    # about 0.24 to below 0.01 per day.
    days = np.arange(30)
    infected = 1e6 / (1 + 4 * np.exp(-0.3 * days))
    assert not is_explosion(infected, np.full(30, 1.05))


def test_explosion_when_logistic_grows_tenfold():
    # Logistic growth from 1e3 to about 1e6 stalls at the end but grew 1000-fold.
    days = np.arange(30)
    infected = 1e6 / (1 + 999 * np.exp(-0.3 * days))
    assert is_explosion(infected, np.full(30, 1.05))


def test_explosion_when_outbreak_burns_out():
    # Grows 100-fold by day 20, then falls: R_t < 1 and I shrinking at the horizon.
    days = np.arange(61)
    infected = 1e3 * np.exp(np.where(days <= 20, 0.23 * days, 4.6 - 0.2 * (days - 20)))
    rt = np.where(days <= 20, 3.0, 0.5)
    assert is_explosion(infected, rt)


def test_no_explosion_below_tenfold_peak():
    # Peaks at 1.5 times the start value on day 10, then falls.
    days = np.arange(61)
    infected = 2e5 * np.exp(np.where(days <= 10, 0.04 * days, 0.4 - 0.05 * (days - 10)))
    rt = np.where(days <= 10, 1.2, 0.8)
    assert not is_explosion(infected, rt)


def test_peak_growth_ratio_and_day():
    infected = np.array([2.0, 6.0, 30.0, 10.0])
    assert peak_growth(infected) == (15.0, 2)


def test_no_explosion_after_peak():
    days = np.arange(20)
    assert not is_explosion(np.exp(-0.1 * days), np.full(20, 0.8))


def test_parse_scenarios():
    assert parse_scenario("relax:17").days == 17
    assert parse_scenario("adopt:Korea, South:10").other == "Korea, South"
    assert parse_scenario("adopt:Italy").days == 1
    assert parse_scenario("fixed:0.3").value == pytest.approx(0.3)


@pytest.mark.parametrize("text", ["relax", "relax:0", "fixed:x", "grow", "adopt"])
def test_parse_scenario_invalid(text):
    from defusal.errors import DefusalError

    with pytest.raises(DefusalError):
        parse_scenario(text)


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_fast_rk4_matches_torchdiffeq(method):
    case_scale = torch.full((2,), 2000.0, dtype=torch.float64)
    model = make_model("v2", seeds=(2, 3), input_scale="normalised", case_scale=case_scale)
    with torch.no_grad():
        fast = model.simulate(start_state(2), 20, method="fast_rk4", step=0.1)
        reference = model.simulate(
            start_state(2), 20, method=method, step=0.1, rtol=1e-10, atol=1e-8
        )
    assert torch.allclose(fast, reference, rtol=1e-6)


def test_monotone_q_nondecreasing_in_t():
    model = make_model("v2", seeds=(0, 1, 2, 3), monotone_t=True)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    state = start_state(4).repeat(50, 1, 1)
    state[:, :, 3] = torch.linspace(0.0, 5.0e4, 50, dtype=torch.float64).unsqueeze(1)
    q = torch.stack([model.quarantine(row) for row in state])
    assert bool((q.diff(dim=0) >= -1e-15).all())


def test_monotone_net_uses_absolute_weights():
    model = make_model("v2", seeds=(5,), monotone_t=True)
    net = model.net
    with torch.no_grad():
        net.weight2.neg_()
        net.bias2.fill_(-0.2)
    inputs = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    weight1 = net.weight1[0].clone()
    weight1[3] = weight1[3].abs()
    hidden = torch.relu(inputs @ weight1 + net.bias1[0])
    expected = (hidden @ net.weight2[0].abs() + 0.2).reshape(())
    assert torch.allclose(net(inputs)[0], expected)


def test_monotone_rejects_v3_network():
    with pytest.raises(ValueError):
        make_model("v3", monotone_t=True)
