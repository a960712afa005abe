"""Orthogonal decomposition of a symmetric third-order tensor by alternating least squares.

The whitened LDA moment ``T = Σ λ_i v_i⊗v_i⊗v_i`` has orthonormal ``v_i``. For a symmetric CP model whose
factors are orthonormal, the least-squares update of one factor given the others is ``A = T(I, V, V)`` (column
``j`` is ``T(I, v_j, v_j)``, a tensor power step for every component at once); orthonormalizing ``A`` (QR)
keeps the factors orthogonal, so all k components converge together instead of one after another with
deflation (Wang & Lu, "Tensor decomposition via simultaneous power iteration", ICML 2017; Sharan & Valiant,
"Orthogonalized ALS", ICML 2017). Each iteration is one ``k × k²`` by ``k² × k`` product.

As SageMaker's ALS phase, it runs ``max_restarts`` random orthonormal starts of at most ``max_iterations``
iterations, each stopping once the fit ``Σ λ_j²`` of the components kept changes by less than ``tol``
(relative), and keeps the start with the best fit (for orthonormal factors, the smallest residual
``‖T - Σ λ v⊗v⊗v‖``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Decomposition:
    weights: np.ndarray  # λ, non-negative
    factors: np.ndarray  # k × k, orthonormal columns v_j
    residual: float  # ‖T - Σ λ v⊗v⊗v‖ / ‖T‖
    iterations: int  # of the kept start


def _khatri_rao(v: np.ndarray) -> np.ndarray:
    """Columns ``v_j ⊗ v_j`` (k² × k)."""
    k = v.shape[0]
    return (v[:, None, :] * v[None, :, :]).reshape(k * k, v.shape[1])


def orthogonal_als(tensor: np.ndarray, max_restarts: int, max_iterations: int, tol: float,
                   rng: np.random.Generator, keep: int | None = None) -> Decomposition:
    """Decompose ``tensor`` (k × k × k); the factors come out strongest (largest λ) first.

    ``keep``: how many of the strongest components matter (the topics kept). Convergence and the choice among
    starts follow those only: components the data do not support (the extra ones) have no fixed point and would
    wander for ever. Factors are re-ordered by λ before every orthonormalization, so the strongest ones never
    depend on the weaker ones (Gram-Schmidt only projects a column on those before it).
    """
    k = tensor.shape[0]
    keep = k if keep is None else max(1, min(keep, k))
    unfolded = np.ascontiguousarray(tensor.reshape(k, k * k))
    total = float(np.sum(tensor * tensor))
    if total == 0.0:
        return Decomposition(np.zeros(k), np.eye(k), 0.0, 0)
    best: Decomposition | None = None
    best_fit = -1.0
    for _ in range(max_restarts):
        v, _ = np.linalg.qr(rng.standard_normal((k, k)))
        v, applied, weights = _strongest_first(unfolded, v)
        previous = float(weights[:keep] @ weights[:keep])
        iterations = 0
        for iterations in range(1, max_iterations + 1):  # noqa: B007 - kept after the loop
            v, r = np.linalg.qr(applied)
            v *= np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]
            v, applied, weights = _strongest_first(unfolded, v)
            fit = float(weights[:keep] @ weights[:keep])
            if abs(fit - previous) <= tol * max(abs(previous), 1e-300):
                break
            previous = fit
        fit = float(weights[:keep] @ weights[:keep])
        if fit > best_fit:
            residual = float(np.sqrt(max(total - float(weights @ weights), 0.0) / total))
            best, best_fit = Decomposition(weights.copy(), v.copy(), residual, iterations), fit
    assert best is not None
    return best


def _strongest_first(unfolded: np.ndarray, v: np.ndarray):
    """Factors with positive λ (``T(v,v,v)`` is odd in ``v``), re-ordered by λ; ``T(I, v_j, v_j)``; λ."""
    applied = unfolded @ _khatri_rao(v)  # column j: T(I, v_j, v_j)
    weights = np.einsum("ij,ij->j", v, applied)
    signs = np.where(weights < 0, -1.0, 1.0)
    order = np.argsort(-np.abs(weights), kind="stable")
    return (v * signs[None, :])[:, order], (applied)[:, order], np.abs(weights)[order]


__all__ = ["Decomposition", "orthogonal_als"]
