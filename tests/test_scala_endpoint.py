"""The JVM ``EndpointModel`` (scala/ ``sparkml.endpoint``) against servers that honour SageMaker's contract.

Most tests call a real spark_ml endpoint (``spark_ml.hosting``: router, bearer token, variants, model servers
scoring three artifacts); every answer the JVM client turns into columns must equal the Python Model's own
``predict``. Retries, the concurrency bound and the request bytes need a server that can refuse, hold and
record requests: those use the tiny test-only ``_contract_server``. The JVM runs in a Spark worker process
reached through the PySpark gateway; the last test drives both example applications through ``spark-submit``:
the JVM writes a channel, Python trains on it, and the JVM scores natively and through the endpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from _contract_server import ContractServer
from _scala_support import JVMError, SparkWorker, build_jar, jvm_task, plain, session, spark_submit
from serving_support import HostingHome

from algorithms import tensor_codec
from algorithms.batch import Batch
from algorithms.builtin import load_model, save_model
from algorithms.builtin.kmeans.algorithm import KMeansModel
from algorithms.builtin.linear_learner.model import LinearLearnerModel
from algorithms.builtin.pca import PCAModel
from spark_ml import hosting
from spark_ml.hosting import ProductionVariant

TOKEN = "s3cret-token"
VARIANTS = {"kmeans": "K", "pca": "P", "linear-multiclass": "M"}  # K takes all untargeted traffic
CONTENT_TYPES = {"protobuf": "application/x-recordio-protobuf", "csv": "text/csv", "json": "application/json",
                 "jsonlines": "application/jsonlines", "libsvm": "text/libsvm"}


def cancer() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data
    return (x - x.mean(axis=0)) / x.std(axis=0)


# ------------------------------------------------------------------------------------------ in the worker


def _frame(x: list, partitions: int, sparse_every: int, nulls: tuple[int, ...], arrays: bool):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StructField, StructType

    rows = []
    for i, row in enumerate(x):
        if i in nulls:
            value = None
        elif arrays:
            value = list(row)
        elif sparse_every and i % sparse_every == 0:
            nz = [j for j, v in enumerate(row) if v != 0.0]
            value = Vectors.sparse(len(row), nz, [row[j] for j in nz])
        else:
            value = Vectors.dense(row)
        rows.append((i, value))
    features = ArrayType(DoubleType()) if arrays else VectorUDT()
    schema = StructType([StructField("id", IntegerType()), StructField("features", features)])
    spark = session()
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), schema)


def _endpoint_model(settings: dict, token: str | None):
    model = session().sparkContext._jvm.sparkml.endpoint.EndpointModel()
    for name, value in settings.items():
        getattr(model, f"set{name[0].upper()}{name[1:]}")(value)
    if token:
        model.setAuthToken(token)
    return model


@jvm_task
def _in_jvm_score(x: list, settings: dict, partitions: int = 2, sparse_every: int = 0, nulls: tuple = (),
                  arrays: bool = False, token: str | None = None) -> dict:
    from pyspark.sql import DataFrame

    df = _frame(x, partitions, sparse_every, nulls, arrays)
    out = DataFrame(_endpoint_model(settings, token).transform(df._jdf), session())
    rows = sorted(out.collect(), key=lambda r: r["id"])  # orderBy would sample the input: a second scoring
    return {"schema": out.schema.simpleString(),
            "columns": {name: [plain(r[name]) for r in rows] for name in out.columns}}


@jvm_task
def _in_jvm_save_and_load(settings: dict, token: str, path: str) -> dict:
    jvm = session().sparkContext._jvm
    model = _endpoint_model(settings, token)
    model.write().overwrite().save(path)
    loaded = jvm.sparkml.endpoint.EndpointModel.load(path)
    return {p.name(): str(loaded.getOrDefault(p)) for p in loaded.params()}


@jvm_task
def _in_jvm_fit_kmeans(channel: str) -> str:
    import spark_ml

    model = spark_ml.KMeans(k=3, numWorkers=2, showProgress=False).fit(spark_ml.Channel.open(channel))
    return model.getOrDefault(model.modelLocation)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def jvm(tmp_path_factory):
    worker = SparkWorker(build_jar(), "test_scala_endpoint",
                         {"SPARK_ML_HOME": str(tmp_path_factory.mktemp("spark_ml_home"))})
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Artifacts of three Python models, fitted by scikit-learn on its breast cancer data."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    x = cancer()
    d = x.shape[1]
    km = KMeans(n_clusters=3, n_init=3, random_state=0).fit(x)
    pca = PCA(n_components=4).fit(x)
    y = np.digitize(x[:, 0], np.quantile(x[:, 0], [1 / 3, 2 / 3]))  # three classes
    lr = LogisticRegression(max_iter=500).fit(x, y)
    built = {
        "kmeans": KMeansModel({"k": "3"}, d, km.cluster_centers_),
        "pca": PCAModel({"num_components": "4"}, d, pca.singular_values_, pca.components_.T, pca.mean_[None, :],
                        len(x), float(np.var(x, axis=0, ddof=1).sum() * (len(x) - 1))),
        "linear-multiclass": LinearLearnerModel({"predictor_type": "multiclass_classifier", "loss": "softmax_loss"},
                                                d, lr.coef_.T, lr.intercept_),
    }
    out = {}
    for name, model in built.items():
        folder = tmp_path_factory.mktemp(name)
        save_model(model, str(folder))
        out[name] = str(folder)
    return out


@pytest.fixture
def serve(models):
    servers = []

    def start(name: str, **kwargs) -> ContractServer:
        server = ContractServer(models[name], **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def endpoint(models, tmp_path_factory) -> str:
    """A spark_ml endpoint with a bearer token: variant K (k-means) takes the traffic, P (PCA) and M (linear
    learner, multiclass) only requests that target them."""
    with HostingHome(tmp_path_factory.mktemp("hosting") / "home"):
        variants = []
        for name, variant in VARIANTS.items():
            hosting.create_model(variant.lower(), models[name])
            variants.append(ProductionVariant(variant, variant.lower(), 1, 1.0 if variant == "K" else 0.0))
        hosting.create_endpoint_config("scala", variants)
        yield hosting.create_endpoint("scala", "scala", auth_token=TOKEN, router_workers=1).url


def expected(location: str, x) -> dict[str, np.ndarray]:
    features = np.asarray(x, np.float32)
    return {k: np.asarray(v, np.float64) for k, v in load_model(location).predict(Batch(features)).items()}


def assert_predictions(columns: dict, reference: dict[str, np.ndarray], exact: bool = True) -> None:
    """Equal to the Python Model's predictions; ``exact=False`` when text travels: a float32 printed as its
    shortest decimal and parsed back as float64 differs from the float32 in the last bits."""
    for name, values in reference.items():
        got = np.asarray(columns[name], np.float64).reshape(values.shape)
        if exact:
            np.testing.assert_array_equal(got, values, err_msg=name)
        else:
            np.testing.assert_allclose(got, values, rtol=1e-6, atol=1e-7, err_msg=name)


# --------------------------------------------------------------------------------- formats, both directions


@pytest.mark.parametrize(("model", "serializer", "deserializer"), [
    ("linear-multiclass", "protobuf", "protobuf"),
    ("linear-multiclass", "csv", "json"),
    ("linear-multiclass", "json", "jsonlines"),
    ("linear-multiclass", "jsonlines", "csv"),
    ("linear-multiclass", "libsvm", "json"),
    ("kmeans", "csv", "csv"),
    ("pca", "protobuf", "csv"),
    ("pca", "json", "protobuf"),
])
def test_each_format_returns_the_python_models_predictions(jvm, endpoint, models, model, serializer, deserializer):
    x = cancer()[:120]
    settings = {"endpoint": endpoint, "serializer": serializer, "deserializer": deserializer, "maxBatchRows": 25,
                "targetVariant": VARIANTS[model], "variantCol": "variant"}
    out = jvm(_in_jvm_score, x.tolist(), settings, 2, 0, (), False, TOKEN)
    outputs = load_model(models[model]).outputs  # what the endpoint's /metadata reports for the variant
    types = ",".join(f"{o.name}:{'vector' if o.kind == 'vector' else 'double'}" for o in outputs)
    assert out["schema"] == f"struct<id:int,features:vector,{types},variant:string>"
    assert out["columns"]["id"] == list(range(len(x)))
    assert out["columns"]["variant"] == [VARIANTS[model]] * len(x)
    exact = serializer == deserializer == "protobuf"  # text carries shortest decimals, parsed as float64
    assert_predictions(out["columns"], expected(models[model], x), exact=exact)


@pytest.mark.parametrize("serializer", ["protobuf", "json", "libsvm"])
def test_sparse_vectors_score_like_dense_ones(jvm, endpoint, models, serializer):
    x = cancer()[:60].copy()
    x[np.abs(x) < 0.8] = 0.0
    settings = {"endpoint": endpoint, "serializer": serializer, "targetVariant": "P"}
    out = jvm(_in_jvm_score, x.tolist(), settings, 2, 2, (), False, TOKEN)  # every other row a SparseVector
    assert_predictions(out["columns"], expected(models["pca"], x), exact=serializer == "protobuf")


@pytest.mark.parametrize("serializer", list(CONTENT_TYPES))
def test_requests_carry_the_content_type_and_protobuf_bytes_equal_the_python_codecs(jvm, serve, serializer):
    x = cancer()[:30].copy()
    x[np.abs(x) < 0.5] = 0.0
    server = serve("kmeans")
    settings = {"endpoint": server.url, "serializer": serializer, "deserializer": "jsonlines", "maxBatchRows": 7,
                "concurrency": 1}  # one request at a time: the server sees them in row order
    jvm(_in_jvm_score, x.tolist(), settings, 1, 3)  # every third row a SparseVector
    assert {(s.content_type, s.accept) for s in server.seen} == {(CONTENT_TYPES[serializer],
                                                                  "application/jsonlines")}
    assert [s.rows for s in server.seen] == [7, 7, 7, 7, 2]
    if serializer == "protobuf":
        bodies = b"".join(s.body for s in server.seen)
        x32 = x.astype(np.float32)
        rows = [tensor_codec.encode_sparse(sp.csr_matrix(x32[i:i + 1])) if i % 3 == 0
                else tensor_codec.encode_dense(x32[i:i + 1]) for i in range(len(x))]
        assert bodies == b"".join(rows)  # dense rows as dense records, sparse ones as sparse records


# ------------------------------------------------------------------------------------- batching and order


def test_batches_respect_the_byte_limit_and_keep_row_order(jvm, serve, models):
    x = cancer()[:90]
    server = serve("kmeans")
    limit = 2000  # about 6 rows of JSON per request
    out = jvm(_in_jvm_score, x.tolist(), {"endpoint": server.url, "serializer": "json", "maxBatchBytes": limit,
                                          "concurrency": 2}, 3)
    assert_predictions(out["columns"], expected(models["kmeans"], x))
    assert all(len(s.body) <= limit for s in server.seen)
    assert sum(s.rows for s in server.seen) == len(x) and len(server.seen) >= len(x) // 8
    assert all(json.loads(s.body)["instances"] for s in server.seen)

    with pytest.raises(JVMError, match=r"a row of \d+ bytes exceeds maxBatchBytes=100 \(row 0 of this partition\)"):
        jvm(_in_jvm_score, x[:4].tolist(), {"endpoint": server.url, "serializer": "json", "maxBatchBytes": 100})


def test_requests_in_flight_are_bounded_by_concurrency(jvm, serve, models):
    x = cancer()[:60]
    server = serve("kmeans", hold_until=3)  # the first requests wait until three are in flight at once
    settings = {"endpoint": server.url, "maxBatchRows": 5, "concurrency": 3}
    out = jvm(_in_jvm_score, x.tolist(), settings, 1)
    assert_predictions(out["columns"], expected(models["kmeans"], x))
    assert server.max_in_flight == 3 and len(server.seen) == 12

    single = serve("kmeans")
    jvm(_in_jvm_score, x.tolist(), {**settings, "endpoint": single.url, "concurrency": 1}, 1)
    assert single.max_in_flight == 1


# ------------------------------------------------------------------------------------ retries and failures


def test_retries_ride_out_503_429_and_fail_clearly_when_they_run_out(jvm, serve, models):
    x = cancer()[:40]
    server = serve("kmeans")
    server.failures.extend([(503, None), (429, 0), (502, None)])
    settings = {"endpoint": server.url, "maxRetries": 3, "retryBackoff": 0.01, "maxBatchRows": 10}
    out = jvm(_in_jvm_score, x.tolist(), settings, 1)
    assert_predictions(out["columns"], expected(models["kmeans"], x))
    assert not server.failures and len(server.seen) == 4

    server.failures.extend([(503, None)] * 3)
    with pytest.raises(JVMError, match=r"endpoint http://127.0.0.1:\d+ answered 503: injected 503 for a batch of "
                                       r"10 rows"):
        jvm(_in_jvm_score, x[:10].tolist(), {**settings, "maxRetries": 2}, 1)
    assert not server.failures  # three attempts: the first and two retries


def test_an_unreachable_endpoint_fails_or_fills_the_error_column(jvm, serve):
    server = serve("kmeans")
    url = server.url
    server.close()
    x = cancer()[:6]
    settings = {"endpoint": url, "outputs": '[{"name": "closest_cluster"}]', "maxRetries": 1, "retryBackoff": 0.01}
    with pytest.raises(JVMError, match=r"gave no answer after 2 attempt\(s\) \(ConnectException"):
        jvm(_in_jvm_score, x.tolist(), settings, 1)
    out = jvm(_in_jvm_score, x.tolist(), {**settings, "errorPolicy": "column"}, 1)
    assert out["columns"]["closest_cluster"] == [None] * 6
    assert all(e.startswith("no answer after 2 attempt(s): ConnectException") for e in out["columns"]["error"])


def test_error_column_marks_only_the_rows_the_endpoint_rejects(jvm, endpoint, models):
    x = [row.tolist() for row in cancer()[:40]]
    for bad in (5, 17):
        x[bad] = x[bad][:29]
    settings = {"endpoint": endpoint, "targetVariant": "K", "errorPolicy": "column", "errorCol": "problem",
                "maxBatchRows": 10}
    out = jvm(_in_jvm_score, x, settings, 1, 0, (), True, TOKEN)
    assert out["schema"] == ("struct<id:int,features:array<double>,closest_cluster:double,"
                             "distance_to_cluster:double,problem:string>")
    problems = out["columns"]["problem"]
    assert [i for i, p in enumerate(problems) if p] == [5, 17]  # bisected down to the rows at fault
    assert problems[5].startswith("400: ") and "29" in problems[5]
    good = [i for i in range(40) if i not in (5, 17)]
    reference = expected(models["kmeans"], [x[i] for i in good])
    for name, values in reference.items():
        assert [out["columns"][name][i] for i in (5, 17)] == [None, None]
        np.testing.assert_array_equal([out["columns"][name][i] for i in good], values)

    with pytest.raises(JVMError, match=r"answered 400: .* for a batch of 10 rows"):
        jvm(_in_jvm_score, x, {**settings, "errorPolicy": "fail"}, 1, 0, (), True, TOKEN)


def test_null_features_fail_with_the_python_models_message(jvm, serve):
    server = serve("kmeans")
    with pytest.raises(JVMError, match="column 'features' is null at row 3"):
        jvm(_in_jvm_score, cancer()[:8].tolist(), {"endpoint": server.url}, 1, 0, (3,))


# ------------------------------------------------------------------------------- auth, variants, outputs


def test_untargeted_requests_get_the_union_of_the_variants_outputs(jvm, endpoint, models):
    x = cancer()[:20]
    out = jvm(_in_jvm_score, x.tolist(), {"endpoint": endpoint, "variantCol": "variant"}, 2, 0, (), False, TOKEN)
    fields = out["schema"][len("struct<"):-1].split(",")
    assert fields[:2] == ["id:int", "features:vector"] and fields[-1] == "variant:string"
    assert sorted(fields[2:-1]) == ["closest_cluster:double", "distance_to_cluster:double",
                                    "predicted_label:double", "projection:vector", "score:vector"]
    assert out["columns"]["variant"] == ["K"] * 20  # the only variant with weight
    assert_predictions(out["columns"], expected(models["kmeans"], x))
    for name in ("projection", "score", "predicted_label"):  # outputs of variants that did not answer
        assert out["columns"][name] == [None] * 20

    only = {"endpoint": endpoint, "outputs": '[{"name": "distance_to_cluster", "kind": "scalar"}]'}
    out = jvm(_in_jvm_score, x.tolist(), only, 2, 0, (), False, TOKEN)
    assert out["schema"] == "struct<id:int,features:vector,distance_to_cluster:double>"


def test_the_bearer_token_is_required(jvm, endpoint):
    x = cancer()[:5]
    with pytest.raises(JVMError, match=r"/metadata answered 401: .*missing or wrong bearer token"):
        jvm(_in_jvm_score, x.tolist(), {"endpoint": endpoint})
    with pytest.raises(JVMError, match=r"answered 401: .*missing or wrong bearer token.* for a batch of 5 rows"):
        jvm(_in_jvm_score, x.tolist(), {"endpoint": endpoint, "outputs": '[{"name": "closest_cluster"}]'}, 1, 0, (),
            False, "wrong")


def test_saved_endpoint_model_keeps_its_params_but_not_the_token(jvm, tmp_path):
    settings = {"endpoint": "http://127.0.0.1:9", "serializer": "csv", "deserializer": "json", "concurrency": 7,
                "maxBatchBytes": 12345, "retryBackoff": 0.5, "errorPolicy": "column", "variantCol": "v"}
    params = jvm(_in_jvm_save_and_load, settings, "s3cret", str(tmp_path / "endpoint-model"))
    for name, value in settings.items():
        assert params[name] == str(value)
    assert params["maxBatchRows"] == "10000" and params["featuresCol"] == "features"
    assert "s3cret" not in "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------- spark-submit


def test_spark_submit_channel_python_training_and_scoring_both_ways(jvm, endpoint, tmp_path):
    x = cancer()
    table = pa.table({"id": np.arange(len(x)), "features": pa.array(list(x), type=pa.list_(pa.float64()))})
    pq.write_table(table, tmp_path / "input.parquet")
    jar = build_jar()

    # Scala writes the channel...
    result = spark_submit(jar, "sparkml.examples.ParquetToChannel", str(tmp_path / "input.parquet"),
                          str(tmp_path / "channel"), "recordsPerShard=200")
    assert result.returncode == 0, result.stderr[-3000:]
    # ...Python trains on it and serves the model...
    location = jvm(_in_jvm_fit_kmeans, str(tmp_path / "channel"))
    hosting.create_model("trained", location)
    hosting.create_endpoint_config("trained", [ProductionVariant("AllTraffic", "trained")])
    url = hosting.create_endpoint("trained", "trained", auth_token=TOKEN, router_workers=1).url
    # ...and Scala scores natively and through the endpoint.
    result = spark_submit(jar, "sparkml.examples.ScoreParquet", str(tmp_path / "input.parquet"), location, url,
                          str(tmp_path / "scored.parquet"), "maxBatchRows=100", "concurrency=2",
                          env={"SPARK_ML_ENDPOINT_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary == {"rows": len(x), "algorithm": "kmeans", "outputs": ["closest_cluster", "distance_to_cluster"],
                       "max_abs_difference": 0.0}
    scored = pq.read_table(tmp_path / "scored.parquet").to_pandas().sort_values("id")
    reference = expected(location, x)
    for name, values in reference.items():
        np.testing.assert_array_equal(scored[f"native_{name}"].to_numpy(), values)
        np.testing.assert_array_equal(scored[name].to_numpy(), values)
