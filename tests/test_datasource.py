"""DataFrame ↔ channel through the recordio-protobuf data source, on local[2]."""

import json
import os
import time

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.ml.linalg import DenseVector, SparseVector, Vectors
from sklearn.datasets import load_breast_cancer, load_digits

import spark_ml
from algorithms import recordio
from algorithms.channel import MANIFEST, Channel
from algorithms.reader import iter_batches
from algorithms.records import make_record
from algorithms.tensor_codec import encode_dense
from spark_ml.datasource import ChannelWriteError


def _vectors_df(spark, rows, label=True, partitions=2):
    cols = ["features", "label"] if label else ["features"]
    data = rows if label else [(r,) for r in rows]
    return spark.createDataFrame(data, cols).repartition(partitions) if partitions else spark.createDataFrame(
        data, cols)


def _read(spark, path):
    return spark.read.format("recordio-protobuf").load(path)


def _sorted_rows(rows):
    return sorted((tuple(r.features.toArray().tolist()), r["label"] if "label" in r.asDict() else None) for r in rows)


def test_dense_round_trip_real_data(spark, tmp_path):
    data = load_breast_cancer()
    rows = [(Vectors.dense(x), float(y)) for x, y in zip(data.data, data.target, strict=True)]
    df = spark.createDataFrame(rows, ["features", "label"]).repartition(3)
    channel = spark_ml.to_channel(df, str(tmp_path / "bc"))
    assert channel.num_records == len(rows)
    assert channel.feature_dim == 30
    assert channel.manifest.has_label and channel.manifest.label_dim == 1
    back = _read(spark, str(tmp_path / "bc"))
    assert [f.name for f in back.schema.fields] == ["features", "label"]
    got = back.collect()
    assert all(isinstance(r.features, DenseVector) for r in got)
    # Written as float32 (SageMaker's training type): compare against the float32 values.
    expected = sorted((tuple(np.float32(x).astype(float).tolist()), float(y))
                      for x, y in zip(data.data, data.target, strict=True))
    assert _sorted_rows(got) == expected


def test_channel_files_hold_exactly_the_records(spark, tmp_path):
    """Shards decode (outside Spark) to the rows of each partition, in order, with the manifest's counts."""
    digits = load_digits()
    x, y = digits.data[:300].astype(np.float32), digits.target[:300].astype(np.float32)
    rows = [(Vectors.dense(r), float(t)) for r, t in zip(x, y, strict=True)]
    df = spark.createDataFrame(rows, ["features", "label"]).coalesce(1)
    channel = spark_ml.to_channel(df, str(tmp_path / "digits"), recordsPerShard=128)
    shards = channel.shards()
    assert [s.records for s in shards] == [128, 128, 44]
    batch = next(iter_batches([channel.shard_uri(s) for s in shards], 1000))
    np.testing.assert_array_equal(batch.features, x)
    np.testing.assert_array_equal(batch.labels, y)
    # Byte-identical to the vectorized encoder (itself checked against the protobuf runtime and the SDK).
    joined = b"".join(open(channel.shard_uri(s), "rb").read() for s in shards)  # noqa: SIM115
    assert joined == encode_dense(x, y)


def test_sparse_stays_sparse(spark, tmp_path):
    rng = np.random.default_rng(3)
    m = sp.random(200, 5000, density=0.002, format="csr", random_state=4, dtype=np.float64)
    rows = [(SparseVector(5000, m[i].indices.tolist(), m[i].data.tolist()), float(rng.integers(0, 2)))
            for i in range(200)]
    df = spark.createDataFrame(rows, ["features", "label"]).coalesce(2)
    channel = spark_ml.to_channel(df, str(tmp_path / "sparse"))
    assert channel.manifest.sparse and channel.feature_dim == 5000
    got = _read(spark, str(tmp_path / "sparse")).collect()
    assert all(isinstance(r.features, SparseVector) and r.features.size == 5000 for r in got)
    want = sorted((tuple(v.toArray().astype(np.float32).tolist()), y) for v, y in rows)
    assert sorted((tuple(r.features.toArray().tolist()), r.label) for r in got) == want


def test_mixed_dense_and_sparse_rows_keep_their_record_kinds(spark, tmp_path):
    rows = [(Vectors.dense([1.0, 0.0, 2.0, 0.0]), 1.0), (Vectors.sparse(4, [3], [7.0]), 0.0),
            (Vectors.dense([0.5, 0.5, 0.5, 0.5]), 1.0)]
    df = spark.createDataFrame(rows, ["features", "label"]).coalesce(1)
    channel = spark_ml.to_channel(df, str(tmp_path / "mixed"), vectorLayout="sparse")
    (shard,) = channel.shards()
    with open(channel.shard_uri(shard), "rb") as f:
        payloads = list(recordio.iter_payloads(f))
    expected = [make_record(np.float32([1, 0, 2, 0]), 1.0, label_dtype=np.float32),
                make_record(np.float32([7.0]), 0.0, keys=[3], shape=[4], label_dtype=np.float32),
                make_record(np.float32([0.5] * 4), 1.0, label_dtype=np.float32)]
    assert payloads == [r.SerializeToString() for r in expected]
    got = _read(spark, str(tmp_path / "mixed")).collect()
    assert [r.features.toArray().tolist() for r in got] == [[1, 0, 2, 0], [0, 0, 0, 7], [0.5] * 4]


