"""LDA's array kernels on the worker's backend (numpy + scipy, or torch on its device).

The moment sums and the topic-mixture inference are written once against these few operations; each backend
supplies them in its own idiom. Everything here is float64: the spectral method subtracts large, nearly equal
moment terms, and float32 would lose the topics in the rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import digamma

from ...backend import Backend, NumpyBackend, TorchBackend

# Bound on the temporaries of the vectorized kernels (elements of one (rows x p^2) or (nonzeros x k) block).
BLOCK_ELEMENTS = 1 << 22


class _Sparse:
    """A CSR matrix's structure in the backend's idiom, with its values replaceable."""

    def __init__(self, csr: sp.csr_matrix, rows: Any, cols: Any, indptr: Any = None):
        self.csr = csr
        self.shape = csr.shape
        self.rows = rows
        self.cols = cols
        self.indptr = indptr
        self.nnz = csr.nnz


class NumpyLDAKernels(NumpyBackend):
    def __init__(self):
        super().__init__(np.float64)

    def structure(self, csr: sp.csr_matrix) -> _Sparse:
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        return _Sparse(csr, rows, csr.indices, csr.indptr)

    def counts(self, s: _Sparse):
        """The matrix itself (CSR float64)."""
        return s.csr

    def with_values(self, s: _Sparse, values):
        """``s``'s structure with other values, as a matrix the generic products take."""
        return sp.csr_matrix((values, s.cols, s.indptr), shape=s.shape)

    def values(self, s: _Sparse):
        return s.csr.data

    def gather(self, a, index):
        return a[index]

    def digamma(self, a):
        return digamma(a)

    def row_sums(self, a):
        return a.sum(axis=1)

    def row_dots(self, a, b):
        """Σ_j a[i, j] b[i, j] per row, without the product as a temporary."""
        return np.einsum("ij,ij->i", a, b)

    def maximum(self, a, value: float):
        return np.maximum(a, value)

    def abs_max(self, a) -> float:
        return float(np.abs(a).max()) if a.size else 0.0


class TorchLDAKernels(TorchBackend):
    def __init__(self, device: str = "cpu"):
        super().__init__(device, np.float64)

    def structure(self, csr: sp.csr_matrix) -> _Sparse:
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        return _Sparse(csr, self.as_index(rows), self.as_index(csr.indices))

    def counts(self, s: _Sparse):
        return self.with_values(s, self.asarray(s.csr.data, dtype=np.float64))

    def with_values(self, s: _Sparse, values):
        torch = self.torch
        return torch.sparse_coo_tensor(torch.stack([s.rows, s.cols]), values, size=s.shape, is_coalesced=True,
                                       check_invariants=False)

    def values(self, s: _Sparse):
        return self.asarray(s.csr.data, dtype=np.float64)

    def gather(self, a, index):
        return a.index_select(0, index)

    def digamma(self, a):
        return self.torch.special.digamma(a)

    def row_sums(self, a):
        return a.sum(dim=1)

    def row_dots(self, a, b):
        return (a * b).sum(dim=1)

    def maximum(self, a, value: float):
        return self.torch.clamp(a, min=value)

    def abs_max(self, a) -> float:
        return float(a.abs().max()) if a.numel() else 0.0


def lda_kernels(backend: Backend) -> NumpyLDAKernels | TorchLDAKernels:
    return backend.specialize(NumpyLDAKernels, TorchLDAKernels)


def cube_sum(ops, u, weights):
    """``Σ_d weights[d] · u[d] ⊗ u[d] ⊗ u[d]`` as a ``(p, p, p)`` array, in blocks of rows (bounded memory)."""
    n, p = u.shape
    out = ops.zeros((p, p * p))
    step = max(1, BLOCK_ELEMENTS // max(1, p * p))
    for lo in range(0, n, step):
        block = u[lo:lo + step]
        pairs = (block[:, :, None] * block[:, None, :]).reshape(block.shape[0], p * p)
        out += (block * weights[lo:lo + step, None]).T @ pairs
    return out.reshape(p, p, p)


def rows_outer_sum(ops, a, b, c):
    """``Σ_i a[i] ⊗ b[i] ⊗ c[i]`` over the rows of three ``(V, p)`` arrays, in blocks (bounded memory)."""
    v, p = a.shape
    out = ops.zeros((p * p, p))
    step = max(1, BLOCK_ELEMENTS // max(1, p * p))
    for lo in range(0, v, step):
        pairs = (a[lo:lo + step, :, None] * b[lo:lo + step, None, :]).reshape(-1, p * p)
        out += pairs.T @ c[lo:lo + step]
    return out.reshape(p, p, p)


__all__ = ["BLOCK_ELEMENTS", "NumpyLDAKernels", "TorchLDAKernels", "cube_sum", "lda_kernels", "rows_outer_sum"]
