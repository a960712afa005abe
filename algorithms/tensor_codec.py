"""Vectorized recordIO-protobuf for the common case: whole batches of vectors, no Python step per record.

The common case is what SageMaker's SDK and sagemaker-spark write: ``features["values"]`` holding a
dense or sparse float32/float64 vector (sparse: ``keys`` + 1-D ``shape``) and optionally
``label["values"]`` holding a dense scalar or vector. The bytes produced are exactly those the
protobuf runtime serializes for the same Record (see :mod:`algorithms.records`), framed as dmlc
RecordIO. Anything outside the common case is decoded through the protobuf runtime instead.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import varint
from .batch import Batch
from .recordio import MAGIC, MAX_RECORD_LENGTH, Frames, frame, scan_frames

_VALUE_TAG = {np.dtype(np.float32): 0x12, np.dtype(np.float64): 0x1A}  # Value.float32_tensor / float64_tensor
_TAG_DTYPE = {tag: dtype for dtype, tag in _VALUE_TAG.items()}
_KEY = b"\x0a\x06values"  # map entry field 1 (key) = "values"
_KEY_ARR = np.frombuffer(_KEY, dtype=np.uint8)


def _value_tag(dtype) -> int:
    try:
        return _VALUE_TAG[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"the vectorized codec writes float32 or float64, not {np.dtype(dtype)}") from None


def _field(tag: int, body_len: int) -> bytes:
    return bytes([tag]) + varint.encode_scalar(body_len)


def _dense_tensor_prefix(count: int, itemsize: int) -> bytes:
    """Bytes of a packed ``values`` field before its data (nothing for an empty vector)."""
    return _field(0x0A, count * itemsize) if count else b""


def _entry_prefix(record_field: int, value_tag: int, tensor_len: int) -> bytes:
    """``record_field`` map entry {key: "values", value: Value{<tensor> of tensor_len bytes}}, up to the
    tensor body."""
    value_len = 1 + varint.length_scalar(tensor_len) + tensor_len
    entry_len = len(_KEY) + 1 + varint.length_scalar(value_len) + value_len
    return (_field(record_field, entry_len) + _KEY + _field(0x12, value_len) + _field(value_tag, tensor_len))


def _dense_entry(record_field: int, count: int, dtype) -> tuple[bytes, int]:
    """Prefix bytes of a dense-vector map entry and the byte length of its data."""
    dt = np.dtype(dtype)
    data_len = count * dt.itemsize
    inner = _dense_tensor_prefix(count, dt.itemsize)
    return _entry_prefix(record_field, _value_tag(dt), len(inner) + data_len) + inner, data_len


def _label_matrix(labels: np.ndarray, n: int) -> np.ndarray:
    """Labels as a little-endian ``(n, k)`` matrix: ``(n,)`` is one scalar label per record."""
    y = np.asarray(labels)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2:
        raise ValueError(f"labels must have shape (n,) or (n, k), got {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{n} feature rows but {y.shape[0]} labels")
    return np.ascontiguousarray(y, dtype=y.dtype.newbyteorder("<"))


def encode_dense(features: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    """Frame one record per row of a dense ``(n, d)`` float32/float64 matrix, with optional labels.

    Labels are ``(n,)`` (a scalar per record) or ``(n, k)``; their dtype picks their tensor type, as
    the SageMaker SDK does.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix, got shape {x.shape}")
    n, d = x.shape
    x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
    feat_prefix, feat_len = _dense_entry(0x0A, d, x.dtype)
    pieces: list[tuple[bytes, np.ndarray]] = [(feat_prefix, x.view(np.uint8).reshape(n, feat_len))]
    if labels is not None:
        y = _label_matrix(labels, n)
        label_prefix, label_len = _dense_entry(0x12, y.shape[1], y.dtype)
        pieces.append((label_prefix, y.view(np.uint8).reshape(n, label_len)))
    return frame_fixed_layout(pieces, n)


