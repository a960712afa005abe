"""The built-in estimators as Spark ML stages, against scikit-learn on its bundled real datasets."""

import json
import os

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import StandardScaler as SparkStandardScaler
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.decomposition import PCA as SkPCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import spark_ml
from algorithms.batch import Batch
from spark_ml import jobs
from spark_ml.estimators.channel_fit import wait_for_staging_cleanup
from spark_ml.estimators.params import ParamError


def _df(spark, x, y=None, partitions=4):
    rows = [(Vectors.dense(r),) if y is None else (Vectors.dense(r), float(t)) for r, t in
            zip(x, y if y is not None else [None] * len(x), strict=True)]
    return spark.createDataFrame(rows, ["features"] if y is None else ["features", "label"]).repartition(partitions)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data.astype(np.float64), data.target


def test_kmeans_inertia_matches_sklearn_and_transform_matches_the_model(spark, spark_ml_home, digits):
    x, _ = digits
    model = spark_ml.KMeans(k=10, numWorkers=2, showProgress=False).fit(_df(spark, x))
    centers = model.clusterCenters
    assert centers.shape == (10, 64)
    inertia = ((x[:, None, :] - centers[None]) ** 2).sum(-1).min(1).sum()
    reference = SkKMeans(10, n_init=10, random_state=0).fit(x).inertia_
    assert inertia <= reference * 1.02
    scored = model.transform(_df(spark, x, partitions=3)).collect()
    assert {"closest_cluster", "distance_to_cluster"} <= set(scored[0].asDict())
    feats = np.array([r.features.toArray() for r in scored])
    expected = model.algorithm_model.predict(Batch(feats.astype(np.float32)))
    np.testing.assert_array_equal([r.closest_cluster for r in scored], expected["closest_cluster"])
    np.testing.assert_allclose([r.distance_to_cluster for r in scored], expected["distance_to_cluster"], rtol=1e-6)
    job = jobs.get(model.trainingJobName)
    assert job.status == jobs.COMPLETED and job.num_workers == 2 and job.hyperparameters["k"] == "10"


def test_pca_explained_variance_matches_sklearn(spark, spark_ml_home, digits, tmp_path):
    x, _ = digits
    staging = tmp_path / "staging"
    model = spark_ml.PCA(numComponents=5, showProgress=False, stagingDir=str(staging)).fit(_df(spark, x))
    wait_for_staging_cleanup(timeout=60)
    assert list(staging.iterdir()) == []  # the channel written for the fit is gone, the model is not
    reference = SkPCA(5).fit(x)
    np.testing.assert_allclose(model.explainedVariance, reference.explained_variance_, rtol=1e-5)
    kept = spark_ml.PCA(numComponents=5, numWorkers=2, showProgress=False, stagingDir=str(staging),
                        deleteStagingData=False).fit(_df(spark, x))
    wait_for_staging_cleanup(timeout=60)
    (folder,) = staging.iterdir()
    assert spark_ml.Channel.open(str(folder / "train")).num_records == len(x)
    np.testing.assert_allclose(kept.explainedVariance, reference.explained_variance_, rtol=1e-5)
    assert model.pcaComponents.shape == (64, 5)
    projection = model.transform(_df(spark, x[:20], partitions=1)).collect()
    got = np.array([r.projection.toArray() for r in projection])
    want = model.algorithm_model.predict(Batch(np.array([r.features.toArray() for r in projection],
                                                        np.float32)))["projection"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_linear_learner_binary_matches_logistic_regression(spark, spark_ml_home):
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.3, random_state=0)
    estimator = spark_ml.LinearLearnerBinaryClassifier(numWorkers=2, epochs=20, showProgress=False)
    model = estimator.fit(_df(spark, x_train, y_train))
    scored = model.transform(_df(spark, x_test, y_test, partitions=2)).collect()
    accuracy = np.mean([r.predicted_label == r.label for r in scored])
    reference = LogisticRegression(max_iter=5000).fit(StandardScaler().fit(x_train).transform(x_train), y_train)
    ref_accuracy = reference.score(StandardScaler().fit(x_train).transform(x_test), y_test)
    assert accuracy >= ref_accuracy - 0.02
    assert model.coefficients.shape == (30,) and model.threshold is not None
    assert all(0.0 <= r.score <= 1.0 for r in scored)
    assert "validation:binary_classification_accuracy" in model.metrics or model.metrics


