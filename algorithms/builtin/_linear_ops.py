"""The array operations Linear Learner's SGD needs, on numpy (the default) or torch (GPU workers).

The training math in :mod:`._linear_sgd` and :mod:`._linear_losses` is written against this small
interface, so a worker given a GPU runs the same code on torch CUDA tensors, and tests can force the
torch path on CPU. Metrics and the model stay in numpy; only the per-mini-batch work goes through here.

Selection: ``env.device == "cuda"`` picks torch on CUDA; otherwise numpy, unless the environment
variable ``SPARK_ML_ARRAY_BACKEND`` says otherwise (see :func:`select_ops`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._backend import BACKEND_CHOICES
from ._backend import BACKEND_ENV as BACKEND_VARIABLE  # one variable and one set of values for all built-ins


class NumpyOps:
    """numpy + scipy: dense features are ndarrays, sparse features stay CSR."""

    name = "numpy"
    device = "cpu"

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self._ones: np.ndarray | None = None

    # conversion -------------------------------------------------------------------------------------
    def asarray(self, a) -> np.ndarray:
        return np.asarray(a, dtype=self.dtype)

    def as_index(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.int64)

    def features(self, x):
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            return x if x.dtype == self.dtype else x.astype(self.dtype)
        return np.asarray(x, dtype=self.dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def copy(self, a):
        return np.array(a, dtype=self.dtype, copy=True)

    def zeros(self, shape) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype)

    def full(self, shape, value: float) -> np.ndarray:
        return np.full(shape, value, dtype=self.dtype)

    # linear algebra ---------------------------------------------------------------------------------
    def mm(self, x, w):
        """``x @ w`` for dense or sparse ``x``."""
        out = x @ w
        return np.asarray(out)

    def tmm(self, x, g):
        """``x.T @ g`` for dense or sparse ``x``."""
        return np.asarray(x.T @ g)

    def take_columns(self, a, index):
        """``a[..., index]`` as a new array (index: from :meth:`as_index`)."""
        return np.take(a, index, axis=-1)

    def colsum(self, a):
        """Sum over rows; a GEMV with a ones vector is several times faster than ``sum(axis=0)``."""
        n = a.shape[0]
        if self._ones is None or len(self._ones) != n or self._ones.dtype != a.dtype:
            self._ones = np.ones(n, dtype=a.dtype)
        return self._ones @ a.reshape(n, -1)

    # fused kernels of the hot path (in place where the caller allows) -------------------------------
    def logistic(self, z, y, want_value: bool):
        """Logistic loss of margins ``z`` for 0/1 labels ``y`` (n, 1): (values or None, sigmoid(z) - y)."""
        grad = np.multiply(z, 0.5)
        np.tanh(grad, out=grad)  # sigmoid(z) = (1 + tanh(z / 2)) / 2, stable for any z
        grad *= 0.5
        grad += 0.5 - y
        value = None
        if want_value:  # softplus(z) - y z = max(z, 0) + log1p(exp(-|z|)) - y z
            value = np.abs(z)
            np.negative(value, out=value)
            np.exp(value, out=value)
            np.log1p(value, out=value)
            tmp = np.maximum(z, 0.0)
            value += tmp
            np.multiply(z, y, out=tmp)
            value -= tmp
        return value, grad

    def adam_(self, w, g, m, v, lr, beta_1: float, beta_2: float, eps: float):
        """Adam step on ``w`` in place (``g`` is consumed); returns the per-coordinate step size."""
        m *= beta_1
        tmp = np.multiply(g, 1.0 - beta_1)
        m += tmp
        v *= beta_2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta_2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(lr, tmp, out=tmp)
        np.multiply(tmp, m, out=g)
        w -= g
        return tmp

    def rmsprop_(self, w, g, v, mom, lr, rho: float, momentum: float, eps: float):
        v *= rho
        tmp = np.multiply(g, g)
        tmp *= 1.0 - rho
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(lr, tmp, out=tmp)
        g *= tmp
        if mom is not None:
            mom *= momentum
            mom += g
            w -= mom
        else:
            w -= g
        return tmp

    def sgd_(self, w, g, mom, lr, momentum: float):
        g *= lr
        if mom is not None:  # MXNet's form: mom = momentum * mom - lr * g; w += mom
            mom *= momentum
            mom -= g
            w += mom
        else:
            w -= g

    def soft_threshold_(self, w, threshold) -> None:
        """L1 proximal step in place: shrink toward 0 by ``threshold``, exact zeros inside it."""
        shrunk = np.abs(w)
        shrunk -= threshold
        np.maximum(shrunk, 0.0, out=shrunk)
        np.copysign(shrunk, w, out=w)

    # elementwise ------------------------------------------------------------------------------------
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)
    where = staticmethod(np.where)

    def relu(self, a):
        return np.maximum(a, 0)

    def clip(self, a, low, high):
        return np.clip(a, low, high)

    def rowmax(self, a):
        """Max over the last axis, kept as a length-1 axis."""
        return a.max(axis=-1, keepdims=True)

    def rowsum(self, a):
        return a.sum(axis=-1, keepdims=True)

    def argmax_last(self, a):
        return a.argmax(axis=-1)

    def isfinite_columns(self, a) -> np.ndarray:
        """Per column of a 2-D array: are all its values finite (numpy bool array)."""
        return np.isfinite(a).all(axis=0)

    def pick_last(self, a, index):
        """``a[i, m, index[i]]`` for a 3-D ``a`` (rows, models, classes): the true class's logit per model."""
        return np.take_along_axis(a, index.reshape(-1, 1, 1), axis=2)[:, :, 0]

    def add_at_last(self, a, index, value: float) -> None:
        """``a[i, :, index[i]] += value`` in place."""
        rows = np.arange(a.shape[0])
        a[rows, :, index] += value


