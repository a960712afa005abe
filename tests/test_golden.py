"""Byte-exact compatibility with files written by the real SageMaker Python SDK, sagemaker-spark and MXNet.

The fixtures in ``tests/fixtures/golden/`` were made by ``tests/fixtures/make_golden.py`` (SDK v2 +
MXNet 1.9.1) and ``tests/fixtures/make_golden_spark.py`` (sagemaker-spark 1.4.5) in throwaway
environments; ``versions*.json`` name the writers. Readers must return exactly the arrays / payloads saved
next to each file, and writers must reproduce each file byte for byte.

One difference is deliberate and tested both ways: the SDK never escapes the RecordIO magic inside a
payload, while dmlc (MXNet) splits such a record into parts. Our writers escape like dmlc; our readers
read both.
"""

from __future__ import annotations

import io
import json
import pathlib
import struct

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms import recordio, records, tensor_codec
from algorithms.batch import Batch
from algorithms.proto import Record
from algorithms.reader import iter_batches, iter_file_batches

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden"
SDK_DENSE = ["sdk_dense_f32_labels", "sdk_dense_f64", "sdk_dense_f32_int_labels"]
SDK_SPARSE = ["sdk_sparse_f32_labels", "sdk_sparse_f64", "sdk_sparse_unsorted"]
SPARK_MIXED = ["spark_mixed_labels", "spark_mixed"]
ALL_PBR = SDK_DENSE + SDK_SPARSE + SPARK_MIXED + ["spark_libsvm", "sdk_dense_magic"]
MX_FILES = ["mx_plain.rec", "mx_magic.rec", "mx_indexed.rec"]


def arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def expected(name: str) -> Batch:
    a = arrays(name)
    if "data" in a:
        features = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
    else:
        features = a["features"]
    labels = a.get("labels")
    if labels is not None and labels.dtype == np.int64:
        labels = labels.astype(np.int32)  # what the SDK stores for int64 labels: an Int32Tensor
    return Batch(features, labels)


def pbr(name: str) -> bytes:
    return (GOLDEN / f"{name}.pbr").read_bytes()


def mx_payloads(name: str) -> list[bytes]:
    doc = json.loads((GOLDEN / "mx_payloads.json").read_text())[name]
    return [bytes.fromhex(p["payload"] if isinstance(p, dict) else p) for p in doc]


def sdk_read_recordio(data: bytes) -> list[bytes]:
    """The SDK's own reader, restated: magic, unmasked length, payload, padding (no multi-part support)."""
    out, pos = [], 0
    while pos < len(data):
        magic, length = struct.unpack_from("<II", data, pos)
        assert magic == recordio.MAGIC
        out.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length + (-length & 3)
    return out


def assert_batch_equal(got: Batch, want: Batch, dense_ok: bool = False) -> None:
    """Exact equality: values, dtype, sparsity pattern (order included) and labels."""
    if want.is_sparse and not dense_ok:
        assert got.is_sparse
        assert got.features.shape == want.features.shape
        assert got.features.dtype == want.features.dtype
        np.testing.assert_array_equal(got.features.indptr, want.features.indptr)
        np.testing.assert_array_equal(got.features.indices, want.features.indices)
        np.testing.assert_array_equal(got.features.data, want.features.data)
    else:
        assert got.dense().dtype == want.dense().dtype
        np.testing.assert_array_equal(got.dense(), want.dense())
    if want.labels is None:
        assert got.labels is None
    else:
        assert got.labels is not None
        assert got.labels.dtype == want.labels.dtype
        np.testing.assert_array_equal(got.labels, want.labels)


def test_fixture_provenance_is_recorded():
    versions = json.loads((GOLDEN / "versions.json").read_text())
    assert versions["mxnet"] == "1.9.1"
    assert versions["sagemaker_sdk"].startswith("2.")
    assert versions["protobuf"] and versions["script"] == "tests/fixtures/make_golden.py"
    spark = json.loads((GOLDEN / "versions_spark.json").read_text())
    assert spark["sagemaker_spark_jar"].startswith("sagemaker-spark_")
    assert spark["script"] == "tests/fixtures/make_golden_spark.py"


# ------------------------------------------------------------------------------------------------ readers


@pytest.mark.parametrize("name", ALL_PBR)
def test_framing_readers_agree_with_the_sdk_reader(name):
    data = pbr(name)
    want = sdk_read_recordio(data)
    frames = recordio.scan_frames(data, name)
    assert [frames.payload(i) for i in range(len(frames))] == want
    assert frames.consumed == len(data)
    assert list(recordio.iter_payloads(io.BytesIO(data), name)) == want


