"""Gains of local Jacobians: spectral radius, spectral norm and matrix-free power iterations.

Three estimators of the gain of a local Jacobian ``J`` (one matrix per sample):

``"eig"``
    The spectral radius ``rho(J) = max_i |lambda_i(J)|`` from ``torch.linalg.eigvals``. Exact
    for square matrices and differentiable, though the gradient is unstable when two eigenvalues
    of the largest modulus coincide. A non-square ``J`` is first cut to a square by
    :func:`subsample_square`, which biases the radius low: a Glorot 784 -> 128 layer sub-sampled
    to 128 x 128 has radius about 0.55, not 1.

``"norm"``
    The spectral norm ``sigma_max(J)`` (largest singular value, by SVD). Needs no square matrix
    and is an upper bound of the radius, equal to it exactly when ``J`` is normal
    (``J J^T = J^T J``: symmetric, orthogonal or the rotation-scaling blocks of an LRU).

``"matrix_free"``
    Block power iteration (subspace iteration) on ``J`` with ``block`` vectors, built only on
    Jacobian-vector products, so ``J`` is never formed and memory grows with
    ``batch x width``, not ``width^2``. The estimate is the largest modulus among the
    eigenvalues of the small projected matrix ``Q^T J Q`` (Ritz values). With ``block=2`` it
    converges to the exact radius when the dominant eigenvalue is real or a complex conjugate
    pair and is separated in modulus from the rest. The error then shrinks like
    ``(|lambda_{block+1}| / |lambda_1|)^iterations``. Before convergence the estimate can be
    off in either direction for non-normal ``J``. Random matrices whose eigenvalues fill a disc
    (Glorot, He) have no gap at the edge, so the estimate there converges slowly and stays
    a little low.

``"matrix_free_norm"``
    Power iteration on ``J^T J`` with Jacobian-vector and vector-Jacobian products: the spectral
    norm without forming ``J``. Converges like ``(sigma_2 / sigma_1)^(2 iterations)``.

Both matrix-free estimators return a differentiable *surrogate*: the iteration runs on detached
vectors, then one product that carries the autograd graph gives ``sigma = u^T J v`` (norm) or
the Ritz matrix ``Q^T J Q`` (radius). At convergence the gradient of ``u^T J v`` with respect to
the weights equals the gradient of ``sigma_max``; the gradient of the Ritz radius equals the
gradient of ``|lambda_max|`` when ``J`` is normal and approximates it otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd import forward_ad

from defusal.errors import DefusalError

logger = logging.getLogger(__name__)

ESTIMATORS = ("eig", "norm", "matrix_free", "matrix_free_norm")
NONSQUARE_POLICIES = ("subsample", "norm")
# Points with at least this many entries (batch x state size) are linearized once by
# torch.func.linearize before a power iteration: below it the tracing costs more than it saves.
LINEARIZE_MIN_ELEMENTS = 8192
# Relative change of the estimate that stops a power iteration. On random LSTM time Jacobians of
# width 512 (block 4) it leaves a relative error below 1% against torch.linalg.eigvals.
POWER_TOLERANCE = 1e-3


def check_estimator(estimator: str) -> str:
    """Return ``estimator`` if it is known, else raise :class:`DefusalError`."""
    if estimator not in ESTIMATORS:
        raise DefusalError(
            f"unknown radius estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
        )
    return estimator


def spectral_radius(matrix: Tensor) -> Tensor:
    """Return ``max_i |lambda_i|`` of square matrices.

    Args:
        matrix: ``(..., n, n)``.

    Returns:
        ``(...)``, differentiable through ``torch.linalg.eigvals``.

    Raises:
        DefusalError: if the last two dimensions differ.
    """
    if matrix.shape[-1] != matrix.shape[-2]:
        raise DefusalError(
            f"the spectral radius needs square matrices, got {tuple(matrix.shape[-2:])}; "
            "sub-sample with subsample_square or use the spectral norm"
        )
    return torch.linalg.eigvals(matrix).abs().amax(dim=-1)


def spectral_norm(matrix: Tensor) -> Tensor:
    """Return the largest singular value of ``(..., m, n)`` matrices, shape ``(...)``."""
    return torch.linalg.matrix_norm(matrix, ord=2)


def square_indices(
    rows: int, columns: int, generator: torch.Generator | None = None
) -> tuple[Tensor | None, Tensor | None]:
    """Draw the row and column indices that cut a ``rows x columns`` matrix to a square.

    Along the larger axis ``min(rows, columns)`` distinct indices are drawn without replacement
    and sorted; the smaller axis is kept whole (``None``).
    """
    size = min(rows, columns)
    row_index = column_index = None
    if rows > size:
        row_index = torch.randperm(rows, generator=generator)[:size].sort().values
    if columns > size:
        column_index = torch.randperm(columns, generator=generator)[:size].sort().values
    return row_index, column_index


def subsample_square(matrix: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Cut ``(..., m, n)`` matrices to ``(..., k, k)``, ``k = min(m, n)``, by random sub-sampling.

    One fresh, sorted subset of the larger axis (without replacement) is drawn per call and
    shared by the whole batch. Square matrices are returned unchanged.
    """
    row_index, column_index = square_indices(matrix.shape[-2], matrix.shape[-1], generator)
    if row_index is not None:
        matrix = matrix.index_select(-2, row_index.to(matrix.device))
    if column_index is not None:
        matrix = matrix.index_select(-1, column_index.to(matrix.device))
    return matrix


