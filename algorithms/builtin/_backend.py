"""A small array backend so the built-ins run on numpy (CPU) or torch (GPU) with one code path.

Algorithms hand mini-batches (dense ndarray or scipy CSR) to :meth:`ArrayBackend.asarray` and use the
few operations below; sparse batches stay sparse. Accumulations that must be exact across many batches
(sums, Gram matrices) are float64. Learned state goes back to numpy with :meth:`ArrayBackend.to_numpy`,
so it merges through the collectives unchanged whichever backend produced it.

Selection (:func:`backend_for`): numpy on a CPU worker, torch on the worker's GPU when it has one.
``SPARK_ML_ARRAY_BACKEND`` (``numpy``, ``torch``, ``torch:cpu``, ``torch:cuda``) overrides the choice,
which is how the torch path is exercised on machines without a GPU. torch is imported only when used.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import scipy.sparse as sp

BACKEND_ENV = "SPARK_ML_ARRAY_BACKEND"
BACKEND_CHOICES = ("numpy", "torch", "torch:cpu", "torch:cuda")


class ArrayBackend(ABC):
    """The operations the built-in algorithms need; ``a`` may be dense or sparse where noted."""

    name: str
    device: str

    @abstractmethod
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """A numpy array (or scipy sparse matrix) as this backend's dense (or sparse) array."""

    @abstractmethod
    def to_numpy(self, a: Any) -> np.ndarray:
        ...

    @abstractmethod
    def is_sparse(self, a: Any) -> bool:
        ...

    @abstractmethod
    def dense(self, a: Any) -> Any:
        ...

    @abstractmethod
    def float64(self, a: Any) -> Any:
        """``a`` (dense or sparse) with float64 values."""

    @abstractmethod
    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b``; ``a`` dense or sparse, ``b`` dense."""

    @abstractmethod
    def t_matmul(self, a: Any, b: Any) -> Any:
        """``a.T @ b``; ``a`` dense or sparse, ``b`` dense."""

    @abstractmethod
    def gram(self, a: Any) -> Any:
        """``a.T @ a`` as a dense float64 matrix; ``a`` dense or sparse."""

    @abstractmethod
    def row_sq_norms(self, a: Any) -> Any:
        """Squared Euclidean norm of each row, in ``a``'s dtype."""

    @abstractmethod
    def col_sums(self, a: Any) -> Any:
        """Column sums in float64."""

    @abstractmethod
    def argmin_rows(self, a: Any) -> tuple[Any, Any]:
        """Per row of a dense matrix: the column of its minimum and the minimum."""

    @abstractmethod
    def segment_sum(self, a: Any, segments: Any, num_segments: int) -> Any:
        """Float64 row sums of ``a`` grouped by ``segments`` (one int per row): ``(num_segments, d)``."""

    @abstractmethod
    def bincount(self, segments: Any, weights: Any, num_segments: int) -> Any:
        """Float64 per-segment sums of ``weights`` (counts when ``weights`` is None)."""


class NumpyBackend(ArrayBackend):
    name = "numpy"
    device = "cpu"

    def asarray(self, x, dtype=None):
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, a):
        return a.toarray() if sp.issparse(a) else np.asarray(a)

    def is_sparse(self, a):
        return sp.issparse(a)

    def dense(self, a):
        return a.toarray() if sp.issparse(a) else a

    def float64(self, a):
        return a.astype(np.float64) if a.dtype != np.float64 else a

    def matmul(self, a, b):
        return np.asarray(a @ b)

    def t_matmul(self, a, b):
        if sp.issparse(a):
            return np.asarray(a.T @ b)
        return a.T @ b

    def gram(self, a):
        if sp.issparse(a):
            return (a.T @ a).toarray().astype(np.float64, copy=False)
        a = a.astype(np.float64, copy=False)
        return a.T @ a

    def row_sq_norms(self, a):
        if sp.issparse(a):
            squared = sp.csr_matrix((a.data * a.data, a.indices, a.indptr), shape=a.shape)
            return np.asarray(squared.sum(axis=1)).ravel().astype(a.dtype, copy=False)
        return np.einsum("ij,ij->i", a, a)

    def col_sums(self, a):
        if sp.issparse(a):
            return np.bincount(a.indices, weights=a.data, minlength=a.shape[1]).astype(np.float64)
        return a.sum(axis=0, dtype=np.float64)

    def argmin_rows(self, a):
        idx = a.argmin(axis=1)
        return idx, a[np.arange(a.shape[0]), idx]

    def segment_sum(self, a, segments, num_segments):
        n = a.shape[0]
        indicator = sp.csr_matrix((np.ones(n), (np.asarray(segments), np.arange(n))), shape=(num_segments, n))
        out = indicator @ a
        return out.toarray() if sp.issparse(out) else np.asarray(out, dtype=np.float64)

    def bincount(self, segments, weights, num_segments):
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        return np.bincount(segments, weights=w, minlength=num_segments).astype(np.float64, copy=False)


