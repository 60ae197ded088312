"""Per-sample gains of local maps with any estimator, and the LSC loss built on them.

The exact radius (``"eig"``) of many Jacobians is the cost centre of LSC pre-training, so
:func:`edge_gains` computes it for all local maps of a time step together:

1. every Jacobian ``(batch, n, n)`` is formed with batched vector-Jacobian products;
2. columns that are zero for every sample are dropped with their rows. The result has the same
   nonzero eigenvalues, because after a symmetric permutation ``J = [[A, 0], [C, 0]]`` and
   ``eig(J) = eig(A) + zeros``. The depth Jacobian of an LSTM, ``d [h; c] / d [h_low; c_low]``,
   has zero ``c_low`` columns, so its eigenvalues come from a matrix half as wide;
3. matrices of one size go through one ``torch.linalg.eigvals`` call (values only, about half
   the cost of ``torch.linalg.eig``);
4. with gradients, the dominant right and left eigenvectors come from two steps of inverse
   iteration with one complex LU factorization per matrix. The gain is then
   ``|lambda| + s - stop_gradient(s)`` with ``s = Re(conj(lambda) / |lambda| r^T J v / r^T v)``,
   whose weight gradient is the first-order perturbation ``d|lambda|``. ``r^T J`` is one
   vector-Jacobian product that carries the graph, so the backward pass never goes through an
   eigendecomposition.
"""

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
    spectral_norm,
    square_indices,
)

# Relative offset of the inverse-iteration shift from the dominant eigenvalue: small enough to
# converge in two solves, large enough to keep the shifted matrix invertible in float32.
_SHIFT = 1e-3
# Non-square Jacobians whose smaller side is at most this are cut and solved exactly even with
# the matrix-free estimator: the cut is at most this wide, and forming it takes that many
# Jacobian-vector products.
EXPLICIT_CUT_MAX = 256


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


def _output_size(local_map: LocalMap) -> int:
    with torch.no_grad():
        return local_map.function(local_map.point[:1]).shape[-1]


def _square_operators(
    local_map: LocalMap, estimator: str, nonsquare: str, generator, cuts: int = 1
) -> tuple[list[LinearOperator], str, bool]:
    """Return the operators to estimate, the estimator to use and whether ``J`` is square.

    A non-square Jacobian is cut to ``cuts`` random square sub-matrices, each drawn
    independently; the caller averages their gains. With an explicit estimator (``"eig"``,
    ``"norm"``) the rows and columns that are zero for every sample are left out of the draw
    first: the ``c`` half of an LSTM state never reaches the readout, and drawing those zero
    columns would only add a random number of zero eigenvalues.
    """
    n_in = local_map.point.shape[-1]
    n_out = _output_size(local_map)
    operator = local_map.operator()
    square = n_in == n_out
    if square:
        return [operator], estimator, True
    if nonsquare == "norm":
        estimator = "matrix_free_norm" if estimator.startswith("matrix_free") else "norm"
        return [operator], estimator, False
    if estimator == "matrix_free" and min(n_in, n_out) <= EXPLICIT_CUT_MAX:
        # A small square cut is cheaper to form and solve exactly than to power-iterate.
        estimator = "eig"
    if estimator not in ("eig", "norm"):
        draws = [square_indices(n_out, n_in, generator) for _ in range(cuts)]
        return [_restricted(local_map, *draw) for draw in draws], estimator, False
    magnitude = operator_jacobian(operator).detach().abs()
    rows = (magnitude.amax(dim=(0, 2)) > 0).nonzero().squeeze(-1)
    columns = (magnitude.amax(dim=(0, 1)) > 0).nonzero().squeeze(-1)
    if len(rows) == 0 or len(columns) == 0:
        rows, columns = torch.arange(n_out), torch.arange(n_in)
    operators = []
    for _ in range(cuts):
        row_index, column_index = square_indices(len(rows), len(columns), generator)
        chosen_rows = rows if row_index is None else rows[row_index]
        chosen_columns = columns if column_index is None else columns[column_index]
        size = min(len(chosen_rows), len(chosen_columns))
        operators.append(_restricted(local_map, chosen_rows[:size], chosen_columns[:size]))
    return operators, estimator, False