def matrix_gain(
    matrix: Tensor,
    estimator: str = "eig",
    *,
    nonsquare: str = "subsample",
    generator: torch.Generator | None = None,
    iterations: int = 100,
    tolerance: float = POWER_TOLERANCE,
) -> Tensor:
    """Return the gain of explicit matrices ``(..., m, n)`` with any estimator, shape ``(...)``.

    ``nonsquare`` chooses, for ``m != n``, between random square sub-sampling followed by the
    estimator and the spectral norm of the whole matrix. ``iterations`` and ``tolerance`` set
    the matrix-free power iterations.
    """
    check_estimator(estimator)
    if nonsquare not in NONSQUARE_POLICIES:
        raise DefusalError(f"unknown nonsquare policy {nonsquare!r}; use 'subsample' or 'norm'")
    square = matrix.shape[-1] == matrix.shape[-2]
    if not square and nonsquare == "norm":
        estimator = "matrix_free_norm" if estimator.startswith("matrix_free") else "norm"
    elif not square:
        matrix = subsample_square(matrix, generator)
    if estimator == "eig":
        return spectral_radius(matrix)
    if estimator == "norm":
        return spectral_norm(matrix)
    batch_shape = matrix.shape[:-2]
    flat = matrix.reshape(-1, *matrix.shape[-2:])
    operator = LinearOperator.from_matrix(flat)
    if estimator == "matrix_free":
        gain = power_radius(
            operator, iterations=iterations, tolerance=tolerance, generator=generator
        ).value
    else:
        gain = power_norm(
            operator, iterations=iterations, tolerance=tolerance, generator=generator
        ).value
    return gain.reshape(batch_shape)