class TorchBackend(ArrayBackend):
    """torch tensors on ``device``; sparse batches become coalesced COO tensors."""

    name = "torch"

    def __init__(self, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = device
        self._dev = torch.device(device)

    def _tensor(self, x: np.ndarray):
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:
            x = x.copy()
        return self.torch.from_numpy(x).to(self._dev)

    def asarray(self, x, dtype=None):
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            if not x.has_canonical_format:
                x = x.copy()
                x.sum_duplicates()
            data = x.data if dtype is None else x.data.astype(dtype, copy=False)
            coo = x.tocoo()
            indices = np.vstack([coo.row, coo.col]).astype(np.int64)
            return self.torch.sparse_coo_tensor(self._tensor(indices), self._tensor(data), size=x.shape,
                                                is_coalesced=True, check_invariants=False)
        x = np.asarray(x, dtype=dtype)
        return self._tensor(x)

    def to_numpy(self, a):
        if isinstance(a, np.ndarray):
            return a
        if a.is_sparse:
            a = a.to_dense()
        return a.detach().cpu().numpy()

    def is_sparse(self, a):
        return bool(a.is_sparse)

    def dense(self, a):
        return a.to_dense() if a.is_sparse else a

    def float64(self, a):
        return a.to(self.torch.float64)

    def matmul(self, a, b):
        return self.torch.sparse.mm(a, b) if a.is_sparse else a @ b

    def t_matmul(self, a, b):
        return self.torch.sparse.mm(a.t(), b) if a.is_sparse else a.T @ b

    def gram(self, a):
        a = a.to(self.torch.float64)
        if a.is_sparse:
            return self.torch.sparse.mm(a.t(), a.to_dense())
        return a.T @ a

    def row_sq_norms(self, a):
        if a.is_sparse:
            rows, values = a.indices()[0], a.values()
            out = self.torch.zeros(a.shape[0], dtype=values.dtype, device=self._dev)
            return out.index_add_(0, rows, values * values)
        return (a * a).sum(dim=1)

    def col_sums(self, a):
        if a.is_sparse:
            cols, values = a.indices()[1], a.values().to(self.torch.float64)
            out = self.torch.zeros(a.shape[1], dtype=self.torch.float64, device=self._dev)
            return out.index_add_(0, cols, values)
        return a.sum(dim=0, dtype=self.torch.float64)

    def argmin_rows(self, a):
        values, idx = a.min(dim=1)
        return idx, values

    def segment_sum(self, a, segments, num_segments):
        torch = self.torch
        d = a.shape[1]
        if a.is_sparse:
            rows, cols = a.indices()
            flat = segments[rows] * d + cols
            out = torch.zeros(num_segments * d, dtype=torch.float64, device=self._dev)
            return out.index_add_(0, flat, a.values().to(torch.float64)).view(num_segments, d)
        out = torch.zeros((num_segments, d), dtype=torch.float64, device=self._dev)
        return out.index_add_(0, segments, a.to(torch.float64))

    def bincount(self, segments, weights, num_segments):
        torch = self.torch
        w = None if weights is None else weights.to(torch.float64)
        return torch.bincount(segments, weights=w, minlength=num_segments).to(torch.float64)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def get_backend(name: str) -> ArrayBackend:
    """A backend by name: ``numpy``, ``torch`` (on CUDA if present), ``torch:cpu``, ``torch:cuda``."""
    name = name.strip().lower()
    if name not in BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_ENV} must be one of {', '.join(BACKEND_CHOICES)}, got {name!r}")
    if name == "numpy":
        return NumpyBackend()
    if not torch_available():
        raise ValueError(f"the {name} array backend needs torch, which is not installed "
                         "(pip install 'spark-ml[deep]')")
    import torch

    device = name.partition(":")[2] or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("the torch:cuda array backend was asked for but torch sees no CUDA device")
    return TorchBackend(device)


def backend_for(device: str, log=None) -> ArrayBackend:
    """The backend for a worker on ``device`` (``"cpu"`` or ``"cuda"``), unless the variable overrides it."""
    override = os.environ.get(BACKEND_ENV, "").strip()
    if override:
        return get_backend(override)
    if device == "cuda":
        if torch_available():
            import torch

            if torch.cuda.is_available():
                return TorchBackend("cuda")
            reason = "torch sees no CUDA device"
        else:
            reason = "torch is not installed (pip install 'spark-ml[deep]')"
        if log is not None:
            log(f"this worker was given a GPU but {reason}; computing on the CPU with numpy")
    return NumpyBackend()
