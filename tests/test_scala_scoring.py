"""Native JVM scoring of Python-trained artifacts (scala/ ``sparkml.scoring``), driven through the PySpark gateway.

The chain under test: the JVM data source writes a channel (``ChannelIO.write``), the Python estimators read it
and train, ``ArtifactModel.load`` reads the artifact in the JVM and scores; its columns and values must equal the
Python Spark Model's ``transform`` (within 1e-6 relative; in practice equal or one float32 ulp apart) and a
numpy evaluation of the artifact's arrays. Also: the NPY/NPZ reader against numpy's writer, artifact errors,
bad input failing with the Python side's messages, persistence, and JVM vs Python channel shards byte for byte.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _scala_support import JVMError, SparkWorker, build_jar, jvm_task, plain, session
from scipy.special import expit, softmax

from algorithms.artifact import load_arrays, npz_bytes, read_manifest
from algorithms.builtin import load_model, run_builtin
from algorithms.channel import Channel
from algorithms.training import ChannelInput, TrainingEnv

RTOL = 1e-6

# estimator key -> (dataset, spark_ml class, Params, Python Spark Model class)
ESTIMATORS = {
    "kmeans": ("cancer", "KMeans", {"k": 3}, "KMeansModel"),
    "pca": ("cancer", "PCA", {"numComponents": 4}, "PCAModel"),
    "linear-binary": ("cancer", "LinearLearnerBinaryClassifier", {"epochs": 3}, "LinearLearnerBinaryClassifierModel"),
    "linear-multiclass": ("iris", "LinearLearnerMultiClassClassifier", {"epochs": 3, "numClasses": 3},
                          "LinearLearnerMultiClassClassifierModel"),
    "linear-regressor": ("diabetes", "LinearLearnerRegressor", {"epochs": 3}, "LinearLearnerRegressorModel"),
    "fm-binary": ("cancer", "FactorizationMachinesBinaryClassifier", {"epochs": 3, "numFactors": 4, "featureDim": 30},
                  "FactorizationMachinesBinaryClassifierModel"),
    "fm-regressor": ("diabetes", "FactorizationMachinesRegressor", {"epochs": 3, "numFactors": 4, "featureDim": 10},
                     "FactorizationMachinesRegressorModel"),
}


def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled datasets, features standardized (as one would before training)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    x, y = {"cancer": load_breast_cancer, "iris": load_iris, "diabetes": load_diabetes}[name](return_X_y=True)
    return (x - x.mean(axis=0)) / x.std(axis=0), y.astype(np.float64)


# ------------------------------------------------------------------------------------------ in the worker


def _frame(x: np.ndarray, y: np.ndarray | None = None, partitions: int = 2, sparse_every: int = 0,
           nulls: tuple[int, ...] = ()):
    """A DataFrame (id, features[, label]); every ``sparse_every``-th row a SparseVector; ``nulls`` rows null."""
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    rows = []
    for i, row in enumerate(x):
        if i in nulls:
            vector = None
        elif sparse_every and i % sparse_every == 0:
            nz = np.flatnonzero(row)
            vector = Vectors.sparse(len(row), nz.tolist(), row[nz].tolist())
        else:
            vector = Vectors.dense(row.tolist())
        rows.append((i, vector) + (() if y is None else (float(y[i]),)))
    fields = [StructField("id", IntegerType()), StructField("features", VectorUDT())]
    if y is not None:
        fields.append(StructField("label", DoubleType()))
    spark = session()
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), StructType(fields))


def _jvm_frame(jdf):
    from pyspark.sql import DataFrame

    return DataFrame(jdf, session())


def _columns(df) -> dict[str, list]:
    rows = df.orderBy("id").collect()
    return {name: [plain(r[name]) for r in rows] for name in df.columns}


@jvm_task
def _in_jvm_write_channels(root: str) -> dict[str, str]:
    """The JVM data source writes one channel per dataset (through the gateway); returns their paths."""
    channel_io = session().sparkContext._jvm.sparkml.recordio.ChannelIO
    channels = {}
    for name in ("cancer", "iris", "diabetes"):
        x, y = dataset(name)
        path = f"{root}/{name}"
        manifest = json.loads(channel_io.write(_frame(x, y)._jdf, path, "overwrite", {"labelCol": "label"}))
        assert manifest["num_records"] == len(x) and manifest["feature_dim"] == x.shape[1]
        channels[name] = path
    return channels


@jvm_task
def _in_jvm_fit(key: str, channel: str) -> str:
    """A spark_ml estimator fitted on the channel (a barrier stage of two workers); the model's location."""
    import spark_ml

    _, estimator, params, _ = ESTIMATORS[key]
    model = getattr(spark_ml, estimator)(numWorkers=2, showProgress=False, **params).fit(spark_ml.Channel.open(channel))
    return model.getOrDefault(model.modelLocation)


