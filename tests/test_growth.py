"""Tests for path counting, Jacobian bounds and the PascalRNN gradients in defusal.growth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import comb
from scipy.stats import binom, nbinom

from defusal.errors import DefusalError
from defusal.growth import (
    PascalRNN,
    jacobian_bound,
    log10_jacobian_bound,
    log10_path_count,
    pascal_gradient_closed_form,
    pascal_input_gradients,
    path_count,
    total_gradient_bound,
    unbalanced_targets,
)

# (L, T, rho) cases for the PascalRNN: the figure's set-up, a damped and an exploding one.
PASCAL_CASES = [(10, 100, 1.0), (10, 100, 0.5), (3, 20, 0.7), (5, 30, 1.2), (1, 7, 0.9)]


def pascal_gradient_by_adjoint(num_layers: int, time_steps: int, rho: float) -> np.ndarray:
    """Backpropagate d(sum_t y_t) / dh[t, l] through the grid by dynamic programming.

    Node (t, l) feeds (t + 1, l) and (t, l + 1) with weight rho. The input row l = 0 has no
    time edges, and every node of the top layer adds 1 for its own output y_t.
    """
    adjoint = np.zeros((time_steps + 1, num_layers + 2))
    for t in reversed(range(time_steps)):
        for layer in range(num_layers, -1, -1):
            own_output = 1.0 if layer == num_layers else 0.0
            through_time = rho * adjoint[t + 1, layer] if layer >= 1 else 0.0
            through_depth = rho * adjoint[t, layer + 1] if layer < num_layers else 0.0
            adjoint[t, layer] = own_output + through_time + through_depth
    return adjoint[:time_steps, 0]


def pascal_gradient_by_scipy(num_layers: int, time_steps: int, rho: float) -> np.ndarray:
    """Sum C(L - 1 + k, k) * rho**(L + k) over k < dt with scipy's binomial coefficients."""
    gradients = []
    for t_prime in range(time_steps):
        dt = time_steps - t_prime
        k = np.arange(dt)
        gradients.append(np.sum(comb(num_layers - 1 + k, k) * rho ** (num_layers + k)))
    return np.array(gradients)


def pascal_forward_by_loops(x: np.ndarray, num_layers: int, rho: float) -> np.ndarray:
    """Run h[t, l] = rho * h[t, l - 1] + rho * h[t - 1, l] node by node over the grid."""
    batch, time_steps = x.shape
    h = np.zeros((batch, time_steps + 1, num_layers + 1))
    h[:, 1:, 0] = x
    for t in range(1, time_steps + 1):
        for layer in range(1, num_layers + 1):
            h[:, t, layer] = rho * h[:, t, layer - 1] + rho * h[:, t - 1, layer]
    return h[:, 1:, num_layers]


# path_count and log10_path_count


def test_path_count_small_grid():
    for dt in range(8):
        for dl in range(8):
            assert path_count(dt, dl) == math.factorial(dt + dl) // (
                math.factorial(dt) * math.factorial(dl)
            )


def test_path_count_single_path_cases():
    assert path_count(0, 7) == 1
    assert path_count(9, 0) == 1


def test_path_count_is_exact_int():
    count = path_count(10_000, 100)
    assert isinstance(count, int)
    assert count == comb(10_100, 100, exact=True)


@pytest.mark.parametrize("dt, dl", [(-1, 2), (2, -1), (2.5, 1), (True, 1), ("3", 1)])
def test_path_count_rejects_invalid(dt, dl):
    with pytest.raises(DefusalError):
        path_count(dt, dl)


@pytest.mark.parametrize(
    "dt, dl, expected",
    [(5000, 5, 16.4), (10_000, 5, 17.9), (5000, 50, 120.6), (10_000, 100, 242.2), (5, 100, 8.0)],
)
def test_log10_path_count_figure_values(dt, dl, expected):
    assert log10_path_count(dt, dl) == pytest.approx(expected, abs=0.1)


