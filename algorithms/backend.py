"""The one array backend of the built-ins: numpy on the host, or torch on the worker's CPU or GPU.

Every built-in does its array work through a :class:`Backend` chosen once per worker
(:attr:`TrainingEnv.backend <algorithms.training.env.TrainingEnv.backend>`), so the same code runs on
numpy and on torch tensors, sparse batches stay sparse on both, and the rule for when torch is used lives
here only:

- ``SPARK_ML_ARRAY_BACKEND`` unset (or ``auto``): numpy on a CPU worker; torch on the worker's CUDA device
  when Spark gave it a GPU. A GPU worker without torch or without CUDA fails: the job asked for GPUs, so
  it never falls back to the CPU silently.
- ``numpy``: numpy, whatever the device (the explicit way to compute on the CPU of a GPU worker).
- ``torch``: torch on the worker's device; ``torch:cpu`` / ``torch:cuda``: torch on that device. This is how
  the torch path is exercised on machines without a GPU.

The backend holds the generic operations (conversion, products, reductions, element-wise functions). An
algorithm's fused kernels live in its own module, as subclasses of :class:`NumpyBackend` and
:class:`TorchBackend` that :meth:`Backend.specialize` picks to match the chosen backend. Learned state goes
back to numpy with :meth:`Backend.to_numpy`, so it merges through the collectives whichever backend produced
it. torch is imported only when a torch backend is chosen.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

ENV = "SPARK_ML_ARRAY_BACKEND"
CHOICES = ("numpy", "torch", "torch:cpu", "torch:cuda", "auto")
INSTALL_HINT = "pip install 'spark-ml[deep]'"

B = TypeVar("B", bound="Backend")


class BackendUnavailable(RuntimeError):
    """The backend the worker's device or ``SPARK_ML_ARRAY_BACKEND`` asks for cannot run here."""


class Backend:
    """Array operations on one device. ``a`` may be dense or sparse where a docstring says so.

    ``dtype`` is the float type of the arrays the backend creates (:meth:`zeros`, :meth:`full`);
    :meth:`asarray` keeps its input's dtype unless given one.
    """

    name: str
    device: str

    def __init__(self, dtype: Any = np.float32):
        self.dtype = np.dtype(dtype)

    @property
    def is_numpy(self) -> bool:
        return self.name == "numpy"

    def specialize(self, numpy_kind: type[B], torch_kind: type[B], **options: Any) -> B:
        """This backend as an algorithm's kernel class: ``numpy_kind`` (a :class:`NumpyBackend` subclass) or
        ``torch_kind`` (a :class:`TorchBackend` subclass) on the same device, built with ``options``."""
        raise TypeError(f"{type(self).__name__} cannot be specialized")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, dtype={self.dtype})"


