"""The general recordIO-protobuf path, through the protobuf runtime: any Record, one at a time.

This is the reference the vectorized codec (:mod:`algorithms.tensor_codec`) must match byte for
byte, and the fallback it uses for records outside its common case (int32 tensors, other feature
keys, bytes values, uid/metadata/configuration).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp

from .batch import Batch
from .proto import Record, Value

_TENSOR_FIELD = {np.dtype(np.float32): "float32_tensor", np.dtype(np.float64): "float64_tensor",
                 np.dtype(np.int32): "int32_tensor"}
_FIELD_DTYPE = {field: dtype for dtype, field in _TENSOR_FIELD.items()}


def tensor_field(dtype) -> str:
    """The Value oneof field for a numpy dtype, as the SageMaker SDK resolves it (int64 narrows to int32)."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return "int32_tensor"
    try:
        return _TENSOR_FIELD[dt]
    except KeyError:
        raise ValueError(f"no recordIO-protobuf tensor type for dtype {dt}") from None


def set_tensor(value: Value, data, keys=None, shape=None, dtype=None) -> None:
    arr = np.asarray(data)
    field = tensor_field(dtype if dtype is not None else arr.dtype)
    tensor = getattr(value, field)
    tensor.SetInParent()
    tensor.values.extend(arr.reshape(-1).astype(_FIELD_DTYPE[field]).tolist())
    if keys is not None:
        tensor.keys.extend(int(k) for k in np.asarray(keys).reshape(-1))
    if shape is not None:
        tensor.shape.extend(int(s) for s in shape)


def make_record(features=None, label=None, *, keys=None, shape=None, feature_dtype=None, label_dtype=None,
                uid: str | None = None, metadata: str | None = None,
                configuration: str | None = None) -> Record:
    """One Record with ``features["values"]`` (dense, or sparse with ``keys`` + ``shape``) and
    ``label["values"]``."""
    record = Record()
    if features is not None:
        set_tensor(record.features["values"], features, keys, shape, feature_dtype)
    if label is not None:
        set_tensor(record.label["values"], np.atleast_1d(label), dtype=label_dtype)
    if uid is not None:
        record.uid = uid
    if metadata is not None:
        record.metadata = metadata
    if configuration is not None:
        record.configuration = configuration
    return record


def tensor_of(value: Value):
    """(field name, tensor message) of a Value; raises for bytes values."""
    which = value.WhichOneof("value")
    if which is None or which == "bytes":
        raise ValueError(f"value holds {which or 'nothing'}, not a numeric tensor")
    return which, getattr(value, which)


def batch_to_records(batch: Batch, feature_dtype=None, label_dtype=None) -> Iterator[Record]:
    x = batch.features
    dt = np.dtype(feature_dtype) if feature_dtype is not None else x.dtype
    for i in range(batch.num_rows):
        label = None if batch.labels is None else batch.labels[i]
        if sp.issparse(x):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            yield make_record(x.data[lo:hi], label, keys=x.indices[lo:hi], shape=[x.shape[1]],
                              feature_dtype=dt, label_dtype=label_dtype)
        else:
            yield make_record(x[i], label, feature_dtype=dt, label_dtype=label_dtype)


