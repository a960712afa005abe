"""Linear Learner's fused kernels, on the worker's array backend (:mod:`algorithms.backend`).

The training math in :mod:`.sgd` and :mod:`.losses` is written once against the backend's operations plus
the kernels here: the logistic loss and its gradient in one sweep, the optimizer steps in place, the L1
proximal step, and the softmax's gathers. :func:`linear_ops` specializes the worker's backend (numpy, or
torch on its device) with them and with Linear Learner's working float type (float32), which every array
it converts takes. Metrics and the model stay in numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...backend import Backend, NumpyBackend, TorchBackend


class NumpyLinearOps(NumpyBackend):
    """numpy + scipy: dense features are ndarrays, sparse features stay CSR; fused kernels work in place."""

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self._ones: np.ndarray | None = None

    def asarray(self, x, dtype=None):
        return super().asarray(x, self.dtype if dtype is None else dtype)

    def colsum(self, a):
        """Sum over rows; a GEMV with a ones vector is several times faster than ``sum(axis=0)``."""
        n = a.shape[0]
        if self._ones is None or len(self._ones) != n or self._ones.dtype != a.dtype:
            self._ones = np.ones(n, dtype=a.dtype)
        return self._ones @ a.reshape(n, -1)

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

    def pick_last(self, a, index):
        """``a[i, m, index[i]]`` for a 3-D ``a`` (rows, models, classes): the true class's logit per model."""
        return np.take_along_axis(a, index.reshape(-1, 1, 1), axis=2)[:, :, 0]

    def add_at_last(self, a, index, value: float) -> None:
        """``a[i, :, index[i]] += value`` in place."""
        rows = np.arange(a.shape[0])
        a[rows, :, index] += value


class TorchLinearOps(TorchBackend):
    """The same kernels on torch tensors (a GPU worker's, or the CPU's when asked)."""

    def asarray(self, x, dtype=None):
        return super().asarray(x, self.dtype if dtype is None else dtype)

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

    def pick_last(self, a, index):
        idx = index.reshape(-1, 1, 1).expand(a.shape[0], a.shape[1], 1)
        return self.torch.gather(a, 2, idx)[:, :, 0]

    def add_at_last(self, a, index, value: float) -> None:
        idx = index.reshape(-1, 1, 1).expand(a.shape[0], a.shape[1], 1)
        a.scatter_add_(2, idx, self.torch.full(idx.shape, float(value), dtype=a.dtype, device=a.device))


Ops = Any  # NumpyLinearOps | TorchLinearOps


def linear_ops(backend: Backend, dtype: Any = np.float32) -> Ops:
    """The worker's backend with Linear Learner's kernels, converting to ``dtype``."""
    return backend.specialize(NumpyLinearOps, TorchLinearOps, dtype=dtype)
