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

from algorithms.builtin.xgboost.params import CLASSIFICATION_PREFIXES, objective_of

from .base import SageMakerEstimator, SageMakerModel
from .params import DeclaredParams, ParamError, setting_param


class _XGBoostPredictionParams(DeclaredParams):
    predictLeaf = setting_param("predictLeaf", bool, "Add a 'leaf' column: the leaf index of each tree.", False)
    predictContrib = setting_param("predictContrib", bool, "Add a 'contrib' column: SHAP contributions per "
                                   "feature, then the bias.", False)


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
    """A trained XGBoost classifier. ``transform`` adds ``score``, ``prediction``, ``probability`` and
    ``rawPrediction`` (plus ``leaf`` / ``contrib`` with predictLeaf / predictContrib); ``booster`` is the
    plain ``xgboost.Booster``.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)] * 20, ["features", "label"])
    >>> model = spark_ml.XGBoostClassifier(numRound=5, maxDepth=2).fit(df)
    >>> model.numClasses, model.objective, sorted(model.featureImportances("weight"))
    (2, 'binary:logistic', ['f0'])
    >>> row = model.setPredictContrib(True).transform(df).first()
    >>> len(row.contrib), row.prediction
    (3, 0.0)
    """

    _base_outputs = ("score", "prediction", "probability", "rawPrediction")

    @property
    def numClasses(self) -> int:
        return max(2, self.algorithm_model.num_class)


class XGBoostRegressorModel(_XGBoostModel):
    """A trained XGBoost model of any non-classification objective. ``transform`` adds ``score`` and
    ``prediction`` (plus ``leaf`` / ``contrib`` with predictLeaf / predictContrib).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(x)], 10.0 * (x % 2)) for x in range(20)], ["features", "label"])
    >>> model = spark_ml.XGBoostRegressor(numRound=3, maxDepth=1, predictLeaf=True).fit(df)
    >>> model.objective, model.booster.num_boosted_rounds()
    ('reg:squarederror', 3)
    >>> len(model.transform(df).first().leaf)
    3
    """


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
    (``objective`` may be any binary:* or multi:* objective). Labels are 0/1, or 0..numClass-1.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)] * 20, ["features", "label"])
    >>> xgb = spark_ml.XGBoostClassifier(numRound=5, eta=0.5, maxDepth=2, evalMetric="auc")
    >>> model = xgb.fit({"train": df, "validation": df})
    >>> model.metrics["validation:auc"]
    1.0
    >>> model.transform(df).select("label", "prediction").distinct().orderBy("label").collect()
    [Row(label=0.0, prediction=0.0), Row(label=1.0, prediction=1.0)]
    """

    _model_class = XGBoostClassifierModel
    _classifier = True

    _param_defaults = {"objective": "binary:logistic"}

    def _objective(self) -> str:
        return "multi:softprob" if self.isSet(self.numClass) else "binary:logistic"


class XGBoostRegressor(_XGBoostEstimator):
    """XGBoost for every other objective: reg:squarederror by default; reg:*, count:poisson, survival:cox,
    survival:aft, rank:ndcg/map/pairwise. Ranking needs query ids: a text/libsvm channel with ``qid:`` on every
    row, rows of a query together and queries in increasing order; with several workers, keep each query
    inside one shard (XGBoost ranks within a worker's rows).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(x)], 10.0 * (x % 2)) for x in range(20)], ["features", "label"])
    >>> model = spark_ml.XGBoostRegressor(numRound=50, eta=0.5, regLambda=0.0).fit(df)
    >>> [round(row.prediction) for row in model.transform(df).limit(4).collect()]
    [0, 10, 0, 10]
    """

    _model_class = XGBoostRegressorModel


__all__ = ["XGBoostClassifier", "XGBoostClassifierModel", "XGBoostRegressor",
           "XGBoostRegressorModel"]
