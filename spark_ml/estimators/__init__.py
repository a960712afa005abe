"""Spark ML estimators and models for the built-in algorithms and for bring-your-own code."""

from .base import SageMakerEstimator, SageMakerModel
from .builtin import (
    FactorizationMachinesBinaryClassifier,
    FactorizationMachinesBinaryClassifierModel,
    FactorizationMachinesRegressor,
    FactorizationMachinesRegressorModel,
)
from .script import AlgorithmEstimator, ScriptEstimator, UserCodeModel

__all__ = [
    "AlgorithmEstimator",
    "FactorizationMachinesBinaryClassifier",
    "FactorizationMachinesBinaryClassifierModel",
    "FactorizationMachinesRegressor",
    "FactorizationMachinesRegressorModel",
    "SageMakerEstimator",
    "SageMakerModel",
    "ScriptEstimator",
    "UserCodeModel",
]