@jvm_task
def _in_jvm_score_both(key: str, location: str) -> dict:
    """The Python Spark Model's and the JVM ArtifactModel's transform of the same rows (a third sparse)."""
    import spark_ml

    x, y = dataset(ESTIMATORS[key][0])
    df = _frame(x, y, partitions=3, sparse_every=3)
    python_model = getattr(spark_ml, ESTIMATORS[key][3])(modelLocation=location)
    python_out = python_model.transform(df)
    jvm_model = session().sparkContext._jvm.sparkml.scoring.ArtifactModel.load(location)
    jvm_out = _jvm_frame(jvm_model.transform(df._jdf))
    return {"python_schema": python_out.schema.simpleString(), "jvm_schema": jvm_out.schema.simpleString(),
            "python": _columns(python_out), "jvm": _columns(jvm_out), "algorithm": jvm_model.algorithm(),
            "feature_dim": jvm_model.featureDim()}


@jvm_task
def _in_jvm_errors(location: str, case: str) -> tuple[str, str]:
    """The error text of the Python Spark Model and of the JVM ArtifactModel on the same bad input."""
    from pyspark.sql.functions import lit

    import spark_ml

    x, _ = dataset("cancer")
    python_model = spark_ml.KMeansModel(modelLocation=location)
    jvm_model = session().sparkContext._jvm.sparkml.scoring.ArtifactModel.load(location)
    df = _frame(x[:20], partitions=1, nulls=(7,) if case == "null" else ())
    if case == "size":
        df = _frame(x[:20, :29], partitions=1)
    elif case == "missing":
        python_model.set(python_model.featuresCol, "nope")
        jvm_model.setFeaturesCol("nope")
    elif case == "clash":
        df = df.withColumn("closest_cluster", lit(1.0))
    texts = []
    for run in (lambda: python_model.transform(df).collect(),
                lambda: _jvm_frame(jvm_model.transform(df._jdf)).collect()):
        try:
            run()
            texts.append("no error")
        except Exception as exc:  # noqa: BLE001 - the text is what is compared
            texts.append(str(exc))
    return texts[0], texts[1]


@jvm_task
def _in_jvm_read_npz(data: bytes) -> dict:
    arrays = session().sparkContext._jvm.sparkml.scoring.Npz.read(bytearray(data), "test.npz")
    out = {}
    keys = arrays.keys().iterator()
    while keys.hasNext():
        name = keys.next()
        array = arrays.apply(name)
        out[name] = (array.dtype(), list(array.shape()), list(array.data()))
    return out


@jvm_task
def _in_jvm_load(path: str) -> dict:
    model = session().sparkContext._jvm.sparkml.scoring.ArtifactModel.load(path)
    return {"algorithm": model.algorithm(), "feature_dim": model.featureDim(), "uid": model.uid(),
            "features_col": model.getFeaturesCol(), "outputs": list(model.outputNames())}


@jvm_task
def _in_jvm_persistence(location: str, root: str) -> dict:
    """A Python model's save() loaded by the JVM; a JVM Pipeline holding an ArtifactModel saved and loaded."""
    import spark_ml

    spark = session()
    jvm = spark.sparkContext._jvm
    x, _ = dataset("cancer")
    df = _frame(x[:50]).withColumnRenamed("features", "f")
    python_model = spark_ml.KMeansModel(modelLocation=location)
    python_model.set(python_model.featuresCol, "f")
    python_model.write().overwrite().save(f"{root}/python-saved")
    from_python = jvm.sparkml.scoring.ArtifactModel.load(f"{root}/python-saved")

    stages = spark.sparkContext._gateway.new_array(jvm.org.apache.spark.ml.PipelineStage, 1)
    stages[0] = from_python
    pipeline = jvm.org.apache.spark.ml.Pipeline().setStages(stages).fit(df._jdf)
    pipeline.write().overwrite().save(f"{root}/pipeline")
    loaded = jvm.org.apache.spark.ml.PipelineModel.load(f"{root}/pipeline")
    return {"features_col": from_python.getFeaturesCol(), "uid": from_python.uid(),
            "python_uid": python_model.uid,
            "python": _columns(python_model.transform(df)),
            "pipeline": _columns(_jvm_frame(loaded.transform(df._jdf))),
            "stage_uid": loaded.stages()[0].uid()}