@pytest.mark.parametrize("name", ALL_PBR)
def test_decode_reads_each_fixture_exactly(name):
    want = expected(name)
    got = tensor_codec.decode(pbr(name), name)
    if name in SPARK_MIXED:
        # sagemaker-spark wrote DenseVector and SparseVector rows into one file: one CSR comes back
        assert got.is_sparse
        sparse_rows = arrays(name)["sparse_rows"]
        nnz = np.diff(got.features.indptr)
        width = got.features.shape[1]
        np.testing.assert_array_equal(nnz[~sparse_rows], width)  # dense rows keep their zeros
        np.testing.assert_array_equal(nnz[sparse_rows], np.count_nonzero(want.features[sparse_rows], axis=1))
    assert_batch_equal(got, want, dense_ok=name in SPARK_MIXED)


def test_int64_labels_come_back_through_the_protobuf_path():
    """The SDK narrows int64 labels to an Int32Tensor (not the vectorized case); decode still reads them."""
    got = tensor_codec.decode(pbr("sdk_dense_f32_int_labels"))
    assert got.labels.dtype == np.int32
    np.testing.assert_array_equal(got.labels, [0, 3, -1, 7, 2**20, 1])


@pytest.mark.parametrize("name", ALL_PBR)
def test_records_path_reads_each_fixture_exactly(name):
    payloads = sdk_read_recordio(pbr(name))
    parsed = [Record.FromString(p) for p in payloads]
    got = records.records_to_batch(parsed)
    assert_batch_equal(got, expected(name), dense_ok=name in SPARK_MIXED)


@pytest.mark.parametrize("name", ALL_PBR)
@pytest.mark.parametrize("chunk_bytes", [24, 100, 1 << 20])
def test_streaming_reader_reads_each_fixture_exactly(name, chunk_bytes):
    path = str(GOLDEN / f"{name}.pbr")
    batches = list(iter_batches([path], batch_size=3, chunk_bytes=chunk_bytes))
    want = expected(name)
    assert [len(b) for b in batches[:-1]] == [3] * (len(batches) - 1)
    got = Batch.concat(batches)
    assert got.features.shape == want.features.shape
    assert_batch_equal(got, want, dense_ok=name in SPARK_MIXED)


def test_streaming_reader_over_all_sdk_sparse_fixtures_keeps_row_order():
    names = ("sdk_sparse_f32_labels", "spark_libsvm", "sdk_sparse_f32_labels")
    got = Batch.concat(
        list(
            iter_batches(
                [str(GOLDEN / f"{n}.pbr") for n in names], batch_size=4, feature_dim=100000, chunk_bytes=64
            )
        )
    )
    parts = [expected(n) for n in names]
    want = sp.vstack(
        [
            sp.csr_matrix((p.features.data, p.features.indices, p.features.indptr), shape=(len(p), 100000))
            for p in parts
        ]
    )
    assert got.features.shape == (16, 100000)
    np.testing.assert_array_equal(got.features.toarray(), want.toarray())
    np.testing.assert_array_equal(got.labels, np.concatenate([p.labels for p in parts]))


@pytest.mark.parametrize("name", MX_FILES)
def test_mxnet_files_read_exactly(name):
    data = (GOLDEN / name).read_bytes()
    want = mx_payloads(name)
    frames = recordio.scan_frames(data, name)
    assert [frames.payload(i) for i in range(len(frames))] == want
    assert list(recordio.iter_payloads(io.BytesIO(data), name)) == want


def test_mxnet_magic_fixture_really_holds_multi_part_records():
    data = (GOLDEN / "mx_magic.rec").read_bytes()
    flags, pos = [], 0
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == recordio.MAGIC
        flags.append(lrec >> 29)
        length = lrec & recordio.LENGTH_MASK
        pos += 8 + length + (-length & 3)
    assert {0, 1, 2, 3} <= set(flags)
    # every aligned magic word in the file is a record head: the file stays splittable
    words = np.frombuffer(data, "<u4")
    heads = np.flatnonzero(words == recordio.MAGIC) * 4
    assert len(heads) == len(flags)


