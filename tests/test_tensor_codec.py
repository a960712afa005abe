"""The vectorized codec against the protobuf runtime (records.batch_to_records + recordio.frame), both ways.

Property-style: many seeded random cases per shape of input. Encoding must give exactly the bytes of the
protobuf-runtime path; decoding those bytes must give back the batch exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms import recordio, records, tensor_codec
from algorithms.batch import Batch
from algorithms.proto import Record

MAGIC_F32 = np.frombuffer(recordio.MAGIC_BYTES, "<f4")[0]
MAGIC_F64_HALVES = np.frombuffer(recordio.MAGIC_BYTES * 2, "<f8")[0]  # a float64 made of two magic words


def reference_bytes(batch: Batch) -> bytes:
    return b"".join(recordio.frame(r.SerializeToString()) for r in records.batch_to_records(batch))


def reference_decode(data: bytes, feature_dim: int | None = None) -> Batch:
    frames = recordio.scan_frames(data)
    return records.records_to_batch(
        [Record.FromString(frames.payload(i)) for i in range(len(frames))], feature_dim
    )


def make_labels(rng: np.random.Generator, n: int, kind: str):
    if kind == "none":
        return None
    if kind == "scalar32":
        return rng.normal(size=n).astype(np.float32)
    if kind == "scalar64":
        return rng.normal(size=n)
    if kind == "vector32":
        return rng.normal(size=(n, 3)).astype(np.float32)
    if kind == "vector64":
        return rng.normal(size=(n, 2))
    raise AssertionError(kind)


def random_csr(
    rng: np.random.Generator,
    n: int,
    dim: int,
    dtype,
    density: float,
    empty_rows: float = 0.2,
    shuffle: bool = False,
    explicit_zeros: bool = False,
) -> sp.csr_matrix:
    rows_data, rows_idx = [], []
    for _ in range(n):
        k = 0 if rng.random() < empty_rows or dim == 0 else rng.binomial(dim, density)
        idx = np.sort(rng.choice(dim, size=min(k, dim), replace=False))
        if shuffle:
            rng.shuffle(idx)
        vals = rng.normal(size=len(idx)).astype(dtype)
        if explicit_zeros and len(vals):
            vals[rng.random(len(vals)) < 0.3] = 0
        rows_idx.append(idx)
        rows_data.append(vals)
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in rows_idx])]).astype(np.int64)
    indices = np.concatenate(rows_idx).astype(np.int64) if n else np.zeros(0, np.int64)
    data = np.concatenate(rows_data).astype(dtype) if n else np.zeros(0, dtype)
    return sp.csr_matrix((data, indices, indptr), shape=(n, dim))


def assert_same(got: Batch, want: Batch) -> None:
    assert got.is_sparse == want.is_sparse
    assert got.features.shape == want.features.shape
    assert got.features.dtype == want.features.dtype
    if want.is_sparse:
        np.testing.assert_array_equal(got.features.indptr, want.features.indptr)
        np.testing.assert_array_equal(got.features.indices, want.features.indices)
        np.testing.assert_array_equal(
            got.features.data.view(f"u{want.features.dtype.itemsize}"),
            want.features.data.view(f"u{want.features.dtype.itemsize}"),
        )
    else:
        np.testing.assert_array_equal(
            got.features.view(f"u{want.features.dtype.itemsize}"),
            want.features.view(f"u{want.features.dtype.itemsize}"),
        )
    if want.labels is None:
        assert got.labels is None
    else:
        want_labels = (
            want.labels[:, 0] if want.labels.ndim == 2 and want.labels.shape[1] == 1 else want.labels
        )
        assert got.labels.dtype == want_labels.dtype
        assert got.labels.shape == want_labels.shape
        np.testing.assert_array_equal(got.labels, want_labels)


# --------------------------------------------------------------------------------------------------- dense


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", ["none", "scalar32", "scalar64", "vector32", "vector64"])
def test_dense_random_round_trip_matches_protobuf_runtime(dtype, labels):
    rng = np.random.default_rng([7, np.dtype(dtype).itemsize, len(labels)])
    for n, d in [(1, 1), (5, 3), (17, 4), (33, 17), (8, 130), (3, 0)]:
        x = rng.normal(size=(n, d)).astype(dtype)
        batch = Batch(x, make_labels(rng, n, labels))
        want = reference_bytes(batch)
        data = tensor_codec.encode_dense(batch.features, batch.labels)
        assert data == want, (n, d)
        assert_same(tensor_codec.decode(data), batch)
        assert_same(reference_decode(data), batch)  # and the runtime agrees it is that batch
        assert tensor_codec.encode_batch(batch) == want


def test_dense_special_values_round_trip_bit_exactly():
    x = np.array([[np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38, 0.0, MAGIC_F32]], np.float32)
    x = np.repeat(x, 3, axis=0)
    data = tensor_codec.encode_dense(x)
    assert data == b"".join(recordio.frame(records.make_record(row).SerializeToString()) for row in x)
    got = tensor_codec.decode(data).features
    np.testing.assert_array_equal(got.view(np.uint32), x.view(np.uint32))


def test_dense_labels_as_column_matrix_are_scalar_labels():
    x = np.ones((4, 2), np.float32)
    column = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert tensor_codec.encode_dense(x, column) == tensor_codec.encode_dense(x, column[:, 0])
    np.testing.assert_array_equal(
        tensor_codec.decode(tensor_codec.encode_dense(x, column)).labels, column[:, 0]
    )


def test_empty_batches():
    assert tensor_codec.encode_dense(np.zeros((0, 5), np.float32)) == b""
    assert tensor_codec.encode_sparse(sp.csr_matrix((0, 5), dtype=np.float32)) == b""
    got = tensor_codec.decode(b"", feature_dim=5)
    assert got.features.shape == (0, 5) and got.labels is None
    assert tensor_codec.decode(b"").features.shape == (0, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_payloads_holding_the_magic_are_escaped_like_the_runtime_path(dtype):
    rng = np.random.default_rng(11)
    for d in (1, 2, 3, 4, 5, 8, 9):
        x = rng.normal(size=(12, d)).astype(dtype)
        hits = rng.random(x.shape) < 0.25
        x[hits] = MAGIC_F32 if dtype == np.float32 else MAGIC_F64_HALVES
        labels = np.full(12, MAGIC_F32, np.float32)  # the label can hold it too
        batch = Batch(x, labels)
        data = tensor_codec.encode_dense(x, labels)
        assert data == reference_bytes(batch)
        assert_same(tensor_codec.decode(data), batch)


def test_dense_magic_escaping_really_splits_records():
    x = np.array([[MAGIC_F32, 1.0, MAGIC_F32, MAGIC_F32]], np.float32)
    data = tensor_codec.encode_dense(x)
    words = np.frombuffer(data, "<u4")
    assert np.count_nonzero(words == recordio.MAGIC) == 4  # 4 parts: first, 2 middles, last
    assert_same(tensor_codec.decode(data), Batch(x))


def test_dense_rejects_what_it_cannot_write():
    with pytest.raises(ValueError, match="2-D"):
        tensor_codec.encode_dense(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="float32 or float64, not int64"):
        tensor_codec.encode_dense(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="3 feature rows but 2 labels"):
        tensor_codec.encode_dense(np.zeros((3, 2), np.float32), np.zeros(2, np.float32))


def test_big_endian_input_is_written_little_endian():
    x = np.arange(12, dtype=">f4").reshape(3, 4)
    y = np.arange(3, dtype=">f8")
    assert tensor_codec.encode_dense(x, y) == tensor_codec.encode_dense(x.astype("<f4"), y.astype("<f8"))
    m = sp.csr_matrix(np.eye(3))
    assert tensor_codec.encode_sparse(m, y) == tensor_codec.encode_sparse(m, y.astype("<f8"))


# -------------------------------------------------------------------------------------------------- sparse


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", ["none", "scalar32", "scalar64", "vector32"])
def test_sparse_random_round_trip_matches_protobuf_runtime(dtype, labels):
    rng = np.random.default_rng([13, np.dtype(dtype).itemsize, len(labels)])
    for n, dim, density in [(1, 1, 1.0), (9, 10, 0.3), (40, 300, 0.05), (25, 100_000, 0.0003), (6, 20, 0.0)]:
        m = random_csr(rng, n, dim, dtype, density, explicit_zeros=True)
        batch = Batch(m, make_labels(rng, n, labels))
        want = reference_bytes(batch)
        data = tensor_codec.encode_sparse(m, batch.labels)
        assert data == want, (n, dim)
        assert_same(tensor_codec.decode(data), batch)
        assert_same(reference_decode(data), batch)
        assert tensor_codec.encode_batch(batch) == want


def test_sparse_unsorted_indices_keep_their_order_both_ways():
    rng = np.random.default_rng(5)
    m = random_csr(rng, 30, 500, np.float32, 0.05, shuffle=True)
    assert not m.has_sorted_indices
    batch = Batch(m, rng.normal(size=30).astype(np.float32))
    data = tensor_codec.encode_sparse(m, batch.labels)
    assert data == reference_bytes(batch)
    assert_same(tensor_codec.decode(data), batch)


@pytest.mark.parametrize("dim", [2**7, 2**14, 2**21, 2**28, 2**35, 2**49, 2**62])
def test_sparse_large_keys_use_multi_byte_varints(dim):
    rng = np.random.default_rng(dim % 1000)
    cols = np.unique(np.concatenate([[0, 1, 127, dim - 1], rng.integers(0, dim, 20)]))
    cols = cols[cols < dim]
    n = 4
    indptr = np.array([0, len(cols), len(cols), len(cols) + 1, len(cols) + 3])
    indices = np.concatenate([cols, [dim - 1], [5, dim - 2]]).astype(np.int64)
    data = rng.normal(size=len(indices)).astype(np.float32)
    m = sp.csr_matrix((data, indices, indptr), shape=(n, dim))
    batch = Batch(m, np.arange(n, dtype=np.float32))
    encoded = tensor_codec.encode_sparse(m, batch.labels)
    assert encoded == reference_bytes(batch)
    assert_same(tensor_codec.decode(encoded), batch)


def test_sparse_values_holding_the_magic_are_escaped_like_the_runtime_path():
    rng = np.random.default_rng(3)
    for trial in range(20):
        dtype = np.float32 if trial % 2 else np.float64
        m = random_csr(rng, 15, 40, dtype, 0.3)
        m.data[rng.random(m.nnz) < 0.3] = MAGIC_F32 if dtype == np.float32 else MAGIC_F64_HALVES
        batch = Batch(m, np.full(15, MAGIC_F32, np.float32))
        data = tensor_codec.encode_sparse(m, batch.labels)
        assert data == reference_bytes(batch)
        assert_same(tensor_codec.decode(data), batch)


def test_sparse_key_bytes_that_form_the_magic_are_escaped():
    # keys 0x0A, 0x23, then a three-byte varint D7 CE 01 spell the magic 0A 23 D7 CE; one of four
    # alignments puts it at an aligned offset, which must then be split like the runtime path splits it
    hits = 0
    for pad in range(4):
        keys = np.array(list(range(100, 100 + pad)) + [0x0A, 0x23, 0x57 | (0x4E << 7) | (1 << 14)])
        m = sp.csr_matrix((np.ones(len(keys), np.float32), keys, [0, len(keys)]), shape=(1, 40000))
        data = tensor_codec.encode_sparse(m)
        assert data == reference_bytes(Batch(m))
        assert_same(tensor_codec.decode(data), Batch(m))
        hits += len(recordio.magic_positions(recordio.scan_frames(data).payload(0)))
    assert hits == 1


def test_sparse_rows_with_no_columns():
    m = sp.csr_matrix((5, 0), dtype=np.float32)
    data = tensor_codec.encode_sparse(m)
    assert data == reference_bytes(Batch(m))
    assert_same(tensor_codec.decode(data), Batch(m))


def test_sparse_rejects_indices_outside_the_shape():
    m = sp.csr_matrix((np.ones(2, np.float32), np.array([1, 7]), np.array([0, 1, 2])), shape=(2, 5))
    with pytest.raises(ValueError, match="row 1 has column index 7"):
        tensor_codec.encode_sparse(m)


# -------------------------------------------------------------------------------- mixed and general records


def test_mixed_dense_and_sparse_records_decode_to_csr():
    """sagemaker-spark writes DenseVector and SparseVector rows into one file."""
    rng = np.random.default_rng(23)
    dim = 12
    x = rng.normal(size=(40, dim)).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = 0
    is_sparse = rng.random(40) < 0.5
    labels = rng.normal(size=40).astype(np.float32)
    parts = []
    for i in range(40):
        if is_sparse[i]:
            parts.append(tensor_codec.encode_sparse(sp.csr_matrix(x[i : i + 1]), labels[i : i + 1]))
        else:
            parts.append(tensor_codec.encode_dense(x[i : i + 1], labels[i : i + 1]))
    data = b"".join(parts)
    got = tensor_codec.decode(data)
    assert got.is_sparse and got.features.shape == (40, dim)
    np.testing.assert_array_equal(got.features.toarray(), x)
    np.testing.assert_array_equal(got.labels, labels)
    nnz = np.diff(got.features.indptr)
    np.testing.assert_array_equal(nnz[~is_sparse], dim)  # dense rows keep every column
    assert_same(got, reference_decode(data))


def test_mixed_dense_rows_wider_than_sparse_shape_set_the_dimension():
    dense = tensor_codec.encode_dense(np.ones((1, 6), np.float64))
    sparse = tensor_codec.encode_sparse(sp.csr_matrix(([2.0], [1], [0, 1]), shape=(1, 3)))
    got = tensor_codec.decode(sparse + dense)
    assert got.features.shape == (2, 6)
    assert_same(got, reference_decode(sparse + dense))


@pytest.mark.parametrize("feature_dim", [None, 300, 1000])
def test_feature_dim_passed_or_inferred(feature_dim):
    rng = np.random.default_rng(29)
    m = random_csr(rng, 20, 300, np.float32, 0.02)
    m = sp.csr_matrix((m.data, m.indices, m.indptr), shape=(20, 300))
    data = tensor_codec.encode_sparse(m)
    got = tensor_codec.decode(data, feature_dim=feature_dim)
    assert got.features.shape == (20, feature_dim or 300)
    np.testing.assert_array_equal(got.features.toarray()[:, :300], m.toarray())
    assert_same(got, reference_decode(data, feature_dim))


def test_records_outside_the_common_case_fall_back_to_the_runtime():
    rows = [
        records.make_record(np.arange(3, dtype=np.float32), 1.0, uid="a", metadata='{"m": 1}'),
        records.make_record(
            np.arange(3, dtype=np.float64) + 1, 2.0, configuration="{}"
        ),  # float64 among float32
        records.make_record(np.arange(3, dtype=np.int64), 3.0),  # int32 features
    ]
    data = b"".join(recordio.frame(r.SerializeToString()) for r in rows)
    got = tensor_codec.decode(data)
    assert got.features.dtype == np.float64
    np.testing.assert_array_equal(got.features, [[0, 1, 2], [1, 2, 3], [0, 1, 2]])
    np.testing.assert_array_equal(got.labels, [1, 2, 3])


def test_strings_after_the_tensors_are_skipped_by_the_vectorized_path():
    rng = np.random.default_rng(31)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    rows = [records.make_record(x[i], float(i), uid=f"id-{i * 37}", configuration="{}" * i) for i in range(6)]
    data = b"".join(recordio.frame(r.SerializeToString()) for r in rows)
    got = tensor_codec.decode(data)
    np.testing.assert_array_equal(got.features, x)
    np.testing.assert_array_equal(got.labels, np.arange(6, dtype=np.float32))


def test_other_feature_keys_are_rejected_by_name():
    record = records.Record()
    records.set_tensor(record.features["pixels"], np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"record 0 has no features\['values'\] \(feature keys: pixels\)"):
        tensor_codec.decode(recordio.frame(record.SerializeToString()), "x.pbr")


def test_payloads_split_across_parts_decode_like_single_records():
    """decode over a buffer whose multi-part records had to be compacted keeps every record in place."""
    rng = np.random.default_rng(37)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    x[::7, 1] = MAGIC_F32
    m = random_csr(rng, 50, 64, np.float32, 0.2)
    m.data[::5] = MAGIC_F32
    dense, sparse = tensor_codec.encode_dense(x), tensor_codec.encode_sparse(m)
    assert_same(tensor_codec.decode(dense), Batch(x))
    assert_same(tensor_codec.decode(sparse), Batch(m))
    got = tensor_codec.decode(dense + sparse)
    np.testing.assert_array_equal(got.features.toarray()[:50, :4], x)
    np.testing.assert_array_equal(got.features.toarray()[50:], m.toarray())


def test_dense_records_with_shape_and_no_keys_are_dense():
    rows = [records.make_record(np.arange(3, dtype=np.float32) + i, shape=[3]) for i in range(4)]
    data = b"".join(recordio.frame(r.SerializeToString()) for r in rows)
    got = tensor_codec.decode(data)
    assert not got.is_sparse
    np.testing.assert_array_equal(got.features, np.arange(3) + np.arange(4)[:, None])


# --------------------------------------------------------------------------------------- corrupt payloads


def random_payloads(rng: np.random.Generator) -> list[bytes]:
    n, d = int(rng.integers(1, 10)), int(rng.integers(0, 6))
    dtype = (np.float32, np.float64)[rng.integers(0, 2)]
    kind, label_kind = rng.integers(0, 3), rng.integers(0, 3)
    out = []
    for i in range(n):
        label = (None, np.float32(i), np.arange(2, dtype=np.float64))[label_kind]
        if kind == 0 or (kind == 2 and rng.random() < 0.5):
            record = records.make_record(rng.normal(size=d).astype(dtype), label)
        else:
            keys = np.sort(rng.choice(d, size=int(rng.integers(0, d + 1)), replace=False)) if d else []
            record = records.make_record(
                rng.normal(size=len(keys)).astype(dtype), label, keys=keys, shape=[d], feature_dtype=dtype
            )
        out.append(record.SerializeToString())
    return out


def corrupt(rng: np.random.Generator, payload: bytes) -> bytes:
    p = bytearray(payload)
    op = rng.integers(0, 3)
    if op == 0 and p:
        for _ in range(int(rng.integers(1, 4))):
            p[int(rng.integers(0, len(p)))] = int(rng.integers(0, 256))
    elif op == 1 and p:
        del p[int(rng.integers(0, len(p))) :]
    else:
        p += rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8).tobytes()
    return bytes(p)


def test_corrupt_payloads_decode_like_the_runtime_or_fail_cleanly():
    """Random byte flips / cuts / tails: the vectorized decoder agrees with the protobuf runtime, or both
    reject the buffer with a ValueError; never an IndexError or a wrong answer."""
    rng = np.random.default_rng(99)
    for _ in range(400):
        payloads = random_payloads(rng)
        i = int(rng.integers(0, len(payloads)))
        payloads[i] = corrupt(rng, payloads[i])
        data = b"".join(recordio.frame(p) for p in payloads)
        try:
            want = records.records_to_batch([Record.FromString(p) for p in payloads])
        except Exception:
            want = None
        if want is None:
            with pytest.raises(ValueError, match="<buffer>: record"):
                tensor_codec.decode(data)
        else:
            got = tensor_codec.decode(data)
            assert got.is_sparse == want.is_sparse and got.features.shape == want.features.shape
            np.testing.assert_array_equal(got.dense(), want.dense())
            assert (got.labels is None) == (want.labels is None)
            if want.labels is not None:
                np.testing.assert_array_equal(got.labels, want.labels)


@pytest.mark.parametrize(
    "hex_payloads",
    [
        # a field length far beyond the record (once an IndexError in the lockstep parser)
        [
            "0a250a0676616c756573121b1a190a10b8026bda3bf9e73fe68a07ab58f5f03f125e01021a010412120a0676616c756573120812060a"
            "0400000000"
        ],
        ["0a120a0676616c756573120812060af0a032913f", "0a120a0676616c756573120812060a0492da2b3e"],
        # a map key that is not UTF-8 (once a TypeError while naming the feature keys)
        ["0a0f0a06b1616c75657312051a031a0100"],
    ],
)
def test_regressions_from_fuzzing(hex_payloads):
    data = b"".join(recordio.frame(bytes.fromhex(p)) for p in hex_payloads)
    with pytest.raises(ValueError, match="<buffer>: record 0"):
        tensor_codec.decode(data)


# ---------------------------------------------------------------------------------- decoding: what it returns


def sparse_payload(values, keys, dim: int, label: float = 1.0) -> bytes:
    """A sparse record written through the protobuf runtime, whatever its keys and values."""
    record = Record()
    tensor = record.features["values"].float32_tensor
    tensor.values.extend(values)
    tensor.keys.extend(keys)
    tensor.shape.append(dim)
    record.label["values"].float32_tensor.values.append(label)
    return record.SerializeToString()


@pytest.mark.parametrize("bad", [0, 7, 19])
@pytest.mark.parametrize(
    "values, keys", [([1.0, 2.0], [3, 4, 5]), ([1.0, 2.0, 3.0], [300]), ([], [70_000, 2])]
)
def test_sparse_records_whose_key_and_value_counts_differ_are_named(bad, values, keys):
    rng = np.random.default_rng(bad)
    payloads = [
        sparse_payload(rng.normal(size=3), sorted(rng.choice(100_000, 3, replace=False)), 100_000)
        for _ in range(20)
    ]
    payloads[bad] = sparse_payload(values, keys, 100_000)
    data = b"".join(recordio.frame(p) for p in payloads)
    want = f"f.pbr: record {bad} has {len(keys)} keys but {len(values)} values"
    with pytest.raises(ValueError, match=want):  # the protobuf runtime's path says the same
        records.records_to_batch([Record.FromString(p) for p in payloads], source="f.pbr")
    with pytest.raises(ValueError, match=want):
        tensor_codec.decode(data, "f.pbr")


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: tensor_codec.encode_dense(rng.normal(size=(1, 5)).astype(np.float32), np.ones(1)),
        lambda rng: tensor_codec.encode_dense(rng.normal(size=(30, 5)).astype(np.float32), np.ones(30)),
        lambda rng: tensor_codec.encode_sparse(random_csr(rng, 30, 50, np.float32, 0.2), np.ones(30)),
        lambda rng: b"".join(  # dense records of differing sizes (uids): the lockstep path
            recordio.frame(records.make_record(rng.normal(size=4), 1.0, uid="u" * i).SerializeToString())
            for i in range(6)
        ),
    ],
)
def test_decoded_batches_never_share_memory_with_the_input(make):
    """The streaming reader reads every chunk into the same buffer: what decoding returns must be a copy."""
    buf = np.frombuffer(bytearray(make(np.random.default_rng(1))), np.uint8)
    got = tensor_codec.decode_frames(recordio.scan_frames(buf))
    arrays = [got.labels] + ([got.features.data, got.features.indices] if got.is_sparse else [got.features])
    assert not any(np.shares_memory(a, buf) for a in arrays)
