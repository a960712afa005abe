"""Each document's topic mixture under a trained LDA model: variational inference, vectorized over documents.

For fixed topics ``β`` (k × V) and prior ``α``, the variational posterior of a document's mixture is
Dirichlet(γ) with the fixed point (Blei, Ng & Jordan 2003)

    γ = α + exp(E[log θ]) ∘ Σ_w c_w β[:, w] / (exp(E[log θ]) · β[:, w]),    E[log θ] = ψ(γ) - ψ(Σγ)

Every step is a few products over the documents' nonzero counts at once (a gather of ``β``'s columns, a row-wise
dot, a sparse-times-dense product), for a block of documents together; a block stops when no document's
``γ`` moved by more than ``tol`` on average, or after ``max_iterations`` steps. The mixture is ``γ / Σγ``,
as MLlib's ``topicDistribution``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .kernels import BLOCK_ELEMENTS

MAX_ITERATIONS = 100
TOL = 1e-3
_TINY = 1e-100


def _blocks(counts: sp.csr_matrix, k: int):
    """Row ranges whose nonzeros times k stay within the kernels' block bound."""
    n = counts.shape[0]
    limit = max(1, BLOCK_ELEMENTS // max(1, k))
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(counts.indptr, counts.indptr[lo] + limit, side="right")) - 1
        hi = min(n, max(hi, lo + 1))
        yield lo, hi
        lo = hi


def infer(ops, counts: sp.csr_matrix, topics_t, alpha, max_iterations: int = MAX_ITERATIONS,
          tol: float = TOL, with_loglik: bool = False):
    """``(γ (n × k) as numpy, Σ_d Σ_w c_dw log p(w | θ_d) or None)`` for word counts ``counts`` (CSR, n × V).

    ``topics_t`` (V × k) and ``alpha`` (k,) are backend float64 arrays. Empty documents get ``γ = α``.
    """
    k = topics_t.shape[1]
    gammas = []
    loglik = 0.0
    for lo, hi in _blocks(counts, k):
        block = counts[lo:hi]
        gamma, ll = _infer_block(ops, block, topics_t, alpha, max_iterations, tol, with_loglik)
        gammas.append(ops.to_numpy(gamma))
        loglik += ll
    gamma = np.concatenate(gammas) if gammas else np.zeros((0, k))
    return gamma, (loglik if with_loglik else None)


def _infer_block(ops, block: sp.csr_matrix, topics_t, alpha, max_iterations: int, tol: float, with_loglik: bool):
    k = topics_t.shape[1]
    s = ops.structure(block)
    values = ops.values(s)
    lengths = ops.asarray(np.asarray(block.sum(axis=1)).ravel(), dtype=np.float64)
    word_topics = ops.gather(topics_t, s.cols)  # nnz × k: β[:, w] of every nonzero
    gamma = alpha[None, :] + lengths[:, None] / k
    if s.nnz == 0:
        return alpha[None, :] + 0.0 * lengths[:, None], 0.0
    for _ in range(max_iterations):
        log_theta = ops.digamma(gamma) - ops.digamma(ops.row_sums(gamma))[:, None]
        e = ops.exp(log_theta)
        norm = ops.row_sums(ops.gather(e, s.rows) * word_topics) + _TINY
        weighted = ops.with_values(s, values / norm)
        updated = alpha[None, :] + e * ops.matmul(weighted, topics_t)
        change = ops.abs_max(ops.row_sums(ops.abs(updated - gamma)) / k)
        gamma = updated
        if change < tol:
            break
    loglik = 0.0
    if with_loglik:
        theta = gamma / ops.row_sums(gamma)[:, None]
        p = ops.row_sums(ops.gather(theta, s.rows) * word_topics)
        loglik = float(ops.to_numpy((values * ops.log(ops.maximum(p, _TINY))).sum()))
    return gamma, loglik


def mixtures(gamma: np.ndarray) -> np.ndarray:
    """Topic mixtures (rows sum to 1) from variational Dirichlet parameters."""
    return gamma / gamma.sum(axis=1, keepdims=True)


__all__ = ["MAX_ITERATIONS", "TOL", "infer", "mixtures"]