def test_mxnet_index_offsets_match_our_framing():
    data = (GOLDEN / "mx_indexed.rec").read_bytes()
    index = [line.split("\t") for line in (GOLDEN / "mx_indexed.idx").read_text().splitlines()]
    doc = json.loads((GOLDEN / "mx_payloads.json").read_text())["mx_indexed.rec"]
    offsets, pos = [], 0
    for item in doc:
        offsets.append(pos)
        pos += len(recordio.frame(bytes.fromhex(item["payload"])))
    assert [(int(k), int(o)) for k, o in index] == list(zip([d["key"] for d in doc], offsets, strict=True))
    for (_, offset), item in zip(index, doc, strict=True):  # random access at an index offset
        stream = io.BytesIO(data)
        stream.seek(int(offset))
        assert next(recordio.iter_payloads(stream)) == bytes.fromhex(item["payload"])


# ------------------------------------------------------------------------------------------------ writers


@pytest.mark.parametrize("name", ["sdk_dense_f32_labels", "sdk_dense_f64"])
def test_encode_dense_reproduces_sdk_files(name):
    want = expected(name)
    assert tensor_codec.encode_dense(want.features, want.labels) == pbr(name)


@pytest.mark.parametrize(
    "name", ["sdk_sparse_f32_labels", "sdk_sparse_f64", "sdk_sparse_unsorted", "spark_libsvm"]
)
def test_encode_sparse_reproduces_sdk_and_spark_files(name):
    want = expected(name)
    assert tensor_codec.encode_sparse(want.features, want.labels) == pbr(name)


@pytest.mark.parametrize("name", SPARK_MIXED)
def test_per_row_encoders_reproduce_sagemaker_spark_mixed_files(name):
    a = arrays(name)
    x, labels, sparse_rows = a["features"], a.get("labels"), a["sparse_rows"]
    parts = []
    for i in range(len(x)):
        label = None if labels is None else labels[i : i + 1]
        if sparse_rows[i]:
            parts.append(tensor_codec.encode_sparse(sp.csr_matrix(x[i : i + 1]), label))
        else:
            parts.append(tensor_codec.encode_dense(x[i : i + 1], label))
    assert b"".join(parts) == pbr(name)


@pytest.mark.parametrize("name", SDK_DENSE + SDK_SPARSE + SPARK_MIXED + ["spark_libsvm"])
def test_protobuf_runtime_path_reproduces_each_file(name):
    a = arrays(name)
    want = expected(name)
    if name in SPARK_MIXED:
        rows = []
        for i, row in enumerate(a["features"]):
            label = None if want.labels is None else want.labels[i]
            if a["sparse_rows"][i]:
                keys = np.flatnonzero(row)
                rows.append(records.make_record(row[keys], label, keys=keys, shape=[len(row)]))
            else:
                rows.append(records.make_record(row, label))
    else:
        rows = list(records.batch_to_records(want))
    assert b"".join(recordio.frame(r.SerializeToString()) for r in rows) == pbr(name)


def test_sdk_leaves_the_magic_unescaped_and_our_writers_escape_it_like_mxnet():
    sdk_file = pbr("sdk_dense_magic")
    mx_file = (GOLDEN / "mx_sdk_dense_magic.rec").read_bytes()
    payloads = sdk_read_recordio(sdk_file)
    assert sum(recordio.magic_positions(p) != [] for p in payloads) == 2  # the SDK wrote them raw
    want = expected("sdk_dense_magic")
    # our writers: dmlc escaping, exactly MXNet's bytes for the same payloads
    assert tensor_codec.encode_dense(want.features, want.labels) == mx_file
    assert b"".join(recordio.frame(p) for p in payloads) == mx_file
    with io.BytesIO() as out:
        recordio.write_records(out, payloads)
        assert out.getvalue() == mx_file
    # our readers: the same records from either file
    for data in (sdk_file, mx_file):
        assert list(recordio.iter_payloads(io.BytesIO(data))) == payloads
        frames = recordio.scan_frames(data)
        assert [frames.payload(i) for i in range(len(frames))] == payloads
        assert_batch_equal(tensor_codec.decode(data), want)
        for chunk_bytes in (16, 40, 64, 1000):
            got = Batch.concat(list(iter_file_batches_all(data, chunk_bytes)))
            assert_batch_equal(got, want)


def iter_file_batches_all(data: bytes, chunk_bytes: int):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pbr") as f:
        f.write(data)
        f.flush()
        yield from iter_file_batches(f.name, batch_size=2, chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("name", ["mx_plain.rec", "mx_magic.rec", "mx_indexed.rec"])
def test_frame_reproduces_mxnet_files(name):
    payloads = mx_payloads(name)
    assert b"".join(recordio.frame(p) for p in payloads) == (GOLDEN / name).read_bytes()
