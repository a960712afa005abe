"""The built-in algorithms as Spark estimators and models: each declares its algorithm and fixed settings only.

Params come from the algorithm's hyperparameter declarations (``algorithms.builtin``), camelCased.
"""

from __future__ import annotations

import numpy as np

from .base import SageMakerEstimator, SageMakerModel

# ---------------------------------------------------------------------------------------------------- K-Means


class KMeansModel(SageMakerModel):
    """A trained K-Means model. ``transform`` adds ``closest_cluster`` (the cluster's index, as a double like
    SageMaker's float) and ``distance_to_cluster`` (Euclidean). ``clusterCenters`` are the centers.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 0.0],), ([0.0, 1.0],), ([9.0, 9.0],), ([9.0, 10.0],)], ["features"])
    >>> model = spark_ml.KMeans(k=2).fit(df)
    >>> model.k, sorted(model.clusterCenters.tolist())
    (2, [[0.0, 0.5], [9.0, 9.5]])
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/kmeans"
    >>> model.save(path)
    >>> spark_ml.KMeansModel.load(path).transform(df).select("distance_to_cluster").first()
    Row(distance_to_cluster=0.5)
    """

    @property
    def clusterCenters(self) -> np.ndarray:
        """(k, feature_dim) centers."""
        return np.array(self.algorithm_model.cluster_centers)

    @property
    def k(self) -> int:
        return int(self.algorithm_model.k)


class KMeans(SageMakerEstimator):
    """SageMaker's K-Means: web-scale mini-batch k-means over the streamed rows, reduced to ``k`` centers at the
    end. One pass per epoch and memory that does not grow with the data; unlabelled vectors in.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 0.0],), ([0.0, 1.0],), ([9.0, 9.0],), ([9.0, 10.0],)], ["features"])
    >>> kmeans = spark_ml.KMeans(k=2, miniBatchSize=100)
    >>> model = kmeans.fit(df)
    >>> rows = model.transform(df).collect()
    >>> rows[0].closest_cluster == rows[1].closest_cluster != rows[2].closest_cluster == rows[3].closest_cluster
    True
    >>> [row.distance_to_cluster for row in rows]
    [0.5, 0.5, 0.5, 0.5]
    """

    _algorithm = "kmeans"
    _model_class = KMeansModel


# -------------------------------------------------------------------------------------------------------- PCA


class PCAModel(SageMakerModel):
    """A trained PCA model. ``transform`` adds ``projection`` (a vector of numComponents values: the centered
    row on each component, when subtractMean is set).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 2.0],), ([2.0, 4.0],), ([3.0, 6.0],)], ["features"])
    >>> model = spark_ml.PCA(numComponents=1).fit(df)
    >>> model.explainedVarianceRatio.round(6).tolist()
    [1.0]
    >>> [round(float(row.projection[0]), 3) for row in model.transform(df).collect()]
    [-2.236, 0.0, 2.236]
    """

    @property
    def pcaComponents(self) -> np.ndarray:
        """(feature_dim, num_components): one principal direction per column, largest variance first."""
        return np.array(self.algorithm_model.v)

    @property
    def singularValues(self) -> np.ndarray:
        return np.array(self.algorithm_model.singular_values)

    @property
    def explainedVariance(self) -> np.ndarray:
        return np.array(self.algorithm_model.explained_variance)

    @property
    def explainedVarianceRatio(self) -> np.ndarray:
        return np.array(self.algorithm_model.explained_variance_ratio)


class PCA(SageMakerEstimator):
    """SageMaker's PCA: principal components from summaries merged across workers; ``regular`` mode is exact,
    ``randomized`` mode never forms a feature_dim² matrix (for wide data).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 2.0, 0.5],), ([2.0, 4.0, 0.5],), ([3.0, 6.0, 0.5],), ([4.0, 8.0, 0.5],)],
    ...                            ["features"])
    >>> model = spark_ml.PCA(numComponents=1, algorithmMode="regular").fit(df)
    >>> model.pcaComponents.round(3).tolist()
    [[0.447], [0.894], [0.0]]
    >>> model.transform(df).select("projection").first()
    Row(projection=DenseVector([-3.3541]))
    """

    _algorithm = "pca"
    _model_class = PCAModel


# ------------------------------------------------------------------------------------------- Linear Learner