def test_linear_learner_regressor_and_multiclass(spark, spark_ml_home):
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    reg = spark_ml.LinearLearnerRegressor(epochs=30, showProgress=False).fit(_df(spark, x_train, y_train))
    pred = np.array([r.score for r in reg.transform(_df(spark, x_test, y_test, partitions=1)).collect()])
    rmse = np.sqrt(np.mean((pred - y_test) ** 2))
    ref = np.sqrt(np.mean((LinearRegression().fit(x_train, y_train).predict(x_test) - y_test) ** 2))
    assert rmse <= ref * 1.05
    wine = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(wine.data, wine.target, test_size=0.3, random_state=0)
    multi = spark_ml.LinearLearnerMultiClassClassifier(numClasses=3, epochs=30, showProgress=False)
    model = multi.fit(_df(spark, x_train, y_train))
    scored = model.transform(_df(spark, x_test, y_test, partitions=1)).collect()
    accuracy = np.mean([r.predicted_label == r.label for r in scored])
    ref = LogisticRegression(max_iter=5000).fit(StandardScaler().fit(x_train).transform(x_train), y_train)
    assert accuracy >= ref.score(StandardScaler().fit(x_train).transform(x_test), y_test) - 0.03
    assert len(scored[0].score) == 3  # the class-probability vector, as SageMaker's multiclass response


def test_bad_params_fail_before_any_job(spark, spark_ml_home):
    with pytest.raises(ParamError, match=r"Param k \(k\): must be an integer in \(1, inf\)|Param k \(k\)"):
        spark_ml.KMeans(k=1)
    with pytest.raises(ParamError, match="Param miniBatchSize"):
        spark_ml.LinearLearnerRegressor(miniBatchSize=0)
    with pytest.raises(ParamError, match="has no Param 'numComponent'"):
        spark_ml.PCA(numComponent=3)
    df = _df(spark, np.eye(4), np.arange(4))
    with pytest.raises(ParamError, match="numClasses|num_classes"):
        spark_ml.LinearLearnerMultiClassClassifier(showProgress=False).fit(df)
    with pytest.raises(ParamError, match="Param k .k.: is required"):
        spark_ml.KMeans(showProgress=False).fit(df)
    assert jobs.list_jobs() == []


def test_pipeline_save_load_and_channels_input(spark, spark_ml_home, tmp_path):
    data = load_breast_cancer()
    columns = [f"c{i}" for i in range(30)]
    frame = spark.createDataFrame([tuple(map(float, r)) + (float(t),) for r, t in zip(data.data, data.target,
                                                                                       strict=True)],
                                  columns + ["label"]).repartition(2)
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=columns, outputCol="raw"),
        SparkStandardScaler(inputCol="raw", outputCol="features"),
        spark_ml.FactorizationMachinesBinaryClassifier(numFactors=4, epochs=20, miniBatchSize=20, linearLr=0.01,
                                                       factorsLr=0.001, biasLr=0.01, numWorkers=2,
                                                       showProgress=False),
    ])
    fitted = pipeline.fit(frame)
    before = [r.score for r in fitted.transform(frame).orderBy("c0", "c1").collect()]
    fitted.save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    after = [r.score for r in loaded.transform(frame).orderBy("c0", "c1").collect()]
    assert before == after
    fm = loaded.stages[-1]
    assert isinstance(fm, spark_ml.FactorizationMachinesBinaryClassifierModel)
    assert fm.factors.shape == (30, 4)
    assert os.path.exists(os.path.join(fm.getOrDefault(fm.modelLocation), "manifest.json"))
    accuracy = np.mean([(s >= 0.5) == t for s, t in zip(after, [r.label for r in frame.orderBy("c0", "c1").collect()],
                                                         strict=True)])
    assert accuracy > 0.9


