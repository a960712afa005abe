"""Factorization Machines' kernels on the worker's array backend (:mod:`algorithms.backend`).

The math in :mod:`.trainer` is written once against the backend's operations plus :meth:`products`: a
batch's feature rows wrapped with the four products FM needs (``X @ B``, ``Xᵀ @ G``, ``(X∘X) @ B``,
``(X∘X)ᵀ @ g``), for dense rows and CSR rows alike, and :meth:`sums` (float64 totals of per-row terms).
Sparse rows stay sparse on both backends (CSR tensors and their transposes on torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ...backend import Backend, NumpyBackend, TorchBackend


class NumpyProducts:
    """A batch's feature rows on the host: a dense float32 matrix or a CSR matrix."""

    def __init__(self, x: np.ndarray | sp.csr_matrix):
        self.x = x
        if sp.issparse(x):
            self.x2 = sp.csr_matrix((x.data * x.data, x.indices, x.indptr), shape=x.shape)
        else:
            self.x2 = x * x

    def mm(self, b: np.ndarray) -> np.ndarray:
        return np.asarray(self.x @ b)

    def rmm(self, g: np.ndarray) -> np.ndarray:
        return np.asarray(self.x.T @ g)

    def sq_mm(self, b: np.ndarray) -> np.ndarray:
        return np.asarray(self.x2 @ b)

    def sq_rmm(self, g: np.ndarray) -> np.ndarray:
        return np.asarray(self.x2.T @ g)


class TorchProducts:
    """The same products on torch tensors; CSR rows become torch CSR tensors (and their transpose)."""

    def __init__(self, x: np.ndarray | sp.csr_matrix, ops: TorchFMOps):
        if sp.issparse(x):
            xt = x.T.tocsr()
            self.x = ops.csr(x, x.data)
            self.x2 = ops.csr(x, x.data * x.data)
            self.xt = ops.csr(xt, xt.data)
            self.x2t = ops.csr(xt, xt.data * xt.data)
        else:
            self.x = ops.asarray(x, np.float32)
            self.x2 = self.x * self.x
            self.xt = self.x.T
            self.x2t = self.x2.T

    def mm(self, b):
        return self.x @ b

    def rmm(self, g):
        return self.xt @ g

    def sq_mm(self, b):
        return self.x2 @ b

    def sq_rmm(self, g):
        return self.x2t @ g


class NumpyFMOps(NumpyBackend):
    def products(self, x: np.ndarray | sp.csr_matrix) -> NumpyProducts:
        return NumpyProducts(x)

    def sums(self, parts: list[np.ndarray]) -> np.ndarray:
        """Each part's sum, as one float64 vector."""
        return np.array([p.sum(dtype=np.float64) for p in parts])


class TorchFMOps(TorchBackend):
    def products(self, x: np.ndarray | sp.csr_matrix) -> TorchProducts:
        return TorchProducts(x, self)

    def sums(self, parts: list):
        torch = self.torch
        return torch.stack([p.sum(dtype=torch.float64) for p in parts])


FMOps = Any  # NumpyFMOps | TorchFMOps


def fm_ops(backend: Backend) -> FMOps:
    """The worker's backend with FM's kernels."""
    return backend.specialize(NumpyFMOps, TorchFMOps)
