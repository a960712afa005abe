"""k-NN as Spark estimators: ``KNNClassifier`` and ``KNNRegressor`` (and their Models).

``fit`` samples ``sampleSize`` labelled rows across the workers and builds a faiss index of them;
``transform`` adds ``predicted_label`` (computed in the executors), and with ``verbose=True`` also ``labels``
and ``distances``: the ``k`` neighbours' labels and distances, closest first. See ``algorithms.builtin.knn``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import SageMakerEstimator, SageMakerModel
from .params import DeclaredParams, setting_param


class _KNNPredictionParams(DeclaredParams):
    verbose = setting_param("verbose", bool, "Also add the neighbours' 'labels' and 'distances' (vectors of k values, "
                            "closest first), as SageMaker's verbose answer does.", False)


class _KNNModel(SageMakerModel, _KNNPredictionParams):
    def _scoring_options(self) -> dict[str, Any]:
        return {"verbose": True} if self.getVerbose() else {}

    @property
    def k(self) -> int:
        return int(self.algorithm_model.k)

    @property
    def indexSize(self) -> int:
        """Training rows the index holds (sampleSize, or all the rows when there were fewer)."""
        return int(self.algorithm_model.index_size)

    @property
    def indexLabels(self) -> np.ndarray:
        """The label of each indexed row, in index order."""
        return np.array(self.algorithm_model.labels)


class KNNClassifierModel(_KNNModel):
    """A trained k-NN classifier. ``transform`` adds ``predicted_label``: the most frequent label among the ``k``
    nearest indexed rows (ties: the smallest label); with ``verbose``, also ``labels`` and ``distances``.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(i), 0.0], float(i >= 5)) for i in range(10)], ["features", "label"])
    >>> model = spark_ml.KNNClassifier(k=3, sampleSize=10).fit(df)
    >>> model.k, model.indexSize
    (3, 10)
    >>> row = model.setVerbose(True).transform(df).first()
    >>> row.predicted_label, row.labels.toArray().tolist(), row.distances.toArray().tolist()
    (0.0, [0.0, 0.0, 0.0], [0.0, 1.0, 4.0])
    """


class KNNRegressorModel(_KNNModel):
    """A trained k-NN regressor. ``transform`` adds ``predicted_label``: the mean label of the ``k`` nearest
    indexed rows; with ``verbose``, also ``labels`` and ``distances``.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(i)], 2.0 * i) for i in range(10)], ["features", "label"])
    >>> model = spark_ml.KNNRegressor(k=3, sampleSize=10).fit(df)
    >>> [row.predicted_label for row in model.transform(df).limit(3).collect()]
    [2.0, 2.0, 4.0]
    """


class _KNNEstimator(SageMakerEstimator, _KNNPredictionParams):
    def _make_model(self, result):
        model = super()._make_model(result)
        model._set(verbose=self.getVerbose())
        return model


class KNNClassifier(_KNNEstimator):
    """SageMaker's k-NN for classification: a uniform sample of ``sampleSize`` labelled rows (drawn across the
    workers, optionally projected by a sign or fjlt random projection) indexed with faiss (Flat: exact; IVFFlat,
    IVFPQ: approximate), and rows classified by the majority label of their ``k`` nearest neighbours. A labelled
    ``test`` channel reports test:accuracy.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(i), 0.0], float(i >= 5)) for i in range(10)], ["features", "label"])
    >>> model = spark_ml.KNNClassifier(k=3, sampleSize=10).fit({"train": df, "test": df})
    >>> model.metrics["test:accuracy"]
    1.0
    >>> model.transform(df).select("label", "predicted_label").distinct().orderBy("label").collect()
    [Row(label=0.0, predicted_label=0.0), Row(label=1.0, predicted_label=1.0)]
    """

    _algorithm = "knn"
    _fixed = {"predictor_type": "classifier"}
    _model_class = KNNClassifierModel


class KNNRegressor(_KNNEstimator):
    """SageMaker's k-NN for regression: rows predicted by the mean label of their ``k`` nearest neighbours among
    a uniform sample of ``sampleSize`` labelled rows indexed with faiss. A labelled ``test`` channel reports
    test:mse.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(i)], 2.0 * i) for i in range(10)], ["features", "label"])
    >>> model = spark_ml.KNNRegressor(k=2, sampleSize=10).fit({"train": df, "test": df})
    >>> model.metrics["test:mse"]
    1.0
    """

    _algorithm = "knn"
    _fixed = {"predictor_type": "regressor"}
    _model_class = KNNRegressorModel


__all__ = ["KNNClassifier", "KNNClassifierModel", "KNNRegressor", "KNNRegressorModel"]
