"""Spectral LDA (Anandkumar, Ge, Hsu, Kakade & Telgarsky, JMLR 2014) from two streamed, mergeable passes.

Under LDA with Dirichlet(α) topic mixtures (``α0 = Σα``) and topics ``μ_i``, the corpus' low-order moments
are sums of the topics' outer powers:

    M1 = E[x1]
    M2 = E[x1⊗x2] - α0/(α0+1) M1⊗M1                                   = Σ α_i/(α0(α0+1)) μ_i⊗μ_i
    M3 = E[x1⊗x2⊗x3] - α0/(α0+2) (E[x1⊗x2⊗M1] + perms) + 2α0²/((α0+1)(α0+2)) M1⊗M1⊗M1
                                                                       = Σ 2α_i/(α0(α0+1)(α0+2)) μ_i⊗μ_i⊗μ_i

where ``x1, x2, x3`` are distinct word positions of one document; each document's counts ``c`` (length
``l``) give unbiased estimates (``(c⊗c - diag c) / (l(l-1))`` for pairs, and the triple analogue). With a
whitening ``W`` (``Wᵀ M2 W = I``), ``M3(W, W, W) = Σ λ_i v_i⊗v_i⊗v_i`` has orthonormal ``v_i``; a tensor
decomposition finds them, and ``μ_i ∝ M2 W v_i``, ``α_i = 4 α0 (α0+1) / ((α0+2)² λ_i²)``.

Nothing ``V × V`` (vocabulary squared) is ever formed, and memory does not grow with the documents:

- **Pass 1** (a randomized range finder, Halko, Martinsson & Tropp 2011): with a fixed Gaussian ``Ω`` (V × p,
  p = k' + oversampling, the same seed on every worker) each worker sums ``M1``'s terms and the pair moment
  applied to ``Ω`` through sparse products (``Cᵀ (w ∘ (C Ω)) - diag(Cᵀw) Ω``). The merged sums give
  ``Y = M2 Ω`` and ``Q = orth(Y)``, a basis of M2's dominant subspace.
- **Pass 2**: the documents projected on ``Q`` (``u = Qᵀc``, p numbers each) give, summed, the pair moment
  applied to ``Q`` (hence ``Qᵀ M2 Q`` exactly, and ``M2 Q`` for unwhitening) and the triple moment in
  ``Q``'s coordinates (a p × p × p tensor: ``Σ w u⊗u⊗u`` plus ``V × p`` sums for its diagonal corrections).

Why two passes and not one: the third moment must be projected on a subspace close to M2's top eigenvectors.
A subspace fixed before the data (a random ``Ω``) lets in noise in proportion to the Frobenius norm of the
pair moment's sampling error rather than its spectral norm (large for a big vocabulary), and a one-pass
estimate of M2's eigenvectors from ``Y`` alone (Nyström) is unreliable for M2, which is indefinite. The second
pass reads the same data once more, costs about what the first did, and makes ``Qᵀ M2 Q`` exact.

Every sum is additive, so states merge across workers by summing and the model does not depend on how the
documents were split among them.
"""

from __future__ import annotations

import math

import numpy as np

from ...training.collectives import State
from ..bag_of_words import Documents
from .kernels import cube_sum, rows_outer_sum

EXTRA_TOPICS = 0.25  # SageMaker computes 25% more topics than asked and keeps those of the largest weight
OVERSAMPLING = 10  # extra directions of the range finder
RANK_TOL = 1e-6  # eigenvalues of M2 below this fraction of the largest are taken as zero (no topic there)


def extended_topics(num_topics: int, feature_dim: int) -> int:
    """k': the topics actually computed."""
    return min(feature_dim, int(math.ceil(num_topics * (1.0 + EXTRA_TOPICS))))


def sketch_width(num_topics: int, feature_dim: int) -> int:
    """p: directions of the range finder and of the third moment's coordinates."""
    return min(feature_dim, extended_topics(num_topics, feature_dim) + OVERSAMPLING)


def _weights(lengths, ops):
    """Per-document weights of the moment estimators: 1/l, 1/(l(l-1)), 1/(l(l-1)(l-2)) (0 when too short)."""
    l1 = lengths
    l2 = l1 * (l1 - 1.0)
    l3 = l2 * (l1 - 2.0)
    w2 = ops.where(l1 >= 2, 1.0 / ops.maximum(l2, 1.0), 0.0)
    w3 = ops.where(l1 >= 3, 1.0 / ops.maximum(l3, 1.0), 0.0)
    return 1.0 / l1, w2, w3