def test_fit_on_channels_and_model_persistence(spark, spark_ml_home, tmp_path):
    data = load_breast_cancer()
    x = StandardScaler().fit_transform(data.data)
    train = spark_ml.to_channel(_df(spark, x[:400], data.target[:400]), str(tmp_path / "train"))
    validation = spark_ml.to_channel(_df(spark, x[400:], data.target[400:], partitions=1),
                                     str(tmp_path / "validation"), distribution=spark_ml.FULLY_REPLICATED)
    model = spark_ml.LinearLearnerBinaryClassifier(epochs=10, showProgress=False).fit(
        {"train": train, "validation": validation})
    assert any(k.startswith("validation:") for k in model.metrics)
    model.write().overwrite().save(str(tmp_path / "ll"))
    loaded = spark_ml.LinearLearnerBinaryClassifierModel.load(str(tmp_path / "ll"))
    frame = _df(spark, x[400:], data.target[400:], partitions=1)
    assert [r.score for r in model.transform(frame).collect()] == [r.score for r in loaded.transform(frame).collect()]
    np.testing.assert_array_equal(loaded.coefficients, model.coefficients)
    # saved back over the folder it was loaded from: overwrite must not delete the artifact before reading it
    loaded.write().overwrite().save(str(tmp_path / "ll"))
    again = spark_ml.LinearLearnerBinaryClassifierModel.load(str(tmp_path / "ll"))
    np.testing.assert_array_equal(again.coefficients, model.coefficients)


def test_cross_validator_picks_among_param_maps(spark, spark_ml_home):
    data = load_breast_cancer()
    x = StandardScaler().fit_transform(data.data)
    frame = _df(spark, x, data.target, partitions=2)
    estimator = spark_ml.LinearLearnerBinaryClassifier(showProgress=False)
    grid = ParamGridBuilder().addGrid(estimator.epochs, [1, 8]).build()
    evaluator = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="label")
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2, seed=0)
    model = cv.fit(frame)
    assert len(model.avgMetrics) == 2 and min(model.avgMetrics) > 0.9
    assert isinstance(model.bestModel, spark_ml.LinearLearnerBinaryClassifierModel)
    assert model.bestModel.trainingJobName in {j.name for j in jobs.list_jobs()}


def test_script_estimator_from_a_dataframe(spark, spark_ml_home, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(
        "import json, os, sys\n"
        "files = os.listdir(os.environ['SM_CHANNEL_TRAIN'])\n"
        "hps = json.loads(os.environ['SM_HPS'])\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'weights.json'), 'w').write(json.dumps(hps))\n"
        "print(f\"val_loss={0.5 / hps['epochs']}\")\n")
    df = _df(spark, np.eye(6), np.arange(6) % 2, partitions=2)
    estimator = spark_ml.ScriptEstimator(entryPoint="train.py", sourceDir=str(src), numWorkers=2,
                                         hyperparameters={"epochs": 5},
                                         metricDefinitions=[{"Name": "validation:loss",
                                                             "Regex": "val_loss=([0-9.]+)"}], showProgress=False)
    model = estimator.fit(df)
    assert model.metrics == {"validation:loss": 0.1}
    assert model.files == ["weights.json"]
    with open(os.path.join(model.modelLocation, "weights.json")) as f:
        assert json.load(f) == {"epochs": 5}
    with pytest.raises(TypeError, match="has no built-in scoring"):
        model.transform(df)
    with pytest.raises(ParamError, match="Param entryPoint: 'missing.py' is not a file"):
        spark_ml.ScriptEstimator(entryPoint="missing.py", sourceDir=str(src)).fit(df)
    with pytest.raises(ParamError, match="Param trainCommand is required"):
        spark_ml.AlgorithmEstimator().fit(df)