@dataclass
class LinearOperator:
    """The linearization of a batched map ``f: (batch, n_in) -> (batch, n_out)`` at ``point``.

    Samples must be independent (row ``b`` of the output depends only on row ``b`` of the
    input), which holds for recurrent cells without batch normalization. Then one
    Jacobian-vector product of the batched map with a batch of tangents gives every per-sample
    product ``J_b v_b`` at once.

    Attributes:
        function: the batched map; it may close over the weights, which then receive gradients
            through the differentiable surrogates.
        point: ``(batch, n_in)``, the input at which ``f`` is linearized.
    """

    function: Callable[[Tensor], Tensor]
    point: Tensor

    @classmethod
    def from_matrix(cls, matrix: Tensor) -> LinearOperator:
        """Wrap explicit matrices ``(batch, m, n)`` as the linear map ``v -> matrix v``."""
        return cls(
            lambda v: torch.einsum("bmn,bn->bm", matrix, v),
            matrix.new_zeros(matrix.shape[0], matrix.shape[-1]),
        )

    def jvp(self, tangent: Tensor) -> Tensor:
        """Return ``J_b v_b`` for tangents ``(batch, n_in)``, shape ``(batch, n_out)``."""
        try:
            with forward_ad.dual_level():
                dual = forward_ad.make_dual(self.point.detach(), tangent)
                product = forward_ad.unpack_dual(self.function(dual)).tangent
            if product is None:
                return torch.zeros_like(self.function(self.point.detach()))
            return product
        except (RuntimeError, NotImplementedError):
            # Forward-mode AD is missing for some custom autograd functions (surrogate spikes):
            # J v = d/du <J^T u, v>, two reverse passes on one graph.
            return self._double_vjp(tangent)

    def vjp(self, cotangent: Tensor, *, create_graph: bool = False) -> Tensor:
        """Return ``J_b^T u_b`` for cotangents ``(batch, n_out)``, shape ``(batch, n_in)``."""
        point = self.point.detach().requires_grad_(True)
        with torch.enable_grad():
            output = self.function(point)
            (grad,) = torch.autograd.grad(output, point, cotangent, create_graph=create_graph)
        return grad

    def _double_vjp(self, tangent: Tensor) -> Tensor:
        point = self.point.detach().requires_grad_(True)
        with torch.enable_grad():
            output = self.function(point)
            dummy = torch.zeros_like(output, requires_grad=True)
            (pullback,) = torch.autograd.grad(output, point, dummy, create_graph=True)
            (product,) = torch.autograd.grad(pullback, dummy, tangent)
        return product


@dataclass
class PowerResult:
    """Result of a matrix-free power iteration.

    Attributes:
        value: ``(batch,)`` estimate; carries gradients to the weights when requested.
        vectors: ``(batch, n, block)`` detached final vectors, to warm-start the next call.
        iterations: iterations run.
        change: largest relative change of the estimate in the last iteration.
    """

    value: Tensor
    vectors: Tensor
    iterations: int
    change: float


def _orthonormal_columns(block: Tensor) -> Tensor:
    return torch.linalg.qr(block).Q


def _random_block(operator: LinearOperator, size: int, generator) -> Tensor:
    point = operator.point
    noise = torch.randn(*point.shape, size, generator=generator, dtype=point.dtype)
    return noise.to(point.device)


def _column_loop(operator: LinearOperator, block: Tensor) -> Tensor:
    return torch.stack([operator.jvp(block[..., i]) for i in range(block.shape[-1])], dim=-1)


def block_product(
    operator: LinearOperator, *, linearize: bool | None = None
) -> Callable[[Tensor], Tensor]:
    """Return the block product ``V -> J V``, ``(batch, n_in, k) -> (batch, n_out, k)``.

    The ``k`` columns go through one ``torch.func.vmap`` of a Jacobian-vector product, so the
    primal forward pass runs once per block, not once per column. With ``linearize`` the map is
    first linearized by ``torch.func.linearize``, which traces the tangent computation once
    (a fixed cost of a few hundred milliseconds on a CPU) so that each later product skips the
    forward pass. ``None`` linearizes when the point has at least
    :data:`LINEARIZE_MIN_ELEMENTS` entries, where the saving per product outweighs the tracing.
    Maps that neither ``vmap`` nor forward-mode AD can handle (custom autograd functions such as
    surrogate spikes) fall back to one :meth:`LinearOperator.jvp` per column.
    """
    point = operator.point.detach()
    if linearize is None:
        linearize = point.numel() >= LINEARIZE_MIN_ELEMENTS
    state: dict[str, Callable[[Tensor], Tensor] | None] = {"apply": None}

    def vmapped(block: Tensor) -> Tensor:
        if state["apply"] is None:
            if linearize:
                _, tangent_map = torch.func.linearize(operator.function, point)
            else:

                def tangent_map(tangent: Tensor) -> Tensor:
                    return torch.func.jvp(operator.function, (point,), (tangent,))[1]

            state["apply"] = torch.func.vmap(tangent_map, in_dims=-1, out_dims=-1)
        return state["apply"](block.contiguous())

    def product(block: Tensor) -> Tensor:
        if state.get("fallback"):
            return _column_loop(operator, block)
        try:
            return vmapped(block)
        except (RuntimeError, NotImplementedError):
            logger.debug("batched Jacobian-vector product failed; using one product per column")
            state["fallback"] = True
            return _column_loop(operator, block)

    return product