class _LinearLearnerModel(SageMakerModel):
    """A trained Linear Learner model: ``coefficients`` and ``intercept`` in the original feature space."""

    @property
    def coefficients(self) -> np.ndarray:
        """Weights in the original feature space: (feature_dim,), or (feature_dim, num_classes) for multiclass."""
        return np.array(self.algorithm_model.coefficients)

    @property
    def intercept(self):
        value = self.algorithm_model.intercept
        return np.array(value) if np.ndim(value) else float(value)


class LinearLearnerBinaryClassifierModel(_LinearLearnerModel):
    """A trained binary Linear Learner. ``transform`` adds ``score`` (the probability of class 1 for logistic
    loss) and ``predicted_label`` (``score`` against the calibrated ``threshold``).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)] * 20, ["features", "label"])
    >>> model = spark_ml.LinearLearnerBinaryClassifier(epochs=5).fit(df)
    >>> model.coefficients.shape, 0.0 < model.threshold < 1.0
    ((2,), True)
    >>> bool(model.coefficients[0] > 0 > model.coefficients[1])
    True
    """

    @property
    def threshold(self) -> float | None:
        """The calibrated decision threshold on ``score``."""
        return self.algorithm_model.threshold


class LinearLearnerMultiClassClassifierModel(_LinearLearnerModel):
    """A trained multiclass Linear Learner. ``transform`` adds ``score`` (a vector of class probabilities) and
    ``predicted_label`` (the most probable class).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 0.0, 0.0], 0.0), ([0.0, 1.0, 0.0], 1.0), ([0.0, 0.0, 1.0], 2.0)] * 10,
    ...                            ["features", "label"])
    >>> model = spark_ml.LinearLearnerMultiClassClassifier(numClasses=3, epochs=10).fit(df)
    >>> model.coefficients.shape
    (3, 3)
    >>> row = model.transform(df).first()
    >>> len(row.score), row.predicted_label
    (3, 0.0)
    """


class LinearLearnerRegressorModel(_LinearLearnerModel):
    """A trained Linear Learner regressor. ``transform`` adds ``score``, the prediction.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(x)], 2.0 * x + 1.0) for x in range(20)], ["features", "label"])
    >>> model = spark_ml.LinearLearnerRegressor(epochs=20, miniBatchSize=2).fit(df)
    >>> round(float(model.coefficients[0]), 2), round(model.intercept, 2)
    (2.0, 1.0)
    """


class LinearLearnerBinaryClassifier(SageMakerEstimator):
    """SageMaker's Linear Learner for 0/1 labels: many linear models trained at once by SGD, the best one kept
    and its decision threshold calibrated (on the ``validation`` channel when there is one).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([0.0, 1.0], 0.0), ([1.0, 0.0], 1.0)] * 20, ["features", "label"])
    >>> model = spark_ml.LinearLearnerBinaryClassifier(epochs=5, loss="logistic").fit(df)
    >>> model.transform(df).select("label", "predicted_label").distinct().orderBy("label").collect()
    [Row(label=0.0, predicted_label=0.0), Row(label=1.0, predicted_label=1.0)]
    """

    _algorithm = "linear-learner"
    _fixed = {"predictor_type": "binary_classifier"}
    _model_class = LinearLearnerBinaryClassifierModel


class LinearLearnerMultiClassClassifier(SageMakerEstimator):
    """SageMaker's Linear Learner for labels 0..numClasses-1 (softmax loss): many models trained at once by
    SGD, the best one kept.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 0.0, 0.0], 0.0), ([0.0, 1.0, 0.0], 1.0), ([0.0, 0.0, 1.0], 2.0)] * 10,
    ...                            ["features", "label"])
    >>> model = spark_ml.LinearLearnerMultiClassClassifier(numClasses=3, epochs=10).fit(df)
    >>> model.transform(df).select("label", "predicted_label").distinct().orderBy("label").collect()
    [Row(label=0.0, predicted_label=0.0), Row(label=1.0, predicted_label=1.0), Row(label=2.0, predicted_label=2.0)]
    """

    _algorithm = "linear-learner"
    _fixed = {"predictor_type": "multiclass_classifier"}
    _model_class = LinearLearnerMultiClassClassifierModel


