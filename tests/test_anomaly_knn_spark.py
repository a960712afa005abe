"""RandomCutForest and KNNClassifier through Spark: fit in a barrier stage of two workers, transform in the
executors equal to the Spark-free model, the endpoint's (serving contract's) answers equal to transform, and bad
input failing before any job with the Param or column named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors
from test_serving_server import call

import spark_ml
from algorithms.batch import Batch
from algorithms.serving.app import InferenceApp
from spark_ml.estimators.params import ParamError

pytest.importorskip("faiss", reason="faiss-cpu (the knn extra) is not installed")


def frame(spark, x: np.ndarray, y: np.ndarray | None = None, partitions: int = 2):
    rows = [(i, Vectors.dense(row.tolist())) + (() if y is None else (float(y[i]),)) for i, row in enumerate(x)]
    columns = ["id", "features"] + ([] if y is None else ["label"])
    return spark.createDataFrame(rows, columns).repartition(partitions)


def test_random_cut_forest_fits_on_two_workers_and_scores_in_the_executors(spark, spark_ml_home, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4)).astype(np.float32)
    x[:6] += 8
    labels = np.r_[np.ones(6), np.zeros(594)]
    df = frame(spark, x, labels)
    channel = spark_ml.to_channel(df, str(tmp_path / "channel"), labelCol="label")  # train ignores the labels
    model = spark_ml.RandomCutForest(numTrees=50, numSamplesPerTree=64, numWorkers=2).fit(
        {"train": channel, "test": channel})
    assert model.numTrees == 50 and model.numSamplesPerTree == 64
    assert model.metrics["test:recall"] == 1.0 and {"test:f1", "test:precision", "test:accuracy"} <= set(model.metrics)
    rows = model.transform(df).orderBy("id").collect()
    scores = np.float32([row.score for row in rows])
    np.testing.assert_array_equal(scores, model.algorithm_model.predict(Batch(x))["score"])
    assert scores[:6].min() > scores[6:].max()
    with pytest.raises(Exception, match="featuresCol 'features': the model expects 4 features, got vectors of size 3"):
        model.transform(frame(spark, x[:5, :3])).collect()


def test_knn_classifier_verbose_transform_equals_the_endpoints_verbose_answer(spark, spark_ml_home, tmp_path):
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data[:600].astype(np.float32), data.target[:600].astype(np.float64)
    df = frame(spark, x, y)
    channel = spark_ml.to_channel(df, str(tmp_path / "channel"), labelCol="label")
    model = spark_ml.KNNClassifier(k=4, sampleSize=1000, numWorkers=2, verbose=True).fit(
        {"train": channel, "test": channel})
    assert model.indexSize == 600 and model.metrics["test:accuracy"] > 0.95
    rows = model.transform(df.limit(50)).orderBy("id").collect()
    assert {"predicted_label", "labels", "distances"} <= set(rows[0].asDict())
    queries = x[[row.id for row in rows]]
    app = InferenceApp(model.algorithm_model.configured())  # the model an endpoint instance serves
    body = json.dumps({"instances": [{"features": q.tolist()} for q in queries]}).encode()
    status, _, answer = call(app, "POST", "/invocations", body, [
        ("Content-Type", "application/json"), ("Accept", "application/json; verbose=true")])
    assert status == 200
    served = json.loads(answer)["predictions"]
    for row, answer_row in zip(rows, served, strict=True):
        assert row.predicted_label == answer_row["predicted_label"]
        assert row.labels.toArray().tolist() == answer_row["labels"]
        np.testing.assert_array_equal(np.float32(row.distances.toArray()), np.float32(answer_row["distances"]))
    plain = model.copy().setVerbose(False).transform(df.limit(3))
    assert "labels" not in plain.columns and "predicted_label" in plain.columns


def test_bad_knn_params_and_missing_labels_fail_before_any_job(spark, spark_ml_home):
    df = frame(spark, np.zeros((4, 2), np.float32))
    with pytest.raises(ParamError, match=r"Param indexMetric \(index_metric\): faiss.IVFPQ supports L2 only"):
        spark_ml.KNNClassifier(k=1, sampleSize=4, indexType="faiss.IVFPQ", indexMetric="COSINE").fit(df)
    with pytest.raises(ParamError, match=r"Param k \(k\): must be at most sample_size \(2\)"):
        spark_ml.KNNRegressor(k=3, sampleSize=2).fit(df)
    with pytest.raises(ParamError, match="labelCol 'label' is not a column"):
        spark_ml.KNNClassifier(k=1, sampleSize=4).fit(df)
    with pytest.raises(ParamError, match=r"Param numTrees \(num_trees\): must be an integer in \[50, 1000\]"):
        spark_ml.RandomCutForest(numTrees=5)
