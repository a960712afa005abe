"""The built-in algorithms as Spark estimators and models: each declares its algorithm and fixed settings only.

Params come from the algorithm's hyperparameter declarations (``algorithms.builtin``), camelCased.
"""

from __future__ import annotations

import numpy as np

from .base import SageMakerEstimator, SageMakerModel

# ---------------------------------------------------------------------------------- Factorization Machines


class _FactorizationMachinesModel(SageMakerModel):
    @property
    def intercept(self) -> float:
        return float(self.algorithm_model.w0)

    @property
    def linear(self) -> np.ndarray:
        """w: one weight per feature."""
        return np.array(self.algorithm_model.w)

    @property
    def factors(self) -> np.ndarray:
        """V: (feature_dim, num_factors) factor matrix."""
        return np.array(self.algorithm_model.V)


class FactorizationMachinesBinaryClassifierModel(_FactorizationMachinesModel):
    """Adds ``score`` (probability of class 1) and ``predicted_label``."""


class FactorizationMachinesRegressorModel(_FactorizationMachinesModel):
    """Adds ``score``."""


class FactorizationMachinesBinaryClassifier(SageMakerEstimator):
    _algorithm = "factorization-machines"
    _fixed = {"predictor_type": "binary_classifier"}
    _model_class = FactorizationMachinesBinaryClassifierModel


class FactorizationMachinesRegressor(SageMakerEstimator):
    _algorithm = "factorization-machines"
    _fixed = {"predictor_type": "regressor"}
    _model_class = FactorizationMachinesRegressorModel
