"""The streaming reader: exact batches across files, bounded memory, errors naming file and offset/record."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms import recordio, records, tensor_codec
from algorithms.batch import Batch
from algorithms.reader import iter_batches, iter_file_batches, iter_file_blocks, rebatch
from algorithms.recordio import MAGIC_BYTES, RecordIOError

MAGIC_F32 = np.frombuffer(MAGIC_BYTES, "<f4")[0]


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def dense_file(tmp_path, name: str, x: np.ndarray, y: np.ndarray | None = None) -> str:
    return write(tmp_path / name, tensor_codec.encode_dense(x, y))


# ------------------------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("chunk_bytes", [64, 1000, 1 << 20])
def test_batches_of_exactly_n_across_file_boundaries(tmp_path, chunk_bytes):
    rng = np.random.default_rng(1)
    sizes = [7, 0, 13, 5, 1]
    xs = [rng.normal(size=(n, 3)).astype(np.float32) for n in sizes]
    ys = [rng.normal(size=n).astype(np.float32) for n in sizes]
    paths = [dense_file(tmp_path, f"part-{i}.pbr", x, y) for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    batches = list(iter_batches(paths, batch_size=4, chunk_bytes=chunk_bytes))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 4, 2]
    got = Batch.concat(batches)
    np.testing.assert_array_equal(got.features, np.concatenate(xs))
    np.testing.assert_array_equal(got.labels, np.concatenate(ys))


def test_iter_file_batches_never_exceeds_the_batch_size(tmp_path):
    x = np.arange(300, dtype=np.float64).reshape(100, 3)
    path = dense_file(tmp_path, "a.pbr", x)
    batches = list(iter_file_batches(path, batch_size=8, chunk_bytes=200))
    assert max(len(b) for b in batches) <= 8
    np.testing.assert_array_equal(Batch.concat(batches).features, x)


def test_records_bigger_than_a_chunk(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 5000)).astype(np.float32)  # 20 kB records
    x[2, 100] = MAGIC_F32  # and a multi-part one
    path = dense_file(tmp_path, "big.pbr", x)
    batches = list(iter_batches([path], batch_size=4, chunk_bytes=1000))
    assert [len(b) for b in batches] == [4, 2]
    np.testing.assert_array_equal(Batch.concat(batches).features, x)


def test_sparse_files_and_feature_dim(tmp_path):
    rng = np.random.default_rng(3)
    m = sp.random(
        50, 200, density=0.05, format="csr", dtype=np.float32, random_state=np.random.RandomState(3)
    )
    y = rng.normal(size=50).astype(np.float32)
    path = write(tmp_path / "s.pbr", tensor_codec.encode_sparse(m, y))
    got = Batch.concat(list(iter_batches([path], batch_size=16, feature_dim=250, chunk_bytes=300)))
    assert got.features.shape == (50, 250)
    np.testing.assert_array_equal(got.features.toarray()[:, :200], m.toarray())
    np.testing.assert_array_equal(got.labels, y)


def test_multi_part_records_cut_at_every_chunk_boundary(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = MAGIC_F32
    path = dense_file(tmp_path, "m.pbr", x)
    for chunk in range(4, 80, 4):
        got = Batch.concat(list(iter_batches([path], batch_size=3, chunk_bytes=chunk)))
        np.testing.assert_array_equal(got.features.view(np.uint32), x.view(np.uint32))


def test_empty_file_gives_no_batches(tmp_path):
    path = write(tmp_path / "empty.pbr", b"")
    assert list(iter_batches([path], batch_size=5)) == []


def test_batch_size_must_be_positive(tmp_path):
    path = write(tmp_path / "a.pbr", tensor_codec.encode_dense(np.ones((2, 2), np.float32)))
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        list(iter_file_batches(path, 0))


def test_rebatch_regroups_rows_in_order():
    parts = [
        Batch(np.full((n, 2), i, np.float32), np.full(n, i, np.float32))
        for i, n in enumerate([3, 0, 1, 6, 2])
    ]
    out = list(rebatch(iter(parts), 4))
    assert [len(b) for b in out] == [4, 4, 4]
    np.testing.assert_array_equal(Batch.concat(out).labels, [0, 0, 0, 2, 3, 3, 3, 3, 3, 3, 4, 4])


def test_rebatch_copies_only_the_batches_that_straddle_inputs():
    x = np.arange(300, dtype=np.float32).reshape(100, 3)
    parts = [Batch(x[:50], x[:50, 0]), Batch(x[50:], x[50:, 0])]
    out = list(rebatch(iter(parts), 8))
    assert [len(b) for b in out] == [8] * 12 + [4]
    np.testing.assert_array_equal(Batch.concat(out).features, x)
    for i, batch in enumerate(out):
        first, last = 8 * i, 8 * i + len(batch) - 1
        assert np.shares_memory(batch.features, parts[0].features) == (last < 50), i
        assert np.shares_memory(batch.features, parts[1].features) == (first >= 50), i


def test_rebatch_regroups_many_small_inputs():
    parts = [Batch(np.full((1, 2), i, np.float32)) for i in range(10)]
    out = list(rebatch(iter(parts), 4))
    assert [len(b) for b in out] == [4, 4, 2]
    np.testing.assert_array_equal(Batch.concat(out).features[:, 0], np.arange(10))


def test_iter_file_blocks_decodes_each_read_once(tmp_path):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(100, 3)).astype(np.float32), rng.normal(size=100).astype(np.float32)
    path = dense_file(tmp_path, "b.pbr", x, y)
    size = (tmp_path / "b.pbr").stat().st_size
    record = size // 100
    chunk = 10 * record + 3  # every read ends inside a record
    blocks = list(iter_file_blocks(path, chunk_bytes=chunk))
    assert len(blocks) == -(-size // chunk)  # one block per read
    assert all(len(b) in (10, 11) for b in blocks[:-1])
    got = Batch.concat(blocks)
    np.testing.assert_array_equal(got.features, x)
    np.testing.assert_array_equal(got.labels, y)
    # and iter_file_batches cuts them into batches without crossing a block
    sizes = [len(b) for b in iter_file_batches(path, 4, chunk_bytes=chunk)]
    assert sizes == [n for b in blocks for n in [4] * (len(b) // 4) + ([len(b) % 4] if len(b) % 4 else [])]


def test_rebatch_mixes_dense_and_sparse_into_csr():
    parts = [Batch(np.eye(2, dtype=np.float32)), Batch(sp.csr_matrix(np.eye(2, dtype=np.float32) * 2))]
    (out,) = list(rebatch(iter(parts), 4))
    assert out.is_sparse
    np.testing.assert_array_equal(out.dense(), np.vstack([np.eye(2), 2 * np.eye(2)]))


# ------------------------------------------------------------------------------------------ bounded memory


def test_memory_stays_about_one_chunk_plus_one_batch(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40_000, 25)).astype(np.float32)  # 4.6 MB on disk, ~112 bytes a record
    path = dense_file(tmp_path, "large.pbr", x)
    file_size = (tmp_path / "large.pbr").stat().st_size
    chunk, batch_size = 64 << 10, 256
    batch_bytes = batch_size * 25 * 4
    del x
    total = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for batch in iter_batches([path], batch_size=batch_size, chunk_bytes=chunk):
            total += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 40_000
    assert file_size > 60 * chunk
    # a few chunk-sized buffers (the read buffer, the decoded chunk, decoding temporaries) and a few
    # batches: far below the file size
    assert peak < 6 * chunk + 8 * batch_bytes, peak


# -------------------------------------------------------------------------------------------------- errors


def test_truncated_file_names_file_and_offset(tmp_path):
    data = tensor_codec.encode_dense(np.ones((100, 3), np.float32))
    rec = len(data) // 100
    path = write(tmp_path / "trunc.pbr", data[:-3])
    with pytest.raises(RecordIOError) as err:
        list(iter_batches([path], batch_size=10, chunk_bytes=128))
    assert err.value.source == path and err.value.offset == 99 * rec
    assert f"{path}: truncated record" in str(err.value)


def test_bad_magic_deep_in_a_file_names_its_offset(tmp_path):
    data = bytearray(tensor_codec.encode_dense(np.ones((100, 3), np.float32)))
    rec = len(data) // 100
    data[57 * rec + 1] ^= 0x55
    path = write(tmp_path / "bad.pbr", bytes(data))
    with pytest.raises(RecordIOError, match=rf"bad\.pbr: bad magic .* at byte offset {57 * rec}$"):
        list(iter_batches([path], batch_size=10, chunk_bytes=100))


def test_garbage_tail_names_its_offset(tmp_path):
    data = tensor_codec.encode_dense(np.ones((10, 3), np.float32))
    path = write(tmp_path / "tail.pbr", data + b"trailing junk")
    with pytest.raises(RecordIOError) as err:
        list(iter_batches([path], batch_size=3, chunk_bytes=64))
    assert err.value.offset == len(data) and "tail.pbr" in str(err.value)


def test_stream_ending_inside_a_multi_part_record(tmp_path):
    x = np.ones((5, 4), np.float32)
    x[4, 1] = MAGIC_F32
    data = tensor_codec.encode_dense(x)
    record_at = 4 * (len(tensor_codec.encode_dense(x[:1])))
    path = write(tmp_path / "cut.pbr", data[: record_at + 8 + 20])  # the whole first part, no more
    with pytest.raises(
        RecordIOError,
        match=rf"cut\.pbr: stream ends inside a multi-part record at byte offset "
        rf"{record_at}",
    ):
        list(iter_batches([path], batch_size=2, chunk_bytes=32))


def frame_all(payloads):
    return b"".join(recordio.frame(p) for p in payloads)


def good_payloads(n: int, d: int = 3) -> list[bytes]:
    return [records.make_record(np.full(d, i, np.float32), float(i)).SerializeToString() for i in range(n)]


def test_corrupt_protobuf_payload_names_file_and_record(tmp_path):
    payloads = good_payloads(40)
    payloads[23] = b"\x0a\xff\xff\xff\xff\x0f garbage"
    path = write(tmp_path / "corrupt.pbr", frame_all(payloads))
    with pytest.raises(ValueError, match=r"corrupt\.pbr: record 23 is not a valid aialgs\.data\.Record"):
        list(iter_batches([path], batch_size=8, chunk_bytes=100))
    with pytest.raises(ValueError, match=r"<buffer>: record 23 is not a valid"):
        tensor_codec.decode(frame_all(payloads))


def test_differing_dense_lengths_name_the_records(tmp_path):
    payloads = good_payloads(30)
    payloads[17] = records.make_record(np.ones(4, np.float32), 1.0).SerializeToString()
    path = write(tmp_path / "ragged.pbr", frame_all(payloads))
    # a whole chunk is decoded at once: the message names the chunk's first record and the one that differs
    with pytest.raises(
        ValueError,
        match=r"ragged\.pbr: dense records of differing lengths: record 0 has 3 values, "
        r"record 17 has 4",
    ):
        list(iter_batches([path], batch_size=8, chunk_bytes=1 << 20))
    with pytest.raises(ValueError, match=r"ragged\.pbr: .*: record (?!0 )\d+ has 3 values, record 17 has 4"):
        list(iter_batches([path], batch_size=8, chunk_bytes=300))  # indices count from the file's start
    with pytest.raises(ValueError, match="record 0 has 3 values, record 17 has 4"):
        tensor_codec.decode(frame_all(payloads))


def test_sparse_key_beyond_dimension_names_the_record(tmp_path):
    payloads = [records.make_record(np.ones(2, np.float32), keys=[1, 4], shape=[10]).SerializeToString()] * 12
    payloads[9] = records.make_record(np.ones(2, np.float32), keys=[1, 12], shape=[10]).SerializeToString()
    data = frame_all(payloads)
    with pytest.raises(ValueError, match=r"x\.pbr: record 9 has key 12 beyond dimension 10"):
        tensor_codec.decode(data, "x.pbr", feature_dim=10)
    path = write(tmp_path / "keys.pbr", data)
    with pytest.raises(ValueError, match=r"keys\.pbr: record 9 has key 12 beyond dimension 10"):
        list(iter_batches([path], batch_size=4, feature_dim=10, chunk_bytes=60))


def test_labels_present_on_some_records_only(tmp_path):
    payloads = good_payloads(10)
    payloads[6] = records.make_record(np.ones(3, np.float32)).SerializeToString()
    with pytest.raises(ValueError, match=r"f\.pbr: record 6 lacks a label but record 0 has one"):
        tensor_codec.decode(frame_all(payloads), "f.pbr")


def test_keys_beyond_int64_are_reported_not_wrapped():
    payloads = [
        records.make_record(np.ones(1, np.float32), keys=[k], shape=[10]).SerializeToString()
        for k in (3, 2**63 + 5)
    ]
    with pytest.raises(ValueError, match=rf"g\.pbr: record 1 has key {2**63 + 5} beyond dimension 10"):
        tensor_codec.decode(frame_all(payloads), "g.pbr")


def test_keys_ending_inside_a_varint_are_a_corrupt_record():
    good = records.make_record(np.ones(2, np.float32), keys=[1, 300], shape=[400]).SerializeToString()
    # the same record with its last key's final varint byte given a continuation bit
    bad = bytearray(good)
    at = good.index(bytes([0x12, 3, 1, 0xAC, 0x02]))  # keys field: [1, 300]
    bad[at + 4] |= 0x80
    with pytest.raises(ValueError, match=r"h\.pbr: record 1 is not a valid aialgs\.data\.Record"):
        tensor_codec.decode(frame_all([good, bytes(bad), good]), "h.pbr")


def test_a_huge_record_is_read_in_doubling_steps(tmp_path, monkeypatch):
    from algorithms import reader

    x = np.arange(2 * 250_000, dtype=np.float32).reshape(2, -1)  # two 1 MB records
    path = dense_file(tmp_path, "huge.pbr", x)
    calls = []
    real = reader.scan_frames
    monkeypatch.setattr(
        reader, "scan_frames", lambda buf, *a, **k: calls.append(len(buf)) or real(buf, *a, **k)
    )
    got = Batch.concat(list(iter_batches([path], batch_size=1, chunk_bytes=1000)))
    np.testing.assert_array_equal(got.features, x)
    assert len(calls) < 40  # re-scanning from the record head every 1000 bytes would take ~2000 calls