# Pass 1 ----------------------------------------------------------------------------------------------------
def range_state(feature_dim: int, width: int) -> State:
    return {"docs": np.zeros(3), "m1": np.zeros(feature_dim), "s2": np.zeros(feature_dim),
            "y": np.zeros((feature_dim, width))}


def range_update(ops, state: State, docs: Documents, omega) -> State:
    """Fold documents into pass 1's sums: ``docs`` = (documents, with ≥ 2 words, with ≥ 3 words)."""
    s = ops.structure(docs.counts)
    c = ops.counts(s)
    lengths = ops.asarray(docs.lengths, dtype=np.float64)
    w1, w2, w3 = _weights(lengths, ops)
    projected = ops.matmul(c, omega)
    counted = ops.to_numpy((lengths >= 1).sum()), ops.to_numpy((lengths >= 2).sum()), ops.to_numpy((lengths >= 3).sum())
    return {"docs": state["docs"] + ops.asarray(np.array(counted, dtype=np.float64)),
            "m1": state["m1"] + ops.t_matmul(c, w1[:, None])[:, 0],
            "s2": state["s2"] + ops.t_matmul(c, w2[:, None])[:, 0],
            "y": state["y"] + ops.t_matmul(c, projected * w2[:, None])}


def first_moment(state: State) -> np.ndarray:
    return state["m1"] / max(state["docs"][0], 1.0)


def range_basis(state: State, omega: np.ndarray, alpha0: float) -> np.ndarray:
    """An orthonormal basis ``Q`` (V × p) of ``M2 Ω``'s range, from the merged pass-1 sums."""
    pairs = max(state["docs"][1], 1.0)
    m1 = first_moment(state)
    y = (state["y"] - state["s2"][:, None] * omega) / pairs
    y -= (alpha0 / (alpha0 + 1.0)) * np.outer(m1, m1 @ omega)
    q, _ = np.linalg.qr(y)
    return q


# Pass 2 ----------------------------------------------------------------------------------------------------
def projected_state(feature_dim: int, width: int) -> State:
    return {"docs": np.zeros(3), "r2": np.zeros((feature_dim, width)), "r3": np.zeros((feature_dim, width)),
            "s3": np.zeros(feature_dim), "t3": np.zeros((width, width, width))}


def projected_update(ops, state: State, docs: Documents, q) -> State:
    s = ops.structure(docs.counts)
    c = ops.counts(s)
    lengths = ops.asarray(docs.lengths, dtype=np.float64)
    _, w2, w3 = _weights(lengths, ops)
    u = ops.matmul(c, q)
    counted = ops.to_numpy((lengths >= 1).sum()), ops.to_numpy((lengths >= 2).sum()), ops.to_numpy((lengths >= 3).sum())
    return {"docs": state["docs"] + ops.asarray(np.array(counted, dtype=np.float64)),
            "r2": state["r2"] + ops.t_matmul(c, u * w2[:, None]),
            "r3": state["r3"] + ops.t_matmul(c, u * w3[:, None]),
            "s3": state["s3"] + ops.t_matmul(c, w3[:, None])[:, 0],
            "t3": state["t3"] + cube_sum(ops, u, w3)}


# Finalize --------------------------------------------------------------------------------------------------
class Recovered:
    """Topics and Dirichlet weights of all k' components, largest tensor eigenvalue (smallest α) first."""

    def __init__(self, alpha: np.ndarray, topics: np.ndarray, eigenvalues: np.ndarray, fit: float,
                 unigram: np.ndarray):
        self.unigram = unigram  # M1, the corpus' word distribution
        self.alpha = alpha
        self.topics = topics  # (k', V), rows sum to 1
        self.eigenvalues = eigenvalues  # M2's, in the whitened coordinates
        self.fit = fit  # relative residual of the tensor decomposition


