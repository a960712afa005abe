"""Request bodies to a :class:`~algorithms.batch.Batch`, in every format SageMaker's algorithms read.

The fast paths are whole-body calls (pyarrow's CSV reader, one ``np.array`` over the JSON rows, the
vectorized recordIO-protobuf codec). When one fails, a slow pass over the body finds the first row at
fault so the 400 names it; the slow pass only runs for bad requests.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import scipy.sparse as sp

from .. import tensor_codec
from ..batch import Batch
from .content import CSV, JSON, JSONLINES, LIBSVM, RECORDIO_PROTOBUF, MediaType
from .errors import bad_request


def decode_request(body: bytes, media: MediaType, feature_dim: int) -> Batch:
    """The rows of a request body; raises :class:`RequestError` (400) naming what is wrong."""
    decoder = _DECODERS[media.type]
    batch = decoder(body, media, feature_dim)
    if batch.feature_dim != feature_dim and batch.num_rows:
        raise bad_request(f"the rows hold {batch.feature_dim} features; the model expects {feature_dim}")
    return batch


# -------------------------------------------------------------------------------------------------- CSV


def decode_csv(body: bytes, media: MediaType, feature_dim: int) -> Batch:
    label_size = _label_size(media)
    width = feature_dim + label_size
    if not body.strip():
        return Batch(np.zeros((0, feature_dim), np.float32))
    _check_first_row_width(body, width, label_size)
    if len(body) <= SMALL_CSV:
        return Batch(_small_csv(body, width, label_size))
    if not body.endswith(b"\n"):
        body += b"\n"  # pyarrow's reader needs the last line terminated
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, use_threads=False),
            parse_options=pacsv.ParseOptions(quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={f"f{i}": pa.float64() for i in range(width)}),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raise bad_request(_csv_problem(body, width, label_size)) from None
    if (
        table.num_columns != width
        or any(col.null_count for col in table.columns)
        or any(not pa.types.is_floating(col.type) for col in table.columns)
    ):
        raise bad_request(_csv_problem(body, width, label_size))
    columns = table.columns[label_size:]
    x = np.empty((table.num_rows, feature_dim), np.float32)
    for j, col in enumerate(columns):
        x[:, j] = col.to_numpy()
    return Batch(x)


SMALL_CSV = 8192  # below this, Python's split beats pyarrow's fixed cost (~0.5 ms) per request


def _check_first_row_width(body: bytes, width: int, label_size: int) -> None:
    """400 when the first row's comma count says it is not ``width`` values wide, before any value is parsed.

    The reader sizes its work by the first row: one 1 MB row of 500k columns cost ~14 s of column setup
    before its width was compared with the model's, long enough to miss health checks. Counting commas (in C)
    costs microseconds. Later rows are checked by the readers themselves, which stop at the first bad one.
    """
    start, size = 0, len(body)
    while start < size:
        end = body.find(b"\n", start)
        end = size if end < 0 else end
        carriage = body.find(b"\r", start, end)
        end = end if carriage < 0 else carriage
        if body[start:end].strip():
            values = body.count(b",", start, end) + 1
            if values != width:
                raise bad_request(_width_problem(1, values, width, label_size))
            return
        start = end + 1


def _width_problem(row: int, values: int, width: int, label_size: int) -> str:
    expected = f"{width} values" + (
        f" ({label_size} label + {width - label_size} features)" if label_size else ""
    )
    return f"CSV row {row} has {values} values; the model expects {expected} (no header row, one record per line)"


def _small_csv(body: bytes, width: int, label_size: int) -> np.ndarray:
    try:
        rows = np.array([line.split(b",") for line in body.splitlines() if line.strip()], dtype=np.float32)
    except (ValueError, TypeError):
        raise bad_request(_csv_problem(body, width, label_size)) from None
    if rows.ndim != 2 or rows.shape[1] != width:
        raise bad_request(_csv_problem(body, width, label_size))
    return np.ascontiguousarray(rows[:, label_size:])


def _label_size(media: MediaType) -> int:
    raw = media.params.get("label_size", "0")
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise bad_request(f"text/csv parameter label_size={raw!r} is not a count of leading label columns")
    return value


def _csv_problem(body: bytes, width: int, label_size: int) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the CSV body is not UTF-8 text (byte offset {exc.start})"
    row = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        row += 1
        values = line.count(",") + 1  # before splitting: a wide row costs no list of its fields
        if values != width:
            return _width_problem(row, values, width, label_size)
        for column, field in enumerate(line.split(","), 1):
            if not field.strip():
                return f"CSV row {row}, column {column} is empty"
            try:
                float(field)
            except ValueError:
                return f"CSV row {row}, column {column}: cannot parse {_clip(field)!r} as a number"
    return "the CSV body cannot be parsed"


# ------------------------------------------------------------------------------------------ JSON / JSONL


def decode_json(body: bytes, media: MediaType, feature_dim: int) -> Batch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "instances" not in doc:
        got = (
            f"an object with keys {sorted(doc)[:5]}"
            if isinstance(doc, dict)
            else f"a JSON {type(doc).__name__}"
        )
        raise bad_request(
            'a JSON request is {"instances": [...]} (each instance {"features": [...]}, '
            f'{{"data": {{"features": {{...}}}}}} or a list of numbers); got {got}'
        )
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise bad_request(f'"instances" must be a list, got a JSON {type(instances).__name__}')
    return rows_from_objects(instances, feature_dim, lambda i: f"instances[{i}]")


def decode_jsonlines(body: bytes, media: MediaType, feature_dim: int) -> Batch:
    objects, lines = [], []
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            objects.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"JSON Lines line {number} is not valid JSON: {exc}") from None
        lines.append(number)
    return rows_from_objects(objects, feature_dim, lambda i: f"line {lines[i]}")


def rows_from_objects(items: list, feature_dim: int, where: Callable[[int], str]) -> Batch:
    """Per-record JSON objects (SageMaker's dense, protobuf-like and sparse forms) as one Batch."""
    dense: list = []
    sparse: dict[int, tuple[list, list]] = {}
    for i, item in enumerate(items):
        features = item
        if isinstance(item, dict):
            features = item.get("features")
            if features is None and isinstance(item.get("data"), dict):
                features = item["data"].get("features")
            if features is None:
                raise bad_request(
                    f'{where(i)} has no "features" (send {{"features": [...]}} or '
                    '{"data": {"features": {"values": [...]}}})'
                )
        if isinstance(features, dict):
            values = features.get("values")
            keys = features.get("keys")
            if keys:
                sparse[i] = _sparse_row(features, keys, values, feature_dim, where(i))
                dense.append(None)
                continue
            features = values
        if not isinstance(features, list):
            raise bad_request(
                f"{where(i)}: features must be a list of numbers, got a JSON {type(features).__name__}"
            )
        dense.append(features)
    if not sparse:
        return Batch(_dense_matrix(dense, feature_dim, where))
    indptr, indices, data = [0], [], []
    for i, row in enumerate(dense):
        if row is None:
            cols, vals = sparse[i]
        else:
            vals = _dense_matrix([row], feature_dim, lambda _, i=i: where(i))[0]
            cols = np.flatnonzero(vals)
            vals = vals[cols]
        indices.append(np.asarray(cols, np.int64))
        data.append(np.asarray(vals, np.float32))
        indptr.append(indptr[-1] + len(cols))
    matrix = sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr)), shape=(len(dense), feature_dim)
    )
    matrix.sort_indices()
    return Batch(matrix)