class NumpyBackend(Backend):
    """numpy + scipy on the host: dense arrays are ndarrays, sparse ones CSR matrices."""

    name = "numpy"
    device = "cpu"

    def specialize(self, numpy_kind, torch_kind, **options):
        return numpy_kind(**options)

    # conversion -------------------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """A dense array or a CSR matrix (sparse input stays sparse)."""
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)
        return np.asarray(x, dtype=dtype)

    def as_index(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.int64)

    def to_numpy(self, a) -> np.ndarray:
        return a.toarray() if sp.issparse(a) else np.asarray(a)

    def is_sparse(self, a) -> bool:
        return sp.issparse(a)

    def dense(self, a):
        return a.toarray() if sp.issparse(a) else a

    def float64(self, a):
        return a.astype(np.float64) if a.dtype != np.float64 else a

    def copy(self, a):
        return np.array(a, copy=True)

    def zeros(self, shape, dtype=None) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def full(self, shape, value: float, dtype=None) -> np.ndarray:
        return np.full(shape, value, dtype=self.dtype if dtype is None else dtype)

    # products ---------------------------------------------------------------------------------------
    def matmul(self, a, b):
        """``a @ b``; ``a`` dense or sparse, ``b`` dense."""
        return np.asarray(a @ b)

    def t_matmul(self, a, b):
        """``a.T @ b``; ``a`` dense or sparse, ``b`` dense."""
        return np.asarray(a.T @ b)

    def gram(self, a):
        """``a.T @ a`` as a dense float64 matrix; ``a`` dense or sparse."""
        if sp.issparse(a):
            return (a.T @ a).toarray().astype(np.float64, copy=False)
        a = a.astype(np.float64, copy=False)
        return a.T @ a

    # reductions -------------------------------------------------------------------------------------
    def row_sq_norms(self, a):
        """Squared Euclidean norm of each row, in ``a``'s dtype; ``a`` dense or sparse."""
        if sp.issparse(a):
            squared = sp.csr_matrix((a.data * a.data, a.indices, a.indptr), shape=a.shape)
            return np.asarray(squared.sum(axis=1)).ravel().astype(a.dtype, copy=False)
        return np.einsum("ij,ij->i", a, a)

    def col_sums(self, a):
        """Column sums in float64; ``a`` dense or sparse."""
        if sp.issparse(a):
            return np.bincount(a.indices, weights=a.data, minlength=a.shape[1]).astype(np.float64)
        return a.sum(axis=0, dtype=np.float64)

    def rowmax(self, a):
        """Max over the last axis, kept as a length-1 axis."""
        return a.max(axis=-1, keepdims=True)

    def rowsum(self, a):
        return a.sum(axis=-1, keepdims=True)

    def argmax_last(self, a):
        return a.argmax(axis=-1)

    def argmin_rows(self, a):
        """Per row of a dense matrix: the column of its minimum and the minimum."""
        idx = a.argmin(axis=1)
        return idx, a[np.arange(a.shape[0]), idx]

    def isfinite_columns(self, a) -> np.ndarray:
        """Per column of a 2-D array: are all its values finite (a numpy bool array)."""
        return np.isfinite(a).all(axis=0)

    def segment_sum(self, a, segments, num_segments: int):
        """Float64 row sums of ``a`` grouped by ``segments`` (one int per row): ``(num_segments, d)``."""
        n = a.shape[0]
        indicator = sp.csr_matrix((np.ones(n), (np.asarray(segments), np.arange(n))), shape=(num_segments, n))
        out = indicator @ a
        return out.toarray() if sp.issparse(out) else np.asarray(out, dtype=np.float64)

    def bincount(self, segments, weights, num_segments: int):
        """Float64 per-segment sums of ``weights`` (counts when ``weights`` is None)."""
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        return np.bincount(segments, weights=w, minlength=num_segments).astype(np.float64, copy=False)

    def take_columns(self, a, index):
        """``a[..., index]`` as a new array (``index`` from :meth:`as_index`)."""
        return np.take(a, index, axis=-1)

    # element-wise -----------------------------------------------------------------------------------
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)
    sqrt = staticmethod(np.sqrt)
    where = staticmethod(np.where)

    def relu(self, a):
        return np.maximum(a, 0)

    def clip(self, a, low, high):
        return np.clip(a, low, high)

    def clip_(self, a, low, high):
        """Clip in place."""
        return np.clip(a, low, high, out=a)

    def sigmoid(self, a):
        return expit(a)

    def softplus(self, a):
        return np.logaddexp(a.dtype.type(0), a)


