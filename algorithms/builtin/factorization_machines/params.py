"""Factorization Machines hyperparameters: SageMaker's names, defaults and the SDK's ranges.

Ranges follow the SageMaker Python SDK's validators (``num_factors``/``epochs`` > 0, every lr, wd,
init scale and init sigma >= 0) and the docs' defaults. Two ranges are stricter than the SDK's
"any float", because the values outside them cannot train: ``eps`` must be > 0 (it is Adam's
denominator guard) and ``rescale_grad`` must be > 0 (0 freezes the model, < 0 climbs the loss).
``clip_gradient`` <= 0 turns clipping off, as in MXNet's optimizers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...hyperparameters import Hyperparameter, HyperparameterError, HyperparameterSpec

BINARY = "binary_classifier"
REGRESSOR = "regressor"
INIT_METHODS = ("normal", "uniform", "constant")
GROUPS = ("bias", "linear", "factors")

# SageMaker's documented defaults per parameter group.
_DEFAULT_LR = {"bias": 0.1, "linear": 0.001, "factors": 0.0001}
_DEFAULT_WD = {"bias": 0.01, "linear": 0.001, "factors": 0.00001}
_DEFAULT_SIGMA = {"bias": 0.01, "linear": 0.01, "factors": 0.001}
_GROUP_DOC = {"bias": "the bias term w0", "linear": "the linear terms w", "factors": "the factor matrix V"}


def _group_params(group: str) -> list[Hyperparameter]:
    what = _GROUP_DOC[group]
    return [
        Hyperparameter(f"{group}_lr", float, _DEFAULT_LR[group], low=0, doc=f"Adam learning rate of {what}"),
        Hyperparameter(f"{group}_wd", float, _DEFAULT_WD[group], low=0, doc=f"L2 weight decay of {what}"),
        Hyperparameter(f"{group}_init_method", str, "normal", choices=INIT_METHODS,
                       doc=f"how {what} is initialized"),
        Hyperparameter(f"{group}_init_scale", float, None, low=0,
                       doc=f"uniform init of {what} draws from [-scale, scale]"),
        Hyperparameter(f"{group}_init_sigma", float, _DEFAULT_SIGMA[group], low=0,
                       doc=f"standard deviation of the normal init of {what}"),
        Hyperparameter(f"{group}_init_value", float, None, doc=f"constant init value of {what}"),
    ]


SPEC = HyperparameterSpec([
    Hyperparameter("feature_dim", int, required=True, low=1, doc="dimension of the input feature space"),
    Hyperparameter("num_factors", int, required=True, low=1, doc="dimensionality of the factorization"),
    Hyperparameter("predictor_type", str, required=True, choices=(BINARY, REGRESSOR),
                   doc="binary_classifier (log loss) or regressor (squared loss)"),
    Hyperparameter("epochs", int, 1, low=1, doc="passes over the training data"),
    Hyperparameter("mini_batch_size", int, 1000, low=1, doc="records per optimizer step"),
    Hyperparameter("clip_gradient", float, None, doc="clip gradients to [-clip, clip]; <= 0 or unset: off"),
    Hyperparameter("eps", float, None, low=0, low_open=True, doc="Adam's epsilon; unset: 1e-8"),
    Hyperparameter("rescale_grad", float, None, low=0, low_open=True,
                   doc="gradient multiplier; unset: 1 / records in the mini-batch"),
    *[p for group in GROUPS for p in _group_params(group)],
])


def check_init_companions(values: dict[str, Any]) -> None:
    """A uniform init needs its scale and a constant init its value (SageMaker has no default for either)."""
    for group in GROUPS:
        method = values.get(f"{group}_init_method") or "normal"
        needed = {"uniform": f"{group}_init_scale", "constant": f"{group}_init_value"}.get(method)
        if needed and values.get(needed) is None:
            raise HyperparameterError(needed, f"is required when {group}_init_method is {method} "
                                      f"({SPEC[needed].describe()})")


@dataclass(frozen=True)
class GroupConfig:
    lr: float
    wd: float
    init_method: str
    init_scale: float | None
    init_sigma: float
    init_value: float | None

    def initial(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.init_method == "normal":
            return rng.standard_normal(shape, dtype=np.float32) * np.float32(self.init_sigma)
        if self.init_method == "uniform":
            scale = float(self.init_scale)
            return rng.uniform(-scale, scale, size=shape).astype(np.float32)
        return np.full(shape, self.init_value, dtype=np.float32)


@dataclass(frozen=True)
class FMConfig:
    """Parsed, checked hyperparameters in the form the math uses."""

    feature_dim: int
    num_factors: int
    predictor_type: str
    epochs: int
    mini_batch_size: int
    clip_gradient: float | None  # None: off
    eps: float
    rescale_grad: float | None  # None: 1 / batch rows
    bias: GroupConfig
    linear: GroupConfig
    factors: GroupConfig
    beta1: float = 0.9
    beta2: float = 0.999

    @property
    def binary(self) -> bool:
        return self.predictor_type == BINARY

    @classmethod
    def from_values(cls, values: dict[str, Any], feature_dim: int) -> FMConfig:
        groups = {g: GroupConfig(lr=values[f"{g}_lr"], wd=values[f"{g}_wd"],
                                 init_method=values[f"{g}_init_method"], init_scale=values[f"{g}_init_scale"],
                                 init_sigma=values[f"{g}_init_sigma"], init_value=values[f"{g}_init_value"])
                  for g in GROUPS}
        clip = values["clip_gradient"]
        return cls(feature_dim=int(feature_dim), num_factors=values["num_factors"],
                   predictor_type=values["predictor_type"], epochs=values["epochs"],
                   mini_batch_size=values["mini_batch_size"],
                   clip_gradient=clip if clip is not None and clip > 0 else None,
                   eps=1e-8 if values["eps"] is None else values["eps"], rescale_grad=values["rescale_grad"],
                   **groups)
