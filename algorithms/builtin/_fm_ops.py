"""The few array operations the FM math needs, on numpy (default) or torch (GPU, or CPU when asked).

The math in :mod:`._fm_kernels` is written once against :class:`ArrayOps`; a backend supplies dense
element-wise ops and a feature-matrix wrapper with the four products FM needs (``X @ B``, ``Xᵀ @ G``,
``(X∘X) @ B``, ``(X∘X)ᵀ @ g``), for dense rows and for CSR rows alike. Sparse rows stay sparse on both
backends. torch is imported only when its backend is chosen, so this module works without it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

BACKEND_VARIABLE = "SPARK_ML_FM_BACKEND"  # numpy | torch | auto (torch on GPU workers, numpy otherwise)


class NumpyFeatures:
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


class NumpyOps:
    name = "numpy"
    device = "cpu"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return a

    def vector(self, values: list[float] | np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def index(self, idx: np.ndarray) -> np.ndarray:
        return idx

    def features(self, x: np.ndarray | sp.csr_matrix) -> NumpyFeatures:
        return NumpyFeatures(x)

    def sqrt(self, a: np.ndarray) -> np.ndarray:
        return np.sqrt(a)

    def sigmoid(self, a: np.ndarray) -> np.ndarray:
        return expit(a)

    def softplus(self, a: np.ndarray) -> np.ndarray:
        return np.logaddexp(np.float32(0), a)

    def clip(self, a: np.ndarray, bound: float) -> np.ndarray:
        return np.clip(a, -bound, bound, out=a)

    def sums(self, parts: list[np.ndarray]) -> np.ndarray:
        """Each part's sum, as one float64 vector on the device."""
        return np.array([p.sum(dtype=np.float64) for p in parts])


class TorchFeatures:
    """A batch's feature rows as torch tensors; CSR rows become torch CSR tensors (and their transpose)."""

    def __init__(self, x: np.ndarray | sp.csr_matrix, ops: TorchOps):
        torch = ops.torch
        self._torch = torch
        if sp.issparse(x):
            xt = x.T.tocsr()
            self.x = ops.csr(x, x.data)
            self.x2 = ops.csr(x, x.data * x.data)
            self.xt = ops.csr(xt, xt.data)
            self.x2t = ops.csr(xt, xt.data * xt.data)
        else:
            self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(ops.device)
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


class TorchOps:
    name = "torch"

    def __init__(self, device: str = "cpu"):
        try:
            import torch
        except ImportError:
            raise ImportError("the torch backend of factorization-machines needs torch; install the 'deep' "
                              "extra (pip install spark-ml[deep])") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("this worker was given a GPU but torch sees no CUDA device")
        self.torch = torch
        self.device = torch.device(device)

    def asarray(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def vector(self, values: list[float] | np.ndarray):
        return self.torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)

    def index(self, idx: np.ndarray):
        return self.torch.from_numpy(idx.astype(np.int64, copy=False)).to(self.device)

    def csr(self, m: sp.csr_matrix, values: np.ndarray):
        torch = self.torch
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
                                           size=m.shape, device=self.device, check_invariants=False)

    def features(self, x: np.ndarray | sp.csr_matrix) -> TorchFeatures:
        return TorchFeatures(x, self)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def sigmoid(self, a):
        return self.torch.sigmoid(a)

    def softplus(self, a):
        return self.torch.nn.functional.softplus(a)

    def clip(self, a, bound: float):
        return a.clamp_(-bound, bound)

    def sums(self, parts: list):
        torch = self.torch
        return torch.stack([p.sum(dtype=torch.float64) for p in parts])


ArrayOps = NumpyOps | TorchOps


def select_ops(device: str) -> ArrayOps:
    """numpy on CPU workers, torch on GPU workers; ``SPARK_ML_FM_BACKEND`` overrides (e.g. torch on CPU)."""
    choice = os.environ.get(BACKEND_VARIABLE, "auto").strip().lower()
    if choice not in ("auto", "numpy", "torch"):
        raise ValueError(f"{BACKEND_VARIABLE} must be auto, numpy or torch, got {choice!r}")
    if choice == "numpy":
        return NumpyOps()
    if choice == "torch" or device != "cpu":
        return TorchOps(device)
    return NumpyOps()
