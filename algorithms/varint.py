"""Protobuf base-128 varints over whole numpy arrays at once."""

from __future__ import annotations

import numpy as np

MAX_BYTES = 10


def length(values: np.ndarray) -> np.ndarray:
    """Bytes each unsigned value takes as a varint."""
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        v = v.astype(np.uint64)
    n = np.ones(v.shape, dtype=np.int64)
    top = int(v.max()) if v.size else 0
    bound = 1 << 7
    while bound <= top:
        n += v >= bound
        bound <<= 7
    return n


def length_scalar(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def encode_scalar(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint bytes of each value as a zero-padded (n, width) uint8 matrix, and each one's length."""
    v = np.asarray(values).reshape(-1)
    if v.dtype.kind not in "iu" or (v.dtype.kind == "i" and v.size and v.min() < 0):
        v = v.astype(np.uint64)
    lens = length(v)
    width = int(lens.max()) if len(v) else 1
    v = v.astype(np.uint32 if width <= 4 else np.uint64, copy=False)
    mat = np.empty((len(v), width), dtype=np.uint8)
    for j in range(width):
        low = (v >> (7 * j)).astype(np.uint8) & 0x7F
        mat[:, j] = low | ((lens > j + 1).view(np.uint8) << 7) if j + 1 < width else low
    return mat, lens


def encode_stream(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All values' varints back to back (flat uint8) and each one's length."""
    mat, lens = encode(values)
    if mat.shape[1] == 1:
        return mat.reshape(-1), lens
    keep = np.arange(mat.shape[1]) < lens[:, None]
    return mat[keep], lens


def read_at(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one varint starting at each position of ``buf`` (which must be padded by 10 bytes).

    Returns the values and the byte counts; a count of 0 marks a varint longer than 10 bytes.
    """
    window = buf[pos[:, None] + np.arange(MAX_BYTES)]
    ends = window < 0x80
    count = np.argmax(ends, axis=1) + 1
    count[~ends.any(axis=1)] = 0
    vals = np.zeros(len(pos), dtype=np.uint64)
    for j in range(MAX_BYTES):
        take = j < count
        if not take.any():
            break
        vals |= np.where(take, (window[:, j] & 0x7F).astype(np.uint64) << np.uint64(7 * j), np.uint64(0))
    return vals, count


def decode_stream(data: np.ndarray) -> np.ndarray:
    """Decode a flat run of complete varints (uint8) into uint64 values, in order."""
    data = np.asarray(data, dtype=np.uint8)
    if len(data) == 0:
        return np.zeros(0, dtype=np.uint64)
    ends = data < 0x80
    if ends.all():
        return data.astype(np.uint64)
    end_at = np.flatnonzero(ends)
    starts = np.empty(len(end_at), dtype=np.int64)
    starts[0] = 0
    starts[1:] = end_at[:-1] + 1
    lens = end_at - starts + 1
    width = int(lens.max())
    if width > MAX_BYTES:
        at = int(starts[np.argmax(lens > MAX_BYTES)])
        raise ValueError(f"varint longer than {MAX_BYTES} bytes at byte {at}")
    padded = np.concatenate([data, np.zeros(width, np.uint8)])
    acc = np.uint32 if width <= 4 else np.uint64
    vals = (padded[starts] & 0x7F).astype(acc)
    for j in range(1, width):
        part = (padded[starts + j] & 0x7F).astype(acc) << acc(7 * j)
        vals |= np.where(lens > j, part, acc(0))
    return vals.astype(np.uint64, copy=False)