def test_log10_path_count_matches_exact_log():
    for dt, dl in [(5000, 5), (10_000, 100), (123, 456), (0, 0), (1, 0)]:
        exact = math.log10(math.comb(dt + dl, dt))
        assert log10_path_count(dt, dl) == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_log10_path_count_vectorised():
    dt, dl = np.meshgrid(np.arange(30), np.arange(25))
    expected = np.log10(comb(dt + dl, dt))
    result = log10_path_count(dt, dl)
    assert result.shape == (25, 30)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_log10_path_count_returns_float_for_scalars():
    assert isinstance(log10_path_count(3, 4), float)


def test_log10_path_count_huge_grid_is_finite():
    assert math.isfinite(log10_path_count(10**9, 10**6))


@pytest.mark.parametrize("dt", [-1, 1.5, float("nan"), [1, -2], "a"])
def test_log10_path_count_rejects_invalid(dt):
    with pytest.raises(DefusalError):
        log10_path_count(dt, 3)


# jacobian_bound, total_gradient_bound, unbalanced_targets


def test_jacobian_bound_is_count_at_gain_one():
    assert jacobian_bound(20, 7, 1.0, 1.0) == pytest.approx(math.comb(27, 7), rel=1e-12)


def test_jacobian_bound_matches_binomial_pmf():
    for dt, dl, rho_t in [(300, 3, 300 / 303), (40, 12, 0.5), (5, 9, 0.2)]:
        expected = binom.pmf(dt, dt + dl, rho_t)
        assert jacobian_bound(dt, dl, rho_t, 1.0 - rho_t) == pytest.approx(expected, rel=1e-9)


def test_jacobian_bound_general_gains():
    expected = math.comb(13, 6) * 0.8**6 * 1.3**7
    assert jacobian_bound(6, 7, 0.8, 1.3) == pytest.approx(expected, rel=1e-12)


def test_jacobian_bound_zero_gain_convention():
    assert jacobian_bound(0, 3, 0.0, 1.0) == 1.0
    assert jacobian_bound(2, 3, 0.0, 1.0) == 0.0


def test_jacobian_bound_overflow_gives_inf():
    assert jacobian_bound(10_000, 100, 1.0, 1.0) == pytest.approx(10**242.2485, rel=1e-3)
    assert jacobian_bound(100_000, 1000, 1.0, 1.0) == math.inf


def test_log10_jacobian_bound_vectorised():
    dt = np.arange(50)
    expected = np.log10(comb(dt + 4, dt) * 0.7**dt * 0.3**4)
    np.testing.assert_allclose(log10_jacobian_bound(dt, 4, 0.7, 0.3), expected, rtol=1e-12)


@pytest.mark.parametrize("rho", [-0.1, float("inf"), float("nan"), None, True])
def test_jacobian_bound_rejects_invalid_gain(rho):
    with pytest.raises(DefusalError):
        jacobian_bound(3, 3, rho, 0.5)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 2000))
def test_half_gain_bound_at_most_one(dt, dl):
    # C(n, dt) <= 2**n is the statement C(n, dt) * 0.5**n <= 1 in exact integers.
    assert path_count(dt, dl) <= 2 ** (dt + dl)
    assert jacobian_bound(dt, dl, 0.5, 0.5) <= 1.0 + 1e-12


def test_half_gain_bound_over_grid():
    dt, dl = np.meshgrid(np.arange(0, 3000, 7), np.arange(0, 3000, 11))
    assert np.all(log10_jacobian_bound(dt, dl, 0.5, 0.5) <= 1e-12)


def test_corner_term_unbalanced():
    rho_t, rho_l = unbalanced_targets(300, 3)
    corner = jacobian_bound(300, 3, rho_t, rho_l)
    assert corner == pytest.approx(0.225, abs=5e-4)
    assert corner == pytest.approx(binom.pmf(300, 303, 300 / 303), rel=1e-9)