@jvm_task
def _in_jvm_write_both(spec: dict, options: dict, jvm_path: str, python_path: str) -> tuple[str, str]:
    """The same DataFrame through the JVM source and the Python source (registered under a second name)."""
    from spark_ml.datasource import RecordIOProtobufDataSource

    class PythonTwin(RecordIOProtobufDataSource):
        @classmethod
        def name(cls):
            return "recordio-protobuf-python"

    spark = session()
    spark.dataSource.register(PythonTwin)
    x = np.asarray(spec["x"])
    df = _frame(x, None if spec["y"] is None else np.asarray(spec["y"]), spec["partitions"], spec["sparse_every"],
                tuple(spec["nulls"])).drop("id")
    if spec.get("arrays"):
        from pyspark.ml.functions import vector_to_array

        df = df.withColumn("features", vector_to_array("features", "float64"))
    texts = []
    for fmt, path in (("recordio-protobuf", jvm_path), ("recordio-protobuf-python", python_path)):
        try:
            df.write.format(fmt).options(**options).mode("overwrite").save(path)
            texts.append("written")
        except Exception as exc:  # noqa: BLE001 - the text is what is compared
            texts.append(str(exc))
    return texts[0], texts[1]


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def jvm(tmp_path_factory):
    worker = SparkWorker(build_jar(), "test_scala_scoring",
                         {"SPARK_ML_HOME": str(tmp_path_factory.mktemp("spark_ml_home"))})
    yield worker
    worker.close()


def train_in_process(key: str, channel: str, model_dir: str) -> str:
    """The estimator's hyperparameters run by the training contract in this process (no Spark job): the same
    algorithm code the barrier stage runs, reading the same channel."""
    import spark_ml

    _, estimator, params, _ = ESTIMATORS[key]
    opened = Channel.open(channel)
    hyperparameters = getattr(spark_ml, estimator)(**params).hyperparameters()
    hyperparameters.setdefault("feature_dim", str(opened.feature_dim))
    env = TrainingEnv(hyperparameters, {"train": ChannelInput.from_channel("train", opened)}, model_dir)
    run_builtin(getattr(spark_ml, estimator)._algorithm, env)
    return model_dir


@pytest.fixture(scope="module")
def channels(jvm, tmp_path_factory) -> dict[str, str]:
    """The datasets as channels the JVM data source wrote."""
    return jvm(_in_jvm_write_channels, str(tmp_path_factory.mktemp("channels")))


@pytest.fixture(scope="module")
def trained(jvm, channels, tmp_path_factory) -> dict[str, str]:
    """K-Means trains through the Spark estimator, the others through the training contract in process (faster,
    same algorithm code)."""
    locations = {"kmeans": jvm(_in_jvm_fit, "kmeans", channels["cancer"])}
    for key, (data, *_) in ESTIMATORS.items():
        if key not in locations:
            locations[key] = train_in_process(key, channels[data], str(tmp_path_factory.mktemp(key)))
    return locations


# ------------------------------------------------------------------------------------ independent reference


