"""spark_ml: SageMaker's built-in algorithms and hosting on your own Spark cluster."""

from algorithms import __version__
from algorithms.channel import FULLY_REPLICATED, SHARDED_BY_KEY, Channel

from .channels import register, to_channel
from .estimators import (
    PCA,
    AlgorithmEstimator,
    FactorizationMachinesBinaryClassifier,
    FactorizationMachinesBinaryClassifierModel,
    FactorizationMachinesRegressor,
    FactorizationMachinesRegressorModel,
    KMeans,
    KMeansModel,
    LinearLearnerBinaryClassifier,
    LinearLearnerBinaryClassifierModel,
    LinearLearnerMultiClassClassifier,
    LinearLearnerMultiClassClassifierModel,
    LinearLearnerRegressor,
    LinearLearnerRegressorModel,
    PCAModel,
    ScriptEstimator,
    UserCodeModel,
    XGBoostClassifier,
    XGBoostClassifierModel,
    XGBoostRegressor,
    XGBoostRegressorModel,
)
from .runner import TrainingJobFailed, TrainingJobStopped

__all__ = [
    "FULLY_REPLICATED",
    "SHARDED_BY_KEY",
    "Channel",
    "TrainingJobFailed",
    "TrainingJobStopped",
    "__version__",
    "register",
    "to_channel",
    "AlgorithmEstimator",
    "FactorizationMachinesBinaryClassifier",
    "FactorizationMachinesBinaryClassifierModel",
    "FactorizationMachinesRegressor",
    "FactorizationMachinesRegressorModel",
    "KMeans",
    "KMeansModel",
    "LinearLearnerBinaryClassifier",
    "LinearLearnerBinaryClassifierModel",
    "LinearLearnerMultiClassClassifier",
    "LinearLearnerMultiClassClassifierModel",
    "LinearLearnerRegressor",
    "LinearLearnerRegressorModel",
    "PCA",
    "PCAModel",
    "ScriptEstimator",
    "UserCodeModel",
    "XGBoostClassifier",
    "XGBoostClassifierModel",
    "XGBoostRegressor",
    "XGBoostRegressorModel",
]
