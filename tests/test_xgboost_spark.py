"""XGBoostClassifier / XGBoostRegressor on local[2]: two workers through XGBoost's collective, executor-side
scoring, persistence, Pipeline and CrossValidator, and the errors users see."""

import numpy as np
import pytest
import xgboost as xgb
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

import spark_ml
from algorithms.channel import Channel
from spark_ml import jobs
from spark_ml.arrow_vectors import ColumnError
from spark_ml.estimators.params import ParamError


def _frame(spark, x, y, partitions=2):
    rows = [(Vectors.dense(r), float(t)) for r, t in zip(x, y, strict=True)]
    return spark.createDataFrame(rows, ["features", "label"]).repartition(partitions)


@pytest.fixture(scope="module")
def cancer(spark):
    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)
    return _frame(spark, xt, yt), _frame(spark, xv, yv), (xt, xv, yt, yv)


@pytest.fixture(scope="module")
def fitted(cancer, tmp_path_factory):
    """Two workers, train + validation DataFrames (the module's shared model)."""
    import os

    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("SPARK_ML_HOME")
    os.environ["SPARK_ML_HOME"] = str(home)
    try:
        train, validation, _ = cancer
        estimator = spark_ml.XGBoostClassifier(numRound=30, maxDepth=3, eta=0.3, evalMetric="logloss,auc",
                                               numWorkers=2, showProgress=False)
        model = estimator.fit({"train": train, "validation": validation})
        yield model, jobs.get(model.trainingJobName), jobs.metric_series(model.trainingJobName)
    finally:
        if old is None:
            os.environ.pop("SPARK_ML_HOME", None)
        else:
            os.environ["SPARK_ML_HOME"] = old


def _scores(frame, column="score"):
    rows = frame.select("label", column).collect()
    return np.array([r.label for r in rows]), np.array([r[column] for r in rows])


def test_two_workers_score_like_single_process_xgboost(cancer, fitted):
    _, validation, (xt, xv, yt, yv) = cancer
    model, job, series = fitted
    reference = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": 0},
                          xgb.DMatrix(xt, yt), num_boost_round=30)
    expected = skm.roc_auc_score(yv, reference.predict(xgb.DMatrix(xv)))
    labels, scores = _scores(model.transform(validation))
    assert abs(skm.roc_auc_score(labels, scores) - expected) <= 0.005
    assert job.status == jobs.COMPLETED and job.num_workers == 2
    auc_rounds = sorted(m["epoch"] for m in series if m["name"] == "validation:auc")
    assert auc_rounds == list(range(30))  # every round streamed once (rank 0), SageMaker's name
    assert set(model.metrics) == {"train:logloss", "train:auc", "validation:logloss", "validation:auc"}


def test_transform_adds_sagemaker_and_spark_columns(cancer, fitted):
    _, validation, (_, xv, _, _) = cancer
    model, _, _ = fitted
    scored = model.transform(validation)
    assert scored.columns == ["features", "label", "score", "prediction", "probability", "rawPrediction"]
    row = scored.first()
    assert row.probability[1] == pytest.approx(row.score, abs=1e-6)
    assert row.prediction == float(row.score > 0.5)
    assert row.rawPrediction[1] == pytest.approx(np.log(row.score / (1 - row.score)), abs=1e-3)
    auc = BinaryClassificationEvaluator().evaluate(scored)  # reads rawPrediction
    labels, scores = _scores(scored)
    assert auc == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-9)


def test_leaf_and_contribution_columns(cancer, fitted):
    _, validation, _ = cancer
    model, _, _ = fitted
    scored = model.copy().setPredictLeaf(True).setPredictContrib(True).transform(validation)
    row = scored.first()
    assert len(row.leaf) == 30 and len(row.contrib) == 31
    assert sum(row.contrib) == pytest.approx(row.rawPrediction[1], abs=1e-4)
    assert "leaf" not in model.transform(validation).columns


@pytest.mark.filterwarnings("ignore:.*Unknown file format.*Using UBJSON:UserWarning")  # SageMaker's file name
def test_save_load_and_plain_booster(cancer, fitted, tmp_path):
    _, validation, (_, xv, _, _) = cancer
    model, _, _ = fitted
    model.write().overwrite().save(str(tmp_path / "model"))
    loaded = spark_ml.XGBoostClassifierModel.load(str(tmp_path / "model"))
    _, before = _scores(model.transform(validation))
    _, after = _scores(loaded.transform(validation))
    np.testing.assert_array_equal(before, after)
    booster = xgb.Booster(model_file=str(tmp_path / "model" / "artifact" / "xgboost-model"))
    np.testing.assert_allclose(np.sort(booster.predict(xgb.DMatrix(xv))), np.sort(before), atol=1e-6)
    assert loaded.bestIteration is None and loaded.numClasses == 2


