"""EndpointModel: Spark DataFrames scored through endpoints; serializers, A/B, errors, retries, deploy."""

import sys

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors
from serving_support import BYO_SERVER, HostingHome, plugin_env, wait_for, write_models

from algorithms.batch import Batch
from algorithms.builtin import load_model
from spark_ml import hosting
from spark_ml.hosting import EndpointModel, OutputSpec, ProductionVariant

RNG = np.random.default_rng(11)
X = RNG.normal(size=(3000, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer")
    with HostingHome(root / "home") as h:
        h.models = write_models(str(root / "models"))
        h.root = root
        yield h


@pytest.fixture(scope="module")
def endpoint(home):
    """A (linear learner) and B (k-means) share traffic; P (PCA) and Q (picky) take only targeted requests."""
    env = plugin_env()
    variants = []
    for variant, algorithm, weight in (
        ("A", "test-linear-learner", 1.0),
        ("B", "test-kmeans", 1.0),
        ("P", "test-pca", 0.0),
        ("Q", "test-picky", 0.0),
    ):
        hosting.create_model(variant.lower(), home.models[algorithm], environment=env)
        variants.append(ProductionVariant(variant, variant.lower(), 1, weight))
    hosting.create_endpoint_config("scoring", variants)
    return hosting.create_endpoint("scoring", "scoring", router_workers=1)


@pytest.fixture(scope="module")
def frame(spark):
    rows = [(i, Vectors.dense(X[i].astype(float))) for i in range(len(X))]
    df = spark.createDataFrame(rows, ["id", "features"]).repartition(3).cache()
    df.count()
    yield df
    df.unpersist()


def expected(home, algorithm, x=X):
    return load_model(home.models[algorithm]).predict(Batch(x))


def collect(df, *columns):
    rows = sorted(df.select("id", *columns).collect(), key=lambda r: r["id"])
    return [r["id"] for r in rows], rows


def test_transform_returns_the_models_own_predictions_in_order(endpoint, home, frame):
    for variant, algorithm in (("A", "test-linear-learner"), ("B", "test-kmeans")):
        model = EndpointModel(endpoint="scoring", targetVariant=variant, maxBatchRows=700, concurrency=3)
        out = model.transform(frame)
        want = expected(home, algorithm)
        assert out.columns == ["id", "features"] + list(want)
        ids, rows = collect(out, *want)
        assert ids == list(range(len(X)))
        # row id i holds X[i]: equal arrays mean every answer went back to the row it was asked for
        for name, values in want.items():
            np.testing.assert_array_equal(
                np.array([r[name] for r in rows], np.float32), values.astype(np.float32)
            )


@pytest.mark.parametrize(
    "serializer, deserializer",
    [("csv", "json"), ("json", "jsonlines"), ("jsonlines", "protobuf"), ("libsvm", "json")],
)
def test_every_format_gives_the_same_predictions(endpoint, home, frame, serializer, deserializer):
    model = EndpointModel(
        endpoint="scoring",
        targetVariant="B",
        serializer=serializer,
        deserializer=deserializer,
        maxBatchBytes=64 * 1024,
    )
    _, rows = collect(model.transform(frame), "closest_cluster", "distance_to_cluster")
    want = expected(home, "test-kmeans")
    np.testing.assert_array_equal([r["closest_cluster"] for r in rows], want["closest_cluster"])
    np.testing.assert_allclose(
        [r["distance_to_cluster"] for r in rows], want["distance_to_cluster"], rtol=1e-6
    )


def test_ab_traffic_gives_the_union_of_outputs_and_names_the_variant(endpoint, home, frame):
    before = hosting.endpoint_metrics("scoring")
    model = EndpointModel(endpoint="scoring", variantCol="variant", maxBatchRows=100)
    out = model.transform(frame)
    assert out.columns == [
        "id",
        "features",
        "score",
        "predicted_label",
        "closest_cluster",
        "distance_to_cluster",
        "projection",
        "variant",
    ]
    _, rows = collect(out, "score", "closest_cluster", "projection", "variant")
    by_variant = {"A": 0, "B": 0}
    ll, km = expected(home, "test-linear-learner"), expected(home, "test-kmeans")
    for i, r in enumerate(rows):
        by_variant[r["variant"]] += 1
        assert r["projection"] is None
        if r["variant"] == "A":
            assert r["closest_cluster"] is None and r["score"] == pytest.approx(
                float(ll["score"][i]), rel=1e-6
            )
        else:
            assert r["score"] is None and r["closest_cluster"] == km["closest_cluster"][i]
    after = hosting.endpoint_metrics("scoring")
    requests_per_variant = {v: after[v].invocations - before[v].invocations for v in ("A", "B")}
    assert sum(requests_per_variant.values()) == 30  # 3000 rows in batches of 100
    assert all(n >= 3 for n in requests_per_variant.values())  # P(fewer) < 1e-5 with a 50/50 split
    assert by_variant == {v: 100 * n for v, n in requests_per_variant.items()}


def test_sparse_vectors_and_vector_outputs(endpoint, home, spark):
    dense = np.array([[0, 1.5, 0, 0], [2, 0, 0, -1], [0, 0, 0, 0]], np.float32)
    rows = [
        (0, Vectors.sparse(4, [1], [1.5])),
        (1, Vectors.dense([2.0, 0, 0, -1])),
        (2, Vectors.sparse(4, [], [])),
    ]
    df = spark.createDataFrame(rows, ["id", "features"])
    out = EndpointModel(endpoint="scoring", targetVariant="P").transform(df)
    _, got = collect(out, "projection")
    np.testing.assert_allclose(
        [r["projection"].toArray() for r in got], expected(home, "test-pca", dense)["projection"], rtol=1e-6
    )
    arrays = spark.createDataFrame([(i, dense[i].tolist()) for i in range(3)], ["id", "features"])
    _, got = collect(
        EndpointModel(endpoint="scoring", targetVariant="B").transform(arrays), "closest_cluster"
    )
    np.testing.assert_array_equal(
        [r["closest_cluster"] for r in got], expected(home, "test-kmeans", dense)["closest_cluster"]
    )


def test_error_policies(endpoint, home, spark):
    x = RNG.normal(size=(64, 4)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0])
    x[[5, 40], 0] = -1.0  # the picky model rejects any request holding these rows
    df = spark.createDataFrame(
        [(i, Vectors.dense(x[i].astype(float))) for i in range(len(x))], ["id", "features"]
    )
    model = EndpointModel(endpoint="scoring", targetVariant="Q", errorPolicy="column", errorCol="problem")
    _, rows = collect(model.transform(df.coalesce(1)), "score", "problem")
    bad = [r["id"] for r in rows if r["problem"] is not None]
    assert bad == [5, 40]
    assert "400" in rows[5]["problem"] and "negative first feature" in rows[5]["problem"]
    assert rows[5]["score"] is None
    good = np.array([i for i in range(len(x)) if i not in (5, 40)])
    np.testing.assert_allclose(
        [rows[i]["score"] for i in good], expected(home, "test-picky", x[good])["score"], rtol=1e-6
    )
    with pytest.raises(Exception, match="negative first feature"):
        EndpointModel(endpoint="scoring", targetVariant="Q").transform(df).collect()
    with pytest.raises(ValueError, match="errorPolicy must be"):
        EndpointModel(endpoint="scoring", errorPolicy="ignore")
    with pytest.raises(ValueError, match="already has column"):
        EndpointModel(endpoint="scoring", targetVariant="A").transform(df.withColumnRenamed("id", "score"))


def test_endpoint_model_params_survive_save_and_load(tmp_path, endpoint):
    model = EndpointModel(
        endpoint="scoring",
        serializer="csv",
        maxBatchRows=123,
        errorPolicy="column",
        outputs=[OutputSpec("score")],
        authToken="not-saved",
    )
    model.save(str(tmp_path / "em"))
    loaded = EndpointModel.load(str(tmp_path / "em"))
    for name in ("endpoint", "serializer", "maxBatchRows", "errorPolicy", "outputs"):
        assert loaded.getOrDefault(name) == model.getOrDefault(name)
    assert loaded._auth_token is None
    assert "not-saved" not in "".join(p.read_text() for p in (tmp_path / "em").rglob("part-*"))


def test_retries_ride_over_503s_from_a_flaky_server(home, spark):
    script = home.root / "byo_server.py"
    script.write_text(BYO_SERVER)
    hosting.create_model("flaky", command=[sys.executable, str(script)], environment={"FLAKY_EVERY": "2"})
    hosting.create_endpoint_config("flaky", [ProductionVariant("AllTraffic", "flaky", 1)])
    hosting.create_endpoint("flaky", "flaky", router_workers=1)
    x = RNG.integers(0, 10, size=(400, 3)).astype(np.float32)
    df = spark.createDataFrame(
        [(i, Vectors.dense(x[i].astype(float))) for i in range(len(x))], ["id", "features"]
    )
    with pytest.raises(RuntimeError, match="answered 404 to /metadata; set outputs= explicitly"):
        EndpointModel(endpoint="flaky", serializer="csv", deserializer="json").transform(df)
    model = EndpointModel(
        endpoint="flaky",
        serializer="csv",
        deserializer="json",
        outputs=[OutputSpec("score")],
        maxBatchRows=40,
        retryBackoff=0.01,
    )
    _, rows = collect(model.transform(df), "score")
    np.testing.assert_array_equal([r["score"] for r in rows], x.sum(1))
    assert hosting.endpoint_metrics("flaky")["AllTraffic"].errors_5xx >= 5  # the endpoint did answer 503s
    hosting.delete_endpoint("flaky")


def test_deploy_creation_policies_and_a_second_variant(home, spark, frame):
    env = plugin_env()
    lazy = hosting.deploy(
        home.models["test-linear-learner"],
        "lazy",
        creation_policy=hosting.CREATE_ON_TRANSFORM,
        environment=env,
        variant_name="A",
    )
    assert "lazy" not in [e.name for e in hosting.list_endpoints()]
    small = frame.limit(20)
    assert lazy.transform(small).count() == 20
    assert hosting.describe_endpoint("lazy").status == "InService"
    with pytest.raises(LookupError, match="no endpoint named 'absent'"):
        hosting.deploy(home.models["test-kmeans"], "absent", creation_policy=hosting.DO_NOT_CREATE)
    ab = hosting.deploy(
        load_model(home.models["test-kmeans"]),
        "lazy",
        variant_name="B",
        environment=env,
        variantCol="variant",
        maxBatchRows=5,
    )
    d = hosting.describe_endpoint("lazy")
    assert [(v.variant_name, v.current_instance_count) for v in d.variants] == [("A", 1), ("B", 1)]
    variants = {r["variant"] for r in ab.transform(frame.limit(200)).select("variant").collect()}
    assert variants == {"A", "B"}
    hosting.delete_endpoint("lazy")


def test_ab_demo(home, spark, frame, capsys):
    result = hosting.run_ab_demo(
        frame.limit(640),
        {"kmeans": home.models["test-kmeans"], "linear": home.models["test-linear-learner"]},
        endpoint_name="demo",
        environment=plugin_env(),
    )
    assert result["rows"] == 640 and sum(result["split"].values()) == 640
    assert set(result["metrics"]) == {"kmeans", "linear"}
    printed = capsys.readouterr().out
    assert "rows per variant" in printed and "INVOCATIONS" in printed
    wait_for(lambda: "demo" not in [e.name for e in hosting.list_endpoints()], what="the demo endpoint to go")