def dominant_eigenpairs(matrix: Tensor, generator: torch.Generator | None = None):
    """Return the dominant eigenvalue and its right and left eigenvectors of square matrices.

    Args:
        matrix: ``(batch, n, n)`` real, detached.
        generator: random generator of the inverse-iteration start vectors.

    Returns:
        ``(values, right, left)``: ``values`` complex ``(batch,)`` of the largest modulus,
        ``right`` and ``left`` complex ``(batch, n)`` with ``J v = lambda v`` and
        ``r^T J = lambda r^T``, each of unit norm. Vectors of a singular shifted system are
        zero, so such a sample gets no gradient.
    """
    values = torch.linalg.eigvals(matrix)
    index = values.abs().argmax(dim=-1, keepdim=True)
    dominant = values.gather(-1, index).squeeze(-1)
    size = matrix.shape[-1]
    complex_matrix = matrix.to(values.dtype)
    shift = dominant + _SHIFT * (dominant.abs() + _SHIFT)
    identity = torch.eye(size, dtype=values.dtype, device=matrix.device)
    system = complex_matrix - shift[:, None, None] * identity
    factors, pivots, _ = torch.linalg.lu_factor_ex(system)
    start = torch.randn(matrix.shape[0], size, 2, generator=generator, dtype=matrix.dtype)
    start = torch.complex(start[..., 0], start[..., 1]).to(matrix.device).unsqueeze(-1)
    right, left = start, start
    for _ in range(2):
        right = torch.linalg.lu_solve(factors, pivots, _unit(right))
        # (J - s I)^H w = b gives J^T conj(w) = conj(conj(s)) conj(w) for real J.
        left = torch.linalg.lu_solve(factors, pivots, _unit(left), adjoint=True)
    right, left = _unit(right).squeeze(-1), _unit(left).squeeze(-1).conj().resolve_conj()
    finite = torch.isfinite(torch.view_as_real(right)).all(dim=(-1, -2))
    finite &= torch.isfinite(torch.view_as_real(left)).all(dim=(-1, -2))
    right = torch.where(finite[:, None], right, torch.zeros_like(right))
    left = torch.where(finite[:, None], left, torch.zeros_like(left))
    return dominant, right, left


def _unit(vectors: Tensor) -> Tensor:
    return vectors / vectors.norm(dim=-2, keepdim=True).clamp_min(1e-30)