class TorchBackend(Backend):
    """torch tensors on ``device``; sparse matrices become coalesced COO tensors."""

    name = "torch"

    def __init__(self, device: str = "cpu", dtype: Any = np.float32):
        super().__init__(dtype)
        import torch

        self.torch = torch
        self.device = str(device)
        self.torch_device = torch.device(device)

    def specialize(self, numpy_kind, torch_kind, **options):
        return torch_kind(self.device, **options)

    def torch_dtype(self, dtype) -> Any:
        """The torch dtype of a numpy dtype (or a torch dtype as it is)."""
        if isinstance(dtype, self.torch.dtype):
            return dtype
        return self.torch.from_numpy(np.zeros(0, dtype=dtype)).dtype

    def _tensor(self, x: np.ndarray):
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:
            x = x.copy()
        return self.torch.from_numpy(x).to(self.torch_device)

    # conversion -------------------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x.to(self.torch_device) if dtype is None else x.to(self.torch_device, self.torch_dtype(dtype))
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            if not x.has_canonical_format:
                x = x.copy()
                x.sum_duplicates()
            data = x.data if dtype is None else x.data.astype(dtype, copy=False)
            coo = x.tocoo()
            indices = np.vstack([coo.row, coo.col]).astype(np.int64)
            return torch.sparse_coo_tensor(self._tensor(indices), self._tensor(data), size=x.shape,
                                           is_coalesced=True, check_invariants=False)
        return self._tensor(np.asarray(x, dtype=dtype))

    def csr(self, m: sp.csr_matrix, values: np.ndarray, dtype: Any = np.float32):
        """A torch CSR tensor with ``m``'s structure and ``values``."""
        torch = self.torch
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(np.ascontiguousarray(values, dtype=dtype)),
                                           size=m.shape, device=self.torch_device, check_invariants=False)

    def as_index(self, a):
        torch = self.torch
        if isinstance(a, torch.Tensor):
            return a.to(self.torch_device, torch.int64)
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.torch_device)

    def to_numpy(self, a) -> np.ndarray:
        if not isinstance(a, self.torch.Tensor):
            return np.asarray(a)
        if a.is_sparse:
            a = a.to_dense()
        return a.detach().cpu().numpy()

    def is_sparse(self, a) -> bool:
        return bool(a.is_sparse)

    def dense(self, a):
        return a.to_dense() if a.is_sparse else a

    def float64(self, a):
        return a.to(self.torch.float64)

    def copy(self, a):
        return self.asarray(a).clone()

    def zeros(self, shape, dtype=None):
        return self.torch.zeros(shape, dtype=self.torch_dtype(self.dtype if dtype is None else dtype),
                                device=self.torch_device)

    def full(self, shape, value: float, dtype=None):
        return self.torch.full(shape if isinstance(shape, tuple) else (shape,), float(value),
                               dtype=self.torch_dtype(self.dtype if dtype is None else dtype),
                               device=self.torch_device)

    # products ---------------------------------------------------------------------------------------
    def matmul(self, a, b):
        return self.torch.sparse.mm(a, b) if a.is_sparse else a @ b

    def t_matmul(self, a, b):
        return self.torch.sparse.mm(a.t(), b) if a.is_sparse else a.T @ b

    def gram(self, a):
        a = a.to(self.torch.float64)
        if a.is_sparse:
            return self.torch.sparse.mm(a.t(), a.to_dense())
        return a.T @ a

    # reductions -------------------------------------------------------------------------------------
    def row_sq_norms(self, a):
        if a.is_sparse:
            rows, values = a.indices()[0], a.values()
            out = self.torch.zeros(a.shape[0], dtype=values.dtype, device=self.torch_device)
            return out.index_add_(0, rows, values * values)
        return (a * a).sum(dim=1)

    def col_sums(self, a):
        torch = self.torch
        if a.is_sparse:
            cols, values = a.indices()[1], a.values().to(torch.float64)
            out = torch.zeros(a.shape[1], dtype=torch.float64, device=self.torch_device)
            return out.index_add_(0, cols, values)
        return a.sum(dim=0, dtype=torch.float64)

    def rowmax(self, a):
        return a.max(dim=-1, keepdim=True).values

    def rowsum(self, a):
        return a.sum(dim=-1, keepdim=True)

    def argmax_last(self, a):
        return a.argmax(dim=-1)

    def argmin_rows(self, a):
        values, idx = a.min(dim=1)
        return idx, values

    def isfinite_columns(self, a) -> np.ndarray:
        return self.to_numpy(self.torch.isfinite(a).all(dim=0))

    def segment_sum(self, a, segments, num_segments: int):
        torch = self.torch
        d = a.shape[1]
        if a.is_sparse:
            rows, cols = a.indices()
            flat = segments[rows] * d + cols
            out = torch.zeros(num_segments * d, dtype=torch.float64, device=self.torch_device)
            return out.index_add_(0, flat, a.values().to(torch.float64)).view(num_segments, d)
        out = torch.zeros((num_segments, d), dtype=torch.float64, device=self.torch_device)
        return out.index_add_(0, segments, a.to(torch.float64))

    def bincount(self, segments, weights, num_segments: int):
        torch = self.torch
        w = None if weights is None else weights.to(torch.float64)
        return torch.bincount(segments, weights=w, minlength=num_segments).to(torch.float64)

    def take_columns(self, a, index):
        return a.index_select(a.dim() - 1, index)

    # element-wise -----------------------------------------------------------------------------------
    def exp(self, a):
        return self.torch.exp(a)

    def log(self, a):
        return self.torch.log(a)

    def abs(self, a):
        return self.torch.abs(a)

    def sign(self, a):
        return self.torch.sign(a)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def where(self, cond, a, b):
        torch = self.torch
        dtype = self.torch_dtype(self.dtype)
        a = a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=dtype, device=self.torch_device)
        b = b if isinstance(b, torch.Tensor) else torch.tensor(b, dtype=dtype, device=self.torch_device)
        return torch.where(cond, a, b)

    def relu(self, a):
        return self.torch.clamp(a, min=0)

    def clip(self, a, low, high):
        return self.torch.clamp(a, low, high)

    def clip_(self, a, low, high):
        return a.clamp_(low, high)

    def sigmoid(self, a):
        return self.torch.sigmoid(a)

    def softplus(self, a):
        return self.torch.nn.functional.softplus(a)


