"""The protobuf-runtime path (algorithms.records) and the schema it is built from."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp
from google.protobuf import descriptor_pb2

from algorithms import records
from algorithms.batch import Batch
from algorithms.proto import Record, Value, record_descriptor

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "gen_proto_descriptor", ROOT / "tools" / "gen_proto_descriptor.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_descriptor_is_what_protoc_makes_from_record_proto():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) compiles record.proto")
    gen = load_generator()
    fresh = gen.compile_descriptor()
    assert fresh == record_descriptor.SERIALIZED, "record.proto changed: run `make proto`"
    assert gen.render(fresh) == (ROOT / "algorithms" / "proto" / "record_descriptor.py").read_text()


def test_schema_field_numbers_and_packing_are_sagemakers():
    fdp = descriptor_pb2.FileDescriptorProto.FromString(record_descriptor.SERIALIZED)
    assert fdp.package == "aialgs.data" and fdp.syntax in ("", "proto2")
    messages = {m.name: m for m in fdp.message_type}
    for tensor, value_type in (
        ("Float32Tensor", "TYPE_FLOAT"),
        ("Float64Tensor", "TYPE_DOUBLE"),
        ("Int32Tensor", "TYPE_INT32"),
    ):
        fields = {f.name: f for f in messages[tensor].field}
        assert [(f.name, f.number) for f in messages[tensor].field] == [
            ("values", 1),
            ("keys", 2),
            ("shape", 3),
        ]
        assert descriptor_pb2.FieldDescriptorProto.Type.Name(fields["values"].type) == value_type
        assert all(f.options.packed for f in fields.values())
        assert descriptor_pb2.FieldDescriptorProto.Type.Name(fields["keys"].type) == "TYPE_UINT64"
    value = {f.name: f.number for f in messages["Value"].field}
    assert value == {"float32_tensor": 2, "float64_tensor": 3, "int32_tensor": 7, "bytes": 9}
    record = {f.name: f.number for f in messages["Record"].field}
    assert record == {"features": 1, "label": 2, "uid": 3, "metadata": 4, "configuration": 5}


def test_known_wire_bytes():
    """A hand-assembled record (tag/length bytes written out) is what the runtime serializes."""
    record = records.make_record(np.array([1.0], np.float32), 2.0, label_dtype=np.float32)
    key = bytes.fromhex("0a0676616c756573")  # map entry field 1: "values"

    # entry {key, value: Value{float32_tensor (field 2): Float32Tensor{values (field 1, packed): [x]}}}
    def entry(field: int, x: float) -> bytes:
        tensor = b"\x0a\x04" + np.float32(x).tobytes()
        value = b"\x12" + bytes([len(tensor)]) + tensor
        body = key + b"\x12" + bytes([len(value)]) + value
        return bytes([field << 3 | 2, len(body)]) + body

    wire = entry(1, 1.0) + entry(2, 2.0)
    assert wire[:2] == b"\x0a\x12"
    assert record.SerializeToString() == wire
    assert Record.FromString(wire) == record


def test_tensor_field_follows_the_sdk_type_mapping():
    assert records.tensor_field(np.float32) == "float32_tensor"
    assert records.tensor_field(np.float64) == "float64_tensor"
    assert records.tensor_field(np.int64) == "int32_tensor"  # the SDK narrows int64 to Int32Tensor
    assert records.tensor_field(np.int32) == "int32_tensor"
    with pytest.raises(ValueError, match="no recordIO-protobuf tensor type for dtype float16"):
        records.tensor_field(np.float16)


def test_make_record_dense_sparse_and_strings():
    r = records.make_record(
        np.array([0.5, 0, 2], np.float64),
        np.array([1, 2], np.float32),
        uid="u",
        metadata="m",
        configuration="{}",
    )
    assert r.features["values"].WhichOneof("value") == "float64_tensor"
    assert list(r.features["values"].float64_tensor.values) == [0.5, 0, 2]
    assert list(r.label["values"].float32_tensor.values) == [1, 2]
    assert (r.uid, r.metadata, r.configuration) == ("u", "m", "{}")
    s = records.make_record([3.0], keys=[7], shape=[10], feature_dtype=np.float32)
    t = s.features["values"].float32_tensor
    assert list(t.keys) == [7] and list(t.shape) == [10] and list(t.values) == [3.0]
    assert not s.label


def test_records_to_batch_dense():
    rows = [
        records.make_record(np.arange(3, dtype=np.float32) + i, float(i), label_dtype=np.float32)
        for i in range(4)
    ]
    b = records.records_to_batch(rows)
    assert not b.is_sparse and b.features.dtype == np.float32
    np.testing.assert_array_equal(b.features, np.arange(3) + np.arange(4)[:, None])
    np.testing.assert_array_equal(b.labels, [0, 1, 2, 3])


def test_records_to_batch_sparse_mixed_and_promoted():
    rows = [
        records.make_record([1.0], keys=[4], shape=[6], feature_dtype=np.float32),
        records.make_record(np.array([1, 2, 3], np.float64)),
        records.make_record([], keys=None, shape=[6], feature_dtype=np.float32),
    ]
    b = records.records_to_batch(rows)
    assert b.is_sparse and b.features.shape == (3, 6) and b.features.dtype == np.float64
    np.testing.assert_array_equal(b.features.toarray(), [[0, 0, 0, 0, 1, 0], [1, 2, 3, 0, 0, 0], [0] * 6])


def test_records_to_batch_vector_and_int_labels():
    rows = [records.make_record(np.ones(2, np.float32), np.array([i, -i], np.int64)) for i in range(3)]
    b = records.records_to_batch(rows)
    assert b.labels.dtype == np.int32 and b.labels.shape == (3, 2)
    np.testing.assert_array_equal(b.labels[:, 1], [0, -1, -2])


def test_records_to_batch_empty():
    b = records.records_to_batch([], feature_dim=4)
    assert b.features.shape == (0, 4) and b.labels is None


def test_batch_to_records_round_trip_with_dtype_cast():
    m = sp.csr_matrix(np.array([[0, 1.5, 0], [2, 0, 0]]))
    out = list(
        records.batch_to_records(
            Batch(m, np.array([1.0, 0.0])), feature_dtype=np.float32, label_dtype=np.float32
        )
    )
    assert [r.features["values"].WhichOneof("value") for r in out] == ["float32_tensor"] * 2
    assert list(out[0].features["values"].float32_tensor.keys) == [1]
    assert list(out[1].features["values"].float32_tensor.shape) == [3]
    back = records.records_to_batch(out)
    np.testing.assert_array_equal(back.features.toarray(), m.toarray())


def bad(record_fn):
    record = Record()
    record_fn(record)
    return record


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda r: records.set_tensor(r.features["image"], [1.0]),
            r"src: record 5 has no features\['values'\] \(feature keys: image\)",
        ),
        (
            lambda r: r.features["values"].bytes.value.append(b"jpeg"),
            "value holds bytes, not a numeric tensor",
        ),
        (
            lambda r: records.set_tensor(r.features["values"], [1.0, 2.0], keys=[0, 1], shape=[2, 2]),
            r"src: record 5 is sparse with shape \[2, 2\]; a vector needs a 1-D shape",
        ),
        (
            lambda r: records.set_tensor(r.features["values"], [1.0], keys=[0, 1], shape=[4]),
            "src: record 5 has 2 keys but 1 values",
        ),
        (
            lambda r: records.set_tensor(r.features["values"], [1.0], keys=[9], shape=[4]),
            "src: record 5 has key 9 beyond dimension 4",
        ),
    ],
)
def test_bad_records_are_named(make, message):
    good = [records.make_record(np.ones(4, np.float32)) for _ in range(5)]
    with pytest.raises(ValueError, match=message):
        records.records_to_batch(good + [bad(make)], first_index=0, source="src")


def test_label_problems_are_named():
    sparse_label = records.make_record(np.ones(2, np.float32))
    records.set_tensor(sparse_label.label["values"], [1.0], keys=[0], shape=[1])
    with pytest.raises(ValueError, match="src: record 3 has a sparse label; labels must be dense"):
        records.records_to_batch([sparse_label], first_index=3, source="src")
    other_key = records.make_record(np.ones(2, np.float32))
    records.set_tensor(other_key.label["score"], [1.0])
    with pytest.raises(ValueError, match=r"record 0 has labels \['score'\] but no label\['values'\]"):
        records.records_to_batch([other_key])
    ragged = [records.make_record(np.ones(2, np.float32), np.ones(k, np.float32)) for k in (1, 2)]
    with pytest.raises(ValueError, match=r"labels of differing lengths \[1, 2\]"):
        records.records_to_batch(ragged)


def test_value_class_is_the_schema_value():
    v = Value()
    v.float64_tensor.values.append(1.0)
    assert Value.FromString(v.SerializeToString()).float64_tensor.values[0] == 1.0
