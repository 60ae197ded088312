"""Radius estimators against closed forms, numpy-independent statistics and autograd."""

from __future__ import annotations

import math

import pytest
import torch

from defusal.errors import DefusalError
from defusal.radius import (
    LinearOperator,
    block_product,
    check_estimator,
    matrix_gain,
    norm_surrogate,
    power_norm,
    power_radius,
    radius_surrogate,
    spectral_radius,
    subsample_square,
)

N, DRAWS = 128, 50


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _glorot(n: int, generator) -> torch.Tensor:
    return torch.randn(n, n, generator=generator, dtype=torch.float64) / math.sqrt(n)


def _mean_radius(make) -> float:
    generator = _generator()
    return float(torch.stack([spectral_radius(make(generator)) for _ in range(DRAWS)]).mean())


def test_radius_glorot_linear():
    assert abs(_mean_radius(lambda g: _glorot(N, g)) - 1.04) < 0.02


def test_radius_he_relu_mask():
    def make(generator):
        weight = torch.randn(N, N, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / N)
        mask = (weight @ torch.randn(N, generator=generator, dtype=torch.float64) > 0).double()
        return mask[:, None] * weight

    assert abs(_mean_radius(make) - 1.07) < 0.03


def test_radius_orthogonal():
    generator = _generator()
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=generator, dtype=torch.float64))
    assert abs(float(spectral_radius(q)) - 1.0) < 1e-6


def test_radius_glorot_cos_derivative():
    def make(generator):
        slope = torch.cos(torch.randn(N, generator=generator, dtype=torch.float64))
        return slope[:, None] * _glorot(N, generator)

    assert abs(_mean_radius(make) - 0.79) < 0.03


def test_radius_subsampled_glorot_784():
    def make(generator):
        weight = torch.randn(128, 784, generator=generator, dtype=torch.float64)
        return subsample_square(weight * math.sqrt(2.0 / 912), generator)

    assert abs(_mean_radius(make) - 0.55) < 0.03


def test_subsample_square_indices():
    matrix = torch.arange(6 * 20, dtype=torch.float64).reshape(1, 6, 20)
    first = subsample_square(matrix, _generator(1))
    second = subsample_square(matrix, _generator(2))
    columns = first[0, 0].long()
    assert first.shape == (1, 6, 6)
    assert torch.all(columns[1:] > columns[:-1])
    assert torch.equal(first[0, 1] - first[0, 0], torch.full((6,), 20.0, dtype=torch.float64))
    assert not torch.equal(first, second)


def _dominant_real(n: int, seed: int) -> torch.Tensor:
    generator = _generator(seed)
    basis = torch.randn(n, n, generator=generator, dtype=torch.float64)
    values = torch.rand(n, generator=generator, dtype=torch.float64) * 1.4 - 0.7
    values[0] = 1.3
    return basis @ torch.diag(values) @ torch.linalg.inv(basis)


def test_power_radius_dominant_real_64():
    matrix = _dominant_real(64, 0)
    exact = torch.linalg.eigvals(matrix).abs().max()
    estimate = matrix_gain(matrix[None], "matrix_free", generator=_generator())[0]
    assert abs(float(estimate / exact) - 1) < 1e-3


def test_matrix_free_radius_symmetric():
    generator = _generator(3)
    half = torch.randn(64, 64, generator=generator, dtype=torch.float64)
    matrices = torch.stack([half + half.T, _dominant_real(64, 4)])
    exact = torch.linalg.eigvals(matrices).abs().amax(-1)
    estimate = matrix_gain(matrices, "matrix_free", generator=generator, iterations=500)
    assert torch.all((estimate / exact - 1).abs() < 0.02)


def test_matrix_free_radius_complex_pair():
    angle = torch.tensor(0.3, dtype=torch.float64)
    moduli = torch.linspace(0.4, 0.9, 16, dtype=torch.float64)
    moduli[-1] = 0.99
    blocks = [
        r
        * torch.stack(
            [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
        )
        for r in moduli
    ]
    matrix = torch.block_diag(*blocks)[None]
    estimate = matrix_gain(
        matrix, "matrix_free", generator=_generator(), iterations=300, tolerance=1e-9
    )
    assert abs(float(estimate[0]) - 0.99) < 1e-3


def test_matrix_free_norm_against_svd():
    generator = _generator(5)
    matrices = torch.randn(3, 64, 40, generator=generator, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(matrices, 2)
    operator = LinearOperator.from_matrix(matrices)
    estimate = power_norm(operator, iterations=300, generator=generator).value
    assert torch.all((estimate / exact - 1).abs() < 0.02)


def test_norm_surrogate_gradient():
    generator = _generator(6)
    weight = torch.randn(12, 12, generator=generator, dtype=torch.float64, requires_grad=True)
    exact_grad = torch.autograd.grad(torch.linalg.matrix_norm(weight, 2), weight)[0]
    operator = LinearOperator(lambda s: s @ weight.T, torch.zeros(1, 12, dtype=torch.float64))
    sigma = power_norm(
        operator, iterations=2000, tolerance=1e-15, create_graph=True, generator=generator
    ).value
    power_grad = torch.autograd.grad(sigma.sum(), weight)[0]
    surrogate = norm_surrogate(operator, weight.detach()[None])
    svd_grad = torch.autograd.grad(surrogate.sum(), weight)[0]
    assert torch.allclose(power_grad, exact_grad, atol=1e-6)
    assert torch.allclose(svd_grad, exact_grad, atol=1e-8)


def test_radius_surrogate_gradient():
    weight = _dominant_real(10, 7).requires_grad_(True)
    exact_grad = torch.autograd.grad(torch.linalg.eigvals(weight).abs().max(), weight)[0]
    operator = LinearOperator(lambda s: s @ weight.T, torch.zeros(1, 10, dtype=torch.float64))
    value = radius_surrogate(operator, weight.detach()[None])
    grad = torch.autograd.grad(value.sum(), weight)[0]
    assert abs(float(value[0]) - 1.3) < 1e-9
    assert torch.allclose(grad, exact_grad, atol=1e-8)


def test_power_radius_gradient_symmetric():
    generator = _generator(8)
    half = torch.randn(10, 10, generator=generator, dtype=torch.float64)
    weight = (half + half.T).requires_grad_(True)
    exact_grad = torch.autograd.grad(torch.linalg.eigvalsh(weight).abs().max(), weight)[0]
    operator = LinearOperator(lambda s: s @ weight.T, torch.zeros(1, 10, dtype=torch.float64))
    value = power_radius(
        operator, iterations=2000, tolerance=1e-12, create_graph=True, generator=generator
    ).value
    grad = torch.autograd.grad(value.sum(), weight)[0]
    assert torch.allclose(grad, exact_grad, atol=1e-5)


def test_estimator_unknown():
    with pytest.raises(DefusalError, match="unknown radius estimator"):
        check_estimator("power")


def test_radius_nonsquare_rejected():
    with pytest.raises(DefusalError, match="square"):
        spectral_radius(torch.zeros(3, 4))


def test_block_product_matches_matrix():
    generator = _generator(9)
    weight = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    point = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    block = torch.randn(3, 6, 4, generator=generator, dtype=torch.float64)
    operator = LinearOperator(lambda s: torch.tanh(s @ weight.T), point)
    jacobians = torch.func.vmap(torch.func.jacrev(lambda s: torch.tanh(s @ weight.T)))(point)
    for linearize in (False, True):
        product = block_product(operator, linearize=linearize)(block)
        assert torch.allclose(product, jacobians @ block, atol=1e-12), linearize