def records_to_batch(records: Iterable[Record], feature_dim: int | None = None, first_index: int = 0,
                     source: str = "<records>") -> Batch:
    """Rows of ``features["values"]`` / ``label["values"]`` from Records, dense or sparse.

    The result is dense when every record is dense and as long as the others, CSR otherwise.
    """
    rows: list[tuple[np.ndarray, np.ndarray | None, int | None]] = []
    labels: list[np.ndarray | None] = []
    dtype = None
    for i, record in enumerate(records, start=first_index):
        if "values" not in record.features:
            keys = ", ".join(sorted(map(str, record.features))) or "none"  # bytes if not UTF-8
            raise ValueError(f"{source}: record {i} has no features['values'] (feature keys: {keys})")
        field, tensor = tensor_of(record.features["values"])
        dt = _FIELD_DTYPE[field]
        dtype = dt if dtype is None else np.promote_types(dtype, dt)
        values = np.asarray(tensor.values, dtype=dt)
        if len(tensor.keys):
            if len(tensor.shape) != 1:
                raise ValueError(f"{source}: record {i} is sparse with shape {list(tensor.shape)}; "
                                 "a vector needs a 1-D shape")
            keys = np.asarray(tensor.keys, dtype=np.uint64)
            if len(keys) != len(values):
                raise ValueError(f"{source}: record {i} has {len(keys)} keys but {len(values)} values")
            rows.append((values, keys, int(tensor.shape[0])))
        elif len(tensor.shape) == 1 and len(values) == 0:
            rows.append((values, np.zeros(0, np.int64), int(tensor.shape[0])))
        else:
            rows.append((values, None, None))
        labels.append(_label_of(record, i, source))
    return _assemble(rows, labels, dtype or np.dtype(np.float32), feature_dim, first_index, source)


def _label_of(record: Record, i: int, source: str) -> np.ndarray | None:
    if "values" not in record.label:
        if len(record.label):
            raise ValueError(f"{source}: record {i} has labels {sorted(map(str, record.label))} but no "
                             "label['values']")
        return None
    field, tensor = tensor_of(record.label["values"])
    if len(tensor.keys):
        raise ValueError(f"{source}: record {i} has a sparse label; labels must be dense")
    return np.asarray(tensor.values, dtype=_FIELD_DTYPE[field])


def _assemble(rows, labels, dtype, feature_dim, first_index, source) -> Batch:
    sizes = {len(v) for v, k, _ in rows if k is None}
    dims = {d for _, k, d in rows if k is not None}
    n = len(rows)
    if not dims:
        if len(sizes) > 1:
            first = next(i for i, (v, _, _) in enumerate(rows) if len(v) != len(rows[0][0]))
            raise ValueError(f"{source}: dense records of differing lengths: record {first_index} has "
                             f"{len(rows[0][0])} values, record {first_index + first} has "
                             f"{len(rows[first][0])}")
        d = sizes.pop() if sizes else (feature_dim or 0)
        features = np.zeros((n, d), dtype=dtype)
        for i, (v, _, _) in enumerate(rows):
            features[i] = v
    else:
        d = max(dims | sizes) if feature_dim is None else feature_dim
        indptr = np.zeros(n + 1, dtype=np.int64)
        cols, vals = [], []
        for i, (v, k, _) in enumerate(rows):
            k = np.arange(len(v), dtype=np.int64) if k is None else k
            if len(k) and k.max() >= d:
                raise ValueError(f"{source}: record {first_index + i} has key {int(k.max())} "
                                 f"beyond dimension {d}")
            cols.append(k.astype(np.int64))
            vals.append(v.astype(dtype, copy=False))
            indptr[i + 1] = indptr[i] + len(k)
        features = sp.csr_matrix(
            (np.concatenate(vals) if vals else np.zeros(0, dtype), np.concatenate(cols) if cols else
             np.zeros(0, np.int64), indptr), shape=(n, d))
    return Batch(features, stack_labels(labels, first_index, source))


def stack_labels(labels: list[np.ndarray | None], first_index: int = 0, source: str = "<records>"):
    present = [lab is not None for lab in labels]
    if not any(present):
        return None
    if not all(present):
        i = present.index(not present[0])
        raise ValueError(f"{source}: record {first_index + i} {'has' if present[i] else 'lacks'} a label "
                         f"but record {first_index} {'has' if present[0] else 'lacks'} one")
    widths = {len(lab) for lab in labels}
    if len(widths) > 1:
        raise ValueError(f"{source}: labels of differing lengths {sorted(widths)}")
    dtype = np.result_type(*[lab.dtype for lab in labels])
    stacked = np.array(labels, dtype=dtype) if labels else np.zeros((0, 1), dtype)
    return stacked[:, 0] if widths == {1} else stacked
