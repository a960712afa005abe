"""Model outputs to response bodies in SageMaker's shapes.

JSON: ``{"<envelope>": [{"<output>": value, ...}, ...]}`` (``predictions``; PCA ``projections``),
JSON Lines: one per-record object per line, CSV: one line per record with the outputs in the model's
order (vectors spread over columns), recordIO-protobuf: :mod:`.response_records`.
Float32 outputs print as their shortest decimal (``0.4``, not ``0.4000000059604645``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from ..builtin.base import Output
from .content import CSV, JSON, JSONLINES, RECORDIO_PROTOBUF
from .response_records import encode_outputs

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def ordered_outputs(
    outputs: dict[str, np.ndarray], declared: Sequence[Output]
) -> list[tuple[str, np.ndarray]]:
    """The model's outputs in its declared order, then any undeclared ones."""
    names = [o.name for o in declared if o.name in outputs] + sorted(
        set(outputs) - {o.name for o in declared}
    )
    return [(name, np.asarray(outputs[name])) for name in names]


def per_record(columns: list[tuple[str, np.ndarray]], n: int) -> list[dict]:
    """One dict per row; values stay numpy scalars / rows so orjson prints float32 at float32 precision."""
    if not columns:
        return [{} for _ in range(n)]
    names = [name for name, _ in columns]
    arrays = [np.ascontiguousarray(a) for _, a in columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*arrays, strict=True)]


def encode_response(
    outputs: dict[str, np.ndarray], declared: Sequence[Output], envelope: str, accept: str, num_rows: int
) -> bytes:
    columns = ordered_outputs(outputs, declared)
    for name, array in columns:
        if array.shape[0] != num_rows:
            raise ValueError(
                f"the model returned {array.shape[0]} rows of {name!r} for {num_rows} input rows"
            )
    if accept == RECORDIO_PROTOBUF:
        return encode_outputs(dict(columns)) if num_rows else b""
    if accept == CSV:
        return _csv(columns, num_rows)
    if accept not in (JSON, JSONLINES):
        raise ValueError(f"no encoder for {accept}")
    rows = json_records(columns, num_rows)
    if accept == JSONLINES:
        return b"\n".join(rows) + b"\n" if rows else b""
    return b'{"' + envelope.encode() + b'":[' + b",".join(rows) + b"]}"


def json_records(columns: list[tuple[str, np.ndarray]], n: int) -> list[bytes]:
    """One JSON object per row, built from whole-column serializations (orjson prints each column once;
    the per-row work is one bytes format). Float32 values print at float32 precision."""
    if not n:
        return []
    if not columns:
        return [b"{}"] * n
    tokens, keys = [], []
    for name, array in columns:
        array = np.ascontiguousarray(array)
        if array.dtype.kind not in "fiub":
            return [orjson.dumps(r, option=_NUMPY) for r in per_record(columns, n)]
        text = orjson.dumps(array, option=_NUMPY)
        if array.ndim == 1:
            tokens.append(text[1:-1].split(b","))
        elif array.shape[1]:
            tokens.append([b"[" + t + b"]" for t in text[2:-2].split(b"],[")])
        else:
            tokens.append([b"[]"] * n)
        keys.append(orjson.dumps(name).replace(b"%", b"%%"))
    template = b"{" + b",".join(k + b":%b" for k in keys) + b"}"
    return [template % values for values in zip(*tokens, strict=True)]


def _csv(columns: list[tuple[str, np.ndarray]], n: int) -> bytes:
    if not n:
        return b""
    table = {}
    for name, array in columns:
        if array.ndim == 1:
            table[name] = array
        else:
            for j in range(array.shape[1]):
                table[f"{name}_{j}"] = np.ascontiguousarray(array[:, j])
    out = io.BytesIO()
    pacsv.write_csv(pa.table(table), out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return out.getvalue()