def _ritz_radius(projected: Tensor) -> Tensor:
    return torch.linalg.eigvals(projected).abs().amax(dim=-1)


def power_radius(
    operator: LinearOperator,
    *,
    block: int = 4,
    iterations: int = 100,
    tolerance: float = POWER_TOLERANCE,
    vectors: Tensor | None = None,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
    linearize: bool | None = None,
) -> PowerResult:
    """Estimate the spectral radius of a square linearization by block power iteration.

    Iterates ``Q <- qr(J Q)`` with ``Q`` of shape ``(batch, n, block)`` on detached vectors, and
    returns ``max |eig(Q^T J Q)|``. Each iteration applies ``J`` to the whole block at once
    (:func:`block_product`). With ``create_graph`` the last product ``Q^T J`` is taken with
    vector-Jacobian products that carry the graph, so the estimate is differentiable with
    respect to the weights inside ``operator.function``.

    Args:
        operator: a square linearization (``n_in == n_out``).
        block: number of vectors. At least 2 resolves a complex conjugate dominant pair. A
            larger block converges faster where the spectrum has no gap at its edge.
        iterations: maximum iterations.
        tolerance: stop when the relative change of every sample's estimate is below this.
        vectors: optional ``(batch, n, block)`` start vectors (a warm start).
        create_graph: make the returned value differentiable.
        generator: random generator for the start vectors.
        linearize: linearize the map once with ``torch.func.linearize``; ``None`` decides by
            the size of the point (see :func:`block_product`) and does not linearize for a
            warm start.

    Returns:
        A :class:`PowerResult`.
    """
    batch, size = operator.point.shape
    block = max(1, min(block, size))
    if vectors is None or vectors.shape != (batch, size, block):
        vectors = _random_block(operator, block, generator)
    basis = _orthonormal_columns(vectors.detach())
    if linearize is None and vectors is not None:
        # A warm start usually needs a few iterations, fewer than the tracing would save.
        linearize = False
    apply = block_product(operator, linearize=linearize)
    estimate = None
    change = math.inf
    done = 0
    with torch.no_grad():
        for iteration in range(1, iterations + 1):
            done = iteration
            image = apply(basis).detach()
            radius = _ritz_radius(basis.transpose(-1, -2) @ image)
            basis = _orthonormal_columns(image)
            if estimate is not None:
                change = ((radius - estimate).abs() / radius.clamp_min(1e-30)).max().item()
            estimate = radius
            if change < tolerance:
                break
    if create_graph:
        pullbacks = torch.stack(
            [operator.vjp(basis[..., i], create_graph=True) for i in range(basis.shape[-1])],
            dim=-2,
        )
        value = _ritz_radius(pullbacks @ basis)
    else:
        with torch.no_grad():
            value = _ritz_radius(basis.transpose(-1, -2) @ apply(basis))
    return PowerResult(value, basis.detach(), done, change)