def frame_fixed_layout(pieces: list[tuple[bytes, np.ndarray]], n: int) -> bytes:
    """Frame ``n`` records that share one layout: each piece is constant prefix bytes then a per-row
    ``(n, k)`` uint8 block. Every record is one row of an ``(n, stride)`` matrix; rows whose payload holds
    the magic word are re-framed as multi-part records."""
    payload_len = sum(len(p) + a.shape[1] for p, a in pieces)
    if payload_len > MAX_RECORD_LENGTH:
        raise ValueError(f"a record of {payload_len} bytes exceeds the RecordIO limit of {MAX_RECORD_LENGTH}")
    stride = 8 + payload_len + (-payload_len & 3)
    out = np.zeros((n, stride), dtype=np.uint8)
    out[:, :8] = np.frombuffer(np.array([MAGIC, payload_len], dtype="<u4").tobytes(), dtype=np.uint8)
    at = 8
    for prefix, data in pieces:
        out[:, at : at + len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        at += len(prefix)
        out[:, at : at + data.shape[1]] = data
        at += data.shape[1]
    return _escape_rows(out, payload_len)


def _escape_rows(out: np.ndarray, payload_len: int) -> bytes:
    """Records are rows of ``out``; re-frame (split into parts) any whose payload holds the magic."""
    words = out.view("<u4")[:, 2 : 2 + payload_len // 4]
    hit = np.flatnonzero((words == MAGIC).any(axis=1)) if words.shape[1] else np.zeros(0, np.int64)
    if not len(hit):
        return out.tobytes()
    chunks, prev = [], 0
    for i in hit:
        chunks.append(out[prev:i].tobytes())
        chunks.append(frame(out[i, 8 : 8 + payload_len].tobytes()))
        prev = i + 1
    chunks.append(out[prev:].tobytes())
    return b"".join(chunks)


def encode_sparse(matrix: sp.csr_matrix, labels: np.ndarray | None = None,
                  dense_rows: np.ndarray | None = None) -> bytes:
    """Frame one sparse record (``keys`` = column indices, ``shape = [ncols]``) per CSR row.

    Each row's entries are written in the order the CSR holds them (sorted or not, explicit zeros
    included), as the SageMaker SDK writes them. ``dense_rows`` marks rows to write as dense records
    instead (their CSR row must hold every column), for columns that mix dense and sparse vectors, as
    sagemaker-spark writes them.
    """
    m = sp.csr_matrix(matrix)
    n, dim = m.shape
    if m.nnz and (int(m.indices.min()) < 0 or int(m.indices.max()) >= dim):
        bad = int(np.flatnonzero((m.indices < 0) | (m.indices >= dim))[0])
        row = int(np.searchsorted(m.indptr, bad, side="right")) - 1
        raise ValueError(f"row {row} has column index {int(m.indices[bad])} outside [0, {dim})")
    data = np.ascontiguousarray(m.data, dtype=m.data.dtype.newbyteorder("<"))
    s = data.dtype.itemsize
    tag = _value_tag(data.dtype)
    nnz = np.diff(m.indptr).astype(np.int64)
    sparse_rows = np.ones(n, bool) if dense_rows is None else ~np.asarray(dense_rows, bool)
    if dense_rows is not None and (nnz[~sparse_rows] != dim).any():
        raise ValueError("rows marked dense must hold every column")
    has = nnz > 0
    has_keys = has & sparse_rows
    keyed = np.repeat(has_keys, nnz)
    key_mat, key_lens = varint.encode(m.indices[keyed].astype(np.uint64))
    key_counts = np.where(has_keys, nnz, 0)
    key_len_cum = np.concatenate([[0], np.cumsum(key_lens)])
    key_first = np.cumsum(key_counts) - key_counts
    kb = key_len_cum[key_first + key_counts] - key_len_cum[key_first]
    vb = nnz * s
    shape_field = bytes([0x1A]) + varint.encode_scalar(varint.length_scalar(dim)) + varint.encode_scalar(dim)
    tlen = (np.where(has, 1 + varint.length(vb) + vb, 0) + np.where(has_keys, 1 + varint.length(kb) + kb, 0)
            + np.where(sparse_rows, len(shape_field), 0))
    vlen = 1 + varint.length(tlen) + tlen
    elen = len(_KEY) + 1 + varint.length(vlen) + vlen
    flen = 1 + varint.length(elen) + elen
    label_prefix, label_len, y = b"", 0, None
    if labels is not None:
        y = _label_matrix(labels, n)
        label_prefix, label_len = _dense_entry(0x12, y.shape[1], y.dtype)
    plen = flen + len(label_prefix) + label_len
    if n and plen.max() > MAX_RECORD_LENGTH:
        raise ValueError(f"a record of {int(plen.max())} bytes exceeds the RecordIO limit of "
                         f"{MAX_RECORD_LENGTH}")
    rlen = 8 + plen + (-plen & 3)
    starts = (np.cumsum(rlen) - rlen).astype(np.int64)
    out = np.zeros(int(rlen.sum()), dtype=np.uint8)
    w = _Writer(out, starts)
    w.u32(np.full(n, MAGIC, np.uint32))
    w.u32(plen.astype(np.uint32))
    w.byte(0x0A)
    w.varint(elen)
    w.const(_KEY + b"\x12")
    w.varint(vlen)
    w.byte(tag)
    w.varint(tlen)
    w.byte(0x0A, has)
    w.varint(vb, has)
    w.items(data, nnz)
    w.byte(0x12, has_keys)
    w.varint(kb, has_keys)
    w.packed_varints(key_mat, key_lens, key_counts, kb)
    w.const(shape_field, sparse_rows)
    if y is not None:
        w.const(label_prefix)
        w.items(y.reshape(-1), np.full(n, y.shape[1], np.int64))
    if (w.pos != starts + 8 + plen).any():
        raise AssertionError("sparse encoder layout mismatch")
    return _escape_var_rows(out, starts, plen)


class _Writer:
    """Writes the same field into every record at once; ``pos`` is each record's write position."""

    def __init__(self, out: np.ndarray, starts: np.ndarray):
        self.out, self.pos = out, starts.copy()

    def const(self, data: bytes, mask=None) -> None:
        arr = np.frombuffer(data, dtype=np.uint8)
        pos = self.pos if mask is None else self.pos[mask]
        self.out[pos[:, None] + np.arange(len(arr))] = arr
        if mask is None:
            self.pos += len(arr)
        else:
            self.pos[mask] += len(arr)

    def byte(self, value: int, mask=None) -> None:
        pos = self.pos if mask is None else self.pos[mask]
        self.out[pos] = value
        if mask is None:
            self.pos += 1
        else:
            self.pos[mask] += 1

    def u32(self, values: np.ndarray) -> None:
        raw = values.astype("<u4").view(np.uint8).reshape(-1, 4)
        self.out[self.pos[:, None] + np.arange(4)] = raw
        self.pos += 4

    def varint(self, values: np.ndarray, mask=None) -> None:
        vals = values if mask is None else values[mask]
        pos = self.pos if mask is None else self.pos[mask]
        mat, lens = varint.encode(vals)
        keep = np.arange(mat.shape[1]) < lens[:, None]
        self.out[(pos[:, None] + np.arange(mat.shape[1]))[keep]] = mat[keep]
        if mask is None:
            self.pos += lens
        else:
            self.pos[mask] += lens

    def items(self, values: np.ndarray, counts: np.ndarray) -> None:
        """Write ``counts[i]`` consecutive items of ``values`` (in row order) into record i."""
        size = values.dtype.itemsize
        before = (np.cumsum(counts) - counts) * size  # bytes of the items of earlier records
        dest = np.repeat(self.pos - before, counts) + np.arange(len(values)) * size
        scatter(self.out, dest, values.view(f"<u{size}"))
        self.pos += counts * size

    def packed_varints(self, mat: np.ndarray, lens: np.ndarray, counts: np.ndarray, byte_counts: np.ndarray):
        """Write each record's ``counts[i]`` varints (rows of ``mat``, ``lens`` bytes each) back to back."""
        before = np.cumsum(lens) - lens  # bytes of all earlier varints
        first = (np.cumsum(counts) - counts)[counts > 0]
        dest = np.repeat(self.pos[counts > 0] - before[first], counts[counts > 0]) + before
        # Every varint is written at full width, last byte column first: the bytes a short varint spills
        # past its end are overwritten by the next varint's lower columns, or by the field after the run
        # (the shape field, which is always longer than the spill).
        for j in reversed(range(mat.shape[1])):
            self.out[dest + j] = mat[:, j]
        self.pos += byte_counts


def scatter(out: np.ndarray, dest: np.ndarray, items: np.ndarray) -> None:
    """``out[dest[i] : dest[i] + size] = items[i]`` for byte offsets that need not be aligned.

    One byte column at a time: ``size`` plain fancy-index writes beat grouping the offsets by alignment.
    """
    size = items.dtype.itemsize
    columns = np.ascontiguousarray(items).view(np.uint8).reshape(-1, size)
    for j in range(size):
        out[dest + j] = columns[:, j]


def _escape_var_rows(out: np.ndarray, starts: np.ndarray, plen: np.ndarray) -> bytes:
    words = out.view("<u4")
    hits = np.flatnonzero(words == MAGIC) * 4
    if len(hits) == len(starts):  # only the record heads
        return out.tobytes()
    rec = np.searchsorted(starts, hits, side="right") - 1
    inside = (hits >= starts[rec] + 8) & (hits + 4 <= starts[rec] + 8 + (plen[rec] & ~3))
    bad = np.unique(rec[inside])
    if not len(bad):
        return out.tobytes()
    ends = np.concatenate([starts[1:], [len(out)]])
    chunks, prev = [], 0
    for i in bad:
        chunks.append(out[prev : starts[i]].tobytes())
        chunks.append(frame(out[starts[i] + 8 : starts[i] + 8 + plen[i]].tobytes()))
        prev = ends[i]
    chunks.append(out[prev:].tobytes())
    return b"".join(chunks)


def encode_batch(batch: Batch) -> bytes:
    if batch.is_sparse:
        return encode_sparse(batch.features, batch.labels)
    return encode_dense(batch.features, batch.labels)


# ---------------------------------------------------------------------------------------------- decoding


class _Unsupported(Exception):
    """The records are outside the vectorized common case; decode them through the protobuf runtime."""


def decode(buf, source: str = "<buffer>", feature_dim: int | None = None, base_offset: int = 0) -> Batch:
    """All records of a buffer of framed recordIO-protobuf as one Batch."""
    return decode_frames(scan_frames(buf, source, base_offset), source, feature_dim)


def decode_frames(frames: Frames, source: str = "<buffer>", feature_dim: int | None = None,
                  first_index: int = 0) -> Batch:
    try:
        return _decode_vectorized(frames, source, feature_dim, first_index)
    except _Unsupported:
        from .proto import Record
        from .records import records_to_batch

        records = []
        for i in range(len(frames)):
            record = Record()
            try:
                record.ParseFromString(frames.payload(i))
            except Exception as exc:
                raise ValueError(f"{source}: record {first_index + i} is not a valid aialgs.data.Record: "
                                 f"{exc}") from None
            records.append(record)
        return records_to_batch(records, feature_dim, first_index, source)


def _decode_vectorized(frames: Frames, source: str, feature_dim: int | None, first_index: int) -> Batch:
    n = len(frames)
    if n == 0:
        return Batch(np.zeros((0, feature_dim or 0), np.float32))
    uniform = _decode_uniform(frames)
    if uniform is not None:
        return uniform
    lo, hi = int(frames.starts.min()), int((frames.starts + frames.lengths).max())
    buf = np.concatenate([frames.data[lo:hi], np.zeros(16, np.uint8)])
    start = frames.starts - lo
    return _decode_lockstep(buf, start, start + frames.lengths, source, feature_dim, first_index)


def _decode_uniform(frames: Frames) -> Batch | None:
    """Dense records sharing one layout (as a dense writer makes them) are columns of a strided view.

    The first record's layout is parsed once; every other record must hold the same bytes outside the
    value regions, which makes its layout the same.
    """
    uniform = frames.uniform_stride()
    if uniform is None:
        return None
    size, stride = uniform
    n, starts = len(frames), frames.starts
    first = np.concatenate([frames.data[starts[0] : starts[0] + size], np.zeros(varint.MAX_BYTES, np.uint8)])
    try:
        regions = _dense_layout(first, size)
    except _Unsupported:
        return None
    if regions is None:
        return None
    rows = np.lib.stride_tricks.as_strided(frames.data[starts[0] :], shape=(n, size), strides=(stride, 1),
                                           writeable=False)
    edges = [0, *(x for at, length, _ in regions for x in (at, at + length)), size]
    for lo, hi in zip(edges[::2], edges[1::2], strict=True):
        if hi > lo and not (rows[:, lo:hi] == first[lo:hi]).all():
            return None
    # .copy(): the batch never shares memory with the input buffer, which readers reuse.
    columns = [rows[:, at : at + length].copy().view(dtype.newbyteorder("<")).astype(dtype, copy=False)
               for at, length, dtype in regions]
    labels = None
    if len(columns) > 1:
        labels = columns[1][:, 0] if columns[1].shape[1] == 1 else columns[1]
    return Batch(columns[0], labels)


def _dense_layout(first: np.ndarray, size: int) -> list[tuple[int, int, np.dtype]] | None:
    """(offset, length, dtype) of the feature values and of the label values, if any, in one dense record;
    None for a sparse record or one whose value bytes are not whole items."""
    pos, end = np.zeros(1, np.int64), np.array([size])
    feat, pos = _parse_entry(first, pos, end, 0x0A)
    entries = [feat]
    if pos[0] < size and first[pos[0]] == 0x12:
        label, pos = _parse_entry(first, pos, end, 0x12)
        if label["keys_len"][0] or label["shape_len"][0]:
            return None
        entries.append(label)
    _skip_strings(first, pos, end)
    if feat["keys_len"][0] or (feat["shape_len"][0] and not feat["values_len"][0]):
        return None
    regions = [(int(e["values_start"][0]), int(e["values_len"][0]), e["dtype"]) for e in entries]
    if any(length % dtype.itemsize for _, length, dtype in regions):
        return None
    return regions


def _decode_lockstep(buf, start, end, source, feature_dim, first_index) -> Batch:
    feat, pos = _parse_entry(buf, start, end, 0x0A)
    has_label = (pos < end) & (buf[np.minimum(pos, len(buf) - 1)] == 0x12)
    label = None
    if has_label.any():
        if not has_label.all():
            raise _Unsupported  # the records path names the record that differs
        label, pos = _parse_entry(buf, pos, end, 0x12)
        if label["keys_len"].any() or label["shape_len"].any():
            raise _Unsupported
    pos = _skip_strings(buf, pos, end)
    features = _features(buf, feat, source, feature_dim, first_index)
    labels = None
    if label is not None:
        labels = _dense_rows(buf, label, source, first_index, "label")
        if labels.shape[1] == 1:
            labels = labels[:, 0]
    return Batch(features, labels)


def _read_length(buf: np.ndarray, at: np.ndarray,
                 live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Length varints at ``at`` (those where ``live``) as int64, and their byte counts.

    A varint over 10 bytes or a length beyond the buffer is corrupt or foreign data: the protobuf
    runtime then names the record. (Unchecked, huge lengths wrap to negative int64 positions.)
    """
    value, count = varint.read_at(buf, at)
    bad = (count == 0) | (value > np.uint64(len(buf)))
    if (bad if live is None else bad & live).any():
        raise _Unsupported
    return np.where(bad, 0, value).astype(np.int64), count


def _parse_entry(buf: np.ndarray, pos: np.ndarray, end: np.ndarray, record_field: int):
    """Parse one ``{"values": Value{float tensor}}`` map entry at every position, in lockstep.

    Every position stays within its record (or a few bytes past it, inside the buffer's padding), so
    corrupt records can't make the parser index outside the buffer.
    """
    if not (buf[pos] == record_field).all():
        raise _Unsupported
    entry_len, c = _read_length(buf, pos + 1)
    pos = pos + 1 + c
    entry_end = pos + entry_len
    if (entry_end > end).any() or (pos + len(_KEY) + 2 > entry_end).any():
        raise _Unsupported
    if not (buf[pos[:, None] + np.arange(len(_KEY))] == _KEY_ARR).all():
        raise _Unsupported
    if not (buf[pos + len(_KEY)] == 0x12).all():
        raise _Unsupported
    value_len, c = _read_length(buf, pos + len(_KEY) + 1)
    pos = pos + len(_KEY) + 1 + c
    if (pos + value_len != entry_end).any() or (pos + 2 > entry_end).any():
        raise _Unsupported
    tags = buf[pos]
    tag = int(tags[0])
    if tag not in _TAG_DTYPE or not (tags == tag).all():
        raise _Unsupported
    tensor_len, c = _read_length(buf, pos + 1)
    pos = pos + 1 + c
    tensor_end = pos + tensor_len
    if (tensor_end != entry_end).any():
        raise _Unsupported
    regions = {"dtype": _TAG_DTYPE[tag]}
    for name, field_tag in (("values", 0x0A), ("keys", 0x12), ("shape", 0x1A)):
        has = (pos < tensor_end) & (buf[pos] == field_tag)
        flen, c = _read_length(buf, pos + 1, has)
        body = pos + 1 + c
        regions[f"{name}_start"] = np.where(has, body, 0)
        regions[f"{name}_len"] = np.where(has, flen, 0)
        pos = np.where(has, body + flen, pos)
        if (pos > tensor_end).any():
            raise _Unsupported
    if (pos != tensor_end).any():
        raise _Unsupported  # unpacked repeated fields or unknown tensor fields
    if ((pos < end) & (buf[pos] == record_field)).any():
        raise _Unsupported  # more than one key in the map
    return regions, pos


def _skip_strings(buf: np.ndarray, pos: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Step over the optional uid / metadata / configuration strings (fields 3, 4, 5)."""
    while True:
        more = pos < end
        if not more.any():
            break
        tags = buf[pos[more]]
        if not np.isin(tags, (0x1A, 0x22, 0x2A)).all():
            raise _Unsupported
        flen, c = _read_length(buf, pos[more] + 1)
        pos = pos.copy()
        pos[more] = pos[more] + 1 + c + flen
    if (pos != end).any():
        raise _Unsupported
    return pos


def _gather(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenate ``buf[starts[i] : starts[i] + lens[i]]`` for every i (a new array)."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.uint8)
    if not lens.all():  # an absent field has start 0, wherever its record is
        starts, lens = starts[lens > 0], lens[lens > 0]
    n, ends = len(starts), starts + lens
    lo, hi = int(starts[0]), int(ends[-1])
    if 8 * total > hi - lo and (starts[1:] >= ends[:-1]).all():
        # Most of the span, in order and apart (as the values or keys of successive records are): keep the
        # bytes under a mask of alternating keep / skip runs, which numpy builds and applies at memory speed.
        runs = np.empty(2 * n - 1, np.int64)
        runs[0::2] = lens
        runs[1::2] = starts[1:] - ends[:-1]
        return buf[lo:hi][np.repeat(np.arange(2 * n - 1) % 2 == 0, runs)]
    if (lens == lens[0]).all():
        return buf[(starts[:, None] + np.arange(int(lens[0]))).reshape(-1)]
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return buf[offsets + np.arange(total)]


def _dense_rows(buf, region, source, first_index, what) -> np.ndarray:
    dtype = region["dtype"]
    lens = region["values_len"]
    if (lens % dtype.itemsize).any():
        raise _Unsupported
    counts = lens // dtype.itemsize
    if (counts != counts[0]).any():
        i = int(np.flatnonzero(counts != counts[0])[0])
        raise ValueError(f"{source}: {what} of differing lengths: record {first_index} has "
                         f"{counts[0]} values, "
                         f"record {first_index + i} has {counts[i]}")
    data = _gather(buf, region["values_start"], lens)
    return data.view(dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(len(lens), int(counts[0]))


def _segment_index(counts: np.ndarray) -> np.ndarray:
    """Position of each element within its segment, for segments of the given sizes laid end to end."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _features(buf, region, source, feature_dim, first_index):
    dtype = region["dtype"]
    lens = region["values_len"]
    if (lens % dtype.itemsize).any():
        raise _Unsupported
    counts = lens // dtype.itemsize
    has_keys, has_shape = region["keys_len"] > 0, region["shape_len"] > 0
    sparse = has_keys | (has_shape & (counts == 0))
    if not sparse.any():
        return _dense_rows(buf, region, source, first_index, "dense records")
    if (has_keys & ~has_shape).any():
        i = int(np.flatnonzero(has_keys & ~has_shape)[0])
        raise ValueError(f"{source}: record {first_index + i} is sparse but has no shape")
    dims, c = varint.read_at(buf, region["shape_start"])
    if (has_shape & (c != region["shape_len"])).any():
        raise _Unsupported  # multi-dimensional shapes
    keys = _keys(buf, region["keys_start"], region["keys_len"], counts, source, first_index)
    if feature_dim is not None:
        dim = feature_dim
    else:
        dim = max(int(dims[sparse].max()), int(counts[~sparse].max()) if (~sparse).any() else 0)
    data = _gather(buf, region["values_start"], lens).view(dtype.newbyteorder("<")).astype(dtype, copy=False)
    if sparse.all():
        col = keys
    else:  # dense records among sparse ones: their columns are 0, 1, ...
        col = _segment_index(counts).astype(np.uint64)
        col[np.repeat(has_keys, counts)] = keys
    if len(col) and col.max() >= dim:
        bad = int(np.argmax(col >= dim))
        i = int(np.searchsorted(np.cumsum(counts), bad, side="right"))
        raise ValueError(f"{source}: record {first_index + i} has key {int(col[bad])} beyond dimension {dim}")
    index_dtype = np.int32 if max(dim, len(col)) <= np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(len(counts) + 1, index_dtype)
    np.cumsum(counts, out=indptr[1:])
    same_width = col.dtype.itemsize == np.dtype(index_dtype).itemsize
    indices = col.view(index_dtype) if same_width else col.astype(index_dtype)  # keys < dim: same values
    return sp.csr_matrix((data, indices, indptr), shape=(len(counts), dim))


def _keys(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, counts: np.ndarray, source: str,
          first_index: int) -> np.ndarray:
    """The packed varint keys of every record, back to back (as :func:`varint.decode_stream` gives them);
    each record with keys must have as many as ``counts`` says."""
    key_bytes = _gather(buf, starts, lens)
    keyed = lens > 0
    if not keyed.any():
        return np.zeros(0, np.uint32)
    bounds = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=bounds[1:])
    if (key_bytes[bounds[1:][keyed] - 1] >= 0x80).any():
        raise _Unsupported  # a record's keys end inside a varint: the protobuf runtime names the record
    ends = np.flatnonzero(key_bytes < 0x80)
    # Every record's keys end at its region's last byte, so the counts agree when, for each record with
    # keys, the key ending there is the one its running count of values says (and the totals agree).
    want = np.where(keyed, counts, 0)
    last = np.cumsum(want)[keyed] - 1
    if len(ends) != last[-1] + 1 or (want[keyed] == 0).any() or (ends[last] != bounds[1:][keyed] - 1).any():
        got = np.diff(np.searchsorted(ends, bounds))
        i = int(np.flatnonzero(got != want)[0])
        raise ValueError(f"{source}: record {first_index + i} has {got[i]} keys but {counts[i]} values")
    try:
        return varint.decode_stream(key_bytes, ends)
    except ValueError:
        raise _Unsupported from None