def test_corner_term_balanced():
    corner = jacobian_bound(300, 3, 0.5, 0.5)
    assert corner == pytest.approx(2.8e-85, rel=0.02)
    assert corner == pytest.approx(comb(303, 3, exact=True) / 2**303, rel=1e-9)


def test_unbalanced_targets_maximize_corner_term():
    rho_t, rho_l = unbalanced_targets(300, 3)
    best = jacobian_bound(300, 3, rho_t, rho_l)
    for shift in (-0.005, -0.001, 0.001, 0.005):
        other = rho_t + shift
        assert jacobian_bound(300, 3, other, 1.0 - other) < best


# Each target is given to its printed digits, so the tolerance is half a unit of the last digit.
@pytest.mark.parametrize(
    "num_layers, time_steps, rho_t, rho_l, tolerance_l",
    [
        (3, 300, 0.990, 0.0099, 5e-5),
        (6, 300, 0.980, 0.0196, 5e-5),
        (3, 100, 0.971, 0.029, 5e-4),
        (6, 100, 0.943, 0.057, 5e-4),
    ],
)
def test_unbalanced_targets_table(num_layers, time_steps, rho_t, rho_l, tolerance_l):
    result_t, result_l = unbalanced_targets(time_steps, num_layers)
    assert result_t == pytest.approx(rho_t, abs=5e-4)
    assert result_l == pytest.approx(rho_l, abs=tolerance_l)
    assert result_t + result_l == pytest.approx(1.0, abs=1e-15)
    assert result_t == time_steps / (time_steps + num_layers)


@pytest.mark.parametrize("time_steps, num_layers", [(0, 3), (300, 0), (3.0, 2), (-5, 2)])
def test_unbalanced_targets_rejects_invalid(time_steps, num_layers):
    with pytest.raises(DefusalError):
        unbalanced_targets(time_steps, num_layers)


@pytest.mark.parametrize("dl, horizon, rho_l", [(9, 100, 0.5), (2, 300, 0.01), (0, 5, 0.3)])
def test_total_gradient_bound_negative_binomial(dl, horizon, rho_l):
    # Each term C(dl + k, k) rho_t**k rho_l**dl is nbinom.pmf(k, dl + 1, rho_l) / rho_l.
    expected = nbinom.cdf(horizon - 1, dl + 1, rho_l) / rho_l
    assert total_gradient_bound(dl, horizon, 1.0 - rho_l, rho_l) == pytest.approx(
        expected, rel=1e-9
    )


def test_total_gradient_bound_gain_one_hockey_stick():
    # sum_{k<h} C(dl + k, k) = C(dl + h, dl + 1)
    assert total_gradient_bound(9, 100, 1.0, 1.0) == pytest.approx(math.comb(109, 10), rel=1e-12)


def test_total_gradient_bound_empty_horizon():
    assert total_gradient_bound(3, 0, 0.5, 0.5) == 0.0


def test_total_gradient_bound_is_pascal_gradient():
    closed_form = pascal_gradient_closed_form(4, 25, 0.8)
    for t_prime in (0, 10, 24):
        bound = 0.8 * total_gradient_bound(3, 25 - t_prime, 0.8, 0.8)
        assert closed_form[t_prime] == pytest.approx(bound, rel=1e-12)


# PascalRNN


def test_pascal_rnn_forward_matches_loops():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 12))
    model = PascalRNN(3, 0.7)
    y = model(torch.from_numpy(x)).numpy()
    assert y.shape == (4, 12)
    np.testing.assert_allclose(y, pascal_forward_by_loops(x, 3, 0.7), rtol=1e-13)


def test_pascal_rnn_output_is_float64():
    y = PascalRNN(2, 0.5)(torch.ones(2, 3, dtype=torch.float32))
    assert y.dtype == torch.float64


