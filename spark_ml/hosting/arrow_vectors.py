"""Spark ML vectors in Arrow (what ``mapInArrow`` hands over) to numpy matrices and back, vectorized.

A ``VectorUDT`` column arrives as ``struct<type: int8, size: int32, indices: list<int32>, values:
list<double>>`` (type 1 dense, 0 sparse). Plain ``array<float|double>`` columns work too.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

VECTOR_STRUCT = pa.struct(
    [
        pa.field("type", pa.int8(), nullable=False),
        pa.field("size", pa.int32()),
        pa.field("indices", pa.list_(pa.int32())),
        pa.field("values", pa.list_(pa.float64())),
    ]
)


def _combine(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def to_matrix(column, name: str = "features") -> np.ndarray | sp.csr_matrix:
    """A dense float32 ``(n, d)`` matrix when every vector is dense, else a CSR matrix."""
    column = _combine(column)
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"column {name} is null in row {row} of a batch; drop or fill null vectors first")
    if pa.types.is_struct(column.type):
        return _from_vector_struct(column, name)
    if (
        pa.types.is_list(column.type)
        or pa.types.is_large_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
    ):
        lengths = _lengths(column)
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError(
                f"column {name}: arrays of differing lengths {sorted(set(lengths.tolist()))[:5]}"
            )
        flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return flat.reshape(len(column), int(lengths[0]) if len(lengths) else 0)
    raise ValueError(f"column {name} has type {column.type}; use a Spark ML vector or an array of numbers")


def _lengths(lists) -> np.ndarray:
    if pa.types.is_fixed_size_list(lists.type):
        return np.full(len(lists), lists.type.list_size, np.int64)
    return lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def _from_vector_struct(column: pa.StructArray, name: str):
    kinds_arr, sizes_arr, indices_arr, values_arr = column.flatten()
    kinds = kinds_arr.to_numpy(zero_copy_only=False)
    values = values_arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    lengths = _lengths(values_arr)
    n = len(column)
    if (kinds == 1).all():
        if n and (lengths != lengths[0]).any():
            raise ValueError(
                f"column {name}: dense vectors of differing sizes {sorted(set(lengths.tolist()))[:5]}"
            )
        return values.reshape(n, int(lengths[0]) if n else 0)
    sparse = kinds == 0
    sizes = sizes_arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    dims = np.where(sparse, sizes, lengths)
    if (dims != dims[0]).any():
        row = int(np.flatnonzero(dims != dims[0])[0])
        raise ValueError(
            f"column {name}: vector sizes differ ({int(dims[0])} in row 0, {int(dims[row])} in row {row})"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    cols = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    on_sparse = np.repeat(sparse, lengths)
    cols[on_sparse] = indices_arr.filter(pa.array(sparse)).flatten().to_numpy(zero_copy_only=False)
    matrix = sp.csr_matrix((values, cols, offsets), shape=(n, int(dims[0])))
    matrix.sort_indices()
    return matrix


def dense_vectors(values: np.ndarray, valid: np.ndarray | None = None) -> pa.StructArray:
    """A ``(n, k)`` matrix as a column of dense Spark ML vectors (null where ``valid`` is False)."""
    values = np.asarray(values, np.float64)
    n, k = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    lists = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))
    mask = None if valid is None else pa.array(~np.asarray(valid, bool))
    return pa.StructArray.from_arrays(
        [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()), pa.nulls(n, pa.list_(pa.int32())), lists],
        fields=list(VECTOR_STRUCT),
        mask=mask,
    )