def test_array_columns_vector_labels_and_float64(spark, tmp_path):
    df = spark.createDataFrame([([1.0, 2.0], [1.0, 0.0]), ([3.0, 4.0], [0.0, 1.0])],
                               "f array<double>, y array<double>").coalesce(1)
    channel = spark_ml.to_channel(df, str(tmp_path / "arr"), featuresCol="f", labelCol="y", dtype="float64")
    assert channel.manifest.label_dim == 2 and channel.manifest.feature_dtype == "float64"
    batch = next(iter_batches([channel.shard_uri(s) for s in channel.shards()], 10))
    assert batch.features.dtype == np.float64
    np.testing.assert_array_equal(batch.labels, [[1, 0], [0, 1]])
    back = _read(spark, str(tmp_path / "arr")).collect()
    assert [r.label.toArray().tolist() for r in back] == [[1, 0], [0, 1]]


def test_unlabelled_channel_and_direct_format_write(spark, tmp_path):
    df = _vectors_df(spark, [Vectors.dense([float(i), 1.0]) for i in range(10)], label=False, partitions=None)
    spark_ml.register(spark)
    df.write.format("recordio-protobuf").mode("overwrite").save(str(tmp_path / "nolabel"))
    manifest = json.loads((tmp_path / "nolabel" / MANIFEST).read_text())
    assert manifest["has_label"] is False and manifest["num_records"] == 10
    back = _read(spark, str(tmp_path / "nolabel"))
    assert back.columns == ["features"]
    assert sorted(r.features[0] for r in back.collect()) == list(range(10))


def test_reads_sdk_style_folder_without_manifest(spark, tmp_path):
    folder = tmp_path / "sdk"
    folder.mkdir()
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    (folder / "matrix_0.pbr").write_bytes(encode_dense(x[:2], np.float32([0, 1])))
    (folder / "matrix_1.pbr").write_bytes(encode_dense(x[2:], np.float32([1, 0])))
    (folder / ".amazon.manifest").write_text('[{"prefix": "s3://bucket/x/"}, "matrix_0.pbr", "matrix_1.pbr"]')
    back = _read(spark, str(folder)).collect()
    assert [r.features.toArray().tolist() for r in back] == x.tolist()
    assert [r.label for r in back] == [0, 1, 1, 0]


def test_overwrite_and_append(spark, tmp_path):
    path = str(tmp_path / "ch")
    first = spark.createDataFrame([(Vectors.dense([1.0, 2.0]), 1.0)] * 3, ["features", "label"]).coalesce(1)
    spark_ml.to_channel(first, path)
    spark_ml.to_channel(first, path, mode="append")
    assert Channel.open(path).num_records == 6
    assert len([f for f in os.listdir(path) if f.endswith(".pbr")]) == 2
    spark_ml.to_channel(first.limit(1), path)
    assert Channel.open(path).num_records == 1
    assert len([f for f in os.listdir(path) if f.endswith(".pbr")]) == 1
    wider = spark.createDataFrame([(Vectors.dense([1.0, 2.0, 3.0]), 1.0)], ["features", "label"])
    with pytest.raises(ChannelWriteError, match="cannot append 3-feature records"):
        spark_ml.to_channel(wider, path, mode="append")
    assert Channel.open(path).num_records == 1