def numpy_predict(location: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """SageMaker's model math evaluated with numpy on the artifact's arrays (float64, float32 inputs)."""
    manifest = read_manifest(location)
    a = load_arrays(location)
    hp = manifest.hyperparameters
    x = x.astype(np.float32).astype(np.float64)
    if manifest.algorithm == "kmeans":
        d2 = ((x[:, None, :] - a["centroids"][None, :, :]) ** 2).sum(axis=2)
        return {"closest_cluster": d2.argmin(axis=1), "distance_to_cluster": np.sqrt(d2.min(axis=1))}
    if manifest.algorithm == "pca":
        return {"projection": (x - a["mean"].reshape(1, -1)) @ a["v"]}
    if manifest.algorithm == "linear-learner":
        z = x @ a["coefficients"].astype(np.float64).reshape(x.shape[1], -1) + a["intercept"]
        if hp["predictor_type"] == "regressor":
            return {"score": z[:, 0]}
        if hp["predictor_type"] == "multiclass_classifier":
            return {"score": softmax(z, axis=1), "predicted_label": z.argmax(axis=1)}
        return {"score": expit(z[:, 0]), "predicted_label": (z[:, 0] >= float(a["threshold_margin"])) * 1.0}
    w, v = a["w"].astype(np.float64), a["V"].astype(np.float64)
    raw = float(a["w0"].reshape(-1)[0]) + x @ w + 0.5 * ((x @ v) ** 2 - (x**2) @ (v**2)).sum(axis=1)
    if hp["predictor_type"] == "regressor":
        return {"score": raw}
    return {"score": expit(raw), "predicted_label": (expit(raw) >= 0.5) * 1.0}


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = np.maximum(1.0, np.abs(expected))
    worst = float(np.max(np.abs(actual - expected) / scale)) if actual.size else 0.0
    assert worst <= rtol, f"{what}: largest relative difference {worst:.3g}"


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("key", list(ESTIMATORS))
def test_jvm_channel_python_training_jvm_scoring_match_python(jvm, trained, key):
    out = jvm(_in_jvm_score_both, key, trained[key])
    # The same output columns, names and types, after the input columns.
    assert out["jvm_schema"] == out["python_schema"]
    python, native = out["python"], out["jvm"]
    outputs = [c for c in python if c not in ("id", "features", "label")]
    assert outputs and list(native) == list(python)
    x, _ = dataset(ESTIMATORS[key][0])
    assert out["feature_dim"] == x.shape[1]
    reference = numpy_predict(trained[key], x)
    for name in outputs:
        assert_close(native[name], python[name], f"{key} {name}: JVM vs the Python Model")
        assert_close(native[name], reference[name], f"{key} {name}: JVM vs numpy on the artifact")


def test_a_python_saved_model_loads_in_the_jvm_and_pipelines_persist(jvm, trained, tmp_path):
    out = jvm(_in_jvm_persistence, trained["kmeans"], str(tmp_path))
    assert out["features_col"] == "f" and out["uid"] == out["python_uid"]
    assert out["stage_uid"] == out["uid"]
    for name in ("closest_cluster", "distance_to_cluster"):
        assert out["pipeline"][name] == out["python"][name]
    # The JVM copy of the artifact is a valid artifact for the Python side too.
    copied = tmp_path / "pipeline" / "stages"
    artifact = next(copied.glob("*/artifact"))
    assert load_model(str(artifact)).to_arrays()["centroids"].tolist() == \
        load_model(trained["kmeans"]).to_arrays()["centroids"].tolist()


# ----------------------------------------------------------------------------- Random Cut Forest and k-NN

# key -> (dataset, spark_ml estimator, Params, Python Spark Model class): trained in process, scored both ways
FORESTS_AND_NEIGHBOURS = {
    "rcf": ("cancer", "RandomCutForest", {"numTrees": 50, "numSamplesPerTree": 64}, "RandomCutForestModel"),
    "knn-flat": ("cancer", "KNNClassifier", {"k": 5, "sampleSize": 400}, "KNNClassifierModel"),
    "knn-fjlt": ("diabetes", "KNNRegressor", {"k": 4, "sampleSize": 500, "dimensionReductionType": "fjlt",
                                              "dimensionReductionTarget": 6}, "KNNRegressorModel"),
    "knn-sign-cosine": ("iris", "KNNClassifier", {"k": 3, "sampleSize": 200, "dimensionReductionType": "sign",
                                                  "dimensionReductionTarget": 3, "indexMetric": "COSINE"},
                        "KNNClassifierModel"),
}


@jvm_task
def _in_jvm_score_native(key: str, location: str) -> dict:
    import spark_ml

    data, _, _, model_class = FORESTS_AND_NEIGHBOURS[key]
    x, y = dataset(data)
    df = _frame(x, y, partitions=3, sparse_every=3)
    python_out = getattr(spark_ml, model_class)(modelLocation=location).transform(df)
    jvm_out = _jvm_frame(session().sparkContext._jvm.sparkml.scoring.ArtifactModel.load(location).transform(df._jdf))
    return {"python_schema": python_out.schema.simpleString(), "jvm_schema": jvm_out.schema.simpleString(),
            "python": _columns(python_out), "jvm": _columns(jvm_out)}


@pytest.fixture(scope="module")
def forests_and_neighbours(channels, tmp_path_factory) -> dict[str, str]:
    locations = {}
    for key, (data, estimator, params, _) in FORESTS_AND_NEIGHBOURS.items():
        ESTIMATORS[key] = (data, estimator, params, None)  # what train_in_process reads
        try:
            locations[key] = train_in_process(key, channels[data], str(tmp_path_factory.mktemp(key)))
        finally:
            del ESTIMATORS[key]
    return locations


@pytest.mark.parametrize("key", list(FORESTS_AND_NEIGHBOURS))
def test_jvm_scores_random_cut_forests_and_flat_knn_indexes_like_python(jvm, forests_and_neighbours, key):
    """RCF: the same expected-codisp arithmetic, bit for bit. k-NN: the JVM compares the query with every indexed
    vector in float64 where faiss uses float32, so distances agree to float32 rounding and the predictions (here:
    rows without near-equal neighbour distances) are equal."""
    pytest.importorskip("faiss", reason="faiss-cpu (the knn extra) is not installed")
    out = jvm(_in_jvm_score_native, key, forests_and_neighbours[key])
    assert out["jvm_schema"] == out["python_schema"]
    name = "score" if key == "rcf" else "predicted_label"
    native, python = np.asarray(out["jvm"][name]), np.asarray(out["python"][name])
    if key == "rcf":
        np.testing.assert_array_equal(native, python)
    else:
        assert (native == python).mean() >= 0.99, f"{key}: {(native != python).sum()} predictions differ"


@jvm_task
def _in_jvm_load_error(location: str) -> str:
    try:
        session().sparkContext._jvm.sparkml.scoring.ArtifactModel.load(location)
    except Exception as exc:  # noqa: BLE001 - the text is what is compared
        return str(exc)
    return "no error"


def test_ivf_knn_indexes_fail_at_load_pointing_to_the_endpoint(jvm, tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu (the knn extra) is not installed")
    x, y = dataset("iris")
    channel = tmp_path / "channel"
    from test_randomcutforest import labelled_channel

    labelled_channel(channel, x, y)
    env = TrainingEnv({"k": "3", "predictor_type": "classifier", "sample_size": "150", "index_type": "faiss.IVFFlat"},
                      {"train": ChannelInput.from_channel("train", Channel.open(str(channel)))}, str(tmp_path / "m"))
    run_builtin("knn", env)
    error = jvm(_in_jvm_load_error, str(tmp_path / "m"))
    assert "index.faiss: a faiss.IVFFlat index (faiss fourcc 'IwFl'); the JVM scores only faiss.Flat" in error
    assert "EndpointModel" in error


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("case", "message"), [
    ("null", "column 'features' is null at row 7"),
    ("size", "featuresCol 'features': the model expects 30 features, got vectors of size 29"),
    ("missing", "featuresCol 'nope' is not a column (columns: id, features)"),
    ("clash", "the input already has column(s) closest_cluster, which scoring adds; rename them"),
])
def test_bad_input_fails_with_the_python_models_messages(jvm, trained, case, message):
    python_error, jvm_error = jvm(_in_jvm_errors, trained["kmeans"], case)
    assert message in python_error
    assert message in jvm_error


def test_artifact_errors_name_the_folder_and_the_problem(jvm, trained, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception) as python_error:
        load_model(str(empty))
    with pytest.raises(JVMError) as jvm_error:
        jvm(_in_jvm_load, str(empty))
    assert str(python_error.value) in str(jvm_error.value)

    def variant(name: str, edit) -> str:
        folder = tmp_path / name
        folder.mkdir()
        manifest = json.loads((Path(trained["linear-binary"]) / "manifest.json").read_text())
        arrays = load_arrays(trained["linear-binary"])
        edit(manifest, arrays)
        (folder / "model.npz").write_bytes(npz_bytes(arrays))
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return str(folder)

    newer = variant("newer", lambda m, a: m.update(format_version=2))
    with pytest.raises(JVMError, match="format version 2 is newer than this library reads \\(1\\); upgrade"):
        jvm(_in_jvm_load, newer)
    other = variant("other", lambda m, a: m.update(algorithm="xgboost"))
    with pytest.raises(JVMError, match="algorithm 'xgboost' has no native JVM scorer .*EndpointModel"):
        jvm(_in_jvm_load, other)
    shape = variant("shape", lambda m, a: a.update(coefficients=np.zeros(7, np.float32)))
    with pytest.raises(JVMError, match=r"linear-learner array 'coefficients' has shape \(7,\); expected \(30,\)"):
        jvm(_in_jvm_load, shape)
    missing = variant("missing", lambda m, a: a.pop("threshold_margin"))
    with pytest.raises(JVMError, match="linear-learner model: the artifact has no 'threshold_margin' array"):
        jvm(_in_jvm_load, missing)
    assert jvm(_in_jvm_load, trained["linear-binary"])["outputs"] == ["score", "predicted_label"]


# -------------------------------------------------------------------------------------------- NPY and NPZ


class _Unseekable(io.RawIOBase):
    """A write-only stream that cannot seek, so zipfile writes data descriptors after each entry."""

    def __init__(self):
        self.buffer = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buffer += b
        return len(b)


def npy_bytes(array: np.ndarray, version=None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    return buf.getvalue()


def test_npz_reader_agrees_with_numpy_on_every_numeric_layout(jvm):
    rng = np.random.default_rng(3)
    arrays = {
        "f8": rng.normal(size=(4, 5)), "f4": rng.normal(size=7).astype(np.float32),
        "f2": np.array([0.5, -2.25, 65504.0, 6e-8, np.inf], np.float16),
        "i1": np.array([-128, 0, 127], np.int8), "i2": np.array([-3, 30000], np.int16),
        "i4": np.arange(-6, 6, dtype=np.int32).reshape(3, 4), "i8": np.array([-(2**40), 2**40], np.int64),
        "u1": np.array([0, 255], np.uint8), "u2": np.array([65535], np.uint16), "u4": np.array([2**32 - 1], np.uint32),
        "u8": np.array([2**63 + 2**12], np.uint64), "b1": np.array([True, False, True]),
        "scalar": np.array(2.5), "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(rng.normal(size=(2, 3))),
        "fortran3": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
        "big": np.arange(5, dtype=">f8") / 3, "bigint": np.array([1, -2, 70000], dtype=">i4"),
        "file": np.array([7.0]), "allow_pickle": np.array([8.0]),  # names np.savez(**kw) cannot take
    }
    stored = npz_bytes(arrays)  # the library's writer: stored, zip64 headers
    deflated = io.BytesIO()
    np.savez_compressed(deflated, **{k: v for k, v in arrays.items() if k not in ("file", "allow_pickle")})
    stream = _Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("f8", "fortran3"):
            zf.writestr(f"{name}.npy", npy_bytes(arrays[name]))
        zf.writestr("v2.npy", npy_bytes(arrays["f4"], version=(2, 0)))
    for data, names in ((stored, list(arrays)), (deflated.getvalue(), [k for k in arrays if k not in ("file",
                        "allow_pickle")]), (bytes(stream.buffer), ["f8", "fortran3", "v2"])):
        read = jvm(_in_jvm_read_npz, data)
        assert sorted(read) == sorted(names)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for name in names:
                expected = z[name]
                dtype, shape, values = read[name]
                assert dtype == expected.dtype.str and tuple(shape) == expected.shape, name
                np.testing.assert_array_equal(np.asarray(values), expected.astype(np.float64).ravel(order="C"),
                                              err_msg=name)


@pytest.mark.parametrize(("array", "message"), [
    (np.array([{"a": 1}], dtype=object), r"dtype '\|O' is an object array, which numpy stores pickled"),
    (np.zeros(3, dtype=[("a", "<f4")]), "structured dtypes are not supported"),
    (np.array(["text"]), "dtype '<U4' is not a plain number type"),
    (np.array([1 + 2j]), "dtype '<c16' is not a plain number type"),
])
def test_npz_reader_refuses_what_is_not_plain_numbers(jvm, array, message):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("bad.npy", buf.getvalue())
    with pytest.raises(JVMError, match=r"test.npz\[bad.npy\]: " + message):
        jvm(_in_jvm_read_npz, data.getvalue())


def test_npz_reader_names_truncated_data_and_broken_archives(jvm):
    good = npy_bytes(np.arange(6.0).reshape(2, 3))
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("cut.npy", good[:-8])
    with pytest.raises(JVMError, match=r"cut.npy\]: array data holds 40 bytes; shape \(2, 3\) of <f8 needs 48"):
        jvm(_in_jvm_read_npz, data.getvalue())
    with pytest.raises(JVMError, match="test.npz: not a valid .npz \\(zip\\) archive"):
        jvm(_in_jvm_read_npz, b"PK\x03\x04 this is no zip")


# ----------------------------------------------------------------------------- JVM and Python channel writers


def _read_channel(path: Path) -> tuple[dict, list[bytes]]:
    manifest = json.loads((path / "manifest.json").read_text())
    return manifest, [(path / s["path"]).read_bytes() for s in manifest["shards"]]


@pytest.mark.parametrize(("spec", "options"), [
    ({"y": "classes", "partitions": 3, "sparse_every": 0}, {"labelCol": "label", "recordsPerShard": "70"}),
    ({"y": "values", "partitions": 2, "sparse_every": 4}, {"labelCol": "label"}),
    ({"y": None, "partitions": 2, "sparse_every": 0, "arrays": True}, {"dtype": "float64"}),
])
def test_jvm_and_python_sources_write_identical_shards_for_the_same_dataframe(jvm, tmp_path, spec, options):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 12))
    x[rng.random(x.shape) < 0.6] = 0.0  # sparse rows keep only the non-zeros
    y = {"classes": rng.integers(0, 3, 300).astype(float), "values": rng.normal(size=300), None: None}[spec["y"]]
    payload = {**spec, "x": x.tolist(), "y": None if y is None else y.tolist(), "nulls": []}
    assert jvm(_in_jvm_write_both, payload, options, str(tmp_path / "jvm"), str(tmp_path / "py")) == \
        ("written", "written")
    jvm_manifest, jvm_shards = _read_channel(tmp_path / "jvm")
    py_manifest, py_shards = _read_channel(tmp_path / "py")
    assert b"".join(jvm_shards) == b"".join(py_shards)
    assert [(s["records"], s["bytes"]) for s in jvm_manifest["shards"]] == \
        [(s["records"], s["bytes"]) for s in py_manifest["shards"]]
    drop = {"shards"}
    assert {k: v for k, v in jvm_manifest.items() if k not in drop} == \
        {k: v for k, v in py_manifest.items() if k not in drop}
    assert jvm_manifest["num_records"] == 300 and jvm_manifest["feature_dim"] == 12


