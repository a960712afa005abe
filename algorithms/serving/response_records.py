"""Algorithm responses in recordIO-protobuf: one Record per row, outputs under ``label[<name>]``.

SageMaker's algorithms answer ``Accept: application/x-recordio-protobuf`` with one Record per input
row whose ``features`` map is empty and whose ``label`` map holds each output as a dense
``float32_tensor`` (``predicted_label`` and ``closest_cluster`` too, as ``0.0``, ``3.0``, …).
Every record of a response has the same layout, so both directions work on whole ``(rows, bytes)``
matrices. Map entries are written in key order, which is what the protobuf runtime writes with
``deterministic=True``; the decoder accepts any order (it falls back to the runtime).
"""

from __future__ import annotations

import numpy as np

from .. import varint
from ..recordio import scan_frames
from ..tensor_codec import frame_fixed_layout

_LABEL_FIELD = 0x12  # Record.label (field 2, length-delimited)
_ENTRY_KEY = 0x0A  # MapEntry.key
_ENTRY_VALUE = 0x12  # MapEntry.value
_FLOAT32_TENSOR = 0x12  # Value.float32_tensor (field 2)
_PACKED_VALUES = 0x0A  # Float32Tensor.values (field 1, packed)


def _length_delimited(tag: int, body_len: int) -> bytes:
    return bytes([tag]) + varint.encode_scalar(body_len)


def _entry_prefix(name: str, count: int) -> bytes:
    """Bytes of a ``label[name] = float32_tensor(count values)`` map entry up to its float data."""
    key = name.encode()
    values_field = _length_delimited(_PACKED_VALUES, 4 * count) if count else b""
    tensor_len = len(values_field) + 4 * count
    value = _length_delimited(_FLOAT32_TENSOR, tensor_len) + values_field
    value_len = len(value) + 4 * count
    entry = _length_delimited(_ENTRY_KEY, len(key)) + key + _length_delimited(_ENTRY_VALUE, value_len) + value
    entry_len = len(entry) + 4 * count
    return _length_delimited(_LABEL_FIELD, entry_len) + entry


def _as_columns(outputs: dict[str, np.ndarray]) -> tuple[int, list[tuple[str, np.ndarray]]]:
    n = None
    columns = []
    for name in sorted(outputs):
        a = np.asarray(outputs[name])
        if a.ndim == 1:
            a = a.reshape(-1, 1)
        if a.ndim != 2:
            raise ValueError(f"output {name!r} has shape {a.shape}; outputs are (rows,) or (rows, k)")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(f"output {name!r} has {a.shape[0]} rows, others have {n}")
        columns.append((name, np.ascontiguousarray(a, dtype="<f4")))
    return n or 0, columns


def encode_outputs(outputs: dict[str, np.ndarray]) -> bytes:
    """Frame one response Record per row; the bytes equal the runtime's deterministic serialization."""
    n, columns = _as_columns(outputs)
    if n == 0:
        return b""
    pieces = [(_entry_prefix(name, data.shape[1]), data.view(np.uint8)) for name, data in columns]
    try:
        return frame_fixed_layout(pieces, n)
    except ValueError as exc:
        raise ValueError(f"response record: {exc}") from None


def decode_outputs(buf, source: str = "response body") -> dict[str, np.ndarray]:
    """Arrays keyed by label name: ``(rows,)`` for one value per record, ``(rows, k)`` for vectors."""
    frames = scan_frames(buf, source)
    if len(frames) == 0:
        return {}
    fast = _decode_uniform(frames)
    return fast if fast is not None else _decode_records(frames, source)


def _decode_uniform(frames) -> dict[str, np.ndarray] | None:
    uniform = frames.uniform_stride()
    if uniform is None:
        return None
    size, stride = uniform
    n, starts = len(frames), frames.starts
    first = frames.data[starts[0] : starts[0] + size]
    from ..proto import Record

    record = Record()
    try:
        record.ParseFromString(first.tobytes())
    except Exception:
        return None
    if len(record.features) or not len(record.label):
        return None
    layout, at = [], 0
    for name in sorted(record.label):
        value = record.label[name]
        if (
            value.WhichOneof("value") != "float32_tensor"
            or len(value.float32_tensor.keys)
            or len(value.float32_tensor.shape)
        ):
            return None
        count = len(value.float32_tensor.values)
        prefix = _entry_prefix(name, count)
        if first[at : at + len(prefix)].tobytes() != prefix:
            return None
        layout.append((name, at + len(prefix), count))
        at += len(prefix) + 4 * count
    if at != size:
        return None
    rows = np.lib.stride_tricks.as_strided(
        frames.data[starts[0] :], shape=(n, size), strides=(stride, 1), writeable=False
    )
    variable = np.zeros(size, bool)
    for _, offset, count in layout:
        variable[offset : offset + 4 * count] = True
    fixed = np.flatnonzero(~variable)
    if not (rows[:, fixed] == first[fixed]).all():
        return None
    result = {}
    for name, offset, count in layout:
        values = np.ascontiguousarray(rows[:, offset : offset + 4 * count]).view("<f4").astype(np.float32)
        result[name] = values[:, 0] if count == 1 else values.reshape(n, count)
    return result


def _decode_records(frames, source: str) -> dict[str, np.ndarray]:
    from ..proto import Record
    from ..records import tensor_of

    columns: dict[str, list[np.ndarray]] = {}
    for i in range(len(frames)):
        record = Record()
        try:
            record.ParseFromString(frames.payload(i))
        except Exception as exc:
            raise ValueError(f"{source}: record {i} is not a valid aialgs.data.Record: {exc}") from None
        if i and set(record.label) != set(columns):
            raise ValueError(
                f"{source}: record {i} has labels {sorted(record.label)}, record 0 has {sorted(columns)}"
            )
        for name in record.label:
            try:
                _, tensor = tensor_of(record.label[name])
            except ValueError as exc:
                raise ValueError(f"{source}: record {i} label {name!r}: {exc}") from None
            if len(tensor.keys):
                raise ValueError(f"{source}: record {i} label {name!r} is sparse; responses are dense")
            columns.setdefault(name, []).append(np.asarray(tensor.values, np.float32))
    result = {}
    for name, values in columns.items():
        widths = {len(v) for v in values}
        if len(widths) != 1:
            raise ValueError(f"{source}: label {name!r} has differing lengths {sorted(widths)}")
        stacked = np.stack(values)
        result[name] = stacked[:, 0] if widths == {1} else stacked
    return result