def test_feature_count_mismatch_at_transform_is_named(spark, fitted):
    model, _, _ = fitted
    narrow = spark.createDataFrame([(Vectors.dense([1.0] * 29),)], ["features"])
    with pytest.raises(Exception, match="the model expects 30 features, got vectors of size 29") as info:
        model.transform(narrow).collect()
    assert "ColumnError" in str(info.value) or isinstance(info.value, ColumnError)


def test_regressor_on_two_workers_within_two_percent(spark, spark_ml_home):
    x, y = load_diabetes(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=1)
    model = spark_ml.XGBoostRegressor(numRound=50, maxDepth=3, eta=0.1, numWorkers=2, showProgress=False,
                                      evalMetric="rmse,r2").fit(_frame(spark, xt, yt))
    reference = xgb.train({"max_depth": 3, "eta": 0.1}, xgb.DMatrix(xt, yt), num_boost_round=50)
    expected = skm.root_mean_squared_error(yv, reference.predict(xgb.DMatrix(xv)))
    scored = model.transform(_frame(spark, xv, yv))
    assert scored.columns[-2:] == ["score", "prediction"]
    labels, scores = _scores(scored, "prediction")
    assert abs(skm.root_mean_squared_error(labels, scores) - expected) <= 0.02 * expected
    assert set(model.metrics) == {"train:rmse", "train:r2"}


def test_pipeline_and_cross_validator(spark, spark_ml_home, cancer, tmp_path):
    _, _, (xt, xv, yt, yv) = cancer
    columns = [f"c{i}" for i in range(xt.shape[1])]

    def table(x, y):
        return spark.createDataFrame([(*map(float, r), float(t)) for r, t in zip(x, y, strict=True)],
                                     [*columns, "label"]).repartition(2)

    assembler = VectorAssembler(inputCols=columns, outputCol="features")
    classifier = spark_ml.XGBoostClassifier(numRound=10, numWorkers=2, showProgress=False)
    grid = ParamGridBuilder().addGrid(classifier.maxDepth, [1, 3]).build()
    search = CrossValidator(estimator=classifier, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                            numFolds=2, seed=3)
    fitted = Pipeline(stages=[assembler, search]).fit(table(xt, yt))
    cv = fitted.stages[1]
    assert len(cv.avgMetrics) == 2 and all(0.9 < m <= 1 for m in cv.avgMetrics)
    assert isinstance(cv.bestModel, spark_ml.XGBoostClassifierModel)
    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    again = PipelineModel.load(str(tmp_path / "pipeline"))
    assert isinstance(again.stages[1].bestModel, spark_ml.XGBoostClassifierModel)
    test = table(xv, yv)
    labels, before = _scores(fitted.transform(test))
    labels_again, after = _scores(again.transform(test))
    np.testing.assert_array_equal(np.sort(before), np.sort(after))
    assert skm.roc_auc_score(labels, before) > 0.95


def test_libsvm_channel_on_two_workers(spark, spark_ml_home, tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    folder = tmp_path / "svm"
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(x)), 2)):
        with open(folder / f"part-{i}.libsvm", "w") as f:
            for j in rows:
                f.write(f"{y[j]:g} " + " ".join(f"{k}:{v:.9g}" for k, v in enumerate(x[j]) if v) + "\n")
    model = spark_ml.XGBoostClassifier(numRound=10, numWorkers=2, showProgress=False, evalMetric="auc").fit(
        Channel.open(str(folder)))
    assert model.featureDim == 30 and model.metrics["train:auc"] > 0.99


def test_bad_labels_and_params_fail_clearly(spark, spark_ml_home):
    frame = spark.createDataFrame([(Vectors.dense([float(i), 1.0]), float(i % 3)) for i in range(40)],
                                  ["features", "label"]).repartition(2)
    with pytest.raises(spark_ml.TrainingJobFailed, match=r"label 2 is out of range for objective binary:logistic"):
        spark_ml.XGBoostClassifier(numRound=3, numWorkers=2, showProgress=False).fit(frame)
    with pytest.raises(spark_ml.TrainingJobFailed, match=r"with num_class=2 labels must be the integers 0..1"):
        spark_ml.XGBoostClassifier(numRound=3, numClass=2, showProgress=False).fit(frame)
    model = spark_ml.XGBoostClassifier(numRound=3, numClass=3, showProgress=False).fit(frame)
    assert model.numClasses == 3 and model.objective == "multi:softprob"
    row = model.transform(frame).first()
    assert len(row.score) == 3 and len(row.probability) == 3 and row.prediction in (0.0, 1.0, 2.0)
    with pytest.raises(ParamError, match="Param objective .*XGBoostRegressor trains regression"):
        spark_ml.XGBoostRegressor(numRound=3, objective="binary:logistic").fit(frame)
    with pytest.raises(ParamError, match=r"Param maxDepth \(max_depth\)"):
        spark_ml.XGBoostClassifier(numRound=3, maxDepth=-1)