def _paired_vjp(operator: LinearOperator, real: Tensor, imag: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``real^T J`` and ``imag^T J`` with one forward pass and one batched VJP."""
    point = operator.point.detach().requires_grad_(True)
    with torch.enable_grad():
        output = operator.function(point)
        try:
            (grads,) = torch.autograd.grad(
                output, point, torch.stack([real, imag]), create_graph=True, is_grads_batched=True
            )
            return grads[0], grads[1]
        except RuntimeError:
            # Some custom autograd functions cannot be batched: one cotangent at a time.
            (first,) = torch.autograd.grad(
                output, point, real, create_graph=True, retain_graph=True
            )
            (second,) = torch.autograd.grad(output, point, imag, create_graph=True)
            return first, second


def radius_from_pairs(
    operator: LinearOperator, dominant: Tensor, right: Tensor, left: Tensor
) -> Tensor:
    """Return ``|lambda|`` per sample, differentiable through one vector-Jacobian product.

    ``right`` and ``left`` (complex ``(batch, n)``) are the dominant eigenvectors of the
    operator's Jacobian for the eigenvalue ``dominant`` (complex ``(batch,)``). The value is
    exactly ``|dominant|`` and the gradient with respect to the weights inside the operator is
    ``Re(conj(lambda) / |lambda| r^T (dJ) v / r^T v)``.
    """
    modulus = dominant.abs()
    phase = dominant.conj() / modulus.clamp_min(1e-30)
    overlap = (left * right).sum(-1)
    safe = overlap.abs() > 1e-6
    scale = torch.where(safe, phase / torch.where(safe, overlap, 1.0), 0.0)
    pull_real, pull_imag = _paired_vjp(
        operator, left.real.contiguous().to(operator.point.dtype), left.imag.contiguous()
    )
    product_real = (pull_real * right.real).sum(-1) - (pull_imag * right.imag).sum(-1)
    product_imag = (pull_real * right.imag).sum(-1) + (pull_imag * right.real).sum(-1)
    surrogate = scale.real * product_real - scale.imag * product_imag
    return modulus.to(surrogate.dtype) + surrogate - surrogate.detach()


def _nonzero_columns(matrix: Tensor) -> Tensor | None:
    """Return the indices of columns that are nonzero for some sample, or None for all."""
    keep = matrix.abs().amax(dim=(0, 1)) > 0
    if bool(keep.all()) or not bool(keep.any()):
        return None
    return keep.nonzero().squeeze(-1)


def _eig_gains(operators: list[LinearOperator], create_graph: bool, generator) -> list[Tensor]:
    """Return the exact spectral radius of every square operator, grouped by matrix size."""
    matrices, kept = [], []
    for operator in operators:
        matrix = operator_jacobian(operator).detach()
        keep = _nonzero_columns(matrix)
        kept.append((matrix, keep))
        matrices.append(matrix if keep is None else matrix[:, keep][:, :, keep])
    groups: dict[int, list[int]] = {}
    for index, matrix in enumerate(matrices):
        groups.setdefault(matrix.shape[-1], []).append(index)
    results: list[Tensor | None] = [None] * len(operators)
    for indices in groups.values():
        stacked = torch.cat([matrices[i] for i in indices])
        sizes = [matrices[i].shape[0] for i in indices]
        if not create_graph:
            radii = torch.linalg.eigvals(stacked).abs().amax(dim=-1)
            for i, value in zip(indices, radii.split(sizes), strict=True):
                results[i] = value
            continue
        dominant, right, left = dominant_eigenpairs(stacked, generator)
        parts = zip(
            indices, dominant.split(sizes), right.split(sizes), left.split(sizes), strict=True
        )
        for i, value, right_i, left_i in parts:
            full, keep = kept[i]
            if keep is not None:
                right_i, left_i = _embed_pairs(full, keep, value, right_i, left_i)
            results[i] = radius_from_pairs(operators[i], value, right_i, left_i)
    return results


def _embed_pairs(full: Tensor, keep: Tensor, value: Tensor, right: Tensor, left: Tensor):
    """Lift eigenvectors of the reduced matrix ``A`` to the full ``J = [[A, 0], [C, 0]]``.

    The right eigenvector is ``[v_A; C v_A / lambda]`` and the left one ``[r_A; 0]``.
    """
    size = full.shape[-1]
    dropped = torch.ones(size, dtype=torch.bool, device=full.device)
    dropped[keep] = False
    coupling = full[:, dropped][:, :, keep].to(right.dtype)
    lifted = torch.einsum("bij,bj->bi", coupling, right)
    lifted = lifted / torch.where(value.abs() > 0, value, 1.0)[:, None]
    full_right = right.new_zeros(full.shape[0], size)
    full_right[:, keep] = right
    full_right[:, dropped] = lifted
    full_left = left.new_zeros(full.shape[0], size)
    full_left[:, keep] = left
    return full_right, full_left


def edge_gains(
    maps: list[LocalMap],
    estimator: str = "eig",
    *,
    nonsquare: str = "subsample",
    create_graph: bool = False,
    generator: torch.Generator | None = None,
    iterations: int = 30,
    tolerance: float = 1e-5,
    warm_starts: dict | None = None,
    cuts: int = 1,
) -> dict[tuple[str, int], Tensor]:
    """Return the per-sample gains ``(batch,)`` of several local maps, keyed by ``(edge, layer)``.

    The same as :func:`map_gains` on each map, but the exact radii of all maps share batched
    eigenvalue calls (see the module docstring). Arguments as :func:`map_gains`.
    """
    check_estimator(estimator)
    if nonsquare not in NONSQUARE_POLICIES:
        raise DefusalError(f"unknown nonsquare policy {nonsquare!r}; use 'subsample' or 'norm'")
    if int(cuts) < 1:
        raise DefusalError(f"cuts must be a positive integer, got {cuts}")
    gains: dict[tuple[str, int], Tensor] = {}
    exact: list[tuple[tuple[str, int], LinearOperator]] = []
    for local_map in maps:
        operators, chosen, square = _square_operators(
            local_map, estimator, nonsquare, generator, int(cuts)
        )
        if chosen == "eig":
            exact.extend((local_map.key, operator) for operator in operators)
            continue
        values = [
            _other_gains(
                local_map,
                operator,
                chosen,
                square,
                create_graph,
                generator,
                iterations,
                tolerance,
                warm_starts,
            )
            for operator in operators
        ]
        gains[local_map.key] = _average(values)
    if exact:
        values = _eig_gains([operator for _, operator in exact], create_graph, generator)
        per_key: dict[tuple[str, int], list[Tensor]] = {}
        for (key, _), value in zip(exact, values, strict=True):
            per_key.setdefault(key, []).append(value)
        gains.update({key: _average(parts) for key, parts in per_key.items()})
    return {local_map.key: gains[local_map.key] for local_map in maps}


def _average(values: list[Tensor]) -> Tensor:
    return values[0] if len(values) == 1 else torch.stack(values).mean(dim=0)


def _other_gains(
    local_map,
    operator,
    estimator,
    square,
    create_graph,
    generator,
    iterations,
    tolerance,
    warm_starts,
) -> Tensor:
    if estimator == "norm":
        matrix = operator_jacobian(operator)
        if not create_graph:
            return spectral_norm(matrix)
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
    cuts: int = 1,
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
        cuts: with ``nonsquare="subsample"``, the number of independent random square cuts of
            a non-square Jacobian; the gain is their mean per sample. The original procedure
            draws one cut, which makes the gain of a 49-input encoder or a 10-logit decoder vary
            by about 0.1 from call to call. The spread falls like ``1 / sqrt(cuts)``.
    """
    gains = edge_gains(
        [local_map],
        estimator,
        nonsquare=nonsquare,
        create_graph=create_graph,
        generator=generator,
        iterations=iterations,
        tolerance=tolerance,
        warm_starts=warm_starts,
        cuts=cuts,
    )
    return gains[local_map.key]


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
