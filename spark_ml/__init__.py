"""spark_ml: SageMaker's built-in algorithms and hosting on your own Spark cluster."""

from algorithms import __version__
from algorithms.channel import FULLY_REPLICATED, SHARDED_BY_KEY, Channel

from .channels import register, to_channel
from .estimators import (
    AlgorithmEstimator,
    FactorizationMachinesBinaryClassifier,
    FactorizationMachinesBinaryClassifierModel,
    FactorizationMachinesRegressor,
    FactorizationMachinesRegressorModel,
    ScriptEstimator,
    UserCodeModel,
)
from .runner import TrainingJobFailed, TrainingJobStopped

__all__ = [
    "FULLY_REPLICATED",
    "SHARDED_BY_KEY",
    "AlgorithmEstimator",
    "Channel",
    "FactorizationMachinesBinaryClassifier",
    "FactorizationMachinesBinaryClassifierModel",
    "FactorizationMachinesRegressor",
    "FactorizationMachinesRegressorModel",
    "ScriptEstimator",
    "TrainingJobFailed",
    "TrainingJobStopped",
    "UserCodeModel",
    "__version__",
    "register",
    "to_channel",
]