def _torch(why: str):
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(f"{why} but torch is not installed ({INSTALL_HINT}); set {ENV}=numpy to "
                                 "compute with numpy on the CPU") from None
    return torch


def select_backend(device: str = "cpu", choice: str | None = None) -> Backend:
    """The backend for a worker on ``device`` (``"cpu"`` or ``"cuda"``): ``choice`` when given, else
    ``SPARK_ML_ARRAY_BACKEND``, else numpy on CPU workers and torch on GPU workers (see the module's rule)."""
    raw = os.environ.get(ENV, "") if choice is None else choice
    choice = raw.strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES[:-1])} or {CHOICES[-1]}, got {raw!r}")
    if choice == "numpy" or (choice == "auto" and device != "cuda"):
        return NumpyBackend()
    target = "cuda" if choice == "auto" else (choice.partition(":")[2] or device)
    why = ("this worker was given a GPU" if choice == "auto" else f"{ENV}={choice}")
    torch = _torch(f"{why}: the array backend needs torch")
    if target == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"{why} but torch sees no CUDA device (this torch build: {torch.__version__})")
    return TorchBackend(target)


def torch_backend(device: str = "cpu") -> TorchBackend:
    """The backend of work only torch does (the neural built-ins): :func:`select_backend`'s rule, except that a
    CPU worker gets torch on its CPU rather than numpy (``SPARK_ML_ARRAY_BACKEND=numpy`` included)."""
    choice = os.environ.get(ENV, "").strip().lower()
    backend = select_backend(device, "torch" if choice in ("", "auto", "numpy") else None)
    assert isinstance(backend, TorchBackend)
    return backend


__all__ = ["CHOICES", "ENV", "Backend", "BackendUnavailable", "NumpyBackend", "TorchBackend", "select_backend",
           "torch_backend"]
