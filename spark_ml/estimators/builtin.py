"""The built-in algorithms as Spark estimators and models: each declares its algorithm and fixed settings only.

Params come from the algorithm's hyperparameter declarations (``algorithms.builtin``), camelCased.
"""

from __future__ import annotations

import numpy as np

from .base import SageMakerEstimator, SageMakerModel

# ---------------------------------------------------------------------------------------------------- K-Means


class KMeansModel(SageMakerModel):
    """Adds ``closest_cluster`` (as a double, like SageMaker's float) and ``distance_to_cluster``."""

    @property
    def clusterCenters(self) -> np.ndarray:
        """(k, feature_dim) centers."""
        return np.array(self.algorithm_model.cluster_centers)

    @property
    def k(self) -> int:
        return int(self.algorithm_model.k)


class KMeans(SageMakerEstimator):
    _algorithm = "kmeans"
    _model_class = KMeansModel


# -------------------------------------------------------------------------------------------------------- PCA


class PCAModel(SageMakerModel):
    """Adds ``projection`` (a vector of num_components values)."""

    @property
    def pcaComponents(self) -> np.ndarray:
        """(feature_dim, num_components): one principal direction per column, largest variance first."""
        return np.array(self.algorithm_model.v)

    @property
    def singularValues(self) -> np.ndarray:
        return np.array(self.algorithm_model.singular_values)

    @property
    def explainedVariance(self) -> np.ndarray:
        return np.array(self.algorithm_model.explained_variance)

    @property
    def explainedVarianceRatio(self) -> np.ndarray:
        return np.array(self.algorithm_model.explained_variance_ratio)


class PCA(SageMakerEstimator):
    _algorithm = "pca"
    _model_class = PCAModel


# ------------------------------------------------------------------------------------------- Linear Learner


class _LinearLearnerModel(SageMakerModel):
    @property
    def coefficients(self) -> np.ndarray:
        """Weights in the original feature space: (feature_dim,), or (feature_dim, num_classes) for multiclass."""
        return np.array(self.algorithm_model.coefficients)

    @property
    def intercept(self):
        value = self.algorithm_model.intercept
        return np.array(value) if np.ndim(value) else float(value)


class LinearLearnerBinaryClassifierModel(_LinearLearnerModel):
    """Adds ``score`` (probability of class 1 for logistic loss) and ``predicted_label``."""

    @property
    def threshold(self) -> float | None:
        """The calibrated decision threshold on ``score``."""
        return self.algorithm_model.threshold


class LinearLearnerMultiClassClassifierModel(_LinearLearnerModel):
    """Adds ``score`` (a vector of class probabilities) and ``predicted_label``."""


class LinearLearnerRegressorModel(_LinearLearnerModel):
    """Adds ``score``."""


class LinearLearnerBinaryClassifier(SageMakerEstimator):
    _algorithm = "linear-learner"
    _fixed = {"predictor_type": "binary_classifier"}
    _model_class = LinearLearnerBinaryClassifierModel


class LinearLearnerMultiClassClassifier(SageMakerEstimator):
    _algorithm = "linear-learner"
    _fixed = {"predictor_type": "multiclass_classifier"}
    _model_class = LinearLearnerMultiClassClassifierModel


class LinearLearnerRegressor(SageMakerEstimator):
    _algorithm = "linear-learner"
    _fixed = {"predictor_type": "regressor"}
    _model_class = LinearLearnerRegressorModel

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
