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

    Returns the values and the byte counts; a count of 0 marks a varint longer than 10 bytes. Each step
    reads the next byte of only the varints that go on, so short varints (most lengths) cost one read.
    """
    byte = buf[pos]
    vals = (byte & 0x7F).astype(np.uint64)
    count = np.ones(len(pos), np.int64)
    more = np.flatnonzero(byte >= 0x80)
    for j in range(1, MAX_BYTES):
        if not len(more):
            return vals, count
        byte = buf[pos[more] + j]
        vals[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * j)
        count[more] += 1
        more = more[byte >= 0x80]
    count[more] = 0
    return vals, count


def decode_stream(data: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
    """Decode a flat run of complete varints (uint8) into values, in order: uint32 when no varint is longer
    than 4 bytes (so every value is below 2**28), else uint64.

    ``ends`` is the index of each varint's last byte (``np.flatnonzero(data < 0x80)``), for a caller that
    has it already.
    """
    data = np.asarray(data, dtype=np.uint8)
    if ends is None:
        ends = np.flatnonzero(data < 0x80)
    if len(ends) == len(data):  # every varint is one byte
        return data.astype(np.uint32)
    lens = np.empty(len(ends), np.uint32 if len(data) < 2**32 else np.int64)
    lens[0] = ends[0] + 1
    np.subtract(ends[1:], ends[:-1], out=lens[1:], casting="unsafe")
    width = int(lens.max())
    if width > MAX_BYTES:
        i = int(np.argmax(lens > MAX_BYTES))
        at = int(ends[i] - lens[i] + 1)
        raise ValueError(f"varint longer than {MAX_BYTES} bytes at byte {at}")
    if width <= 4:
        # Read the 4 bytes that end at each varint's last byte as one little-endian word, drop the bytes
        # before the varint, then close up its 7-bit groups.
        padded = np.zeros(len(data) + 3, np.uint8)
        padded[3:] = data
        words = np.take(np.ndarray(len(data), "<u4", buffer=padded, strides=(1,)), ends)
        words >>= np.uint32(32) - (lens.astype(np.uint32) << np.uint32(3))
        values = words & 0x7F
        group = np.empty_like(words)
        for g in range(1, 4):  # in place: keys are the largest arrays of a sparse chunk
            np.right_shift(words, g, out=group)
            group &= 0x7F << 7 * g
            values |= group
        return values
    # Horner's rule from each varint's last (most significant) byte back to its first. Indices before a
    # varint's first byte (-1 at the very start) are read but not used.
    vals = (data[ends] & 0x7F).astype(np.uint64)
    for back in range(1, width):
        low = (data[ends - back] & 0x7F).astype(np.uint64)
        vals = np.where(lens > back, (vals << np.uint64(7)) | low, vals)
    return vals