class LinearLearnerRegressor(SageMakerEstimator):
    """SageMaker's Linear Learner for real-valued labels (squared loss by default; absolute, Huber, quantile
    and epsilon-insensitive losses too): many models trained at once by SGD, the best one kept.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([float(x)], 2.0 * x + 1.0) for x in range(20)], ["features", "label"])
    >>> model = spark_ml.LinearLearnerRegressor(epochs=20, miniBatchSize=2).fit(df)
    >>> [round(row.score, 1) for row in model.transform(df).limit(3).collect()]
    [1.0, 3.0, 5.0]
    """

    _algorithm = "linear-learner"
    _fixed = {"predictor_type": "regressor"}
    _model_class = LinearLearnerRegressorModel

# ---------------------------------------------------------------------------------- Factorization Machines


class _FactorizationMachinesModel(SageMakerModel):
    """A trained Factorization Machines model: ``intercept``, ``linear`` weights and ``factors``."""

    @property
    def intercept(self) -> float:
        return float(self.algorithm_model.w0)

    @property
    def linear(self) -> np.ndarray:
        """w: one weight per feature."""
        return np.array(self.algorithm_model.w)

    @property
    def factors(self) -> np.ndarray:
        """V: (feature_dim, num_factors) factor matrix."""
        return np.array(self.algorithm_model.V)


class FactorizationMachinesBinaryClassifierModel(_FactorizationMachinesModel):
    """A trained Factorization Machines binary classifier. ``transform`` adds ``score`` (the probability of
    class 1) and ``predicted_label`` (``score`` ≥ 0.5).

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 0.0, 1.0], 1.0), ([1.0, 1.0, 0.0], 0.0)] * 20, ["features", "label"])
    >>> model = spark_ml.FactorizationMachinesBinaryClassifier(numFactors=2, epochs=20, linearLr=0.1,
    ...                                                        biasLr=0.1).fit(df)
    >>> model.factors.shape, model.linear.shape
    ((3, 2), (3,))
    >>> bool(model.linear[2] > model.linear[1])
    True
    """


class FactorizationMachinesRegressorModel(_FactorizationMachinesModel):
    """A trained Factorization Machines regressor. ``transform`` adds ``score``, the prediction.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 0.0], 1.0), ([0.0, 1.0], 3.0)] * 20, ["features", "label"])
    >>> model = spark_ml.FactorizationMachinesRegressor(numFactors=2, epochs=50, linearLr=0.1, biasLr=0.1).fit(df)
    >>> model.factors.shape
    (2, 2)
    >>> round(model.intercept + float(model.linear[1] - model.linear[0]), 0)
    3.0
    """


class FactorizationMachinesBinaryClassifier(SageMakerEstimator):
    """SageMaker's Factorization Machines for 0/1 labels: a linear model plus pairwise interactions through
    ``numFactors``-dimensional factors, trained by mini-batch Adam; suited to wide, sparse data.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 0.0, 1.0], 1.0), ([1.0, 1.0, 0.0], 0.0)] * 20, ["features", "label"])
    >>> fm = spark_ml.FactorizationMachinesBinaryClassifier(numFactors=2, epochs=20, linearLr=0.1, biasLr=0.1)
    >>> model = fm.fit(df)
    >>> model.transform(df).select("label", "predicted_label").distinct().orderBy("label").collect()
    [Row(label=0.0, predicted_label=0.0), Row(label=1.0, predicted_label=1.0)]
    """

    _algorithm = "factorization-machines"
    _fixed = {"predictor_type": "binary_classifier"}
    _model_class = FactorizationMachinesBinaryClassifierModel


class FactorizationMachinesRegressor(SageMakerEstimator):
    """SageMaker's Factorization Machines for real-valued labels: a linear model plus pairwise interactions
    through ``numFactors``-dimensional factors, trained by mini-batch Adam on squared loss.

    Examples
    --------
    >>> import spark_ml
    >>> df = spark.createDataFrame([([1.0, 0.0], 1.0), ([0.0, 1.0], 3.0)] * 20, ["features", "label"])
    >>> fm = spark_ml.FactorizationMachinesRegressor(numFactors=2, epochs=50, linearLr=0.1, biasLr=0.1)
    >>> model = fm.fit(df)
    >>> [round(row.score) for row in model.transform(df).limit(2).collect()]
    [1, 3]
    """

    _algorithm = "factorization-machines"
    _fixed = {"predictor_type": "regressor"}
    _model_class = FactorizationMachinesRegressorModel
