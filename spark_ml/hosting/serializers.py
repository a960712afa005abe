"""Request serializers (rows → request body) and response deserializers (body → output arrays).

Both sides work on whole batches: a serializer encodes an Arrow batch's feature matrix once and
reports where each row ends, so the transformer can cut requests at row boundaries by count and by
bytes without re-encoding. Write your own by subclassing :class:`RequestSerializer` /
:class:`ResponseDeserializer` and, to keep a Pipeline saveable, registering it with
:func:`register_serializer` / :func:`register_deserializer`.
"""

from __future__ import annotations

import io
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import scipy.sparse as sp

from algorithms import tensor_codec
from algorithms.recordio import LENGTH_MASK
from algorithms.serving.response_records import decode_outputs

_HEAD = struct.Struct("<II")


@dataclass
class SerializedRows:
    """Rows encoded back to back: row i is ``data[ends[i-1]:ends[i]]`` (``ends[-1] == len(data)``)."""

    data: bytes
    ends: np.ndarray

    def span(self, start: int, stop: int) -> bytes:
        lo = int(self.ends[start - 1]) if start else 0
        return self.data[lo : int(self.ends[stop - 1])] if stop > start else b""

    def size(self, start: int, stop: int) -> int:
        lo = int(self.ends[start - 1]) if start else 0
        return int(self.ends[stop - 1]) - lo if stop > start else 0


class RequestSerializer(ABC):
    """Encodes feature rows for one request content type."""

    content_type: str = ""

    @abstractmethod
    def serialize(self, features: np.ndarray | sp.csr_matrix) -> SerializedRows:
        """All rows of the matrix; :meth:`body` later wraps any contiguous run of them."""

    def body(self, rows: SerializedRows, start: int, stop: int) -> bytes:
        return rows.span(start, stop)

    def overhead(self) -> int:
        """Bytes :meth:`body` adds around the rows (for the batch size limit)."""
        return 0


