"""Spark ML vectors as Arrow columns, converted to and from numpy/CSR without a Python step per row.

Spark sends a ``VectorUDT`` column to Python as its SQL type, a struct
``<type: int8, size: int32, indices: list<int32>, values: list<double>>`` (type 0 = sparse, 1 = dense),
and an ``array<float|double>`` column as an Arrow list. Everything here works on whole columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

VECTOR_FIELDS = [
    pa.field("type", pa.int8(), nullable=False),
    pa.field("size", pa.int32()),
    pa.field("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
    pa.field("values", pa.list_(pa.field("element", pa.float64(), nullable=False))),
]
VECTOR_TYPE = pa.struct(VECTOR_FIELDS)


class ColumnError(ValueError):
    """Bad data in a column; names the column and the row (position within its Arrow batch/partition)."""


@dataclass
class VectorColumn:
    """A column of vectors: a dense matrix, or CSR plus which rows were dense vectors."""

    dense: np.ndarray | None = None
    csr: sp.csr_matrix | None = None
    dense_rows: np.ndarray | None = None  # bool per row, for CSR columns that mix Dense and Sparse vectors

    @property
    def num_rows(self) -> int:
        return (self.dense if self.dense is not None else self.csr).shape[0]

    @property
    def dim(self) -> int:
        return (self.dense if self.dense is not None else self.csr).shape[1]

    @property
    def matrix(self):
        return self.dense if self.dense is not None else self.csr


def _list_parts(arr: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets starting at 0, flat child values) of a possibly sliced list array."""
    offsets = arr.offsets.to_numpy().astype(np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    values = arr.values.slice(start, stop - start).to_numpy(zero_copy_only=False)
    return offsets - start, values


def _first_null(arr: pa.Array) -> int:
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def vectors_from_arrow(arr: pa.Array, column: str, dtype=np.float32, row_offset: int = 0) -> VectorColumn:
    """A VectorUDT struct column or an ``array<numeric>`` column as a dense matrix or CSR."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ColumnError(f"column {column!r} is null at row {row_offset + _first_null(arr)}")
    if pa.types.is_struct(arr.type):
        return _from_vector_struct(arr, column, np.dtype(dtype), row_offset)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        return VectorColumn(dense=_dense_from_list(arr, column, np.dtype(dtype), row_offset, "array"))
    raise ColumnError(f"column {column!r} has type {arr.type}; expected a vector (VectorUDT) or array<float|double>")


def _dense_from_list(arr, column: str, dtype: np.dtype, row_offset: int, what: str) -> np.ndarray:
    offsets, values = _list_parts(arr)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    if n and (counts != counts[0]).any():
        i = int(np.flatnonzero(counts != counts[0])[0])
        raise ColumnError(f"column {column!r}: {what}s of differing length: row {row_offset} has {counts[0]} "
                          f"values, row {row_offset + i} has {counts[i]}")
    if values.dtype == object or (len(values) and not np.issubdtype(values.dtype, np.number)):
        raise ColumnError(f"column {column!r} holds non-numeric or null array elements")
    d = int(counts[0]) if n else 0
    return np.asarray(values, dtype=dtype).reshape(n, d)


def _from_vector_struct(arr: pa.StructArray, column: str, dtype: np.dtype, row_offset: int) -> VectorColumn:
    kinds = arr.field("type").to_numpy(zero_copy_only=False)
    values_arr = arr.field("values")
    if (kinds == 1).all():
        return VectorColumn(dense=_dense_from_list(values_arr, column, dtype, row_offset, "vector"))
    offsets, values = _list_parts(values_arr)
    counts = np.diff(offsets)
    sparse = kinds == 0
    sizes = arr.field("size").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    row_dims = np.where(sparse, sizes, counts)
    if len(row_dims) and (row_dims != row_dims[0]).any():
        i = int(np.flatnonzero(row_dims != row_dims[0])[0])
        raise ColumnError(f"column {column!r}: vectors of differing length: row {row_offset} has size "
                          f"{int(row_dims[0])}, row {row_offset + i} has size {int(row_dims[i])}")
    dim = int(row_dims[0]) if len(row_dims) else 0
    ind_offsets, indices = _list_parts(arr.field("indices"))
    # Dense rows carry no indices: their columns are 0..count-1.
    cols = np.empty(len(values), dtype=np.int32)
    row_start = offsets[:-1]
    if (~sparse).any():
        c = counts[~sparse]
        within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        cols[np.repeat(row_start[~sparse], c) + within] = within
    if sparse.any():
        c = counts[sparse]
        within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        cols[np.repeat(row_start[sparse], c) + within] = indices[np.repeat(ind_offsets[:-1][sparse], c) + within]
    csr = sp.csr_matrix((np.asarray(values, dtype=dtype), cols, offsets), shape=(len(kinds), dim))
    return VectorColumn(csr=csr, dense_rows=~sparse)


def labels_from_arrow(arr: pa.Array, column: str, dtype=np.float32, row_offset: int = 0) -> np.ndarray:
    """A numeric scalar column as ``(n,)``, or a vector/array column as ``(n, k)``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ColumnError(f"label column {column!r} is null at row {row_offset + _first_null(arr)}")
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)
    if pa.types.is_struct(t) or pa.types.is_list(t):
        col = vectors_from_arrow(arr, column, dtype, row_offset)
        return col.dense if col.dense is not None else col.csr.toarray()
    raise ColumnError(f"label column {column!r} has type {t}; labels must be numeric (or numeric vectors)")


def first_non_finite(matrix) -> int | None:
    """Index of the first row holding NaN or ±inf, or None."""
    data = matrix.data if sp.issparse(matrix) else matrix
    bad = ~np.isfinite(data)
    if not bad.any():
        return None
    if sp.issparse(matrix):
        pos = int(np.flatnonzero(bad)[0])
        return int(np.searchsorted(matrix.indptr, pos, side="right") - 1)
    return int(np.flatnonzero(bad.reshape(len(data), -1).any(axis=1))[0])


def dense_to_arrow(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.StructArray:
    """Dense rows as a VectorUDT struct column (null where ``valid`` is False)."""
    n, d = matrix.shape
    values = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * d),
                                      pa.array(np.ascontiguousarray(matrix, dtype=np.float64).reshape(-1)),
                                      type=VECTOR_FIELDS[3].type)
    mask = None if valid is None else pa.array(~np.asarray(valid, bool))
    return pa.StructArray.from_arrays(
        [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()), pa.nulls(n, VECTOR_FIELDS[2].type), values],
        fields=VECTOR_FIELDS, mask=mask)


def csr_to_arrow(matrix: sp.csr_matrix) -> pa.StructArray:
    """CSR rows as a VectorUDT struct column of sparse vectors."""
    m = sp.csr_matrix(matrix)
    n, d = m.shape
    offsets = pa.array(m.indptr.astype(np.int32))
    indices = pa.ListArray.from_arrays(offsets, pa.array(m.indices.astype(np.int32)), type=VECTOR_FIELDS[2].type)
    values = pa.ListArray.from_arrays(offsets, pa.array(m.data.astype(np.float64)), type=VECTOR_FIELDS[3].type)
    return pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int8)), pa.array(np.full(n, d, np.int32)), indices, values], fields=VECTOR_FIELDS)


def matrix_to_arrow(matrix) -> pa.StructArray:
    return csr_to_arrow(matrix) if sp.issparse(matrix) else dense_to_arrow(np.asarray(matrix))
