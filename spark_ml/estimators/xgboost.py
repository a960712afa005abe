"""XGBoost as Spark estimators: ``XGBoostClassifier`` and ``XGBoostRegressor`` (any other objective too).

Params are SageMaker's XGBoost hyperparameters, camelCased (``numRound``, ``eta``, ``maxDepth``, ``objective``,
``evalMetric``, ``earlyStoppingRounds``, ``numClass``, ``treeMethod``…; ``lambda`` is ``regLambda``). Training
runs XGBoost's own distributed training across ``numWorkers`` barrier tasks, on the GPU Spark gives each
task when ``gpusPerWorker=1``. ``fit`` takes a DataFrame, a Channel (recordIO-protobuf, ``text/csv`` or
``text/libsvm``) or ``{"train": ..., "validation": ...}``; metrics of the ``validation`` channel drive early
stopping and stream to the job record every round.

Columns ``transform`` adds (computed in the executors):

- both: ``score`` (SageMaker's answer: the booster's prediction, i.e. the probability of class 1 for
  binary:logistic, the class probabilities for multi:softprob) and ``prediction`` (the class, or the value);
- the classifier also: ``probability`` (vector of class probabilities; not for binary:hinge) and
  ``rawPrediction`` (vector of margins), as Spark's evaluators expect;
- with ``predictLeaf``: ``leaf`` (leaf index per tree); with ``predictContrib``: ``contrib`` (SHAP value per
  feature, then the bias; one block per class for multiclass).
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.param import Param, Params, TypeConverters

from algorithms.builtin.xgboost.params import CLASSIFICATION_PREFIXES, objective_of

from .base import SageMakerEstimator, SageMakerModel
from .params import ParamError


class _XGBoostPredictionParams(Params):
    predictLeaf = Param(Params._dummy(), "predictLeaf", "add a 'leaf' column: the leaf index of each tree",
                        typeConverter=TypeConverters.toBoolean)
    predictContrib = Param(Params._dummy(), "predictContrib", "add a 'contrib' column: SHAP contributions per "
                           "feature, then the bias", typeConverter=TypeConverters.toBoolean)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(predictLeaf=False, predictContrib=False)

    def setPredictLeaf(self, value: bool):
        return self._set(predictLeaf=value)

    def getPredictLeaf(self) -> bool:
        return self.getOrDefault(self.predictLeaf)

    def setPredictContrib(self, value: bool):
        return self._set(predictContrib=value)

    def getPredictContrib(self) -> bool:
        return self.getOrDefault(self.predictContrib)


class _XGBoostModel(SageMakerModel, _XGBoostPredictionParams):
    _base_outputs: tuple[str, ...] = ("score", "prediction")

    def _scoring_options(self) -> dict[str, Any]:
        available = self.algorithm_model.available_outputs()
        outputs = [name for name in self._base_outputs if name in available]
        if self.getPredictLeaf():
            outputs.append("leaf")
        if self.getPredictContrib():
            outputs.append("contrib")
        return {"outputs": outputs}

    @property
    def booster(self):
        """The trained ``xgboost.Booster`` (the best iteration's when early stopping ran)."""
        return self.algorithm_model.booster

    @property
    def objective(self) -> str:
        return self.algorithm_model.objective

    @property
    def bestIteration(self) -> int | None:
        best = self.algorithm_model.best_iteration
        return None if best is None else int(best)

    def featureImportances(self, importance_type: str = "gain") -> dict[str, float]:
        """XGBoost's feature importances (``f0``, ``f1``…), by ``weight``, ``gain``, ``cover``… ."""
        return dict(self.booster.get_score(importance_type=importance_type))


class XGBoostClassifierModel(_XGBoostModel):
    """Adds ``score``, ``prediction``, ``probability`` and ``rawPrediction`` (plus ``leaf``/``contrib`` on request)."""

    _base_outputs = ("score", "prediction", "probability", "rawPrediction")

    @property
    def numClasses(self) -> int:
        return max(2, self.algorithm_model.num_class)


class XGBoostRegressorModel(_XGBoostModel):
    """Adds ``score`` and ``prediction`` (plus ``leaf``/``contrib`` on request)."""


class _XGBoostEstimator(SageMakerEstimator, _XGBoostPredictionParams):
    _algorithm = "xgboost"
    _classifier: bool = False

    def _objective(self) -> str | None:
        """The objective this class trains when the objective Param is not set."""
        return None

    def _class_defaults(self) -> dict[str, Any]:
        default = self._objective()
        return {} if default is None else {"objective": default}

    def hyperparameters(self, feature_dim: int | None = None) -> dict[str, str]:
        hps = super().hyperparameters(feature_dim)
        objective = objective_of(hps)
        if objective.startswith(CLASSIFICATION_PREFIXES) != self._classifier:
            other = "XGBoostRegressor" if self._classifier else "XGBoostClassifier"
            kinds = "binary:* or multi:*" if self._classifier else "regression, ranking, count and survival"
            raise ParamError(f"Param objective ({objective}): {type(self).__name__} trains {kinds} objectives; "
                             f"use {other}")
        return hps

    def _make_model(self, result):
        model = super()._make_model(result)
        model._set(predictLeaf=self.getPredictLeaf(), predictContrib=self.getPredictContrib())
        return model


class XGBoostClassifier(_XGBoostEstimator):
    """XGBoost for classification: binary:logistic by default, multi:softprob when ``numClass`` is set
    (``objective`` may be any binary:* or multi:* objective). Labels are 0/1, or 0..numClass-1."""

    _model_class = XGBoostClassifierModel
    _classifier = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._setDefault(objective="binary:logistic")
        self.setParams(**kwargs)

    def _objective(self) -> str:
        return "multi:softprob" if self.isSet(self.numClass) else "binary:logistic"


class XGBoostRegressor(_XGBoostEstimator):
    """XGBoost for every other objective: reg:squarederror by default; reg:*, count:poisson, survival:cox,
    survival:aft, rank:ndcg/map/pairwise. Ranking needs query ids: a text/libsvm channel with ``qid:`` on every
    row, rows of a query together and queries in increasing order; with several workers, keep each query
    inside one shard (XGBoost ranks within a worker's rows)."""

    _model_class = XGBoostRegressorModel


__all__ = ["XGBoostClassifier", "XGBoostClassifierModel", "XGBoostRegressor",
           "XGBoostRegressorModel"]
