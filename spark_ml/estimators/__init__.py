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
from .knn import KNNClassifier, KNNClassifierModel, KNNRegressor, KNNRegressorModel
from .randomcutforest import RandomCutForest, RandomCutForestModel
from .script import AlgorithmEstimator, ScriptEstimator, UserCodeModel
from .seq2seq import Seq2Seq, Seq2SeqModel
from .topics import LDA, NTM, LDAModel, NTMModel
from .xgboost import XGBoostClassifier, XGBoostClassifierModel, XGBoostRegressor, XGBoostRegressorModel

__all__ = [
    "AlgorithmEstimator",
    "FactorizationMachinesBinaryClassifier",
    "FactorizationMachinesBinaryClassifierModel",
    "FactorizationMachinesRegressor",
    "FactorizationMachinesRegressorModel",
    "KMeans",
    "KMeansModel",
    "LDA",
    "LDAModel",
    "KNNClassifier",
    "KNNClassifierModel",
    "KNNRegressor",
    "KNNRegressorModel",
    "LinearLearnerBinaryClassifier",
    "LinearLearnerBinaryClassifierModel",
    "LinearLearnerMultiClassClassifier",
    "LinearLearnerMultiClassClassifierModel",
    "LinearLearnerRegressor",
    "LinearLearnerRegressorModel",
    "NTM",
    "NTMModel",
    "PCA",
    "PCAModel",
    "RandomCutForest",
    "RandomCutForestModel",
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