class TorchOps:
    """torch on one device; sparse features become sparse COO tensors (both products are supported)."""

    name = "torch"

    def __init__(self, device: str = "cpu", dtype=None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32

    def asarray(self, a):
        t = self.torch
        if isinstance(a, t.Tensor):
            return a.to(self.device, self.dtype)
        return t.as_tensor(np.asarray(a, dtype=np.float32), device=self.device).to(self.dtype)

    def as_index(self, a):
        t = self.torch
        if isinstance(a, t.Tensor):
            return a.to(self.device, t.int64)
        return t.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def features(self, x):
        t = self.torch
        if sp.issparse(x):
            coo = sp.coo_matrix(x)
            indices = np.vstack([coo.row, coo.col]).astype(np.int64)
            # scipy's indices are valid by construction, so torch's per-batch invariant check is skipped
            return (
                t.sparse_coo_tensor(
                    t.as_tensor(indices),
                    t.as_tensor(coo.data.astype(np.float32)),
                    size=coo.shape,
                    device=self.device,
                    check_invariants=False,
                )
                .to(self.dtype)
                .coalesce()
            )
        return t.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=self.device).to(self.dtype)

    def to_numpy(self, a) -> np.ndarray:
        if isinstance(a, self.torch.Tensor):
            return a.detach().to("cpu").numpy()
        return np.asarray(a)

    def copy(self, a):
        return self.asarray(a).clone()

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.dtype, device=self.device)

    def full(self, shape, value: float):
        return self.torch.full(
            shape if isinstance(shape, tuple) else (shape,),
            float(value),
            dtype=self.dtype,
            device=self.device,
        )

    def mm(self, x, w):
        if x.is_sparse:
            return self.torch.sparse.mm(x, w)
        return x @ w

    def tmm(self, x, g):
        if x.is_sparse:
            return self.torch.sparse.mm(x.t(), g)
        return x.T @ g

    def take_columns(self, a, index):
        return a.index_select(a.dim() - 1, index)

    def colsum(self, a):
        return a.reshape(a.shape[0], -1).sum(dim=0)

    def logistic(self, z, y, want_value: bool):
        F = self.torch.nn.functional
        grad = self.torch.sigmoid(z) - y
        value = F.softplus(z) - y * z if want_value else None
        return value, grad

    def adam_(self, w, g, m, v, lr, beta_1: float, beta_2: float, eps: float):
        m.mul_(beta_1).add_(g, alpha=1.0 - beta_1)
        v.mul_(beta_2).addcmul_(g, g, value=1.0 - beta_2)
        step = lr / (v.sqrt() + eps)
        w.sub_(step * m)
        return step

    def rmsprop_(self, w, g, v, mom, lr, rho: float, momentum: float, eps: float):
        v.mul_(rho).addcmul_(g, g, value=1.0 - rho)
        step = lr / (v.sqrt() + eps)
        if mom is not None:
            mom.mul_(momentum).add_(step * g)
            w.sub_(mom)
        else:
            w.sub_(step * g)
        return step

    def sgd_(self, w, g, mom, lr, momentum: float):
        if mom is not None:
            mom.mul_(momentum).sub_(lr * g)
            w.add_(mom)
        else:
            w.sub_(lr * g)

    def soft_threshold_(self, w, threshold) -> None:
        shrunk = self.torch.clamp(w.abs() - threshold, min=0)
        w.copy_(self.torch.copysign(shrunk, w))

    def exp(self, a):
        return self.torch.exp(a)

    def log(self, a):
        return self.torch.log(a)

    def abs(self, a):
        return self.torch.abs(a)

    def sign(self, a):
        return self.torch.sign(a)

    def where(self, cond, a, b):
        t = self.torch
        a = a if isinstance(a, t.Tensor) else t.tensor(a, dtype=self.dtype, device=self.device)
        b = b if isinstance(b, t.Tensor) else t.tensor(b, dtype=self.dtype, device=self.device)
        return t.where(cond, a, b)

    def relu(self, a):
        return self.torch.clamp(a, min=0)

    def clip(self, a, low, high):
        return self.torch.clamp(a, low, high)

    def rowmax(self, a):
        return a.max(dim=-1, keepdim=True).values

    def rowsum(self, a):
        return a.sum(dim=-1, keepdim=True)

    def argmax_last(self, a):
        return a.argmax(dim=-1)

    def isfinite_columns(self, a) -> np.ndarray:
        return self.to_numpy(self.torch.isfinite(a).all(dim=0))

    def pick_last(self, a, index):
        idx = index.reshape(-1, 1, 1).expand(a.shape[0], a.shape[1], 1)
        return self.torch.gather(a, 2, idx)[:, :, 0]

    def add_at_last(self, a, index, value: float) -> None:
        idx = index.reshape(-1, 1, 1).expand(a.shape[0], a.shape[1], 1)
        a.scatter_add_(2, idx, self.torch.full(idx.shape, float(value), dtype=a.dtype, device=a.device))


Ops = Any  # NumpyOps | TorchOps


def select_ops(device: str = "cpu") -> Ops:
    """numpy on a CPU worker, torch on a GPU worker's CUDA device; ``SPARK_ML_ARRAY_BACKEND`` overrides the
    choice with the same values the other built-ins take (``numpy``, ``torch`` on the worker's device,
    ``torch:cpu``, ``torch:cuda``)."""
    choice = os.environ.get(BACKEND_VARIABLE, "").strip().lower()
    if choice and choice not in BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_VARIABLE} must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    if choice == "numpy" or (not choice and device != "cuda"):
        return NumpyOps()
    try:
        import torch  # noqa: F401
    except ImportError:
        if device == "cuda" and not choice:
            raise RuntimeError(
                "this worker was given a GPU but torch is not installed; install the "
                "'deep' extra (pip install spark-ml[deep])"
            ) from None
        raise RuntimeError(f"{BACKEND_VARIABLE}={choice} but torch is not installed") from None
    return TorchOps(choice.partition(":")[2] or device)
