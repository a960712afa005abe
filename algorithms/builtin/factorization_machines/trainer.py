"""The FM math: O(k·nnz) scores and gradients, and lazy Adam steps on the rows a batch touches.

Model: ``ŷ = w0 + Σ wᵢxᵢ + ½ Σ_f [(Σᵢ Vᵢf xᵢ)² − Σᵢ Vᵢf² xᵢ²]`` (Rendle's identity for
``Σ_{i<j} <Vᵢ,Vⱼ> xᵢxⱼ``). With ``θ = [w | V]`` one product ``X @ θ`` gives the linear term and ``XV`` at
once; with ``r = ∂loss/∂ŷ`` (``σ(ŷ) − y`` for log loss, ``ŷ − y`` for ½ squared loss):

- ``∂/∂w0 = Σ r``, ``∂/∂w = Xᵀ r``,
- ``∂/∂V = Xᵀ (r ∘ XV) − V ∘ ((X∘X)ᵀ r)``.

Sparse batches are compacted to the columns they use, so every product and every optimizer update costs
O(k·nnz + k·m) for ``m`` distinct features in the batch, never O(k·feature_dim).

Optimizer: Adam with MXNet's semantics, the framework SageMaker's FM container is built on: the gradient
is ``rescale_grad · Σ_batch ∂loss`` (``rescale_grad`` unset: 1 / records in the batch, i.e. the mean),
plus ``wd · θ``, clipped to ``±clip_gradient``; ``β1 = 0.9``, ``β2 = 0.999``; bias correction folded into
the learning rate; per-group learning rates and weight decays (``bias_*``, ``linear_*``, ``factors_*``).
Updates are lazy on sparse batches (only rows with a non-zero feature move, weight decay included), as
MXNet's row-sparse Adam does; dense batches update every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...batch import Batch
from ...training.collectives import State
from .kernels import FMOps
from .metrics import check_labels, row_terms
from .params import FMConfig


@dataclass
class PreparedBatch:
    """Feature rows restricted to the columns they use (``cols``; None: all), float32, with labels."""

    x: np.ndarray | sp.csr_matrix
    cols: np.ndarray | None
    col_counts: np.ndarray | float  # records per used column having it non-zero (a dense batch: all)
    y: np.ndarray


def as_float32_features(batch: Batch, feature_dim: int, channel: str) -> np.ndarray | sp.csr_matrix:
    if batch.feature_dim != feature_dim:
        raise ValueError(f"the {channel} channel has records of {batch.feature_dim} features; "
                         f"feature_dim is {feature_dim}")
    x = batch.features
    if sp.issparse(x):
        x = sp.csr_matrix(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        return x
    return np.ascontiguousarray(x, dtype=np.float32)


def compact_columns(x: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray | None, np.ndarray]:
    """``x`` restricted to its non-empty columns, those columns' ids, and their non-zero counts."""
    n, d = x.shape
    if x.nnz and d <= 8 * x.nnz:  # a dense-ish batch: one pass over a d-sized count vector
        counts = np.bincount(x.indices, minlength=d)
        cols = np.flatnonzero(counts)
        if len(cols) == d:
            return x, None, counts.astype(np.float64)
        remap = np.zeros(d, np.int32)
        remap[cols] = np.arange(len(cols), dtype=np.int32)
        local, col_counts = remap[x.indices], counts[cols]
    else:  # a very sparse batch: never touch a d-sized array
        cols, local, col_counts = np.unique(x.indices, return_inverse=True, return_counts=True)
        local = local.astype(np.int32, copy=False)
    compact = sp.csr_matrix((x.data, local, x.indptr), shape=(n, len(cols)))
    return compact, cols, col_counts.astype(np.float64)


def prepare(batch: Batch, cfg: FMConfig, channel: str, first_row: int) -> PreparedBatch:
    y = check_labels(batch.labels, cfg.binary, channel, first_row)
    x = as_float32_features(batch, cfg.feature_dim, channel)
    if sp.issparse(x):
        compact, cols, col_counts = compact_columns(x)
        return PreparedBatch(compact, cols, col_counts, y)
    return PreparedBatch(x, None, float(len(y)), y)


