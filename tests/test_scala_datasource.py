"""The JVM `recordio-protobuf` data source (scala/): byte-identical to the Python codec, reads its files.

The jar is built once per module (scala/build.sh skips the work when nothing changed). Spark runs in a
separate process that has the jar on its classpath (``_scala_support.SparkWorker``); the functions prefixed
``_in_jvm`` run there. One test drives the example application through ``spark-submit`` instead.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from _scala_support import ROOT, JVMError, SparkWorker, build_jar, jvm_task, session, spark_submit

from algorithms import tensor_codec
from algorithms.channel import Channel, Manifest
from algorithms.proto import Record
from algorithms.reader import iter_batches
from algorithms.recordio import MAGIC, RecordIOError, frame, iter_payloads
from algorithms.records import make_record

SOURCE = "recordio-protobuf"


# ------------------------------------------------------------------------------------------ the Spark worker


def _frame(spec: dict):
    """A DataFrame from a plain description, with rows in the given order over ``partitions`` slices."""
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, IntegerType, StructField, StructType

    types = {"vector": VectorUDT(), "array<float>": ArrayType(FloatType()),
             "array<double>": ArrayType(DoubleType()), "double": DoubleType(), "int": IntegerType()}

    def vector(v):
        if v is None or spec["features_type"] != "vector":
            return v
        return Vectors.dense(v[1]) if v[0] == "dense" else Vectors.sparse(v[1], v[2], v[3])

    fields = [StructField("features", types[spec["features_type"]])]
    columns = [[vector(v) for v in spec["features"]]]
    if "label" in spec:
        label_type = spec["label_type"]
        fields.append(StructField("label", types[label_type]))
        labels = spec["label"]
        if label_type == "vector":
            labels = [None if v is None else Vectors.dense(v) for v in labels]
        columns.append(labels)
    fields.append(StructField("id", IntegerType()))
    columns.append(list(range(len(spec["features"]))))
    rows = list(zip(*columns, strict=True))
    rdd = session().sparkContext.parallelize(rows, spec.get("partitions", 1))
    return session().createDataFrame(rdd, StructType(fields))


@jvm_task
def _in_jvm_write(spec: dict, path: str, options: dict, mode: str = "overwrite", fmt: str = SOURCE) -> None:
    _frame(spec).write.format(fmt).options(**options).mode(mode).save(path)


def _plain(value):
    from pyspark.ml.linalg import DenseVector, SparseVector

    if isinstance(value, SparseVector):
        return ("sparse", int(value.size), value.indices.tolist(), value.values.tolist())
    if isinstance(value, DenseVector):
        return ("dense", value.values.tolist())
    return value


@jvm_task
def _in_jvm_read(paths: list[str], fmt: str = SOURCE) -> dict:
    df = session().read.format(fmt).load(paths if len(paths) > 1 else paths[0])
    rows = df.collect()
    return {"schema": df.schema.simpleString(), "partitions": df.rdd.getNumPartitions(),
            "rows": [{k: _plain(v) for k, v in row.asDict().items()} for row in rows]}


@jvm_task
def _in_jvm_gateway_write(spec: dict, path: str, options: dict) -> str:
    channel_io = session().sparkContext._jvm.sparkml.recordio.ChannelIO
    return channel_io.write(_frame(spec)._jdf, path, "overwrite", options)


@jvm_task
def _in_jvm_register_python_source() -> str:
    from pyspark.sql.datasource import DataSource

    class PythonTwin(DataSource):
        @classmethod
        def name(cls):
            return SOURCE

    session().dataSource.register(PythonTwin)
    return "registered"


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def jar() -> str:
    return build_jar()


@pytest.fixture(scope="module")
def jvm(jar):
    worker = SparkWorker(jar, "test_scala_datasource")
    yield worker
    worker.close()


# ------------------------------------------------------------------------------------------------ helpers


def dense_spec(x: np.ndarray, y=None, partitions: int = 1, features_type: str = "vector",
               label_type: str = "double") -> dict:
    spec = {"features_type": features_type, "partitions": partitions,
            "features": [("dense", row.tolist()) if features_type == "vector" else row.tolist() for row in x]}
    if y is not None:
        spec["label"] = y.tolist()
        spec["label_type"] = label_type
    return spec


def slice_sizes(n: int, slices: int) -> list[int]:
    """Rows per partition as SparkContext.parallelize slices a list."""
    return [(i + 1) * n // slices - i * n // slices for i in range(slices)]


def expected_shard_records(n: int, slices: int, per_shard: int) -> list[int]:
    out = []
    for size in slice_sizes(n, slices):
        out += [min(per_shard, size - lo) for lo in range(0, size, per_shard)]
    return out


def channel_shards(path: Path) -> tuple[Manifest, list[Path]]:
    manifest = Manifest.from_json((path / "manifest.json").read_text())
    return manifest, [path / s.path for s in manifest.shards]


def python_read(paths: list[Path]):
    batches = list(iter_batches([str(p) for p in paths], batch_size=10_000))
    assert len(batches) == 1
    return batches[0]


def float32_bits(word: int) -> float:
    return struct.unpack("<f", struct.pack("<I", word))[0]


# ------------------------------------------------------------------------------------------- byte identity


def test_dense_shards_are_byte_identical_to_the_python_codec(jvm, tmp_path):
    rng = np.random.default_rng(1)
    n, d, slices, per_shard = 1000, 17, 3, 150
    x = rng.normal(size=(n, d))
    y = rng.integers(0, 5, size=n).astype(np.float64)
    out = tmp_path / "dense"
    options = {"labelCol": "label", "recordsPerShard": str(per_shard)}
    jvm(_in_jvm_write, dense_spec(x, y, slices), str(out), options)

    manifest, shards = channel_shards(out)
    assert [s.records for s in manifest.shards] == expected_shard_records(n, slices, per_shard)
    assert (manifest.num_records, manifest.feature_dim) == (n, d)
    assert (manifest.has_label, manifest.label_dim) == (True, 1)
    assert (manifest.sparse, manifest.feature_dtype, manifest.content_type) == (False, "float32",
                                                                               "application/x-recordio-protobuf")
    assert manifest.to_json() == (out / "manifest.json").read_text()  # rendered exactly as Python renders it
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in shards] + ["manifest.json"])

    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    lo = 0
    for shard, entry in zip(shards, manifest.shards, strict=True):
        hi = lo + entry.records
        data = shard.read_bytes()
        assert entry.bytes == len(data)
        assert data == tensor_codec.encode_dense(x32[lo:hi], y32[lo:hi])
        lo = hi
    # The protobuf runtime agrees on the first record of the first shard.
    first = make_record(x32[0], y32[0], feature_dtype=np.float32, label_dtype=np.float32)
    first = frame(first.SerializeToString())
    assert shards[0].read_bytes()[: len(first)] == first

    batch = python_read(shards)
    np.testing.assert_array_equal(batch.features, x32)
    np.testing.assert_array_equal(batch.labels, y32)


def test_sparse_and_mixed_rows_are_byte_identical(jvm, tmp_path):
    rng = np.random.default_rng(2)
    n, dim = 300, 70_000  # indices past 16383 take three varint bytes
    matrix = sp.random(n, dim, density=0.0004, format="csr", random_state=3, dtype=np.float64)
    matrix.data[:] = rng.normal(size=matrix.nnz)
    matrix.data[matrix.indptr[5] : matrix.indptr[6]] = 0  # a row with no entries keeps only its shape
    matrix.eliminate_zeros()
    assert matrix.getrow(5).nnz == 0
    dense_rows = set(range(0, n, 7))
    features = []
    for i in range(n):
        row = matrix.getrow(i)
        if i in dense_rows:
            features.append(("dense", row.toarray()[0].tolist()))
        else:
            features.append(("sparse", dim, row.indices.tolist(), row.data.tolist()))
    labels = rng.normal(size=n)
    spec = {"features_type": "vector", "partitions": 2, "features": features, "label": labels.tolist(),
            "label_type": "double"}
    out = tmp_path / "mixed"
    jvm(_in_jvm_write, spec, str(out), {"labelCol": "label"})

    manifest, shards = channel_shards(out)
    assert (manifest.feature_dim, manifest.sparse) == (dim, True)
    assert [s.records for s in manifest.shards] == [150, 150]
    m32, y32 = matrix.astype(np.float32), labels.astype(np.float32)
    expected = b"".join(
        tensor_codec.encode_dense(m32[i].toarray(), y32[i : i + 1]) if i in dense_rows
        else tensor_codec.encode_sparse(m32[i], y32[i : i + 1]) for i in range(n))
    assert b"".join(s.read_bytes() for s in shards) == expected
    record = make_record(m32[1].data, y32[1], keys=m32[1].indices, shape=[dim], feature_dtype=np.float32,
                         label_dtype=np.float32)
    assert expected.find(frame(record.SerializeToString())) > 0

    batch = python_read(shards)
    assert batch.is_sparse
    np.testing.assert_array_equal(batch.features.toarray(), m32.toarray())
    np.testing.assert_array_equal(batch.labels, y32)


def test_double_arrays_with_float64_tensors_and_vector_labels(jvm, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 9))
    y = rng.normal(size=(200, 3))
    spec = dense_spec(x, None, 2, features_type="array<double>")
    spec["label"], spec["label_type"] = y.tolist(), "vector"
    out = tmp_path / "f64"
    jvm(_in_jvm_write, spec, str(out), {"labelCol": "label", "dtype": "float64"})

    manifest, shards = channel_shards(out)
    assert (manifest.feature_dtype, manifest.label_dim) == ("float64", 3)
    assert b"".join(s.read_bytes() for s in shards) == tensor_codec.encode_dense(x, y)
    batch = python_read(shards)
    np.testing.assert_array_equal(batch.features, x)
    np.testing.assert_array_equal(batch.labels, y)


def test_float_arrays_with_integer_labels(jvm, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = rng.integers(-3, 100, size=120)
    spec = dense_spec(x, None, 1, features_type="array<float>")
    spec["label"], spec["label_type"] = y.tolist(), "int"
    out = tmp_path / "f32"
    jvm(_in_jvm_write, spec, str(out), {"labelCol": "label"})
    _, shards = channel_shards(out)
    assert shards[0].read_bytes() == tensor_codec.encode_dense(x, y.astype(np.float32))


def test_magic_inside_a_payload_is_escaped_like_dmlc(jvm, tmp_path):
    magic_value = float32_bits(MAGIC)
    x = np.full((6, 8), magic_value, dtype=np.float32)
    x[::2, 1:] = np.arange(7, dtype=np.float32)  # every other row holds the magic once, the rest many times
    out = tmp_path / "escaped"
    jvm(_in_jvm_write, dense_spec(x.astype(np.float64)), str(out), {})
    _, shards = channel_shards(out)
    data = shards[0].read_bytes()
    assert data == tensor_codec.encode_dense(x)
    words = np.frombuffer(data, "<u4")
    heads = np.flatnonzero(words == MAGIC)
    assert any(words[h + 1] >> 29 == 1 for h in heads)  # split into first / middle / last parts
    with open(shards[0], "rb") as f:
        payloads = list(iter_payloads(f))
    assert len(payloads) == 6
    np.testing.assert_array_equal(python_read(shards).features, x)
    back = jvm(_in_jvm_read, [str(out)])
    np.testing.assert_array_equal(np.array([r["features"][1] for r in back["rows"]], np.float32), x)


def test_shard_size_bytes_caps_every_shard(jvm, tmp_path):
    x = np.random.default_rng(6).normal(size=(500, 10))
    out = tmp_path / "sized"
    jvm(_in_jvm_write, dense_spec(x, None, 2), str(out), {"shardSizeBytes": "4k"})
    manifest, shards = channel_shards(out)
    record = len(tensor_codec.encode_dense(x[:1].astype(np.float32)))
    per_shard = 4096 // record
    assert [s.records for s in manifest.shards] == expected_shard_records(500, 2, per_shard)
    assert all(s.bytes <= 4096 for s in manifest.shards)
    np.testing.assert_array_equal(python_read(shards).features, x.astype(np.float32))


# --------------------------------------------------------------------------------------------- reading


def test_reads_sdk_style_folders_without_a_manifest(jvm, tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(90, 6)).astype(np.float32)
    y = rng.integers(0, 2, size=90).astype(np.float32)
    folder = tmp_path / "sdk"
    folder.mkdir()
    for i, (lo, hi) in enumerate([(0, 30), (30, 60), (60, 90)]):  # record_set's matrix_<i>.pbr shards
        (folder / f"matrix_{i}.pbr").write_bytes(tensor_codec.encode_dense(x[lo:hi], y[lo:hi]))
    (folder / ".amazon.manifest").write_text(json.dumps([{"prefix": str(folder)}, "matrix_0.pbr"]))
    (folder / "_SUCCESS").write_text("")

    back = jvm(_in_jvm_read, [str(folder)])
    assert back["schema"] == "struct<features:vector,label:double>"
    assert back["partitions"] == 3  # one per shard
    np.testing.assert_array_equal(np.array([r["features"][1] for r in back["rows"]], np.float32), x)
    np.testing.assert_array_equal(np.array([r["label"] for r in back["rows"]], np.float32), y)


def test_reads_mixed_records_and_any_valid_protobuf_layout(jvm, tmp_path):
    rng = np.random.default_rng(8)
    dense = rng.normal(size=(3, 5))
    csr = sp.csr_matrix(np.array([[0, 0, 1.5, 0, 0], [0, 0, 0, 0, 0], [2.5, 0, 0, 0, -1.0]]))
    data = (tensor_codec.encode_dense(dense.astype(np.float32))
            + tensor_codec.encode_sparse(csr.astype(np.float32))
            + tensor_codec.encode_dense(dense.astype(np.float64)))  # float64 tensors read as well
    unusual = make_record(np.array([7, -2, 0, 1, 4], np.int32), None, uid="u-1", metadata='{"m": 1}')
    keys_unsorted = make_record(np.array([3.0, 4.0], np.float32), None, keys=[4, 1], shape=[5])
    data += frame(unusual.SerializeToString()) + frame(keys_unsorted.SerializeToString())
    data += frame(unpacked_record([0.5, -1.25, 8.0, 0.0, 3.0]))
    (tmp_path / "part-0.pbr").write_bytes(data)

    rows = jvm(_in_jvm_read, [str(tmp_path / "part-0.pbr")])["rows"]
    kinds = [r["features"][0] for r in rows]
    assert kinds == ["dense"] * 3 + ["sparse"] * 3 + ["dense"] * 3 + ["dense", "sparse", "dense"]
    np.testing.assert_array_equal([r["features"][1] for r in rows[:3]], dense.astype(np.float32))
    assert rows[3]["features"] == ("sparse", 5, [2], [1.5])
    assert rows[4]["features"] == ("sparse", 5, [], [])
    assert rows[5]["features"] == ("sparse", 5, [0, 4], [2.5, -1.0])
    np.testing.assert_array_equal([r["features"][1] for r in rows[6:9]], dense)
    assert rows[9]["features"] == ("dense", [7.0, -2.0, 0.0, 1.0, 4.0])
    assert rows[10]["features"] == ("sparse", 5, [1, 4], [4.0, 3.0])
    assert rows[11]["features"] == ("dense", [0.5, -1.25, 8.0, 0.0, 3.0])


def unpacked_record(values: list[float]) -> bytes:
    """A Record whose float32 values are written unpacked (one tagged field each), as proto2 allows."""
    def field(tag: int, body: bytes) -> bytes:
        assert len(body) < 128
        return bytes([tag, len(body)]) + body

    tensor = b"".join(b"\x0d" + struct.pack("<f", v) for v in values)  # field 1, wire type 5
    entry = field(0x0A, b"values") + field(0x12, field(0x12, tensor))
    payload = field(0x0A, entry)
    parsed = Record.FromString(payload)  # the protobuf runtime agrees the bytes are a valid Record
    assert list(parsed.features["values"].float32_tensor.values) == values
    return payload


def test_label_first_field_order_is_read(jvm, tmp_path):
    record = make_record(np.array([1.0, 2.0], np.float32), 3.0, label_dtype=np.float32)
    features_field = Record()
    features_field.features["values"].CopyFrom(record.features["values"])
    label_field = Record()
    label_field.label["values"].CopyFrom(record.label["values"])
    payload = label_field.SerializeToString() + features_field.SerializeToString()  # label before features
    (tmp_path / "a.pbr").write_bytes(frame(payload))
    rows = jvm(_in_jvm_read, [str(tmp_path / "a.pbr")])["rows"]
    assert rows == [{"features": ("dense", [1.0, 2.0]), "label": 3.0}]


def test_jvm_round_trip_keeps_sparse_sparse_and_empty_frames(jvm, tmp_path):
    features = [("dense", [1.0, 0.0, 2.5]), ("sparse", 3, [1], [4.0]), ("sparse", 3, [], [])]
    spec = {"features_type": "vector", "partitions": 2, "features": features, "label": [[1.0, 2.0]] * 3,
            "label_type": "vector"}
    trip = tmp_path / "trip"
    jvm(_in_jvm_write, spec, str(trip), {"labelCol": "label"})
    back = jvm(_in_jvm_read, [str(trip)])
    assert back["schema"] == "struct<features:vector,label:vector>"
    assert [r["features"] for r in back["rows"]] == features
    assert [r["label"] for r in back["rows"]] == [("dense", [1.0, 2.0])] * 3

    empty = tmp_path / "empty"
    jvm(_in_jvm_write, {"features_type": "vector", "features": []}, str(empty), {})
    manifest, shards = channel_shards(empty)
    assert (manifest.num_records, shards) == (0, [])
    assert jvm(_in_jvm_read, [str(empty)])["rows"] == []

    more = tmp_path / "more"
    one = {**spec, "features": features[:1], "label": [[3.0, 4.0]]}
    jvm(_in_jvm_write, one, str(more), {"labelCol": "label"})
    both = jvm(_in_jvm_read, [str(trip), str(more), str(empty)])["rows"]  # load(path1, path2, ...)
    assert [r["label"][1] for r in both] == [[1.0, 2.0]] * 3 + [[3.0, 4.0]]


def test_read_errors_name_the_file_and_offset_like_python(jvm, tmp_path):
    good = tensor_codec.encode_dense(np.ones((3, 4), np.float32))
    cases = {"bad_magic.pbr": good[:40] + b"\x00\x11\x22\x33" + good[44:],
             "truncated.pbr": good[:-6],
             "header.pbr": good + b"\x0a\x23"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with open(path, "rb") as f, pytest.raises(RecordIOError) as py_error:
            list(iter_payloads(f, str(path)))
        with pytest.raises(JVMError) as jvm_error:
            jvm(_in_jvm_read, [str(path)])
        # Same problem and byte offset; the JVM names the file by its qualified URI (file:/...).
        assert f"{py_error.value.problem} at byte offset {py_error.value.offset}" in str(jvm_error.value)
        assert f"file:{path}" in str(jvm_error.value)


def test_matrix_records_and_differing_lengths_are_rejected(jvm, tmp_path):
    record = make_record(np.array([1.0], np.float32), None, keys=[3], shape=[2, 2])
    (tmp_path / "m.pbr").write_bytes(frame(record.SerializeToString()))
    expected = r"record 0 \(byte offset 0\) is sparse with shape \[2, 2\]; a vector needs a 1-D shape"
    with pytest.raises(JVMError, match=expected):
        jvm(_in_jvm_read, [str(tmp_path / "m.pbr")])

    five = tensor_codec.encode_dense(np.ones((2, 5), np.float32))
    (tmp_path / "short.pbr").write_bytes(five + tensor_codec.encode_dense(np.ones((1, 3))))
    expected = rf"short.pbr: record 2 \(byte offset {len(five)}\) has 3 values but the channel's records have"
    with pytest.raises(JVMError, match=expected + " 5"):
        jvm(_in_jvm_read, [str(tmp_path / "short.pbr")])


# ------------------------------------------------------------------------------------ modes and bad input


def test_save_modes(jvm, tmp_path):
    x = np.arange(24, dtype=np.float64).reshape(6, 4)
    out = tmp_path / "modes"
    jvm(_in_jvm_write, dense_spec(x[:3]), str(out), {}, "errorifexists")
    with pytest.raises(JVMError, match="already exists; use mode 'overwrite'"):
        jvm(_in_jvm_write, dense_spec(x[3:]), str(out), {}, "errorifexists")
    jvm(_in_jvm_write, dense_spec(x[3:]), str(out), {}, "ignore")
    assert Channel.open(str(out)).num_records == 3

    jvm(_in_jvm_write, dense_spec(x[3:], None, 2), str(out), {}, "append")
    channel = Channel.open(str(out))
    assert channel.num_records == 6 and len(channel.shards()) == 3
    paths = [channel.shard_uri(s) for s in channel.shards()]
    np.testing.assert_array_equal(python_read(paths).features, x.astype(np.float32))
    with pytest.raises(JVMError, match="vectors of differing length: the existing channel has 4 values, "
                                       "partition 0 has 2"):
        jvm(_in_jvm_write, dense_spec(x[:, :2]), str(out), {}, "append")
    assert Channel.open(str(out)).num_records == 6

    jvm(_in_jvm_write, dense_spec(x[:2]), str(out), {}, "overwrite")
    manifest, shards = channel_shards(out)
    assert manifest.num_records == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([shards[0].name, "manifest.json"])


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("features", "labels", "partitions", "options", "message"), [
    ([[1.0, 2.0], None], None, 1, {}, r"column 'features' is null at row 1 \(rows counted within partition 0\)"),
    ([[1.0, 2.0], [1.0, 2.0], [3.0]], None, 1, {},
     r"featuresCol 'features' has vectors of differing length: row 0 of partition 0 has 2 values, "
     r"row 2 of partition 0 has 1"),
    ([[1.0, 2.0], [3.0]], None, 2, {},
     r"featuresCol 'features' has vectors of differing length: partition 0 has 2 values, partition 1 has 1"),
    ([[1.0, 2.0], [1.0, NAN]], None, 1, {},
     r"featuresCol 'features' has a non-finite value \(NaN\) at index 1 in row 1 of partition 0; "
     r"set allowNonFinite=true"),
    ([[1.0, -INF]], None, 1, {}, r"non-finite value \(-Infinity\) at index 1 in row 0 of partition 0"),
    ([[1e300, 1.0]], None, 1, {}, r"non-finite value \(1.0E300, which overflows float32 \(write with "
                                   r"dtype=float64\)\) at index 0 in row 0"),
    ([[1.0], [2.0]], [1.0, None], 1, {"labelCol": "label"},
     r"label column 'label' is null at row 1 \(rows counted within partition 0\)"),
    ([[1.0], [2.0]], [1.0, NAN], 1, {"labelCol": "label"},
     r"labelCol 'label' has a non-finite value \(NaN\) in row 1 of partition 0"),
    ([[1.0]], None, 1, {"featureCol": "features"},
     r"unknown write option 'featureCol'; known options: featuresCol, labelCol"),
    ([[1.0]], None, 1, {"recordsPerShard": "10", "shardSizeBytes": "1m"},
     r"set recordsPerShard or shardSizeBytes, not both"),
    ([[1.0]], None, 1, {"recordsPerShard": "0"}, r"recordsPerShard must be at least 1, got 0"),
    ([[1.0]], None, 1, {"dtype": "float16"}, r"dtype must be one of float32, float64, got 'float16'"),
    ([[1.0]], None, 1, {"labelCol": "target"}, r"labelCol 'target' is not a column of the DataFrame "
                                               r"\(columns: features, id\)"),
    ([[1.0]], None, 1, {"featuresCol": "id"},
     r"featuresCol 'id' must be a Vector \(VectorUDT\) or array<float> / array<double> column, got int"),
])
def test_bad_input_fails_clearly_and_writes_nothing(jvm, tmp_path, features, labels, partitions, options,
                                                    message):
    spec = {"features_type": "vector", "partitions": partitions,
            "features": [None if f is None else ("dense", f) for f in features]}
    if labels is not None:
        spec["label"], spec["label_type"] = labels, "double"
    out = tmp_path / "bad"
    with pytest.raises(JVMError, match=message) as error:
        jvm(_in_jvm_write, spec, str(out), options)
    assert "IllegalArgumentException" in str(error.value)
    assert not out.exists()


def test_failed_overwrite_keeps_the_old_channel(jvm, tmp_path):
    out = tmp_path / "kept"
    jvm(_in_jvm_write, dense_spec(np.ones((4, 2))), str(out), {})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(JVMError, match=r"non-finite value \(NaN\) at index 0 in row 0 of partition 0"):
        jvm(_in_jvm_write, dense_spec(np.full((4, 2), NAN)), str(out), {})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_allow_non_finite_writes_them(jvm, tmp_path):
    x = np.array([[1.0, NAN], [-INF, 2.0]])
    out = tmp_path / "nonfinite"
    jvm(_in_jvm_write, dense_spec(x), str(out), {"allowNonFinite": "true"})
    _, shards = channel_shards(out)
    assert shards[0].read_bytes() == tensor_codec.encode_dense(x.astype(np.float32))


# ---------------------------------------------------------------------------------- entry points and names


def test_gateway_write_returns_the_manifest(jvm, tmp_path):
    x = np.random.default_rng(9).normal(size=(50, 3))
    out = tmp_path / "gateway"
    text = jvm(_in_jvm_gateway_write, dense_spec(x), str(out), {"recordsPerShard": "20"})
    assert text == (out / "manifest.json").read_text()
    assert [s.records for s in Manifest.from_json(text).shards] == [20, 20, 10]


def test_short_name_class_name_and_package_name_all_resolve(jvm, tmp_path):
    x = np.eye(3)
    out = tmp_path / "names"
    class_name = "sparkml.recordio.RecordIOProtobufDataSource"
    jvm(_in_jvm_write, dense_spec(x), str(out), {}, "overwrite", class_name)
    for fmt in (SOURCE, "sparkml.recordio", class_name):
        rows = jvm(_in_jvm_read, [str(out)], fmt)["rows"]
        assert [r["features"] for r in rows] == [("dense", row.tolist()) for row in x]
    # Spark refuses a Python data source under a short name a JVM DataSourceRegister already holds.
    with pytest.raises(JVMError, match="DATA_SOURCE_ALREADY_EXISTS"):
        jvm(_in_jvm_register_python_source)


def test_spark_submit_example_converts_parquet(jar, tmp_path):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(400, 7))
    y = rng.normal(size=400)
    table = pa.table({"features": pa.array(list(x), type=pa.list_(pa.float64())), "label": y})
    pq.write_table(table, tmp_path / "input.parquet")
    out = tmp_path / "channel"
    result = spark_submit(jar, "sparkml.examples.ParquetToChannel", str(tmp_path / "input.parquet"), str(out),
                          "labelCol=label", "recordsPerShard=150")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])

    manifest, shards = channel_shards(out)
    assert [s.records for s in manifest.shards] == [150, 150, 100]
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert b"".join(s.read_bytes() for s in shards) == tensor_codec.encode_dense(x32, y32)
    assert (summary["records"], summary["feature_dim"], summary["has_label"]) == (400, 7, True)
    np.testing.assert_allclose(summary["feature_mean"], x32.astype(np.float64).mean(axis=0), rtol=1e-9)
    assert math.isclose(summary["label_mean"], float(y32.astype(np.float64).mean()), rel_tol=1e-9)


def test_build_is_skipped_when_nothing_changed(jar):
    before = os.stat(jar).st_mtime_ns
    out = subprocess.run(["bash", str(ROOT / "scala" / "build.sh")], capture_output=True, text=True,
                         check=True, env={**os.environ, "VENV_PYTHON": sys.executable})
    assert out.stdout.strip() == jar
    assert "compiling" not in out.stderr
    assert os.stat(jar).st_mtime_ns == before