def _dense_matrix(rows: list, feature_dim: int, where: Callable[[int], str]) -> np.ndarray:
    if not rows:
        return np.zeros((0, feature_dim), np.float32)
    for i, row in enumerate(rows):  # widths first: no conversion work for a row the model cannot take
        if len(row) != feature_dim:
            raise bad_request(f"{where(i)} has {len(row)} features; the model expects {feature_dim}")
    try:
        with np.errstate(over="ignore"):  # beyond float32's range is infinity, as for the other formats
            x = np.array(rows, dtype=np.float32)
        if x.ndim == 2 and x.shape[1] == feature_dim:
            return x
    except (ValueError, TypeError):
        pass
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad_request(
                    f"{where(i)}: feature {j} is {_clip(orjson.dumps(value).decode())}, not a number"
                )
    raise bad_request("the rows cannot be read as numbers")


def _sparse_row(tensor: dict, keys, values, feature_dim: int, where: str):
    shape = tensor.get("shape")
    if shape is not None and (not isinstance(shape, list) or len(shape) != 1 or shape[0] != feature_dim):
        raise bad_request(f"{where}: sparse shape {shape} does not match the model's [{feature_dim}]")
    if isinstance(keys, list) and len(keys) > feature_dim:
        raise bad_request(f"{where}: {len(keys)} sparse keys; the model has {feature_dim} features (keys must "
                          "not repeat)")
    if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
        n_values = len(values) if isinstance(values, list) else "no"
        raise bad_request(
            f"{where}: a sparse vector needs as many values as keys "
            f"({len(keys) if isinstance(keys, list) else 'no'} keys, {n_values} values)"
        )
    try:
        cols = np.array(keys, dtype=np.int64)
        vals = np.array(values, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(f"{where}: sparse keys must be integers and values numbers") from None
    if cols.ndim != 1 or vals.ndim != 1:
        raise bad_request(f"{where}: sparse keys and values must be flat lists")
    bad = np.flatnonzero((cols < 0) | (cols >= feature_dim))
    if len(bad):
        raise bad_request(
            f"{where}: sparse key {int(cols[bad[0]])} is outside the model's {feature_dim} features"
        )
    if len(np.unique(cols)) != len(cols):
        raise bad_request(f"{where}: sparse keys repeat")
    return cols, vals


# ---------------------------------------------------------------------------------- recordIO-protobuf


def decode_protobuf(body: bytes, media: MediaType, feature_dim: int) -> Batch:
    fast = _dense_records(body, feature_dim)
    if fast is not None:
        return Batch(fast)
    try:
        batch = tensor_codec.decode(body, source="request body", feature_dim=feature_dim)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if batch.num_rows == 0:
        return Batch(np.zeros((0, feature_dim), np.float32))
    if batch.feature_dim != feature_dim:
        raise bad_request(f"the records hold {batch.feature_dim} features; the model expects {feature_dim}")
    if not batch.is_sparse and batch.features.dtype != np.float32:
        return Batch(batch.features.astype(np.float32))
    return batch


_DENSE_LAYOUTS: dict[tuple[int, str], tuple[np.ndarray, int, int]] = {}


def _dense_layout(feature_dim: int, dtype: str) -> tuple[np.ndarray, int, int]:
    """(record head bytes, data offset, stride) of the records ``encode_dense`` writes for one row."""
    key = (feature_dim, dtype)
    if key not in _DENSE_LAYOUTS:
        record = np.frombuffer(tensor_codec.encode_dense(np.zeros((1, feature_dim), dtype)), np.uint8)
        payload = int(record[4:8].view("<u4")[0])
        data_at = 8 + payload - feature_dim * np.dtype(dtype).itemsize
        _DENSE_LAYOUTS[key] = (record[:data_at].copy(), data_at, len(record))
    return _DENSE_LAYOUTS[key]


def _dense_records(body: bytes, feature_dim: int) -> np.ndarray | None:
    """The common request (dense float32 records, no label, as SDKs and sagemaker-spark write them) as one
    strided view; None for anything else (the general decoder handles it)."""
    if not feature_dim:
        return None
    for dtype in ("<f4", "<f8"):
        head, data_at, stride = _dense_layout(feature_dim, dtype)
        if not body or len(body) % stride:
            continue
        data_end = data_at + feature_dim * np.dtype(dtype).itemsize
        rows = np.frombuffer(body, np.uint8).reshape(-1, stride)
        if not (rows[:, :data_at] == head).all() or rows[:, data_end:].any():
            continue
        return np.ascontiguousarray(rows[:, data_at:data_end]).view(dtype).astype(np.float32, copy=False)
    return None


# ------------------------------------------------------------------------------------------------ libsvm


def decode_libsvm(body: bytes, media: MediaType, feature_dim: int) -> Batch:
    """``label index:value ...`` lines, indices from 1 (as libsvm and sagemaker-spark write them)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the libsvm body is not UTF-8 text (byte offset {exc.start})") from None
    indptr, indices, values = [0], [], []
    row = 0
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        row += 1
        tokens = line.split()
        if ":" in tokens[0]:
            raise bad_request(
                f"libsvm row {row} starts with {_clip(tokens[0])!r}; a row starts with its label"
            )
        for token in tokens[1:]:
            key, sep, value = token.partition(":")
            try:
                index, number = int(key), float(value)
            except ValueError:
                index, number = -1, 0.0
            if not sep or index < 0:
                raise bad_request(f"libsvm row {row}: cannot parse {_clip(token)!r} as index:value")
            if not 1 <= index <= feature_dim:
                raise bad_request(
                    f"libsvm row {row}: index {index} is outside the model's features "
                    f"1..{feature_dim} (libsvm indices start at 1)"
                )
            indices.append(index - 1)
            values.append(number)
        indptr.append(len(indices))
    matrix = sp.csr_matrix(
        (np.asarray(values, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
        shape=(row, feature_dim),
    )
    matrix.sum_duplicates()
    return Batch(matrix)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_DECODERS = {
    CSV: decode_csv,
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
    RECORDIO_PROTOBUF: decode_protobuf,
    LIBSVM: decode_libsvm,
}
