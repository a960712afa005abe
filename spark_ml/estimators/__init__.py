"""Spark ML estimators and models for the built-in algorithms and for bring-your-own code."""

from .base import SageMakerEstimator, SageMakerModel
from .builtin import (
    PCA,
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
)
from .script import AlgorithmEstimator, ScriptEstimator, UserCodeModel
from .seq2seq import Seq2Seq, Seq2SeqModel
from .xgboost import XGBoostClassifier, XGBoostClassifierModel, XGBoostRegressor, XGBoostRegressorModel

__all__ = [
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
    "SageMakerEstimator",
    "SageMakerModel",
    "ScriptEstimator",
    "Seq2Seq",
    "Seq2SeqModel",
    "UserCodeModel",
    "XGBoostClassifier",
    "XGBoostClassifierModel",
    "XGBoostRegressor",
    "XGBoostRegressorModel",
]
