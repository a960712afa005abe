"""Linear Learner's loss functions: per-row values and gradients for many models at once.

Margins ``z`` are ``(n, M)`` (one column per model) for binary and regression losses and
``(n, M, C)`` for softmax. Binary labels are ``(n, 1)`` in {0, 1}; regression labels ``(n, 1)``;
multiclass labels ``(n,)`` integer class indices. Gradients are with respect to ``z``.

Regression losses are homogeneous: scaling the residual and the loss's own length parameters
(``loss_insensitivity``, ``huber_delta``) by s scales the loss by ``s ** degree``. Training on a
normalized label (``y' = (y - mean) / scale``) therefore uses the parameters divided by ``scale``
and optimizes the same objective as the original-scale one, up to a constant factor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .kernels import Ops

BINARY_LOSSES = ("logistic", "hinge_loss")
MULTICLASS_LOSSES = ("softmax_loss",)
REGRESSION_LOSSES = (
    "squared_loss",
    "absolute_loss",
    "eps_insensitive_squared_loss",
    "eps_insensitive_absolute_loss",
    "quantile_loss",
    "huber_loss",
)
ALL_LOSSES = BINARY_LOSSES + MULTICLASS_LOSSES + REGRESSION_LOSSES
DEFAULT_LOSS = {
    "binary_classifier": "logistic",
    "multiclass_classifier": "softmax_loss",
    "regressor": "squared_loss",
}
ALLOWED_LOSSES = {
    "binary_classifier": BINARY_LOSSES,
    "multiclass_classifier": MULTICLASS_LOSSES,
    "regressor": REGRESSION_LOSSES,
}


@dataclass(frozen=True)
class Loss:
    """A loss with its parameters; ``value_grad`` returns (per-row values or None, gradient)."""

    name: str
    margin: float = 1.0
    quantile: float = 0.5
    insensitivity: float = 0.01
    delta: float = 1.0

    @property
    def degree(self) -> int:
        """How the loss scales with the residual (regression); 0 for classification losses."""
        if self.name in ("squared_loss", "eps_insensitive_squared_loss", "huber_loss"):
            return 2
        if self.name in ("absolute_loss", "eps_insensitive_absolute_loss", "quantile_loss"):
            return 1
        return 0

    def scaled(self, label_scale: float) -> Loss:
        """The same objective on labels divided by ``label_scale``."""
        if label_scale == 1.0:
            return self
        return replace(self, insensitivity=self.insensitivity / label_scale, delta=self.delta / label_scale)

    def value_grad(self, ops: Ops, z, y, want_value: bool = True):
        fn = _IMPLEMENTATIONS[self.name]
        return fn(self, ops, z, y, want_value)


def _logistic(loss: Loss, ops: Ops, z, y, want_value: bool):
    return ops.logistic(z, y, want_value)


def _hinge(loss: Loss, ops: Ops, z, y, want_value: bool):
    s = 2.0 * y - 1.0
    slack = loss.margin - s * z
    active = slack > 0
    grad = ops.where(active, -s, 0.0)
    value = ops.relu(slack) if want_value else None
    return value, grad


def _softmax(loss: Loss, ops: Ops, z, y, want_value: bool):
    top = ops.rowmax(z)
    e = ops.exp(z - top)
    total = ops.rowsum(e)
    grad = e / total
    ops.add_at_last(grad, y, -1.0)
    value = None
    if want_value:
        value = (ops.log(total) + top)[:, :, 0] - ops.pick_last(z, y)
    return value, grad


def _squared(loss: Loss, ops: Ops, z, y, want_value: bool):
    r = z - y
    return (r * r if want_value else None), 2.0 * r


def _absolute(loss: Loss, ops: Ops, z, y, want_value: bool):
    r = z - y
    return (ops.abs(r) if want_value else None), ops.sign(r)


def _eps_squared(loss: Loss, ops: Ops, z, y, want_value: bool):
    r = z - y
    excess = ops.relu(ops.abs(r) - loss.insensitivity)
    return (excess * excess if want_value else None), 2.0 * excess * ops.sign(r)


def _eps_absolute(loss: Loss, ops: Ops, z, y, want_value: bool):
    r = z - y
    excess = ops.relu(ops.abs(r) - loss.insensitivity)
    grad = ops.where(excess > 0, ops.sign(r), 0.0)
    return (excess if want_value else None), grad


def _quantile(loss: Loss, ops: Ops, z, y, want_value: bool):
    # Predictions above the label cost (1 - q) per unit, below it q per unit: the q-quantile minimizes it.
    r = z - y
    q = loss.quantile
    over = r >= 0
    grad = ops.where(over, 1.0 - q, -q)
    value = ops.where(over, (1.0 - q) * r, -q * r) if want_value else None
    return value, grad


def _huber(loss: Loss, ops: Ops, z, y, want_value: bool):
    r = z - y
    c = ops.clip(r, -loss.delta, loss.delta)
    value = c * (r - 0.5 * c) if want_value else None
    return value, c


_IMPLEMENTATIONS = {
    "logistic": _logistic,
    "hinge_loss": _hinge,
    "softmax_loss": _softmax,
    "squared_loss": _squared,
    "absolute_loss": _absolute,
    "eps_insensitive_squared_loss": _eps_squared,
    "eps_insensitive_absolute_loss": _eps_absolute,
    "quantile_loss": _quantile,
    "huber_loss": _huber,
}
