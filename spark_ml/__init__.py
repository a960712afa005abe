"""spark_ml: SageMaker's built-in algorithms and hosting on your own Spark cluster.

Names are imported on first use, so processes that only need part of the package (an endpoint's router
and supervisor import ``spark_ml.endpoints``) do not pay for pyspark's import.
"""

from __future__ import annotations

import importlib

from algorithms import __version__

_EXPORTS = {
    "Channel": "algorithms.channel",
    "FULLY_REPLICATED": "algorithms.channel",
    "SHARDED_BY_KEY": "algorithms.channel",
    "register": "spark_ml.channels",
    "jar_path": "spark_ml.jvm",
    "to_channel": "spark_ml.channels",
    "TrainingJobFailed": "spark_ml.runner",
    "TrainingJobStopped": "spark_ml.runner",
    "PCA": "spark_ml.estimators",
    "XGBoostClassifier": "spark_ml.estimators",
    "XGBoostClassifierModel": "spark_ml.estimators",
    "XGBoostRegressor": "spark_ml.estimators",
    "XGBoostRegressorModel": "spark_ml.estimators",
    "AlgorithmEstimator": "spark_ml.estimators",
    "FactorizationMachinesBinaryClassifier": "spark_ml.estimators",
    "FactorizationMachinesBinaryClassifierModel": "spark_ml.estimators",
    "FactorizationMachinesRegressor": "spark_ml.estimators",
    "FactorizationMachinesRegressorModel": "spark_ml.estimators",
    "KMeans": "spark_ml.estimators",
    "KMeansModel": "spark_ml.estimators",
    "KNNClassifier": "spark_ml.estimators",
    "KNNClassifierModel": "spark_ml.estimators",
    "KNNRegressor": "spark_ml.estimators",
    "KNNRegressorModel": "spark_ml.estimators",
    "RandomCutForest": "spark_ml.estimators",
    "RandomCutForestModel": "spark_ml.estimators",
    "LinearLearnerBinaryClassifier": "spark_ml.estimators",
    "LinearLearnerBinaryClassifierModel": "spark_ml.estimators",
    "LinearLearnerMultiClassClassifier": "spark_ml.estimators",
    "LinearLearnerMultiClassClassifierModel": "spark_ml.estimators",
    "LinearLearnerRegressor": "spark_ml.estimators",
    "LinearLearnerRegressorModel": "spark_ml.estimators",
    "PCAModel": "spark_ml.estimators",
    "ScriptEstimator": "spark_ml.estimators",
    "Seq2Seq": "spark_ml.estimators",
    "Seq2SeqModel": "spark_ml.estimators",
    "UserCodeModel": "spark_ml.estimators",
    "LDA": "spark_ml.estimators",
    "LDAModel": "spark_ml.estimators",
    "NTM": "spark_ml.estimators",
    "NTMModel": "spark_ml.estimators",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spark_ml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
