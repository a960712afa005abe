"""Each document's topic mixture under a trained LDA model: variational inference, vectorized over documents.

For fixed topics ``β`` (k × V) and prior ``α``, the variational posterior of a document's mixture is
Dirichlet(γ) with the fixed point (Blei, Ng & Jordan 2003)

    γ = α + exp(E[log θ]) ∘ Σ_w c_w β[:, w] / (exp(E[log θ]) · β[:, w]),    E[log θ] = ψ(γ) - ψ(Σγ)

Every step is a few products over the documents' nonzero counts at once (a gather of ``β``'s columns, a row-wise
dot, a sparse-times-dense product), for a block of documents together; a document leaves the block's working set
once its ``γ`` moved by less than ``tol`` on average (so later steps cost only what the slow documents need,
and a document's answer does not depend on the others scored with it), or after ``max_iterations`` steps. The
mixture is ``γ / Σγ``, as MLlib's ``topicDistribution``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .kernels import BLOCK_ELEMENTS

MAX_ITERATIONS = 100
COMPACT = 0.6  # the working set shrinks once fewer than this fraction of its documents still move
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
          tol: float = TOL, with_loglik: bool = False, with_stats: bool = False):
    """``(γ (n × k) numpy, log-likelihood or None, word-topic statistics or None)`` for word counts ``counts``
    (CSR, n × V).

    ``topics_t`` (V × k) and ``alpha`` (k,) are backend float64 arrays. Empty documents get ``γ = α``. The
    log-likelihood is ``Σ_d Σ_w c_dw log p(w | θ_d)``; the statistics (V × k, backend) are
    ``Σ_d c_dw exp(E[log θ_dk]) / Σ_j exp(E[log θ_dj]) β_jw``, which times ``β`` are the expected word counts of
    each topic (the M-step of variational EM). Each document stops on its own, so a document's answer does not
    depend on the others it is scored with.
    """
    k = topics_t.shape[1]
    gammas = []
    loglik = 0.0
    stats = ops.zeros((topics_t.shape[0], k)) if with_stats else None
    for lo, hi in _blocks(counts, k):
        gamma, ll, block_stats = _infer_block(ops, counts[lo:hi], topics_t, alpha, max_iterations, tol,
                                              with_loglik, with_stats)
        gammas.append(ops.to_numpy(gamma))
        loglik += ll
        if with_stats:
            stats = stats + block_stats
    gamma = np.concatenate(gammas) if gammas else np.zeros((0, k))
    return gamma, (loglik if with_loglik else None), stats


def _step(ops, gamma, s, values, word_topics, topics_t, alpha):
    """One fixed-point update of γ for the documents of ``s``; also ``exp(E[log θ])`` and the per-nonzero norms."""
    log_theta = ops.digamma(gamma) - ops.digamma(ops.row_sums(gamma))[:, None]
    e = ops.exp(log_theta)
    norm = ops.row_dots(ops.gather(e, s.rows), word_topics) + _TINY
    weighted = ops.with_values(s, values / norm)
    return alpha[None, :] + e * ops.matmul(weighted, topics_t), e, weighted


def _infer_block(ops, block: sp.csr_matrix, topics_t, alpha, max_iterations: int, tol: float, with_loglik: bool,
                 with_stats: bool):
    k = topics_t.shape[1]
    n = block.shape[0]
    lengths = np.asarray(block.sum(axis=1)).ravel()
    gamma = ops.asarray(np.asarray(ops.to_numpy(alpha))[None, :] + lengths[:, None] / k, dtype=np.float64)
    rows = np.arange(n)  # the working set: documents of the block being updated (positions in the block)
    moving = np.ones(n, dtype=bool)  # which of the working set still move; the others keep their γ
    work = block
    s = None
    for _ in range(max_iterations):
        if not moving.any():
            break
        if s is None or moving.sum() < COMPACT * len(rows):  # drop the settled documents from the working set
            rows, work, moving = rows[moving], work[moving], moving[moving]
            s = ops.structure(work)
            values = ops.values(s)
            word_topics = ops.gather(topics_t, s.cols)  # nnz × k: β[:, w] of every nonzero
            index = ops.as_index(rows)
        current = gamma[index]
        updated, _, _ = _step(ops, current, s, values, word_topics, topics_t, alpha)
        change = ops.to_numpy(ops.row_sums(ops.abs(updated - current))) / k
        still = ops.asarray(moving[:, None])
        gamma[index] = ops.where(still, updated, current)
        moving &= change >= tol
    loglik, stats = 0.0, None
    if (with_loglik or with_stats) and block.nnz:
        s = ops.structure(block)
        values = ops.values(s)
        word_topics = ops.gather(topics_t, s.cols)
        if with_loglik:
            theta = gamma / ops.row_sums(gamma)[:, None]
            p = ops.row_dots(ops.gather(theta, s.rows), word_topics)
            loglik = float(ops.to_numpy((values * ops.log(ops.maximum(p, _TINY))).sum()))
        if with_stats:
            _, e, weighted = _step(ops, gamma, s, values, word_topics, topics_t, alpha)
            stats = ops.t_matmul(weighted, e)  # V × k
    return gamma, loglik, stats


def mixtures(gamma: np.ndarray) -> np.ndarray:
    """Topic mixtures (rows sum to 1) from variational Dirichlet parameters."""
    return gamma / gamma.sum(axis=1, keepdims=True)


__all__ = ["MAX_ITERATIONS", "TOL", "infer", "mixtures"]