class FMTrainer:
    """Runs Adam steps on a training state held by ``ops`` (in place for numpy, on the device for torch)."""

    def __init__(self, cfg: FMConfig, state: State, ops: FMOps):
        self.cfg, self.ops = cfg, ops
        self.params = {key: ops.asarray(state[key]) for key in
                       ("w0", "theta", "m_w0", "v_w0", "m_theta", "v_theta", "stats")}
        self.t = int(state["t"][0])
        self.rows = float(state["rows"][0])
        self.counts = state["counts"].copy()
        k = cfg.num_factors
        self.lr = ops.asarray(np.array([cfg.linear.lr] + [cfg.factors.lr] * k, np.float32))
        self.wd = ops.asarray(np.array([cfg.linear.wd] + [cfg.factors.wd] * k, np.float32))

    def gradients(self, batch: PreparedBatch):
        """Raw scores and the loss gradients for a batch: ``(raw, ∂w0, ∂θ rows, row index, θ rows)``.

        ``∂θ`` holds the rows ``batch.cols`` of θ (all rows when None), scaled by ``rescale_grad``, before
        weight decay and clipping.
        """
        cfg, ops, p = self.cfg, self.ops, self.params
        n = len(batch.y)
        x = ops.products(batch.x)
        y = ops.asarray(batch.y)
        idx = None if batch.cols is None else ops.as_index(batch.cols)
        theta = p["theta"] if idx is None else p["theta"][idx]
        v = theta[:, 1:]
        xt = x.mm(theta)  # (n, 1 + k): linear term, then XV
        xv = xt[:, 1:]
        raw = p["w0"] + xt[:, 0] + 0.5 * (xv * xv - x.sq_mm(v * v)).sum(1)
        residual = ops.sigmoid(raw) - y if cfg.binary else raw - y
        g = residual * (cfg.rescale_grad if cfg.rescale_grad is not None else 1.0 / n)
        outer = xt * g[:, None]
        outer[:, 0] = g
        grad = x.rmm(outer)  # (m, 1 + k)
        grad[:, 1:] -= v * x.sq_rmm(g)[:, None]
        return raw, g.sum().reshape(1), grad, idx, theta

    def step(self, batch: PreparedBatch) -> None:
        """One Adam step on one mini-batch; adds the batch's progressive metrics (scored before the step)."""
        cfg, ops, p = self.cfg, self.ops, self.params
        n = len(batch.y)
        if n == 0:
            return
        raw, grad_w0, grad, idx, theta = self.gradients(batch)
        p["stats"] += ops.sums(row_terms(ops, raw, ops.asarray(batch.y), cfg.binary))
        self.t += 1
        correction = math.sqrt(1.0 - cfg.beta2 ** self.t) / (1.0 - cfg.beta1 ** self.t)
        self._adam(p["w0"], grad_w0 + cfg.bias.wd * p["w0"], p["m_w0"], p["v_w0"], cfg.bias.lr * correction)
        if idx is None:
            self._adam(theta, grad + self.wd * theta, p["m_theta"], p["v_theta"], self.lr * correction)
            self.counts += batch.col_counts
        else:
            m, s = p["m_theta"][idx], p["v_theta"][idx]
            self._adam(theta, grad + self.wd * theta, m, s, self.lr * correction)
            p["theta"][idx], p["m_theta"][idx], p["v_theta"][idx] = theta, m, s
            self.counts[batch.cols] += batch.col_counts
        self.rows += n

    def _adam(self, weight, grad, mean, var, lr) -> None:
        cfg = self.cfg
        if cfg.clip_gradient is not None:
            self.ops.clip_(grad, -cfg.clip_gradient, cfg.clip_gradient)
        mean *= cfg.beta1
        mean += (1.0 - cfg.beta1) * grad
        var *= cfg.beta2
        var += (1.0 - cfg.beta2) * grad * grad
        weight -= lr * mean / (self.ops.sqrt(var) + cfg.eps)

    def export(self) -> State:
        """The state as numpy arrays (copied off the device for torch)."""
        out = {key: self.ops.to_numpy(value) for key, value in self.params.items()}
        out["t"] = np.array([self.t], np.int64)
        out["rows"] = np.array([self.rows])
        out["counts"] = self.counts
        return out


def raw_scores(features: np.ndarray | sp.csr_matrix, w0: float, theta: np.ndarray,
               v_squared: np.ndarray) -> np.ndarray:
    """``ŷ`` before any link function, for dense or CSR rows (host, numpy)."""
    xt = np.asarray(features @ theta)
    if sp.issparse(features):
        x2 = sp.csr_matrix((features.data * features.data, features.indices, features.indptr),
                           shape=features.shape)
    else:
        x2 = features * features
    xv = xt[:, 1:]
    return w0 + xt[:, 0] + 0.5 * (xv * xv - np.asarray(x2 @ v_squared)).sum(axis=1)
