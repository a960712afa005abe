"""Request decoding, response encoding and content negotiation of the model server (no processes)."""

import json

import numpy as np
import orjson
import pytest
import scipy.sparse as sp
from serving_support import ToyKMeansModel, ToyLinearModel, ToyPCAModel

from algorithms import tensor_codec
from algorithms.proto import Record
from algorithms.recordio import frame
from algorithms.serving.content import choose_response_type, parse_media_type, request_media_type
from algorithms.serving.decoders import decode_request
from algorithms.serving.encoders import encode_response
from algorithms.serving.errors import RequestError
from algorithms.serving.response_records import decode_outputs, encode_outputs

RNG = np.random.default_rng(7)
X = RNG.normal(size=(6, 4)).astype(np.float32)


def decode(body, content_type, dim=4):
    return decode_request(
        body if isinstance(body, bytes) else body.encode(), request_media_type(content_type), dim
    )


def rejects(body, content_type, dim=4) -> RequestError:
    with pytest.raises(RequestError) as info:
        decode(body, content_type, dim)
    return info.value


# ------------------------------------------------------------------------------------------- requests


def test_every_request_format_decodes_to_the_same_rows():
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n"
    dense_json = json.dumps({"instances": [{"features": row.tolist()} for row in X]})
    proto_json = json.dumps({"instances": [{"data": {"features": {"values": row.tolist()}}} for row in X]})
    bare_json = json.dumps({"instances": X.tolist()})
    jsonl = "\n".join(json.dumps({"features": row.tolist()}) for row in X)
    libsvm = "\n".join("0 " + " ".join(f"{j + 1}:{float(v)!r}" for j, v in enumerate(row)) for row in X)
    bodies = [
        (csv, "text/csv"),
        (csv, "text/csv; charset=utf-8"),
        (dense_json, "application/json"),
        (proto_json, "application/json"),
        (bare_json, "application/json"),
        (jsonl, "application/jsonlines"),
        (tensor_codec.encode_dense(X), "application/x-recordio-protobuf"),
        (tensor_codec.encode_dense(X.astype(np.float64)), "application/x-recordio-protobuf"),
        (libsvm, "text/libsvm"),
    ]
    for body, ctype in bodies:
        batch = decode(body, ctype)
        np.testing.assert_array_equal(batch.dense(np.float32), X, err_msg=ctype)


def test_large_bodies_take_the_bulk_paths_and_still_name_the_bad_row():
    big = RNG.normal(size=(1000, 4)).astype(np.float32)
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in big)  # > 8 KiB, no final newline
    np.testing.assert_array_equal(decode(csv, "text/csv").features, big)
    lines = csv.split("\n")
    lines[699] = lines[699].replace(",", ",oops", 1)
    assert "CSV row 700, column 2: cannot parse 'oops" in rejects("\n".join(lines), "text/csv").message
    # labelled records (not the common inference shape) go through the general decoder
    labelled = tensor_codec.encode_dense(big, np.arange(1000, dtype=np.float32))
    np.testing.assert_array_equal(decode(labelled, "application/x-recordio-protobuf").features, big)


def test_sparse_requests_become_csr():
    body = {
        "instances": [
            {"data": {"features": {"keys": [0, 3], "shape": [4], "values": [1.5, -2]}}},
            {"features": [0, 1, 0, 0]},
        ]
    }
    batch = decode(json.dumps(body), "application/json")
    assert batch.is_sparse
    np.testing.assert_array_equal(batch.dense(), [[1.5, 0, 0, -2], [0, 1, 0, 0]])
    m = sp.csr_matrix(np.array([[0, 2, 0, 0], [3, 0, 0, 4]], np.float32))
    np.testing.assert_array_equal(
        decode(tensor_codec.encode_sparse(m), "application/x-recordio-protobuf").dense(), m.toarray()
    )