@pytest.mark.parametrize(
    "schema, rows, message",
    [
        ("features array<double>, label double", [([1.0, 2.0], 1.0), (None, 0.0)],
         "column 'features' is null at row 1"),
        ("features array<double>, label double", [([1.0, 2.0], 1.0), ([1.0], 0.0)],
         "arrays of differing length: row 0 has 2 values, row 1 has 1"),
        ("features array<double>, label double", [([1.0, 2.0], 1.0), ([1.0, float("inf")], 0.0)],
         "holds NaN or infinity at partition 0, row 1"),
        ("features array<double>, label double", [([1.0, 2.0], float("nan"))], "labelCol 'label' holds NaN"),
        ("features array<double>, label string", [([1.0, 2.0], "cat")], "labels must be numeric"),
        ("f array<double>", [([1.0],)], "featuresCol 'features' is not a column"),
        ("features string", [("x",)], "expected a vector"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(spark, tmp_path, schema, rows, message):
    df = spark.createDataFrame(rows, schema).coalesce(1)
    path = tmp_path / "bad"
    with pytest.raises((ChannelWriteError, ValueError), match=message):
        spark_ml.to_channel(df, str(path), vectorLayout="dense")
    leftovers = [] if not path.exists() else [p for p in os.listdir(path) if not p.startswith("_")]
    assert leftovers == []


def test_non_finite_values_can_be_allowed(spark, tmp_path):
    df = spark.createDataFrame([([1.0, float("nan")], 1.0)], "features array<double>, label double")
    channel = spark_ml.to_channel(df, str(tmp_path / "nan"), allowNonFinite=True)
    batch = next(iter_batches([channel.shard_uri(s) for s in channel.shards()], 10))
    assert np.isnan(batch.features[0, 1])


def test_unknown_option_is_rejected(spark, tmp_path):
    spark_ml.register(spark)
    df = spark.createDataFrame([([1.0], 1.0)], "features array<double>, label double")
    with pytest.raises(Exception, match="(?i)unknown write option 'featureCol'"):
        df.write.format("recordio-protobuf").mode("overwrite").option("featureCol", "features").save(
            str(tmp_path / "x"))
    assert not (tmp_path / "x" / MANIFEST).exists()


def test_failed_overwrite_leaves_previous_channel_intact(spark, tmp_path):
    path = str(tmp_path / "keep")
    good = spark.createDataFrame([([1.0, 2.0], 1.0)] * 4, "features array<double>, label double").coalesce(1)
    spark_ml.to_channel(good, path)
    bad = spark.createDataFrame([([1.0, 2.0], 1.0), ([1.0], 1.0)], "features array<double>, label double")
    with pytest.raises(ChannelWriteError):
        spark_ml.to_channel(bad.coalesce(1), path)
    channel = Channel.open(path)
    assert channel.num_records == 4
    batch = next(iter_batches([channel.shard_uri(s) for s in channel.shards()], 10))
    np.testing.assert_array_equal(batch.features, np.float32([[1, 2]] * 4))


def _endless_rows(stop_file: str, pid_dir: str):
    """mapInArrow over spark.range(n): each partition writes good rows (1000 per batch) until the stop file appears
    (or 60 s pass, or it is killed); each generator's pid file is removed when it ends, unless it is killed."""

    def generate(batches):
        import os
        import time

        import pyarrow as pa

        running = os.path.join(pid_dir, str(os.getpid()))
        open(running, "w").close()
        try:
            for _ in batches:
                deadline = time.monotonic() + 60
                while not os.path.exists(stop_file) and time.monotonic() < deadline:
                    values = pa.array([[3.0, 2.0]] * 1000, pa.list_(pa.float64()))
                    yield pa.RecordBatch.from_arrays([values, pa.array([1.0] * 1000)], ["features", "label"])
                    time.sleep(0.02)
        finally:
            os.remove(running)

    return generate


def test_a_cancelled_overwrite_leaves_no_temporary_files(spark, tmp_path):
    """Tasks still writing when their job is cancelled (Ctrl-C in the driver, a job tag cancelled) keep running
    for a while after the driver's abort removed the staging folder: their shards must not stay behind."""
    import threading

    path = str(tmp_path / "ch")
    good = spark.createDataFrame([([1.0, 2.0], 1.0)] * 4, "features array<double>, label double").coalesce(1)
    spark_ml.to_channel(good, path)
    stop, pids = tmp_path / "stop", tmp_path / "pids"
    pids.mkdir()
    df = spark.range(0, 2, 1, 2).mapInArrow(_endless_rows(str(stop), str(pids)), "features array<double>, "
                                                                                  "label double")
    errors = []

    def write():
        spark.sparkContext.addJobTag("cancel-this-write")
        try:
            spark_ml.to_channel(df, path, recordsPerShard=1000)
        except Exception as exc:  # noqa: BLE001 - checked below
            errors.append(exc)
        finally:
            spark.sparkContext.removeJobTag("cancel-this-write")

    writer = threading.Thread(target=write)
    writer.start()
    staging = os.path.join(path, "_temporary")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(len(f) for _, _, f in os.walk(staging)) < 4:
        time.sleep(0.05)
    spark.sparkContext.cancelJobsWithTag("cancel-this-write")
    writer.join(120)
    assert errors and "cancel" in str(errors[0]).lower()
    stop.touch()  # what Spark did not kill ends now

    def ended(name: str) -> bool:
        try:
            os.kill(int(name), 0)
            return not os.path.exists(pids / name)
        except ProcessLookupError:
            return True

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(ended(p) for p in os.listdir(pids)):
        time.sleep(0.2)
    assert not os.path.exists(staging), sorted(os.path.relpath(os.path.join(d, f), staging)
                                               for d, _, fs in os.walk(staging) for f in fs)
    assert Channel.open(path).num_records == 4