def test_pascal_rnn_rejects_wrong_shape():
    with pytest.raises(DefusalError):
        PascalRNN(2, 0.5)(torch.ones(2, 3, 1))


@pytest.mark.parametrize("num_layers, rho", [(0, 0.5), (2, -1.0), (2.5, 0.5), (2, float("nan"))])
def test_pascal_rnn_rejects_invalid_settings(num_layers, rho):
    with pytest.raises(DefusalError):
        PascalRNN(num_layers, rho)


@pytest.mark.parametrize("num_layers, time_steps, rho", PASCAL_CASES)
def test_autograd_matches_closed_form(num_layers, time_steps, rho):
    autograd = pascal_input_gradients(num_layers, time_steps, rho, batch=3, seed=1)
    closed_form = pascal_gradient_closed_form(num_layers, time_steps, rho)
    assert autograd.shape == (time_steps,)
    np.testing.assert_allclose(autograd, closed_form, rtol=1e-9, atol=0)


@pytest.mark.parametrize("num_layers, time_steps, rho", PASCAL_CASES)
def test_closed_form_matches_adjoint_recursion(num_layers, time_steps, rho):
    closed_form = pascal_gradient_closed_form(num_layers, time_steps, rho)
    expected = pascal_gradient_by_adjoint(num_layers, time_steps, rho)
    np.testing.assert_allclose(closed_form, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("num_layers, time_steps, rho", PASCAL_CASES)
def test_closed_form_matches_scipy_comb(num_layers, time_steps, rho):
    closed_form = pascal_gradient_closed_form(num_layers, time_steps, rho)
    expected = pascal_gradient_by_scipy(num_layers, time_steps, rho)
    np.testing.assert_allclose(closed_form, expected, rtol=1e-12, atol=0)


def test_closed_form_gain_one_is_binomial():
    closed_form = pascal_gradient_closed_form(10, 100, 1.0)
    for t_prime in range(100):
        dt = 100 - t_prime
        assert closed_form[t_prime] == float(math.comb(10 + dt - 1, 10))


def test_pascal_gain_one_value_at_start():
    autograd = pascal_input_gradients(10, 100, 1.0)
    assert autograd[0] == pytest.approx(math.comb(109, 10), rel=1e-9)
    assert autograd[0] == pytest.approx(4.263e13, rel=1e-3)


def test_pascal_half_gain_values():
    autograd = pascal_input_gradients(10, 100, 0.5)
    assert autograd[0] == pytest.approx(1.0, abs=1e-6)
    assert autograd[50] == pytest.approx(1.0, abs=1e-6)
    # dt = 10: the 10th depth edge comes before the 10th time edge with probability 1/2.
    assert autograd[90] == pytest.approx(0.5, rel=1e-12)
    assert autograd[99] == pytest.approx(0.5**10, rel=1e-12)
    assert autograd[99] == pytest.approx(9.77e-4, rel=1e-3)


def test_pascal_gradients_ignore_inputs():
    first = pascal_input_gradients(4, 15, 0.9, batch=2, seed=0)
    second = pascal_input_gradients(4, 15, 0.9, batch=5, seed=99)
    np.testing.assert_allclose(first, second, rtol=1e-14)


def test_closed_form_overflow_gives_inf():
    closed_form = pascal_gradient_closed_form(10, 1100, 2.0)
    assert closed_form[0] == math.inf
    assert closed_form[-1] == 2.0**10


def test_closed_form_zero_gain():
    np.testing.assert_array_equal(pascal_gradient_closed_form(3, 5, 0.0), np.zeros(5))


@pytest.mark.parametrize("num_layers, time_steps", [(0, 5), (3, 0), (3, 2.0)])
def test_pascal_functions_reject_invalid_sizes(num_layers, time_steps):
    with pytest.raises(DefusalError):
        pascal_gradient_closed_form(num_layers, time_steps, 0.5)
    with pytest.raises(DefusalError):
        pascal_input_gradients(num_layers, time_steps, 0.5)