class ProtobufSerializer(RequestSerializer):
    """recordIO-protobuf, one Record per row with ``features["values"]`` as float32 (dense or sparse)."""

    content_type = "application/x-recordio-protobuf"

    def serialize(self, features) -> SerializedRows:
        n = features.shape[0]
        if sp.issparse(features):
            data = tensor_codec.encode_sparse(sp.csr_matrix(features, dtype=np.float32))
            return SerializedRows(data, _record_ends(data, n))
        x = np.asarray(features, np.float32)
        data = tensor_codec.encode_dense(x)
        if n and len(data) % n == 0 and _uniform(data, n):
            return SerializedRows(data, np.arange(1, n + 1, dtype=np.int64) * (len(data) // n))
        return SerializedRows(data, _record_ends(data, n))


def _uniform(data: bytes, n: int) -> bool:
    stride = len(data) // n
    heads = np.frombuffer(data, np.uint8).reshape(n, stride)[:, 4:8].copy().view("<u4")[:, 0]
    return bool(
        (heads >> 29 == 0).all()
        and ((heads & LENGTH_MASK) + 8 + (-(heads & LENGTH_MASK) & 3) == stride).all()
    )


def _record_ends(data: bytes, n: int) -> np.ndarray:
    """End offsets of each (possibly multi-part) record, walking the frame headers."""
    ends = np.empty(n, np.int64)
    pos, k = 0, 0
    while pos < len(data):
        _, lrec = _HEAD.unpack_from(data, pos)
        length = lrec & LENGTH_MASK
        pos += 8 + length + (-length & 3)
        if lrec >> 29 in (0, 3):
            ends[k] = pos
            k += 1
    if k != n:
        raise ValueError(f"encoded {k} records for {n} rows")
    return ends


class CSVSerializer(RequestSerializer):
    """``text/csv``: one line of feature values per row, no header (sparse rows are written dense)."""

    content_type = "text/csv"

    def serialize(self, features) -> SerializedRows:
        x = features.toarray() if sp.issparse(features) else np.asarray(features)
        x = x.astype(np.float32, copy=False)
        if x.shape[0] == 0:
            return SerializedRows(b"", np.zeros(0, np.int64))
        out = io.BytesIO()
        table = pa.table({f"f{j}": x[:, j] for j in range(x.shape[1])})
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        data = out.getvalue()
        return SerializedRows(data, np.flatnonzero(np.frombuffer(data, np.uint8) == 10).astype(np.int64) + 1)


class _PerRowSerializer(RequestSerializer):
    """Formats that encode each row on its own (JSON, JSON Lines, libsvm)."""

    separator = b""

    def serialize(self, features) -> SerializedRows:
        pieces = list(self.rows(features))
        lengths = np.fromiter((len(p) + len(self.separator) for p in pieces), np.int64, len(pieces))
        return SerializedRows(
            self.separator.join(pieces) + (self.separator if pieces else b""), np.cumsum(lengths)
        )

    @abstractmethod
    def rows(self, features):
        """One ``bytes`` per row."""


def _json_rows(features):
    if sp.issparse(features):
        m = sp.csr_matrix(features, dtype=np.float32)
        d = m.shape[1]
        for i in range(m.shape[0]):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            yield orjson.dumps(
                {
                    "data": {
                        "features": {
                            "keys": m.indices[lo:hi].astype(np.int64),
                            "shape": [d],
                            "values": m.data[lo:hi],
                        }
                    }
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        return
    x = np.ascontiguousarray(features, dtype=np.float32)
    for row in x:
        yield orjson.dumps({"features": row}, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONSerializer(_PerRowSerializer):
    """``application/json``: ``{"instances": [{"features": [...]}, ...]}`` (sparse: the ``data`` form)."""

    content_type = "application/json"
    separator = b","

    def rows(self, features):
        return _json_rows(features)

    def body(self, rows: SerializedRows, start: int, stop: int) -> bytes:
        return b'{"instances":[' + rows.span(start, stop)[:-1] + b"]}"

    def overhead(self) -> int:
        return 16


class JSONLinesSerializer(_PerRowSerializer):
    content_type = "application/jsonlines"
    separator = b"\n"

    def rows(self, features):
        return _json_rows(features)


class LibSVMSerializer(_PerRowSerializer):
    """``text/libsvm``: ``0 index:value ...`` with indices from 1 (the label is a placeholder 0)."""

    content_type = "text/libsvm"
    separator = b"\n"

    def rows(self, features):
        m = sp.csr_matrix(features, dtype=np.float32)
        for i in range(m.shape[0]):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            pairs = " ".join(
                f"{k + 1}:{v!r}"
                for k, v in zip(m.indices[lo:hi].tolist(), m.data[lo:hi].tolist(), strict=True)
            )
            yield f"0 {pairs}".encode()


# ------------------------------------------------------------------------------------------- responses


class ResponseDeserializer(ABC):
    """Decodes a response body into output arrays keyed by SageMaker's output names."""

    accept: str = ""

    @abstractmethod
    def deserialize(self, body: bytes, num_rows: int) -> dict[str, np.ndarray]:
        """``(rows,)`` arrays for scalar outputs, ``(rows, k)`` for vectors."""


class ProtobufDeserializer(ResponseDeserializer):
    accept = "application/x-recordio-protobuf"

    def deserialize(self, body: bytes, num_rows: int) -> dict[str, np.ndarray]:
        return decode_outputs(body)


def _columns(records: list, source: str) -> dict[str, np.ndarray]:
    columns: dict[str, list] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{source}: record {i} is a JSON {type(record).__name__}, not an object")
        for key, value in record.items():
            columns.setdefault(key, []).append(value)
    out = {}
    for key, values in columns.items():
        if len(values) != len(records):
            raise ValueError(f"{source}: output {key!r} is missing from some records")
        out[key] = np.asarray(values, np.float64)
    return out


class JSONDeserializer(ResponseDeserializer):
    """``{"predictions": [...]}`` (PCA ``"projections"``, RCF ``"scores"``): any single list envelope."""

    accept = "application/json"

    def deserialize(self, body: bytes, num_rows: int) -> dict[str, np.ndarray]:
        doc = orjson.loads(body)
        if isinstance(doc, dict):
            lists = [v for v in doc.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"JSON response: expected one list envelope, got keys {sorted(doc)}")
            doc = lists[0]
        return _columns(doc, "JSON response")


class JSONLinesDeserializer(ResponseDeserializer):
    accept = "application/jsonlines"

    def deserialize(self, body: bytes, num_rows: int) -> dict[str, np.ndarray]:
        return _columns(
            [orjson.loads(line) for line in body.split(b"\n") if line.strip()], "JSON Lines response"
        )


class CSVDeserializer(ResponseDeserializer):
    """``text/csv`` responses: one line per row; ``columns`` names the values in order."""

    accept = "text/csv"

    def __init__(self, columns: list[str]):
        self.columns = list(columns)

    def deserialize(self, body: bytes, num_rows: int) -> dict[str, np.ndarray]:
        if not body.strip():
            return {c: np.zeros(0) for c in self.columns}
        table = pacsv.read_csv(
            io.BytesIO(body), read_options=pacsv.ReadOptions(autogenerate_column_names=True)
        )
        if table.num_columns != len(self.columns):
            raise ValueError(f"CSV response has {table.num_columns} columns; expected {self.columns}")
        return {c: table.column(j).to_numpy().astype(np.float64) for j, c in enumerate(self.columns)}


_SERIALIZERS: dict[str, Callable[[], RequestSerializer]] = {
    "protobuf": ProtobufSerializer,
    "csv": CSVSerializer,
    "json": JSONSerializer,
    "jsonlines": JSONLinesSerializer,
    "libsvm": LibSVMSerializer,
}
_DESERIALIZERS: dict[str, Callable[[], ResponseDeserializer]] = {
    "protobuf": ProtobufDeserializer,
    "json": JSONDeserializer,
    "jsonlines": JSONLinesDeserializer,
}


def register_serializer(name: str, factory: Callable[[], RequestSerializer]) -> None:
    """Make a serializer available by name (``EndpointModel(serializer=name)``, saved Pipelines)."""
    _SERIALIZERS[name] = factory


def register_deserializer(name: str, factory: Callable[[], ResponseDeserializer]) -> None:
    _DESERIALIZERS[name] = factory


def serializer(name: str) -> RequestSerializer:
    try:
        return _SERIALIZERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown serializer {name!r}; known: {', '.join(sorted(_SERIALIZERS))} "
            "(register_serializer adds one)"
        ) from None


def deserializer(name: str) -> ResponseDeserializer:
    try:
        return _DESERIALIZERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown deserializer {name!r}; known: {', '.join(sorted(_DESERIALIZERS))} "
            "(register_deserializer adds one)"
        ) from None