def test_csv_label_size_drops_leading_columns_and_empty_body_is_zero_rows():
    batch = decode("9,1,2,3,4\n8,5,6,7,8\n", "text/csv;label_size=1")
    np.testing.assert_array_equal(batch.features, [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert decode("", "text/csv").num_rows == 0
    assert decode('{"instances": []}', "application/json").num_rows == 0


@pytest.mark.parametrize(
    "body, ctype, expected",
    [
        ("1,2,3,4\n5,6,x,8\n", "text/csv", "CSV row 2, column 3: cannot parse 'x'"),
        ("1,2,3,4\n5,6,7\n", "text/csv", "CSV row 2 has 3 values; the model expects 4"),
        ("1,2,3\n4,5,6\n", "text/csv", "CSV row 1 has 3 values"),
        ("1,2,,4\n", "text/csv", "CSV row 1, column 3 is empty"),
        (b"1,2,3,\xff\n", "text/csv", "not UTF-8"),
        ("1,2,3,4", "text/csv;label_size=x", "label_size='x'"),
        ("{oops", "application/json", "not valid JSON"),
        ("[1, 2]", "application/json", '{"instances": [...]}'),
        ('{"instances": {"a": 1}}', "application/json", '"instances" must be a list'),
        (
            '{"instances": [[1,2,3,4], [1,2,3]]}',
            "application/json",
            "instances[1] has 3 features; the model expects 4",
        ),
        ('{"instances": [[1,2,"a",4]]}', "application/json", 'instances[0]: feature 2 is "a", not a number'),
        ('{"instances": [{"feature": [1]}]}', "application/json", 'instances[0] has no "features"'),
        (
            '{"instances": [{"data": {"features": {"keys": [9], "shape": [4], "values": [1]}}}]}',
            "application/json",
            "sparse key 9 is outside the model's 4 features",
        ),
        (
            '{"instances": [{"data": {"features": {"keys": [1], "shape": [5], "values": [1]}}}]}',
            "application/json",
            "sparse shape [5] does not match",
        ),
        (
            '{"instances": [{"data": {"features": {"keys": [1, 2], "shape": [4], "values": [1]}}}]}',
            "application/json",
            "as many values as keys",
        ),
        ('{"features": [1,2,3,4]}\n{"features": [1,2]}\n', "application/jsonlines", "line 2 has 2 features"),
        ('{"features": [1,2,3,4]}\nnope\n', "application/jsonlines", "line 2 is not valid JSON"),
        ("0 1:1 7:2\n", "text/libsvm", "index 7 is outside the model's features 1..4"),
        ("0 1:a\n", "text/libsvm", "cannot parse '1:a'"),
        (b"\x0a\xd7\x23\xce\x10\x00\x00\x00abc", "application/x-recordio-protobuf", "request body"),
    ],
)
def test_bad_requests_are_400_naming_the_fault(body, ctype, expected):
    error = rejects(body, ctype)
    assert error.status == 400
    assert expected in error.message, error.message


def test_protobuf_with_the_wrong_feature_count_is_rejected():
    error = rejects(tensor_codec.encode_dense(X[:, :3]), "application/x-recordio-protobuf")
    assert error.status == 400 and "3 features; the model expects 4" in error.message


def test_content_types_and_accept():
    assert parse_media_type("Text/CSV; label_size=0").params == {"label_size": "0"}
    assert request_media_type("application/jsonl").type == "application/jsonlines"
    for header in (None, "text/plain", "image/png"):
        with pytest.raises(RequestError) as info:
            request_media_type(header)
        assert info.value.status == 415
    with pytest.raises(RequestError) as info:
        request_media_type("text/csv; charset=latin-1")
    assert info.value.status == 415
    assert choose_response_type(None) == "application/json"
    assert choose_response_type("*/*") == "application/json"
    assert choose_response_type("application/x-recordio-protobuf") == "application/x-recordio-protobuf"
    assert choose_response_type("text/html;q=1, text/csv;q=0.5, application/json;q=0.9") == "application/json"
    assert (
        choose_response_type("application/jsonlines;q=0.2, application/json;q=0") == "application/jsonlines"
    )
    with pytest.raises(RequestError) as info:
        choose_response_type("image/png")
    assert info.value.status == 406


# ------------------------------------------------------------------------------------------ responses


def models():
    return {
        "kmeans": ToyKMeansModel(np.array([[0, 0, 0, 0], [1, 1, 1, 1]], np.float32)),
        "linear": ToyLinearModel(np.array([1, -1, 0.5, 0], np.float32), 0.1),
        "pca": ToyPCAModel(
            np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32), np.zeros(4, np.float32)
        ),
    }


def respond(model, accept, x=X):
    from algorithms.batch import Batch

    out = model.predict(Batch(x))
    return out, encode_response(out, model.outputs, model.json_envelope, accept, len(x))


def test_json_responses_have_sagemakers_shapes():
    x = np.array([[0.1, 0, 0, 0], [0.9, 1, 1, 1.5]], np.float32)
    _, body = respond(models()["kmeans"], "application/json", x)
    doc = json.loads(body)
    assert list(doc) == ["predictions"]
    assert doc["predictions"][0] == {"closest_cluster": 0.0, "distance_to_cluster": pytest.approx(0.1)}
    assert list(doc["predictions"][1]) == ["closest_cluster", "distance_to_cluster"]
    assert b'"closest_cluster":1.0' in body  # a float, as SageMaker's k-means writes it
    assert b'"distance_to_cluster":0.1}' in body  # float32 printed at float32 precision

    out, body = respond(models()["linear"], "application/json", x)
    doc = json.loads(body)
    assert doc == {
        "predictions": [
            {"score": pytest.approx(float(s)), "predicted_label": int(p)}
            for s, p in zip(out["score"], out["predicted_label"], strict=True)
        ]
    }
    assert b'"predicted_label":1}' in body or b'"predicted_label":0}' in body  # an integer label

    out, body = respond(models()["pca"], "application/json", x)
    doc = json.loads(body)
    assert list(doc) == ["projections"]
    assert doc["projections"][1] == {"projection": pytest.approx(x[1, :3].tolist())}


def test_jsonlines_and_csv_responses():
    out, body = respond(models()["kmeans"], "application/jsonlines")
    lines = body.decode().splitlines()
    assert len(lines) == len(X)
    assert json.loads(lines[2]) == {
        "closest_cluster": float(out["closest_cluster"][2]),
        "distance_to_cluster": pytest.approx(float(out["distance_to_cluster"][2])),
    }
    out, body = respond(models()["kmeans"], "text/csv")
    rows = [line.split(",") for line in body.decode().splitlines()]
    np.testing.assert_allclose(
        np.array(rows, float),
        np.column_stack([out["closest_cluster"], out["distance_to_cluster"]]),
        rtol=1e-6,
    )
    out, body = respond(models()["pca"], "text/csv")
    np.testing.assert_allclose(
        np.loadtxt(body.decode().splitlines(), delimiter=","), out["projection"], rtol=1e-6
    )


def runtime_response(outputs: dict) -> bytes:
    """The same response through the protobuf runtime (the reference for byte-identity)."""
    n = len(next(iter(outputs.values())))
    chunks = []
    for i in range(n):
        record = Record()
        for name, values in outputs.items():
            record.label[name].float32_tensor.values.extend(
                np.atleast_1d(values[i]).astype(np.float32).tolist()
            )
        chunks.append(frame(record.SerializeToString(deterministic=True)))
    return b"".join(chunks)


def test_protobuf_responses_match_the_protobuf_runtime_byte_for_byte():
    for model in models().values():
        out, body = respond(model, "application/x-recordio-protobuf")
        assert body == runtime_response(out)
        decoded = decode_outputs(body)
        assert sorted(decoded) == sorted(out)
        for name, values in out.items():
            np.testing.assert_array_equal(decoded[name], np.asarray(values, np.float32))
    assert encode_outputs({"a": np.zeros(0)}) == b""


def test_protobuf_response_edge_cases():
    # A payload holding the RecordIO magic is split into parts, as dmlc does; it still decodes.
    magic = np.frombuffer(np.array([0xCED7230A], "<u4").tobytes(), np.float32)[0]
    out = {"score": np.array([0.5, magic, 2.0], np.float32), "projection": np.ones((3, 2), np.float32)}
    body = encode_outputs(out)
    assert body == runtime_response(out)
    np.testing.assert_array_equal(decode_outputs(body)["score"], out["score"])
    # Records in another key order (not what we write) decode through the runtime path.
    records = []
    for i in range(2):
        r = Record()
        r.label["zeta"].float32_tensor.values.append(float(i))
        r.label["alpha"].float32_tensor.values.extend([1.0, 2.0 + i])
        records.append(frame(r.SerializeToString()))
    decoded = decode_outputs(b"".join(records))
    np.testing.assert_array_equal(decoded["zeta"], [0, 1])
    np.testing.assert_array_equal(decoded["alpha"], [[1, 2], [1, 3]])


def test_json_records_match_per_row_serialization():
    from algorithms.serving.encoders import json_records

    columns = [
        ("s", RNG.normal(size=5).astype(np.float32)),
        ("l", np.arange(5, dtype=np.int32)),
        ("v", RNG.normal(size=(5, 3)).astype(np.float32)),
        ("e", np.zeros((5, 0), np.float32)),
        ("100%", np.ones(5, np.float64)),
    ]
    rows = json_records(columns, 5)
    for i, row in enumerate(rows):
        assert orjson.loads(row) == {
            "s": pytest.approx(float(columns[0][1][i])),
            "l": i,
            "v": pytest.approx(columns[2][1][i].tolist()),
            "e": [],
            "100%": 1.0,
        }
        assert row == orjson.dumps({name: a[i] for name, a in columns}, option=orjson.OPT_SERIALIZE_NUMPY)


def test_orjson_keeps_float32_short():
    assert orjson.dumps(np.float32(0.4), option=orjson.OPT_SERIALIZE_NUMPY) == b"0.4"
