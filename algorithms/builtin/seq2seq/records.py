"""Seq2Seq's recordIO-protobuf records: ``features["source"]`` / ``features["target"]`` as Int32 tensors.

SageMaker's example preprocessing writes one Record per sentence pair, each side a dense ``int32_tensor`` of
token ids (no ``<s>`` / ``</s>``: the algorithm adds them), and inference requests and responses carry
``source`` in and ``target`` out the same way. :func:`encode` writes the bytes the protobuf runtime
serializes for such a Record with its map keys in order (``SerializeToString(deterministic=True)``; the
SDK may write the two entries in either order, which reads the same);
:func:`decode` reads any Record through the protobuf runtime, so records with other fields (uid, labels,
keys in either order) read too, and a bad one is named by its index and byte offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ... import varint
from ...proto import Record
from ...recordio import RecordIOError, frame, scan_frames

SOURCE, TARGET = "source", "target"


def _tensor_entry(key: bytes, ids: np.ndarray) -> bytes:
    """One ``features`` map entry ``{key: Value{int32_tensor{values: ids}}}``."""
    if len(ids):
        if ids.min() < 0:
            raise ValueError(f"token ids must not be negative, got {int(ids.min())}")
        data = varint.encode_stream(ids)[0].tobytes()
        tensor = b"\x0a" + varint.encode_scalar(len(data)) + data
    else:
        tensor = b""
    value = b"\x3a" + varint.encode_scalar(len(tensor)) + tensor  # Value.int32_tensor = 7
    body = b"\x0a" + varint.encode_scalar(len(key)) + key + b"\x12" + varint.encode_scalar(len(value)) + value
    return b"\x0a" + varint.encode_scalar(len(body)) + body  # Record.features = 1


def record_bytes(**sequences: np.ndarray | Sequence[int]) -> bytes:
    """One Record's payload with a ``features[name]`` int32 tensor per keyword, in the order given."""
    return b"".join(_tensor_entry(name.encode(), np.asarray(ids, np.int64).reshape(-1))
                    for name, ids in sequences.items())


def encode(**columns: Sequence[np.ndarray | Sequence[int]]) -> bytes:
    """Framed records, one per row: ``encode(source=[...], target=[...])`` writes training pairs,
    ``encode(source=[...])`` a request, ``encode(target=[...])`` a response."""
    names = list(columns)
    counts = {len(v) for v in columns.values()}
    if len(counts) > 1:
        raise ValueError(f"columns of differing lengths: {', '.join(f'{k}={len(v)}' for k, v in columns.items())}")
    rows = zip(*(columns[name] for name in names), strict=True)
    return b"".join(frame(record_bytes(**dict(zip(names, row, strict=True)))) for row in rows)


def decode(buf, keys: Sequence[str] = (SOURCE, TARGET), source: str = "<buffer>",
           required: Sequence[str] | None = None, base_offset: int = 0) -> dict[str, list[np.ndarray]]:
    """The int32 token ids under ``features[key]`` of every record, per key (None where a record lacks an
    optional key). ``required`` keys (default: all ``keys``) must be in every record."""
    required = tuple(keys if required is None else required)
    frames = scan_frames(buf, source, base_offset)
    out: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    record = Record()
    for i in range(len(frames)):
        where = f"{source}: record {i} (byte offset {base_offset + int(frames.starts[i]) - 8})"
        try:
            record.ParseFromString(frames.payload(i))
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise RecordIOError(source, base_offset + int(frames.starts[i]) - 8,
                                f"record {i} is not a protobuf Record: {exc}") from None
        for key in keys:
            if key not in record.features:
                if key in required:
                    found = ", ".join(sorted(record.features)) or "none"
                    raise ValueError(f"{where} has no features[{key!r}] (it has: {found})")
                out[key].append(None)
                continue
            value = record.features[key]
            kind = value.WhichOneof("value")
            if kind != "int32_tensor":
                raise ValueError(f"{where}: features[{key!r}] holds {kind or 'nothing'}; Seq2Seq reads token ids "
                                 "as an int32_tensor")
            tensor = value.int32_tensor
            if len(tensor.keys):
                raise ValueError(f"{where}: features[{key!r}] is sparse; token ids must be a dense int32_tensor")
            out[key].append(np.asarray(tensor.values, np.int32))
    return out


__all__ = ["SOURCE", "TARGET", "decode", "encode", "record_bytes"]