def power_norm(
    operator: LinearOperator,
    *,
    iterations: int = 100,
    tolerance: float = POWER_TOLERANCE,
    vectors: Tensor | None = None,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
) -> PowerResult:
    """Estimate the spectral norm of a linearization by power iteration on ``J^T J``.

    Iterates ``v <- J^T J v / ||J^T J v||`` on detached vectors, then returns
    ``sigma = u^T J v`` with ``u = J v / ||J v||``. With ``create_graph`` this last product is a
    vector-Jacobian product that carries the graph: its gradient with respect to the weights
    is ``u^T (dJ) v``, the gradient of ``sigma_max`` once ``u, v`` are the singular vectors.

    Args and Returns as :func:`power_radius` (``vectors`` has shape ``(batch, n_in, 1)``).
    """
    batch, size = operator.point.shape
    if vectors is None or vectors.shape != (batch, size, 1):
        vectors = _random_block(operator, 1, generator)
    right = vectors[..., 0].detach()
    right = right / right.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    estimate = None
    change = math.inf
    done = 0
    with torch.no_grad():
        for iteration in range(1, iterations + 1):
            done = iteration
            image = operator.jvp(right).detach()
            sigma = image.norm(dim=-1)
            left = image / sigma.clamp_min(1e-30).unsqueeze(-1)
            back = operator.vjp(left)
            right = back / back.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            if estimate is not None:
                change = ((sigma - estimate).abs() / sigma.clamp_min(1e-30)).max().item()
            estimate = sigma
            if change < tolerance:
                break
        image = operator.jvp(right).detach()
        left = image / image.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    if create_graph:
        value = (operator.vjp(left, create_graph=True) * right).sum(dim=-1)
    else:
        value = image.norm(dim=-1)
    return PowerResult(value, right.detach().unsqueeze(-1), done, change)


def radius_surrogate(operator: LinearOperator, matrix: Tensor) -> Tensor:
    """Return ``rho(J)`` per sample with gradients from a first-order eigenvalue perturbation.

    ``matrix`` is the detached Jacobian ``(batch, n, n)`` of ``operator``. With the dominant
    eigenvalue ``lambda = V Lambda V^{-1}``'s entry ``i``, right eigenvector ``v = V e_i`` and
    left eigenvector ``r^T = e_i^T V^{-1}``, ``d lambda = r^T (dJ) v``, so

        s = Re(conj(lambda) / |lambda| * r^T J v)

    equals ``|lambda|`` and has the gradient of ``|lambda|`` with respect to the weights, while
    backpropagating only through two vector-Jacobian products (no eigendecomposition backward).
    The gradient is unstable when the dominant eigenvalue is defective or repeated, as the
    eigendecomposition gradient is.
    """
    values, vectors = torch.linalg.eig(matrix.detach())
    index = values.abs().argmax(dim=-1)
    batch = torch.arange(matrix.shape[0], device=matrix.device)
    dominant = values[batch, index]
    right = vectors[batch, :, index]
    unit = torch.zeros_like(right)
    unit[batch, index] = 1.0
    left = torch.linalg.solve(vectors.transpose(-1, -2), unit)
    phase = dominant.conj() / dominant.abs().clamp_min(1e-30)
    pull_real = operator.vjp(left.real.contiguous(), create_graph=True)
    pull_imag = operator.vjp(left.imag.contiguous(), create_graph=True)
    product_real = (pull_real * right.real).sum(-1) - (pull_imag * right.imag).sum(-1)
    product_imag = (pull_real * right.imag).sum(-1) + (pull_imag * right.real).sum(-1)
    return phase.real * product_real - phase.imag * product_imag


def norm_surrogate(operator: LinearOperator, matrix: Tensor) -> Tensor:
    """Return ``sigma_max(J)`` per sample as ``u^T J v`` with the top singular vectors.

    ``matrix`` is the detached Jacobian ``(batch, m, n)``. The value equals the spectral norm and
    its gradient with respect to the weights is ``u^T (dJ) v``, the gradient of ``sigma_max``
    when the top singular value is simple.
    """
    left, _, right_h = torch.linalg.svd(matrix.detach(), full_matrices=False)
    pull = operator.vjp(left[..., 0].contiguous(), create_graph=True)
    return (pull * right_h[..., 0, :]).sum(-1)