def recover(ops, first: State, second: State, q: np.ndarray, alpha0: float, num_components: int,
            decompose) -> Recovered:
    """α and the topics from the merged sums of both passes. ``decompose(T) -> (λ, V, fit)``."""
    n2 = max(second["docs"][1], 1.0)
    n3 = max(second["docs"][2], 1.0)
    m1 = first_moment(first)
    qm = q.T @ m1
    pairs_q = (second["r2"] - first["s2"][:, None] * q) / n2  # E[x1⊗x2] Q   (V × p)
    m2_q = pairs_q - (alpha0 / (alpha0 + 1.0)) * np.outer(m1, qm)  # M2 Q
    g = q.T @ m2_q
    g = (g + g.T) / 2.0
    values, vectors = np.linalg.eigh(g)
    order = np.argsort(values)[::-1][:num_components]
    values, vectors = values[order], vectors[:, order]
    # A corpus may support fewer topics than asked (M2's rank is the number of topics): whitening a zero
    # eigenvalue would blow its noise up into components of huge weight, so such directions are left out.
    supported = max(1, int(np.sum(values > RANK_TOL * max(values[0], np.finfo(float).tiny))))
    values, vectors = values[:supported], vectors[:, :supported]
    b = vectors / np.sqrt(values)[None, :]  # p × k': Wᵀ M2 W = I for W = Q b

    w = q @ b
    t = _whitened_triples(ops, second, q, w, b, n3)
    pairs_w = b.T @ (q.T @ pairs_q) @ b  # Wᵀ E[x1⊗x2] W
    mw = b.T @ qm
    beta = alpha0 / (alpha0 + 2.0)
    gamma = 2.0 * alpha0 ** 2 / ((alpha0 + 1.0) * (alpha0 + 2.0))
    correction = pairs_w[:, :, None] * mw[None, None, :]
    t -= beta * (correction + correction.transpose(0, 2, 1) + correction.transpose(2, 0, 1))
    t += gamma * mw[:, None, None] * mw[None, :, None] * mw[None, None, :]

    lam, v, fit = decompose(t)
    lam = np.maximum(lam, 1e-12)
    alpha = 4.0 * alpha0 * (alpha0 + 1.0) / ((alpha0 + 2.0) ** 2 * lam ** 2)
    raw = m2_q @ (b @ v)  # V × k': column i ∝ μ_i
    topics = np.maximum(raw, 0.0).T
    sums = topics.sum(axis=1, keepdims=True)
    topics = np.where(sums > 0, topics / np.where(sums > 0, sums, 1.0), 1.0 / topics.shape[1])
    order = np.argsort(-lam, kind="stable")  # best supported first (see select())
    return Recovered(alpha[order], topics[order], values, fit, m1)


def select(recovered: Recovered, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k topics kept of the k' computed, ordered by their Dirichlet weight α (largest first).

    SageMaker's docs say the topics "with the largest Dirichlet prior" are kept. Taken literally that keeps
    noise: a component of the extra 25 % that the data do not support has a small tensor eigenvalue λ, and
    α = 4 α0 (α0+1) / ((α0+2)² λ²) grows as λ shrinks (on a synthetic corpus of 10 known topics the three
    spurious components got α of 12, 2.3 and 0.5 against 0.1 for every real one). The kept components are
    those of the largest λ, the ones the third moment supports best; they are then ordered by α, as
    SageMaker's model lists them. When the corpus supports fewer than k topics (M2 has lower rank, e.g. a few
    distinct documents), the missing ones are the corpus' word distribution with a negligible weight.
    """
    alpha, topics = recovered.alpha[:k], recovered.topics[:k]
    missing = k - len(alpha)
    if missing > 0:  # the corpus supports fewer topics than asked: the rest are its word distribution, unweighted
        alpha = np.concatenate([alpha, np.full(missing, alpha.min() * 1e-3)])
        topics = np.concatenate([topics, np.repeat(recovered.unigram[None, :] / recovered.unigram.sum(), missing, 0)])
    order = np.argsort(-alpha, kind="stable")
    return alpha[order], topics[order]


def _whitened_triples(ops, second: State, q: np.ndarray, w: np.ndarray, b: np.ndarray, n3: float) -> np.ndarray:
    """``E[x1⊗x2⊗x3](W, W, W)`` from pass 2's sums (k' × k' × k')."""
    t3 = np.einsum("abc,ai,bj,ck->ijk", second["t3"], b, b, b, optimize=True)
    r3w = second["r3"] @ b  # V × k'
    diag = rows_outer_sum(ops, w, w, r3w)  # Σ_i w_i ⊗ w_i ⊗ (r3 b)_i
    t3 -= diag + diag.transpose(0, 2, 1) + diag.transpose(2, 0, 1)
    t3 += 2.0 * rows_outer_sum(ops, w * second["s3"][:, None], w, w)
    return t3 / n3


__all__ = ["EXTRA_TOPICS", "Recovered", "extended_topics", "first_moment", "projected_state", "projected_update",
           "range_basis", "range_state", "range_update", "recover", "select", "sketch_width"]
