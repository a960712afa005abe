"""The main end-to-end job, and built-in Spark Models deployed and scored through endpoints."""

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors
from sklearn.datasets import load_breast_cancer

import spark_ml
from spark_ml import hosting, jobs


@pytest.fixture
def clean_endpoints(spark_ml_home):
    yield
    for endpoint in hosting.list_endpoints():
        hosting.delete_endpoint(endpoint.name)


def test_demo_trains_deploys_two_variants_and_scores(spark, spark_ml_home, clean_endpoints, tmp_path):
    from spark_ml.demo import run

    lines = []
    outcome = run(spark=spark, workdir=str(tmp_path), endpoint_name="demo-test", print_fn=lines.append)
    assert outcome["channel"].num_records == 1797
    assert outcome["accuracy"] > 0.9
    split = outcome["endpoint"]["split"]
    assert set(split) == {"kmeans", "linear"} and sum(split.values()) == 1797
    assert min(split.values()) > 1797 * 0.25  # equal weights: neither variant starves
    metrics = outcome["endpoint"]["metrics"]
    assert {v: m.invocations for v, m in metrics.items()} and all(m.invocations > 0 for m in metrics.values())
    assert [j.status for j in jobs.list_jobs()] == [jobs.COMPLETED, jobs.COMPLETED]
    assert any("rows per variant" in line for line in lines)


def test_endpoint_scores_equal_the_models_own_transform(spark, spark_ml_home, clean_endpoints):
    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    df = spark.createDataFrame([(Vectors.dense(r), float(t)) for r, t in zip(x, data.target, strict=True)],
                               ["features", "label"]).repartition(2)
    model = spark_ml.LinearLearnerBinaryClassifier(epochs=5, showProgress=False).fit(df)
    local = {tuple(r.features): (r.score, r.predicted_label) for r in model.transform(df).collect()}
    through = model.deploy("ll-endpoint", instanceCount=2)
    remote = {tuple(r.features): (r.score, r.predicted_label) for r in through.transform(df).collect()}
    assert remote.keys() == local.keys()
    np.testing.assert_allclose([remote[k][0] for k in local], [local[k][0] for k in local], rtol=1e-6)
    assert [remote[k][1] for k in local] == [local[k][1] for k in local]
    described = hosting.describe_endpoint("ll-endpoint")
    assert [(v.variant_name, v.current_instance_count) for v in described.variants] == [("AllTraffic", 2)]


def test_creation_policies(spark, spark_ml_home, clean_endpoints, tmp_path):
    df = spark.createDataFrame([(Vectors.dense([float(i), float(i % 3)]),) for i in range(30)], ["features"])
    model = spark_ml.KMeans(k=3, showProgress=False).fit(df)
    lazy = model.deploy("lazy-endpoint", creationPolicy="CREATE_ON_TRANSFORM")
    assert hosting.list_endpoints() == []  # nothing until the first transform
    scored = lazy.transform(df).collect()
    assert {r.closest_cluster for r in scored} <= {0.0, 1.0, 2.0}
    assert [e.name for e in hosting.list_endpoints()] == ["lazy-endpoint"]
    existing = model.deploy("lazy-endpoint", creationPolicy="DO_NOT_CREATE")
    assert len(existing.transform(df).collect()) == 30
    with pytest.raises(Exception, match="missing-endpoint"):
        model.deploy("missing-endpoint", creationPolicy="DO_NOT_CREATE")