def test_jvm_and_python_sources_reject_null_features_with_the_same_message(jvm, tmp_path):
    payload = {"x": np.ones((10, 3)).tolist(), "y": None, "partitions": 1, "sparse_every": 0, "nulls": [4]}
    jvm_error, python_error = jvm(_in_jvm_write_both, payload, {}, str(tmp_path / "jvm"), str(tmp_path / "py"))
    message = "column 'features' is null at row 4 (rows counted within partition 0)"
    assert message in jvm_error and message in python_error
    assert not (tmp_path / "jvm").exists()



@jvm_task
def _in_jvm_to_channel_and_fit(root: str) -> dict:
    """With the jar loaded, ``to_channel`` and ``fit(DataFrame)`` go through the JVM writer."""
    import spark_ml
    from algorithms.reader import iter_batches

    spark = session()
    writer = spark_ml.register(spark)
    x, y = dataset("cancer")
    df = _frame(x, y, partitions=2)
    channel = spark_ml.to_channel(df, root + "/channel")
    batch = next(iter_batches([channel.shard_uri(s) for s in channel.shards()], 10_000))
    model = spark_ml.LinearLearnerBinaryClassifier(numWorkers=2, epochs=5, showProgress=False).fit(df)
    return {"writer": writer, "records": channel.num_records, "features": batch.features.tolist(),
            "labels": batch.labels.tolist(), "phases": list(spark_ml.jobs.get(model.trainingJobName).phases)}


def test_to_channel_and_fit_use_the_jvm_writer_when_the_jar_is_loaded(jvm, tmp_path):
    out = jvm(_in_jvm_to_channel_and_fit, str(tmp_path))
    x, y = dataset("cancer")
    assert out["writer"] == "jvm" and out["records"] == len(x)
    got = sorted(zip(map(tuple, out["features"]), out["labels"], strict=True))
    assert got == sorted(zip(map(tuple, x.astype(np.float32).astype(float).tolist()), y.astype(float), strict=True))
    assert "conversion" in out["phases"] and "training" in out["phases"]
