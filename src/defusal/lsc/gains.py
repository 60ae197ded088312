"""Per-sample gains of local maps with any estimator, and the LSC loss built on them."""

from __future__ import annotations

import torch
from torch import Tensor

from defusal.errors import DefusalError
from defusal.jacobian import LocalMap, operator_jacobian
from defusal.radius import (
    NONSQUARE_POLICIES,
    LinearOperator,
    check_estimator,
    norm_surrogate,
    power_norm,
    power_radius,
    radius_surrogate,
    spectral_norm,
    spectral_radius,
    square_indices,
)


def _restricted(local_map: LocalMap, row_index, column_index) -> LinearOperator:
    """Return the operator of the square sub-matrix ``J[rows][:, columns]`` without forming J."""
    point = local_map.point
    function = local_map.function
    if column_index is not None:
        column_index = column_index.to(point.device)
        full = point

        def embedded(sub_point, function=function, full=full, index=column_index):
            return function(full.index_copy(1, index, sub_point))

        function = embedded
        point = point.index_select(1, column_index)
    if row_index is not None:
        row_index = row_index.to(point.device)

        def selected(sub_point, function=function, index=row_index):
            return function(sub_point).index_select(1, index)

        function = selected
    return LinearOperator(function, point)


def map_gains(
    local_map: LocalMap,
    estimator: str = "eig",
    *,
    nonsquare: str = "subsample",
    create_graph: bool = False,
    generator: torch.Generator | None = None,
    iterations: int = 30,
    tolerance: float = 1e-5,
    warm_starts: dict | None = None,
) -> Tensor:
    """Return the gain of every sample's local Jacobian, shape ``(batch,)``.

    Args:
        local_map: the local map and its point.
        estimator: ``"eig"``, ``"norm"``, ``"matrix_free"`` or ``"matrix_free_norm"`` (see
            :mod:`defusal.radius`).
        nonsquare: for a non-square Jacobian, ``"subsample"`` (random square sub-matrix, then
            the estimator) or ``"norm"`` (spectral norm of the whole matrix).
        create_graph: make the gains differentiable with respect to the weights.
        generator: random generator for sub-sampling and start vectors.
        iterations: maximum power iterations of the matrix-free estimators.
        tolerance: relative change of the matrix-free estimate that stops the iteration.
        warm_starts: optional dict, updated in place, of final vectors per ``(edge, layer)``
            that start the next matrix-free call on the same edge.
    """
    check_estimator(estimator)
    if nonsquare not in NONSQUARE_POLICIES:
        raise DefusalError(f"unknown nonsquare policy {nonsquare!r}; use 'subsample' or 'norm'")
    n_in = local_map.point.shape[-1]
    with torch.no_grad():
        n_out = local_map.function(local_map.point[:1]).shape[-1]
    operator = local_map.operator()
    square = n_in == n_out
    if not square and nonsquare == "norm":
        estimator = "matrix_free_norm" if estimator.startswith("matrix_free") else "norm"
    elif not square:
        operator = _restricted(local_map, *square_indices(n_out, n_in, generator))

    if estimator in ("eig", "norm"):
        # The Jacobian itself never carries the graph: the surrogates differentiate through
        # two vector-Jacobian products, far cheaper than an eigendecomposition backward.
        matrix = operator_jacobian(operator)
        if not create_graph:
            return spectral_radius(matrix) if estimator == "eig" else spectral_norm(matrix)
        if estimator == "eig":
            return radius_surrogate(operator, matrix)
        return norm_surrogate(operator, matrix)

    key = (local_map.edge, local_map.layer, estimator)
    start = None if warm_starts is None else warm_starts.get(key)
    power = power_radius if estimator == "matrix_free" else power_norm
    result = power(
        operator,
        iterations=iterations,
        tolerance=tolerance,
        vectors=start,
        create_graph=create_graph,
        generator=generator,
    )
    if warm_starts is not None and square:
        warm_starts[key] = result.vectors
    return result.value


def lsc_loss(
    gains: dict[tuple[str, int], Tensor], targets: dict[str, float], divisor: float | None = None
) -> Tensor:
    """Return ``sum_k mean_b (rho_{k,b} - rho*_k)^2 / divisor`` over the edges ``k``.

    Args:
        gains: ``(batch,)`` gains per ``(edge, layer)``.
        targets: target per edge type.
        divisor: the denominator; the number of edges when ``None``.
    """
    terms = [((value - targets[edge]) ** 2).mean() for (edge, _), value in gains.items()]
    if not terms:
        raise DefusalError("no local Jacobian to pre-train; enable at least one edge type")
    return torch.stack(terms).sum() / (len(terms) if divisor is None else divisor)
