"""Random Cut Forest as a Spark estimator: ``RandomCutForest`` and ``RandomCutForestModel``.

``fit`` takes unlabelled vectors (a DataFrame, a Channel, or ``{"train": ..., "test": ...}`` where the test
DataFrame's ``labelCol`` holds 1 for anomalies and 0 otherwise); ``transform`` adds ``score``, computed in the
executors. See ``algorithms.builtin.randomcutforest`` for the algorithm.
"""

from __future__ import annotations

from .base import SageMakerEstimator, SageMakerModel


class RandomCutForestModel(SageMakerModel):
    """A trained Random Cut Forest. ``transform`` adds ``score``: the anomaly score (higher is more anomalous), the
    rows' expected collusive displacement averaged over the trees, on SageMaker's scale (a row cut off at every
    tree's root scores log2(1 + numSamplesPerTree)).

    Examples
    --------
    >>> import spark_ml
    >>> rows = [([float(i % 7), float(i % 5)],) for i in range(60)] + [([40.0, -40.0],)]
    >>> df = spark.createDataFrame(rows, ["features"])
    >>> model = spark_ml.RandomCutForest(numTrees=50, numSamplesPerTree=32).fit(df)
    >>> model.numTrees, model.numSamplesPerTree
    (50, 32)
    >>> scores = [row.score for row in model.transform(df).collect()]
    >>> scores.index(max(scores))
    60
    """

    @property
    def numTrees(self) -> int:
        return int(self.algorithm_model.num_trees)

    @property
    def numSamplesPerTree(self) -> int:
        """Records each tree was built from (numSamplesPerTree, or all the records when there were fewer)."""
        return int(self.algorithm_model.num_samples_per_tree)


class RandomCutForest(SageMakerEstimator):
    """SageMaker's Random Cut Forest, for anomaly detection: one pass keeps a uniform sample of the data per tree
    (merged across workers), random cut trees are built from the samples, and a row's score is its average
    collusive displacement. A labelled ``test`` channel (1: anomaly) reports test:f1, test:precision,
    test:recall and test:accuracy at SageMaker's threshold (mean + 3 standard deviations of the scores).

    Examples
    --------
    >>> import spark_ml
    >>> normal = [([float(i % 7), float(i % 5)], 0.0) for i in range(60)]
    >>> df = spark.createDataFrame(normal + [([40.0, -40.0], 1.0)], ["features", "label"])
    >>> model = spark_ml.RandomCutForest(numTrees=50, numSamplesPerTree=32).fit({"train": df, "test": df})
    >>> model.metrics["test:recall"], model.metrics["test:precision"]
    (1.0, 1.0)
    """

    _algorithm = "randomcutforest"
    _model_class = RandomCutForestModel


__all__ = ["RandomCutForest", "RandomCutForestModel"]
